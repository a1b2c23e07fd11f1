package engine

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/hub"
)

// PullAlias is an entry of the short table of model names Pull accepts
// besides Hugging Face repository ids.
type PullAlias struct {
	Name  string // e.g. "sd15"
	Repo  string // the Hugging Face repository
	File  string // the one file pulled; "" means the repository's pipeline files
	About string
}

var pullAliases = []PullAlias{
	{"sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors", "Stable Diffusion 1.5, one checkpoint file (4.3 GB)"},
	{"sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sd_xl_base_1.0.safetensors", "SDXL base 1.0, one checkpoint file (6.9 GB; recognised, not generated yet)"},
	{"sdxl-vae-fp16-fix", "madebyollin/sdxl-vae-fp16-fix", "", "the SDXL VAE patched to run in fp16 (its config and .safetensors files)"},
	{"taesd", "madebyollin/taesd", TAESDDecoderFile, "the tiny SD1 VAE decoder darkroom draws previews with"},
}

// PullAliases returns the alias table (a copy).
func PullAliases() []PullAlias { return append([]PullAlias(nil), pullAliases...) }

// HubCacheDir is the Hugging Face cache Pull writes to and model names are
// looked up in: $HF_HUB_CACHE, else $HF_HOME/hub, else
// ~/.cache/huggingface/hub, as huggingface_hub reads them.
func HubCacheDir() string { return hub.CacheDir() }

// PullProgress reports the download of one file of a pull.
type PullProgress struct {
	Repo, File   string
	Index, Count int   // file Index (1-based) of Count; 0 of 0 for model_index.json, fetched first to choose the rest
	Done, Total  int64 // bytes; Total is 0 when unknown
	Cached       bool  // already in the cache: nothing fetched
	Finished     bool  // complete and verified
}

// PullResult is what Pull fetched.
type PullResult struct {
	Repo   string // "org/name", or "civitai:<versionId>"
	Commit string // the Hugging Face commit; "" for CivitAI
	// Path is what Load takes for it: the snapshot folder of a diffusers
	// pipeline, or the file.
	Path  string
	Files []string // relative to the snapshot folder
}

// hubTarget is a parsed model name.
type hubTarget struct {
	repo, rev, file string
	alias           *PullAlias
}

