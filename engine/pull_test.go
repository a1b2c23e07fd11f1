package engine

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/hub/hubtest"
)

const hubCommit = "89abcdef0123456789abcdef0123456789abcdef"

// hubCache points HF_HUB_CACHE at a new folder and keeps tokens and the
// endpoint of the environment out of the test.
func hubCache(t *testing.T) string {
	t.Helper()
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", filepath.Join(cache, "no-token"))
	t.Setenv("HF_ENDPOINT", "http://127.0.0.1:1") // nothing listens: no test reaches the internet
	t.Setenv("CIVITAI_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("CIVITAI_TOKEN", "")
	return cache
}

// putHubRepo writes files into cache as huggingface_hub does: contents in
// blobs/<sha256>, relative symlinks in snapshots/<commit>/, refs/main.
func putHubRepo(t *testing.T, cache, repo string, files map[string][]byte) string {
	t.Helper()
	root := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	snap := filepath.Join(root, "snapshots", hubCommit)
	for p, b := range files {
		blob := filepath.Join(root, "blobs", hubtest.SHA256(b))
		link := filepath.Join(snap, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blob, b, 0o644); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(filepath.Dir(link), blob)
		if err := os.Symlink(rel, link); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "refs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "refs", "main"), []byte(hubCommit), 0o644); err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestParseHubName(t *testing.T) {
	for _, c := range []struct{ in, repo, rev, file string }{
		{"sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "", "v1-5-pruned-emaonly.safetensors"},
		{"SDXL", "stabilityai/stable-diffusion-xl-base-1.0", "", "sd_xl_base_1.0.safetensors"},
		{"sdxl-vae-fp16-fix", "madebyollin/sdxl-vae-fp16-fix", "", ""},
		{"taesd", "madebyollin/taesd", "", "taesd_decoder.safetensors"},
		{"org/name", "org/name", "", ""},
		{"org/name@v2", "org/name", "v2", ""},
		{"org/name/unet/x.safetensors", "org/name", "", "unet/x.safetensors"},
		{"https://huggingface.co/org/name/blob/main/x.safetensors", "org/name", "main", "x.safetensors"},
		{"hf.co/org/name/resolve/abc/x.safetensors", "org/name", "abc", "x.safetensors"},
		{"https://huggingface.co/org/name/tree/dev", "org/name", "dev", ""},
		{"huggingface.co/org/name/", "org/name", "", ""},
	} {
		got, err := parseHubName(c.in)
		if err != nil || got.repo != c.repo || got.rev != c.rev || got.file != c.file {
			t.Errorf("%q → %+v, %v; want %s @%s %s", c.in, got, err, c.repo, c.rev, c.file)
		}
	}
	for _, bad := range []string{"", "sd", "org", "/abs/path", "./org/name", "../x/y", "org/na me", "org/a--b", "org/name/../x", "org/name/a//b", "org/name@..", "org/name/tree/..", "org/name/resolve/../x.safetensors"} {
		if got, err := parseHubName(bad); err == nil {
			t.Errorf("%q accepted: %+v", bad, got)
		}
	}
	if _, err := parseHubName("civitai:12345"); err == nil || !strings.Contains(err.Error(), "CivitAI") {
		t.Errorf("civitai: %v", err)
	}
	for in, want := range map[string]string{
		"civitai:12345": "12345", "CivitAI:7": "7",
		"https://civitai.com/api/download/models/4201?type=Model":  "4201",
		"https://civitai.com/models/1000/name?modelVersionId=2000": "2000",
	} {
		if got, ok := civitaiID(in); !ok || got != want {
			t.Errorf("civitaiID(%q) = %q, %v; want %s", in, got, ok, want)
		}
	}
	if _, ok := civitaiID("org/name"); ok {
		t.Error("org/name taken for CivitAI")
	}
}

// TestPullCivitai pulls a checkpoint version from a fake CivitAI into the
// default model folder, where Resolve finds it by name.
func TestPullCivitai(t *testing.T) {
	hubCache(t)
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	single, err := os.ReadFile(filepath.Join("..", "testdata", "reference", "sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	c := hubtest.NewCivitai(t, map[string]*hubtest.CivitaiVersion{"42": {Type: "Checkpoint", Name: "tiny_v1.safetensors", Body: single, Token: "key"}})
	t.Setenv("CIVITAI_ENDPOINT", c.URL())
	t.Setenv("CIVITAI_TOKEN", "key")
	res, err := Pull(context.Background(), "civitai:42", nil)
	want := filepath.Join(data, "darkroom", "models", "tiny_v1.safetensors")
	if err != nil || res.Path != want || res.Repo != "civitai:42" {
		t.Fatalf("Pull = %+v, %v; want %s", res, err, want)
	}
	e, err := Open(Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if p, err := e.Resolve("tiny_v1"); err != nil || p != want {
		t.Errorf("Resolve(tiny_v1) = %q, %v", p, err)
	}
}

// TestResolveHub finds models in a cache written as huggingface_hub writes
// one, and Engine.Resolve uses it after the model directories.
func TestResolveHub(t *testing.T) {
	cache := hubCache(t)
	sd15 := putHubRepo(t, cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", map[string][]byte{"v1-5-pruned-emaonly.safetensors": []byte("sd15")})
	// SDXL as diffusers downloads it: the pipeline, not the single file.
	sdxl := putHubRepo(t, cache, "stabilityai/stable-diffusion-xl-base-1.0", map[string][]byte{
		"model_index.json": []byte("{}"), "unet/diffusion_pytorch_model.safetensors": []byte("unet")})
	vae := putHubRepo(t, cache, "org/vae", map[string][]byte{"config.json": []byte("{}"), "vae.safetensors": []byte("vae")})
	two := putHubRepo(t, cache, "org/two", map[string][]byte{"a.safetensors": []byte("a"), "b.safetensors": []byte("b")})

	e, err := Open(Options{Device: "cpu", ModelDirs: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, c := range []struct{ name, want string }{
		{"sd15", filepath.Join(sd15, "v1-5-pruned-emaonly.safetensors")},
		{"stable-diffusion-v1-5/stable-diffusion-v1-5", filepath.Join(sd15, "v1-5-pruned-emaonly.safetensors")},
		{"sdxl", sdxl},
		{"stabilityai/stable-diffusion-xl-base-1.0", sdxl},
		{"org/vae", filepath.Join(vae, "vae.safetensors")},
		{"org/two/b.safetensors", filepath.Join(two, "b.safetensors")},
		{"hf.co/org/two/blob/main/a.safetensors", filepath.Join(two, "a.safetensors")},
		{"org/two", ""},                                    // two files: which?
		{"org/two/c.safetensors", ""},                      // not downloaded
		{"stabilityai/stable-diffusion-xl-base-1.0/x", ""}, // a file, not the pipeline
		{"taesd", ""},
		{"org/none", ""},
	} {
		got, ok := e.ResolveHub(c.name)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("ResolveHub(%q) = %q, %v; want %q", c.name, got, ok, c.want)
		}
	}
	if p, err := e.Resolve("sd15"); err != nil || p != filepath.Join(sd15, "v1-5-pruned-emaonly.safetensors") {
		t.Errorf("Resolve(sd15) = %q, %v", p, err)
	}
	// A model of that name in the model directories comes first.
	local := filepath.Join(e.ModelDirs()[0], "sd15.safetensors")
	if err := os.WriteFile(local, []byte("local"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := e.Resolve("sd15"); err != nil || p != local {
		t.Errorf("Resolve(sd15) with a local sd15.safetensors = %q, %v", p, err)
	}
	if _, err := e.Resolve("org/two"); err == nil {
		t.Error("Resolve(org/two) found one of two files")
	}

	list := ListHub()
	var names []string
	for _, m := range list {
		names = append(names, m.Name+"="+m.Alias)
	}
	want := "org/two/a.safetensors= org/two/b.safetensors= org/vae/vae.safetensors= " +
		"stabilityai/stable-diffusion-xl-base-1.0=sdxl stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors=sd15"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("ListHub:\n%s\nwant\n%s", got, want)
	}
}

// TestPullThenLoad pulls the tiny SD1 pipeline from a fake hub through
// HF_ENDPOINT, then loads it by its repository name: from the cache,
// through the snapshot's symlinks.
func TestPullThenLoad(t *testing.T) {
	hubCache(t)
	repo, err := hubtest.RepoFromDir(filepath.Join("..", "testdata", "reference", "sd1-tiny-a", "diffusers"), hubCommit)
	if err != nil {
		t.Fatal(err)
	}
	srv := hubtest.New(t, map[string]*hubtest.Repo{"tiny/sd1": repo})
	t.Setenv("HF_ENDPOINT", srv.URL())
	var finished int
	res, err := Pull(context.Background(), "tiny/sd1", func(p PullProgress) {
		if p.Finished && p.Count > 0 {
			finished++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit != hubCommit || len(res.Files) != len(repo.Files) || finished != len(repo.Files) {
		t.Errorf("pulled %+v, %d finished; the repo has %d files", res, finished, len(repo.Files))
	}
	e, err := Open(Options{Device: "cpu", ModelDirs: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if p, err := e.Resolve("tiny/sd1"); err != nil || p != res.Path {
		t.Fatalf("Resolve = %q, %v; want %q", p, err, res.Path)
	}
	m, err := e.Load(context.Background(), "tiny/sd1")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Parts()) == 0 {
		t.Error("loaded a model of no parts")
	}
	// The pulled pipeline is listed with the user's models (the TUI's
	// picker reads ListModels).
	if i := slices.IndexFunc(e.ListModels(), func(m ModelEntry) bool { return m.Name == "tiny/sd1" && m.Path == res.Path }); i < 0 {
		t.Errorf("ListModels lacks tiny/sd1: %v", e.ListModels())
	}

	// One file of it, by path.
	one, err := Pull(context.Background(), "tiny/sd1/unet/config.json", nil)
	if err != nil || one.Path != filepath.Join(res.Path, "unet", "config.json") {
		t.Errorf("one file: %+v, %v", one, err)
	}
}
