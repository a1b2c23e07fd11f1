// Package hubtest is a stand-in for the Hugging Face Hub, for tests only:
// an HTTP server answering the API darkroom's engine/hub uses, and a
// separate CDN server the hub redirects large files to.
//
// The hub answers GET /api/models/{org}/{name}/revision/{rev} ({"sha": …}),
// GET /api/models/{org}/{name}/tree/{rev}?recursive=true (two entries a
// page, with a Link rel="next" header), and HEAD/GET
// /{org}/{name}/resolve/{rev}/{path}: small files it serves itself with
// ETag = their git blob id; LFS files get a 302 to the CDN carrying
// X-Linked-Etag (the sha256) and X-Linked-Size; both carry X-Repo-Commit.
// A gated repository (Repo.Token set) answers 401 without
// "Authorization: Bearer <token>", as does an unknown one. The CDN
// honours Range requests and can be told to corrupt bodies, drop the
// connection part-way or ignore ranges.
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Repo is a repository at one commit.
type Repo struct {
	Commit string
	Files  map[string][]byte // by path in the repository
	LFS    map[string]bool   // the paths stored in LFS (served by the CDN)
	Token  string            // non-empty: gated, this token is required
}

// RepoFromDir makes a Repo of the files below dir; .safetensors files are
// LFS files.
func RepoFromDir(dir, commit string) (*Repo, error) {
	r := &Repo{Commit: commit, Files: map[string][]byte{}, LFS: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		r.Files[rel] = b
		r.LFS[rel] = strings.HasSuffix(rel, ".safetensors")
		return nil
	})
	return r, err
}

// GitOID is the git blob id of b (the hub's ETag of a small file).
func GitOID(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 is the hex sha256 of b (the hub's X-Linked-Etag of an LFS file).
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Server is a running fake hub and CDN.
type Server struct {
	Hub, CDN *httptest.Server
	repos    map[string]*Repo
	blobs    map[string][]byte

	mu          sync.Mutex
	hubAuth     []string
	cdnAuth     []string
	cdnRanges   []string
	corrupt     bool
	breakAfter  int64
	ignoreRange bool
}

// New starts a hub holding repos (by "org/name"); both servers close at
// the end of the test.
func New(t testing.TB, repos map[string]*Repo) *Server {
	s := &Server{repos: repos, blobs: map[string][]byte{}}
	for _, r := range repos {
		for p, b := range r.Files {
			if r.LFS[p] {
				s.blobs[SHA256(b)] = b
			}
		}
	}
	s.CDN = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	t.Cleanup(s.CDN.Close)
	s.Hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	t.Cleanup(s.Hub.Close)
	return s
}

// URL is the hub's address (what HF_ENDPOINT takes).
func (s *Server) URL() string { return s.Hub.URL }

// SetCorrupt makes the CDN flip a byte of every body it sends.
func (s *Server) SetCorrupt(on bool) { s.mu.Lock(); s.corrupt = on; s.mu.Unlock() }

// BreakNext makes the CDN's next GET send n bytes of the body, then drop
// the connection.
func (s *Server) BreakNext(n int64) { s.mu.Lock(); s.breakAfter = n; s.mu.Unlock() }

// SetIgnoreRange makes the CDN answer range requests with the whole body.
func (s *Server) SetIgnoreRange(on bool) { s.mu.Lock(); s.ignoreRange = on; s.mu.Unlock() }

// HubAuth returns the Authorization headers the hub received, in order.
func (s *Server) HubAuth() []string { s.mu.Lock(); defer s.mu.Unlock(); return slices.Clone(s.hubAuth) }

// CDNAuth returns the Authorization headers the CDN received.
func (s *Server) CDNAuth() []string { s.mu.Lock(); defer s.mu.Unlock(); return slices.Clone(s.cdnAuth) }

// CDNRanges returns the Range header of each GET the CDN received ("" for
// none); its length is the number of GETs.
func (s *Server) CDNRanges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cdnRanges)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	b, ok := s.blobs[strings.TrimPrefix(r.URL.Path, "/cdn/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	s.cdnAuth = append(s.cdnAuth, r.Header.Get("Authorization"))
	var cut int64
	if r.Method == http.MethodGet {
		s.cdnRanges = append(s.cdnRanges, r.Header.Get("Range"))
		cut, s.breakAfter = s.breakAfter, 0
	}
	corrupt, ignoreRange := s.corrupt, s.ignoreRange
	s.mu.Unlock()
	if corrupt {
		b = slices.Clone(b)
		b[len(b)/2] ^= 0xff
	}
	if ignoreRange {
		r.Header.Del("Range")
	}
	if cut > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b[:min(cut, int64(len(b)))])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(b)))
}