func validRepoPart(s string) bool {
	if s == "" || s == "." || s == ".." || strings.Contains(s, "--") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// parseHubName reads an alias, "org/name", "org/name@rev",
// "org/name/path/in/repo", and the same as a huggingface.co or hf.co URL
// (…/resolve/REV/PATH, …/blob/REV/PATH, …/tree/REV).
func parseHubName(name string) (hubTarget, error) {
	for _, a := range pullAliases {
		if strings.EqualFold(name, a.Name) {
			return hubTarget{repo: a.Repo, file: a.File, alias: &a}, nil
		}
	}
	if _, ok := civitaiID(name); ok {
		return hubTarget{}, fmt.Errorf("%q: a CivitAI model, not a Hugging Face one", name)
	}
	s := name
	for _, p := range []string{"https://", "http://"} {
		s = strings.TrimPrefix(s, p)
	}
	for _, p := range []string{"huggingface.co/", "hf.co/"} {
		s = strings.TrimPrefix(s, p)
	}
	segs := strings.Split(strings.TrimSuffix(s, "/"), "/")
	bad := fmt.Errorf("%q: want an alias (%s), a Hugging Face repository (org/name) or a file in one (org/name/path/file.safetensors)", name, aliasNames())
	if len(segs) < 2 {
		return hubTarget{}, bad
	}
	t := hubTarget{repo: segs[0] + "/" + segs[1]}
	if r, rev, ok := strings.Cut(segs[1], "@"); ok && len(segs) == 2 {
		t.repo, t.rev = segs[0]+"/"+r, rev
	}
	org, repoName, _ := strings.Cut(t.repo, "/")
	if !validRepoPart(org) || !validRepoPart(repoName) {
		return hubTarget{}, bad
	}
	rest := segs[2:]
	if len(rest) >= 2 && (rest[0] == "resolve" || rest[0] == "blob" || rest[0] == "tree") {
		t.rev, rest = rest[1], rest[2:]
	}
	if t.rev != "" && !fs.ValidPath(t.rev) {
		return hubTarget{}, bad
	}
	if len(rest) > 0 {
		t.file = strings.Join(rest, "/")
		if !fs.ValidPath(t.file) {
			return hubTarget{}, bad
		}
	}
	return t, nil
}

func aliasNames() string {
	var n []string
	for _, a := range pullAliases {
		n = append(n, a.Name)
	}
	return strings.Join(n, ", ")
}

// civitaiID reads "civitai:<versionId>", a CivitAI download URL
// (…/api/download/models/<versionId>) or a model page URL with
// ?modelVersionId=<versionId>.
func civitaiID(name string) (string, bool) {
	if id, ok := strings.CutPrefix(strings.ToLower(name), "civitai:"); ok {
		return id, true
	}
	if !strings.Contains(name, "civitai.com/") {
		return "", false
	}
	if _, q, ok := strings.Cut(name, "modelVersionId="); ok {
		id, _, _ := strings.Cut(q, "&")
		return id, true
	}
	if _, rest, ok := strings.Cut(name, "/api/download/models/"); ok {
		id, _, _ := strings.Cut(rest, "?")
		return id, true
	}
	return "", true // a civitai.com URL without a version: PullCivitai says what it wants
}

// Pull downloads a model and returns where it is.
//
// From the Hugging Face Hub (or the mirror $HF_ENDPOINT names) into
// HubCacheDir, in huggingface_hub's layout: name is an alias
// (PullAliases), "org/name" (the files a diffusers pipeline needs), or
// "org/name/path/in/repo" (one file). Files already in the cache are not
// fetched again; an interrupted download resumes; $HF_TOKEN (or the token
// file of `hf auth login`) is sent for gated repositories.
//
// From CivitAI: "civitai:<versionId>" (or a civitai.com URL naming the
// version) downloads the version's .safetensors checkpoint into
// DefaultModelDir() (a VAE into its vae/ folder), resumably, checked
// against CivitAI's sha256, with $CIVITAI_TOKEN for models that need a
// login. The file is then loaded by its path, or by its name where
// DefaultModelDir is searched.
//
// progress, if not nil, is called as bytes arrive.
func Pull(ctx context.Context, name string, progress func(PullProgress)) (*PullResult, error) {
	if id, ok := civitaiID(name); ok {
		var hp func(hub.Progress)
		if progress != nil {
			hp = func(p hub.Progress) { progress(PullProgress(p)) }
		}
		f, err := hub.PullCivitai(ctx, hub.CivitaiEndpoint(), os.Getenv("CIVITAI_TOKEN"), id, DefaultModelDir(), hp)
		if err != nil {
			return nil, err
		}
		return &PullResult{Repo: "civitai:" + f.VersionID, Path: f.Path, Files: []string{filepath.Base(f.Path)}}, nil
	}
	t, err := parseHubName(name)
	if err != nil {
		return nil, err
	}
	c := &hub.Client{}
	if progress != nil {
		c.Progress = func(p hub.Progress) { progress(PullProgress(p)) }
	}
	var got *hub.Pulled
	if t.file != "" {
		got, err = c.PullFile(ctx, t.repo, t.rev, t.file)
	} else {
		got, err = c.PullRepo(ctx, t.repo, t.rev)
	}
	if err != nil {
		return nil, err
	}
	res := &PullResult{Repo: got.Repo, Commit: got.Commit, Files: got.Files, Path: got.Dir}
	if t.file != "" {
		res.Path = filepath.Join(got.Dir, filepath.FromSlash(t.file))
	} else if p, ok := snapshotModel(got.Dir); ok {
		res.Path = p
	}
	return res, nil
}

// snapshotModel is what a model name of a whole repository loads: the
// snapshot folder when it holds model_index.json, else its one top-level
// .safetensors file.
func snapshotModel(dir string) (string, bool) {
	if fileExists(filepath.Join(dir, "model_index.json")) {
		return dir, true
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	var files []string
	for _, m := range matches {
		if fileExists(m) {
			files = append(files, m)
		}
	}
	if len(files) == 1 {
		return files[0], true
	}
	return "", false
}

// ResolveHub finds a model name in the Hugging Face cache (HubCacheDir),
// with no network access: an alias (its file, or the repository's
// diffusers snapshot when only that was downloaded), "org/name" (a
// diffusers snapshot, or a repository's single .safetensors file) or
// "org/name/path/file.safetensors". The snapshot is the one refs/main (or
// the named revision) points at. ok is false when the name is none of
// these or is not downloaded.
func (e *Engine) ResolveHub(name string) (path string, ok bool) { return resolveHub(name) }

func resolveHub(name string) (string, bool) {
	t, err := parseHubName(name)
	if err != nil {
		return "", false
	}
	dir, _, ok := hub.Snapshot(hub.CacheDir(), t.repo, t.rev)
	if !ok {
		return "", false
	}
	if t.file != "" {
		if p := filepath.Join(dir, filepath.FromSlash(t.file)); fileExists(p) {
			return p, true
		}
		if t.alias == nil {
			return "", false
		}
		if fileExists(filepath.Join(dir, "model_index.json")) {
			return dir, true
		}
		return "", false
	}
	return snapshotModel(dir)
}

// HubModel is a model in the Hugging Face cache.
type HubModel struct {
	// Name is what -m / Load takes: "org/name" for a diffusers pipeline,
	// "org/name/file.safetensors" for a file.
	Name   string
	Alias  string // the PullAliases name that resolves to it, if any
	Repo   string
	Commit string
	Path   string
	Size   int64 // bytes; for a pipeline, its files together
}

// ListHub lists the models in the Hugging Face cache, whoever downloaded
// them (darkroom pull, diffusers, huggingface-cli, ComfyUI-Manager): each
// snapshot with a model_index.json, and each .safetensors file outside a
// pipeline's component folders. Sorted by repository.
func ListHub() []HubModel {
	aliases := map[string]string{} // path → the alias resolving to it
	for _, a := range pullAliases {
		if p, ok := resolveHub(a.Name); ok {
			aliases[p] = a.Name
		}
	}
	var out []HubModel
	for _, c := range hub.List(hub.CacheDir()) {
		pipeline := c.Has("model_index.json")
		if pipeline {
			out = append(out, HubModel{Name: c.Repo, Alias: aliases[c.Dir], Repo: c.Repo, Commit: c.Commit, Path: c.Dir, Size: c.Size})
		}
		for _, f := range c.Files {
			if !strings.HasSuffix(f, ".safetensors") || (pipeline && strings.Contains(f, "/")) {
				continue
			}
			p := filepath.Join(c.Dir, filepath.FromSlash(f))
			st, err := os.Stat(p)
			if err != nil {
				continue
			}
			out = append(out, HubModel{Name: c.Repo + "/" + f, Alias: aliases[p], Repo: c.Repo, Commit: c.Commit, Path: p, Size: st.Size()})
		}
	}
	return out
}
