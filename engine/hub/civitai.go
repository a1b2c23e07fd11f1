package hub

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultCivitaiEndpoint is CivitAI's address when $CIVITAI_ENDPOINT is
// not set.
const DefaultCivitaiEndpoint = "https://civitai.com"

// CivitaiEndpoint is $CIVITAI_ENDPOINT without a trailing slash (a test
// server), else DefaultCivitaiEndpoint.
func CivitaiEndpoint() string {
	if e := os.Getenv("CIVITAI_ENDPOINT"); e != "" {
		return strings.TrimRight(e, "/")
	}
	return DefaultCivitaiEndpoint
}

// CivitaiFile is what PullCivitai fetched.
type CivitaiFile struct {
	Path      string // the downloaded file
	Model     string // the model's name on CivitAI
	Version   string // the version's name
	Type      string // CivitAI's model type: "Checkpoint", "VAE", ...
	Cached    bool   // the file was there already: nothing fetched
	VersionID string
}

// PullCivitai downloads the primary .safetensors file of a CivitAI model
// version into dir (checkpoints) or dir/vae (VAEs): it reads
// GET {endpoint}/api/v1/model-versions/{id} for the file's name, size and
// sha256, then fetches its download URL (normally
// {endpoint}/api/download/models/{id}, which redirects to storage) through
// dir/<name>.incomplete, resuming a partial file, and checks the sha256.
// token ($CIVITAI_TOKEN) is sent as a Bearer token to CivitAI's host only;
// the Hugging Face token never is. A file already at the destination is
// kept as it is. Other model types (LoRA, embeddings, ...) are refused:
// darkroom does not load them.
func PullCivitai(ctx context.Context, endpoint, token, versionID, dir string, progress func(Progress)) (*CivitaiFile, error) {
	for _, c := range versionID {
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("civitai:%s: want a model version id (digits; the modelVersionId= of the model page's URL)", versionID)
		}
	}
	if versionID == "" {
		return nil, fmt.Errorf("civitai: needs a model version id (civitai:123456)")
	}
	c := &Client{Endpoint: endpoint, Token: token, Progress: progress, tokenVar: "CIVITAI_TOKEN", noEnvToken: true}
	var v struct {
		Name  string `json:"name"`
		Model struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"model"`
		Files []struct {
			Name        string  `json:"name"`
			SizeKB      float64 `json:"sizeKB"`
			Primary     bool    `json:"primary"`
			DownloadURL string  `json:"downloadUrl"`
			Hashes      struct {
				SHA256 string `json:"SHA256"`
			} `json:"hashes"`
		} `json:"files"`
	}
	if _, err := c.getJSON(ctx, c.endpoint()+"/api/v1/model-versions/"+versionID, &v); err != nil {
		return nil, err
	}
	out := &CivitaiFile{Model: v.Model.Name, Version: v.Name, Type: v.Model.Type, VersionID: versionID}
	switch v.Model.Type {
	case "Checkpoint":
	case "VAE":
		dir = filepath.Join(dir, "vae")
	default:
		return nil, fmt.Errorf("civitai:%s (%s) is a %s model; darkroom loads checkpoints and VAEs only", versionID, v.Model.Name, v.Model.Type)
	}
	pick := -1
	for i, f := range v.Files {
		if strings.HasSuffix(strings.ToLower(f.Name), ".safetensors") && (pick < 0 || f.Primary && !v.Files[pick].Primary) {
			pick = i
		}
	}
	if pick < 0 {
		return nil, fmt.Errorf("civitai:%s (%s) has no .safetensors file; darkroom reads no pickle (.ckpt, .pt) files", versionID, v.Model.Name)
	}
	f := v.Files[pick]
	name := filepath.Base(filepath.Clean("/" + f.Name))
	if name == "/" || name == "." || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("civitai:%s: unusable file name %q", versionID, f.Name)
	}
	sum := strings.ToLower(f.Hashes.SHA256)
	if h, _ := checker(sum, 0); h == nil || len(sum) != 64 {
		return nil, fmt.Errorf("civitai:%s: the API gives no sha256 for %s, so it cannot be checked", versionID, name)
	}
	if f.DownloadURL == "" {
		f.DownloadURL = c.endpoint() + "/api/download/models/" + versionID
	}
	out.Path = filepath.Join(dir, name)
	p := Progress{Repo: "civitai:" + versionID, File: name, Index: 1, Count: 1, Total: int64(f.SizeKB * 1024)}
	if st, err := os.Stat(out.Path); err == nil && st.Mode().IsRegular() {
		out.Cached = true
		p.Done, p.Total, p.Cached, p.Finished = st.Size(), st.Size(), true, true
		c.report(p)
		return out, nil
	}
	// The size is known only to the kilobyte: the sha256 decides.
	if err := c.fetch(ctx, meta{etag: sum, location: f.DownloadURL}, out.Path, p); err != nil {
		return nil, fmt.Errorf("civitai:%s %s: %w", versionID, name, err)
	}
	return out, nil
}
