// Package hub downloads models from the Hugging Face Hub into the cache
// that huggingface_hub (and so diffusers, transformers and ComfyUI-Manager)
// uses, and finds the models already in it. It imports only the standard
// library.
//
// The cache layout is huggingface_hub's:
//
//	$HF_HUB_CACHE/models--{org}--{name}/
//	    blobs/<etag>                      file contents, named by the hub's
//	                                      ETag (sha256 for LFS files, the git
//	                                      blob id otherwise)
//	    blobs/<etag>.incomplete           a download in progress (resumed)
//	    snapshots/<commit>/<path>         relative symlinks to ../../blobs/<etag>
//	    refs/main                         the commit main pointed at
package hub

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Home is huggingface_hub's home folder: $HF_HOME, else
// $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
func Home() string {
	if h := os.Getenv("HF_HOME"); h != "" {
		return expandHome(h)
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(expandHome(x), "huggingface")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".cache", "huggingface")
	}
	return filepath.Join(home, ".cache", "huggingface")
}

// CacheDir is the hub cache: $HF_HUB_CACHE, else the legacy
// $HUGGINGFACE_HUB_CACHE, else Home()/hub, as huggingface_hub reads them.
func CacheDir() string {
	for _, v := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := os.Getenv(v); d != "" {
			return expandHome(d)
		}
	}
	return filepath.Join(Home(), "hub")
}

// Token is the access token huggingface_hub would send: $HF_TOKEN, else the
// legacy $HUGGING_FACE_HUB_TOKEN, else the contents of $HF_TOKEN_PATH
// (default Home()/token, written by `hf auth login`), trimmed; "" when
// there is none.
func Token() string {
	for _, v := range []string{"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} {
		if t := cleanToken(os.Getenv(v)); t != "" {
			return t
		}
	}
	path := os.Getenv("HF_TOKEN_PATH")
	if path == "" {
		path = filepath.Join(Home(), "token")
	}
	b, err := os.ReadFile(expandHome(path))
	if err != nil {
		return ""
	}
	return cleanToken(string(b))
}

func cleanToken(s string) string {
	return strings.TrimSpace(strings.NewReplacer("\r", "", "\n", "").Replace(s))
}

// DefaultEndpoint is the hub's address when $HF_ENDPOINT is not set.
const DefaultEndpoint = "https://huggingface.co"

// Endpoint is $HF_ENDPOINT (a mirror) without a trailing slash, else
// DefaultEndpoint.
func Endpoint() string {
	if e := os.Getenv("HF_ENDPOINT"); e != "" {
		return strings.TrimRight(e, "/")
	}
	return DefaultEndpoint
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// RepoDir is the cache folder of a model repository ("org/name" →
// cache/models--org--name).
func RepoDir(cache, repo string) string {
	return filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
}

// isCommit reports whether rev is a full commit hash.
func isCommit(rev string) bool {
	if len(rev) != 40 {
		return false
	}
	for _, c := range rev {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// Snapshot finds the local snapshot of repo at rev ("" means main): the
// commit refs/<rev> names, or rev itself when it is a commit hash. When
// refs/main is missing (files fetched by commit) the most recently changed
// snapshot is taken. ok is false when there is none.
func Snapshot(cache, repo, rev string) (dir, commit string, ok bool) {
	if rev == "" {
		rev = "main"
	}
	root := RepoDir(cache, repo)
	if !fs.ValidPath(rev) {
		return "", "", false
	}
	if isCommit(rev) {
		commit = rev
	} else if b, err := os.ReadFile(filepath.Join(root, "refs", filepath.FromSlash(rev))); err == nil {
		commit = strings.TrimSpace(string(b))
	} else if rev == "main" {
		commit = newestSnapshot(filepath.Join(root, "snapshots"))
	}
	if commit == "" || strings.ContainsAny(commit, `/\`) {
		return "", "", false
	}
	dir = filepath.Join(root, "snapshots", commit)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", "", false
	}
	return dir, commit, true
}

func newestSnapshot(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	best, bestTime := "", int64(0)
	for _, de := range entries {
		info, err := de.Info()
		if err != nil || !de.IsDir() {
			continue
		}
		if t := info.ModTime().UnixNano(); best == "" || t > bestTime {
			best, bestTime = de.Name(), t
		}
	}
	return best
}

// CachedRepo is a model repository found in the cache.
type CachedRepo struct {
	Repo   string // "org/name"
	Commit string
	Dir    string // the snapshot folder
	// Files are the snapshot's files whose blob is present, relative to
	// Dir with forward slashes, sorted.
	Files []string
	Size  int64 // the bytes of Files
}

// Has reports whether the snapshot holds file (a path relative to Dir).
func (c CachedRepo) Has(file string) bool {
	_, found := slices.BinarySearch(c.Files, file)
	return found
}

// List lists the model repositories in the cache with a snapshot, sorted
// by repo id. Dataset and space repositories are skipped, and so are
// dangling links (a blob deleted by hand).
func List(cache string) []CachedRepo {
	entries, err := os.ReadDir(cache)
	if err != nil {
		return nil
	}
	var out []CachedRepo
	for _, de := range entries {
		name, ok := strings.CutPrefix(de.Name(), "models--")
		if !ok || !de.IsDir() {
			continue
		}
		repo := strings.ReplaceAll(name, "--", "/")
		dir, commit, ok := Snapshot(cache, repo, "")
		if !ok {
			continue
		}
		c := CachedRepo{Repo: repo, Commit: commit, Dir: dir}
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			st, err := os.Stat(p) // follows the link to the blob
			if err != nil || !st.Mode().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return nil
			}
			c.Files = append(c.Files, filepath.ToSlash(rel))
			c.Size += st.Size()
			return nil
		})
		slices.Sort(c.Files)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b CachedRepo) int { return strings.Compare(a.Repo, b.Repo) })
	return out
}

// link points snapshot (a file path) at blob with a relative symlink, as
// huggingface_hub does; where symlinks are not allowed the blob is copied.
func link(blob, snapshot string) error {
	if err := os.MkdirAll(filepath.Dir(snapshot), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(snapshot), blob)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(snapshot); err == nil && cur == rel {
		return nil
	}
	if err := os.Remove(snapshot); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(rel, snapshot); err == nil {
		return nil
	}
	return copyFile(blob, snapshot)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeRef records that rev points at commit (refs/<rev>).
func writeRef(cache, repo, rev, commit string) error {
	if rev == "" || rev == commit {
		return nil
	}
	if !fs.ValidPath(rev) {
		return fmt.Errorf("%q: not a revision", rev)
	}
	p := filepath.Join(RepoDir(cache, repo), "refs", filepath.FromSlash(rev))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if b, err := os.ReadFile(p); err == nil && string(b) == commit {
		return nil
	}
	return os.WriteFile(p, []byte(commit), 0o644)
}
