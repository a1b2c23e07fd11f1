package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/hub/hubtest"
)

const pullCommit = "fedcba9876543210fedcba9876543210fedcba98"

// fakeHubEnv starts a fake Hugging Face Hub holding the tiny SD1 pipeline
// as tiny/sd1 (and, gated behind the token hf_ok, as tiny/gated), and
// points HF_ENDPOINT and HF_HUB_CACHE at it and at a new cache.
func fakeHubEnv(t *testing.T) (cache string) {
	t.Helper()
	repo, err := hubtest.RepoFromDir(filepath.Join(tinyDir, "diffusers"), pullCommit)
	if err != nil {
		t.Fatal(err)
	}
	gated := *repo
	gated.Token = "hf_ok"
	srv := hubtest.New(t, map[string]*hubtest.Repo{"tiny/sd1": repo, "tiny/gated": &gated})
	cache = t.TempDir()
	t.Setenv("HF_ENDPOINT", srv.URL())
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", filepath.Join(cache, "no-token"))
	t.Setenv("CIVITAI_ENDPOINT", "http://127.0.0.1:1") // no test reaches civitai.com
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	return cache
}

// TestPullGenLs: pull a pipeline, generate with it by its repository
// name, and find it in ls; a second pull fetches nothing.
func TestPullGenLs(t *testing.T) {
	cache := fakeHubEnv(t)
	stdout, stderr, code := runCmd(t, "pull", "tiny/sd1")
	snap := filepath.Join(cache, "models--tiny--sd1", "snapshots", pullCommit)
	if code != 0 || !strings.Contains(stdout, snap) || !strings.Contains(stderr, "unet/diffusion_pytorch_model.safetensors: done") {
		t.Fatalf("pull: code %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	out := filepath.Join(t.TempDir(), "hub.png")
	if _, stderr, code := runCmd(t, "gen", "-m", "tiny/sd1", "--device", "cpu", "-p", "x", "--steps", "1", "-W", "32", "-H", "32", "-o", out); code != 0 {
		t.Fatalf("gen -m tiny/sd1: code %d: %s", code, stderr)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
	stdout, _, code = runCmd(t, "ls", "--models", t.TempDir())
	if code != 0 || !strings.Contains(stdout, "tiny/sd1") || !strings.Contains(stdout, snap) || !strings.Contains(stdout, "built into the binary") {
		t.Errorf("ls: code %d\n%s", code, stdout)
	}
	_, stderr, code = runCmd(t, "pull", "tiny/sd1")
	if code != 0 || strings.Contains(stderr, "done") || !strings.Contains(stderr, "in the cache") {
		t.Errorf("second pull: code %d\n%s", code, stderr)
	}
}

// TestPullGated: a gated repository fails with the HF_TOKEN hint, and
// pulls once HF_TOKEN is set.
func TestPullGated(t *testing.T) {
	fakeHubEnv(t)
	_, stderr, code := runCmd(t, "pull", "tiny/gated/unet/config.json")
	if code != 1 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "set HF_TOKEN") {
		t.Errorf("no token: code %d: %s", code, stderr)
	}
	t.Setenv("HF_TOKEN", "hf_ok")
	if _, stderr, code := runCmd(t, "pull", "tiny/gated/unet/config.json"); code != 0 {
		t.Errorf("with HF_TOKEN: code %d: %s", code, stderr)
	}
}

func TestPullRefuses(t *testing.T) {
	fakeHubEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pull"}, "needs at least one NAME"},
		{[]string{"pull", "civitai:42x"}, "want a model version id"},
		{[]string{"pull", "civitai:4201"}, "connect"}, // nothing listens at CIVITAI_ENDPOINT
		{[]string{"pull", "noslash"}, "want an alias (sd15"},
		{[]string{"pull", "tiny/sd1/nope.safetensors"}, "404"},
	} {
		if _, stderr, code := runCmd(t, c.args...); code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", c.args, code, stderr, c.want)
		}
	}
}

// TestPullBarLines: off a terminal a large download prints a line when it
// starts (saying where a resumed one resumes), one every 10% and one when
// done; a small file one line.
func TestPullBarLines(t *testing.T) {
	var b strings.Builder
	bar := newPullBar(&b)
	const total = 100 << 20
	for done := int64(30 << 20); done <= total; done += 5 << 20 {
		bar.event(engine.PullProgress{File: "big.safetensors", Index: 1, Count: 2, Done: done, Total: total})
	}
	bar.event(engine.PullProgress{File: "big.safetensors", Index: 1, Count: 2, Done: total, Total: total, Finished: true})
	bar.event(engine.PullProgress{File: "small.json", Index: 2, Count: 2, Total: 10})
	bar.event(engine.PullProgress{File: "small.json", Index: 2, Count: 2, Done: 10, Total: 10, Finished: true})
	bar.end()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{"[1/2] big.safetensors: 100.0 MiB, resuming at 30.0 MiB", "[1/2] big.safetensors: 40%", "[1/2] big.safetensors: 50%",
		"[1/2] big.safetensors: 60%", "[1/2] big.safetensors: 70%", "[1/2] big.safetensors: 80%", "[1/2] big.safetensors: 90%",
		"[1/2] big.safetensors: done", "[2/2] small.json: done"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want %q…", i, lines[i], w)
		}
	}
}

// TestPullCivitai: civitai:ID lands in the default model folder and gen
// -m finds it there by name.
func TestPullCivitai(t *testing.T) {
	fakeHubEnv(t)
	single, err := os.ReadFile(filepath.Join(tinyDir, "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	c := hubtest.NewCivitai(t, map[string]*hubtest.CivitaiVersion{"42": {Type: "Checkpoint", Name: "tiny_v1.safetensors", Body: single}})
	t.Setenv("CIVITAI_ENDPOINT", c.URL())
	stdout, stderr, code := runCmd(t, "pull", "civitai:42")
	want := filepath.Join(os.Getenv("XDG_DATA_HOME"), "darkroom", "models", "tiny_v1.safetensors")
	if code != 0 || stdout != "civitai:42: "+want+"\n" {
		t.Fatalf("pull: code %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	out := filepath.Join(t.TempDir(), "c.png")
	if _, stderr, code := runCmd(t, "gen", "-m", "tiny_v1", "--device", "cpu", "-p", "x", "--steps", "1", "-W", "32", "-H", "32", "-o", out); code != 0 {
		t.Errorf("gen -m tiny_v1: code %d: %s", code, stderr)
	}
}