func (s *Server) repo(w http.ResponseWriter, r *http.Request, id string) *Repo {
	s.mu.Lock()
	s.hubAuth = append(s.hubAuth, r.Header.Get("Authorization"))
	s.mu.Unlock()
	repo, ok := s.repos[id]
	if !ok || (repo.Token != "" && r.Header.Get("Authorization") != "Bearer "+repo.Token) {
		// The hub answers 401 for a gated repository and for one that
		// does not exist alike.
		w.Header().Set("X-Error-Code", "GatedRepo")
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return nil
	}
	return repo
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/api/models/"); ok {
		s.serveAPI(w, r, rest)
		return
	}
	// /{org}/{name}/resolve/{rev}/{path...}
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 5)
	if len(parts) != 5 || parts[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	repo := s.repo(w, r, parts[0]+"/"+parts[1])
	if repo == nil {
		return
	}
	b, ok := repo.Files[parts[4]]
	if !ok || (parts[3] != "main" && parts[3] != repo.Commit) {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		http.NotFound(w, r)
		return
	}
	w.Header().Set("X-Repo-Commit", repo.Commit)
	if repo.LFS[parts[4]] {
		w.Header().Set("X-Linked-Etag", `"`+SHA256(b)+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(b)))
		w.Header().Set("ETag", `"`+GitOID([]byte("pointer "+parts[4]))+`"`) // the pointer's, not the file's
		w.Header().Set("Location", s.CDN.URL+"/cdn/"+SHA256(b))
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+GitOID(b)+`"`)
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(b)))
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.SplitN(rest, "/", 4) // org, name, revision|tree, rev
	if len(parts) != 4 {
		http.NotFound(w, r)
		return
	}
	repo := s.repo(w, r, parts[0]+"/"+parts[1])
	if repo == nil {
		return
	}
	if rev := parts[3]; rev != "main" && rev != repo.Commit {
		w.Header().Set("X-Error-Code", "RevisionNotFound")
		http.Error(w, "revision not found", http.StatusNotFound)
		return
	}
	switch parts[2] {
	case "revision":
		json.NewEncoder(w).Encode(map[string]any{"id": parts[0] + "/" + parts[1], "sha": repo.Commit})
	case "tree":
		if r.URL.Query().Get("recursive") != "true" {
			http.Error(w, "want recursive=true", http.StatusBadRequest)
			return
		}
		var paths []string
		for p := range repo.Files {
			paths = append(paths, p)
		}
		slices.Sort(paths)
		start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
		start = min(max(start, 0), len(paths))
		end := min(start+2, len(paths))
		if end < len(paths) {
			w.Header().Set("Link", fmt.Sprintf(`<%s%s?recursive=true&cursor=%d>; rel="next"`, s.Hub.URL, r.URL.Path, end))
		}
		page := []map[string]any{}
		for _, p := range paths[start:end] {
			b := repo.Files[p]
			e := map[string]any{"type": "file", "path": p, "size": len(b), "oid": GitOID(b)}
			if repo.LFS[p] {
				e["lfs"] = map[string]any{"oid": SHA256(b), "size": len(b), "pointerSize": 134}
			}
			page = append(page, e)
		}
		json.NewEncoder(w).Encode(page)
	default:
		http.NotFound(w, r)
	}
}

// CivitaiVersion is a model version on the fake CivitAI.
type CivitaiVersion struct {
	Type   string // "Checkpoint", "VAE", "LORA", ...
	Name   string // the file's name
	Body   []byte
	SHA256 string // "" means the body's
	Token  string // non-empty: downloads need this API key
}

// Civitai is a running fake CivitAI: GET /api/v1/model-versions/{id}
// (with a decoy .ckpt file listed before the .safetensors one) and GET
// /api/download/models/{id}, which checks the API key and redirects to a
// separate storage server that honours Range requests.
type Civitai struct {
	API, Storage *httptest.Server

	mu          sync.Mutex
	apiAuth     []string
	storageAuth []string
	ranges      []string
}

// NewCivitai starts a fake CivitAI holding versions (by id).
func NewCivitai(t testing.TB, versions map[string]*CivitaiVersion) *Civitai {
	c := &Civitai{}
	c.Storage = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := versions[strings.TrimPrefix(r.URL.Path, "/file/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		c.mu.Lock()
		c.storageAuth = append(c.storageAuth, r.Header.Get("Authorization"))
		c.ranges = append(c.ranges, r.Header.Get("Range"))
		c.mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(v.Body)))
	}))
	t.Cleanup(c.Storage.Close)
	c.API = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.apiAuth = append(c.apiAuth, r.Header.Get("Authorization"))
		c.mu.Unlock()
		if id, ok := strings.CutPrefix(r.URL.Path, "/api/v1/model-versions/"); ok {
			v, ok := versions[id]
			if !ok {
				http.NotFound(w, r)
				return
			}
			sum := v.SHA256
			if sum == "" {
				sum = strings.ToUpper(SHA256(v.Body))
			}
			json.NewEncoder(w).Encode(map[string]any{
				"id": id, "name": "v1.0", "model": map[string]any{"name": "Model " + id, "type": v.Type},
				"files": []map[string]any{
					{"name": strings.TrimSuffix(v.Name, ".safetensors") + ".ckpt", "sizeKB": 1, "primary": false,
						"downloadUrl": c.API.URL + "/api/download/models/" + id + "?type=Pickle", "hashes": map[string]any{"SHA256": "00"}},
					{"name": v.Name, "sizeKB": float64(len(v.Body)) / 1024, "primary": true,
						"downloadUrl": c.API.URL + "/api/download/models/" + id, "hashes": map[string]any{"SHA256": sum}},
				},
			})
			return
		}
		if id, ok := strings.CutPrefix(r.URL.Path, "/api/download/models/"); ok {
			v, ok := versions[id]
			if !ok {
				http.NotFound(w, r)
				return
			}
			if v.Token != "" && r.Header.Get("Authorization") != "Bearer "+v.Token {
				http.Error(w, `{"error":"Unauthorized"}`, http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, c.Storage.URL+"/file/"+id, http.StatusTemporaryRedirect)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(c.API.Close)
	return c
}

// URL is the fake's address (what CIVITAI_ENDPOINT takes).
func (c *Civitai) URL() string { return c.API.URL }

// APIAuth returns the Authorization headers the API server received.
func (c *Civitai) APIAuth() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.apiAuth)
}

// StorageAuth returns the Authorization headers the storage server received.
func (c *Civitai) StorageAuth() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.storageAuth)
}

// Ranges returns the Range header of each storage GET ("" for none).
func (c *Civitai) Ranges() []string { c.mu.Lock(); defer c.mu.Unlock(); return slices.Clone(c.ranges) }
