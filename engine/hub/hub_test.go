package hub

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/hub/hubtest"
)

var (
	gitOID = hubtest.GitOID
	sha    = hubtest.SHA256
)

const commitA = "0123456789abcdef0123456789abcdef01234567"

func weights(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// diffusersRepo is a pipeline repository as the hub holds one: plain and
// fp16 weights, a .bin copy, onnx and flax files, a safety checker and a
// single-file checkpoint at the top level.
func diffusersRepo() *hubtest.Repo {
	files := map[string][]byte{
		"model_index.json": []byte(`{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
			"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
			"text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
			"scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
			"feature_extractor": ["transformers", "CLIPImageProcessor"], "image_encoder": [null, null]}`),
		"README.md":                                     []byte("# a model\n"),
		"v1-5-pruned-emaonly.safetensors":               weights(3000, 1),
		"unet/config.json":                              []byte(`{"sample_size": 64}`),
		"unet/diffusion_pytorch_model.safetensors":      weights(5000, 2),
		"unet/diffusion_pytorch_model.fp16.safetensors": weights(2500, 3),
		"unet/diffusion_pytorch_model.bin":              weights(100, 4),
		"unet/diffusion_flax_model.msgpack":             weights(100, 5),
		"vae/config.json":                               []byte(`{"latent_channels": 4}`),
		"vae/diffusion_pytorch_model.fp16.safetensors":  weights(1200, 6),
		"vae/diffusion_pytorch_model.bf16.safetensors":  weights(1200, 7),
		"text_encoder/config.json":                      []byte(`{}`),
		"text_encoder/model.safetensors":                weights(1500, 8),
		"text_encoder/onnx/model.onnx":                  weights(100, 9),
		"tokenizer/vocab.json":                          []byte(`{"a": 0}`),
		"tokenizer/merges.txt":                          []byte("#version: 0.2\n"),
		"tokenizer/tokenizer_config.json":               []byte(`{}`),
		"scheduler/scheduler_config.json":               []byte(`{"num_train_timesteps": 1000}`),
		"safety_checker/config.json":                    []byte(`{}`),
		"safety_checker/model.safetensors":              weights(900, 10),
		"feature_extractor/preprocessor_config.json":    []byte(`{}`),
	}
	lfs := map[string]bool{}
	for p := range files {
		if !strings.HasSuffix(p, ".json") && !strings.HasSuffix(p, ".txt") && !strings.HasSuffix(p, ".md") {
			lfs[p] = true
		}
	}
	return &hubtest.Repo{Commit: commitA, Files: files, LFS: lfs}
}

// client talks to f, writes into cache and finds no token in the
// environment.
func client(t *testing.T, f *hubtest.Server, cache string) *Client {
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", filepath.Join(cache, "no-token"))
	return &Client{Endpoint: f.URL(), CacheDir: cache}
}

// TestPullRepoLayout pulls a pipeline repository and checks the choice of
// files and the cache as huggingface_hub writes it: blobs named by the
// sha256 (LFS) or git blob id, snapshot entries that are relative symlinks
// to them, refs/main holding the commit, no .incomplete left.
func TestPullRepoLayout(t *testing.T) {
	f := hubtest.New(t, map[string]*hubtest.Repo{"org/model": diffusersRepo()})
	cache := t.TempDir()
	var events []Progress
	c := client(t, f, cache)
	c.Progress = func(p Progress) { events = append(events, p) }
	got, err := c.PullRepo(context.Background(), "org/model", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"feature_extractor/preprocessor_config.json",
		"model_index.json",
		"scheduler/scheduler_config.json",
		"text_encoder/config.json",
		"text_encoder/model.safetensors",
		"tokenizer/merges.txt",
		"tokenizer/tokenizer_config.json",
		"tokenizer/vocab.json",
		"unet/config.json",
		"unet/diffusion_pytorch_model.safetensors",
		"vae/config.json",
		"vae/diffusion_pytorch_model.fp16.safetensors",
	}
	if !slices.Equal(got.Files, want) {
		t.Errorf("pulled\n%q\nwant\n%q", got.Files, want)
	}
	root := filepath.Join(cache, "models--org--model")
	if got.Commit != commitA || got.Dir != filepath.Join(root, "snapshots", commitA) {
		t.Errorf("commit %s dir %s", got.Commit, got.Dir)
	}
	if b, err := os.ReadFile(filepath.Join(root, "refs", "main")); err != nil || string(b) != commitA {
		t.Errorf("refs/main = %q, %v; want the commit without a newline", b, err)
	}
	repo := diffusersRepo()
	ids := map[string]bool{} // files of equal contents share a blob
	for _, p := range want {
		snap := filepath.Join(root, "snapshots", commitA, filepath.FromSlash(p))
		target, err := os.Readlink(snap)
		if err != nil {
			t.Errorf("%s: not a symlink: %v", p, err)
			continue
		}
		id := gitOID(repo.Files[p])
		if repo.LFS[p] {
			id = sha(repo.Files[p])
		}
		ids[id] = true
		wantTarget := strings.Repeat("../", strings.Count(p, "/")+2) + "blobs/" + id
		if target != filepath.FromSlash(wantTarget) {
			t.Errorf("%s → %s, want %s", p, target, wantTarget)
		}
		if b, err := os.ReadFile(snap); err != nil || string(b) != string(repo.Files[p]) {
			t.Errorf("%s: contents differ (%v)", p, err)
		}
	}
	blobs, _ := filepath.Glob(filepath.Join(root, "blobs", "*"))
	if len(blobs) != len(ids) {
		t.Errorf("%d blobs, want %d: %v", len(blobs), len(ids), blobs)
	}
	if inc, _ := filepath.Glob(filepath.Join(root, "blobs", "*.incomplete")); len(inc) > 0 {
		t.Errorf("left behind: %v", inc)
	}
	var finished int
	for _, e := range events {
		if e.Finished && e.Count == len(want) {
			finished++
		}
	}
	if finished != len(want) {
		t.Errorf("%d files reported finished, want %d", finished, len(want))
	}

	// A second pull fetches nothing from the CDN and reports every file
	// as cached.
	gets := len(f.CDNRanges())
	events = nil
	if _, err := c.PullRepo(context.Background(), "org/model", ""); err != nil {
		t.Fatal(err)
	}
	if n := len(f.CDNRanges()); n != gets {
		t.Errorf("second pull made %d CDN requests", n-gets)
	}
	for _, e := range events {
		if !e.Cached {
			t.Errorf("second pull: %s not reported cached", e.File)
		}
	}

	// What the cache lists.
	list := List(cache)
	if len(list) != 1 || list[0].Repo != "org/model" || list[0].Commit != commitA || !slices.Equal(list[0].Files, want) {
		t.Errorf("List = %+v", list)
	}
}

// TestGated: without a token a gated repository answers 401 and the error
// tells to set HF_TOKEN; with the token the file comes, and the token goes
// to the hub only, never to the CDN the hub redirects to.
func TestGated(t *testing.T) {
	repo := diffusersRepo()
	repo.Token = "hf_secret"
	f := hubtest.New(t, map[string]*hubtest.Repo{"org/gated": repo})
	cache := t.TempDir()
	c := client(t, f, cache)
	_, err := c.PullFile(context.Background(), "org/gated", "", "unet/diffusion_pytorch_model.safetensors")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized || !strings.Contains(err.Error(), "gated or private") || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Fatalf("no token: %v", err)
	}
	c.Token = "hf_secret"
	got, err := c.PullFile(context.Background(), "org/gated", "", "unet/diffusion_pytorch_model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(got.Dir, "unet", "diffusion_pytorch_model.safetensors")); err != nil || len(b) != 5000 {
		t.Errorf("read back: %d bytes, %v", len(b), err)
	}
	if auth := f.HubAuth(); auth[len(auth)-1] != "Bearer hf_secret" {
		t.Errorf("hub saw Authorization %q", auth[len(auth)-1])
	}
	for _, a := range f.CDNAuth() {
		if a != "" {
			t.Errorf("the CDN was sent Authorization %q", a)
		}
	}
}

// TestChecksumMismatch: a body that does not hash to the X-Linked-Etag
// fails with ErrChecksum, and neither the partial file, a blob nor a
// snapshot link is left.
func TestChecksumMismatch(t *testing.T) {
	f := hubtest.New(t, map[string]*hubtest.Repo{"org/model": diffusersRepo()})
	f.SetCorrupt(true)
	cache := t.TempDir()
	_, err := client(t, f, cache).PullFile(context.Background(), "org/model", "", "v1-5-pruned-emaonly.safetensors")
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	root := filepath.Join(cache, "models--org--model")
	if left, _ := filepath.Glob(filepath.Join(root, "blobs", "*")); len(left) > 0 {
		t.Errorf("left in blobs: %v", left)
	}
	if _, err := os.Lstat(filepath.Join(root, "snapshots", commitA, "v1-5-pruned-emaonly.safetensors")); err == nil {
		t.Error("a snapshot link was made")
	}
}

// TestResume: a download cut off part-way leaves blobs/<sha>.incomplete;
// the next pull asks for the rest with a Range request and completes the
// verified file. A server that ignores the range starts it over.
func TestResume(t *testing.T) {
	f := hubtest.New(t, map[string]*hubtest.Repo{"org/model": diffusersRepo()})
	cache := t.TempDir()
	const file = "v1-5-pruned-emaonly.safetensors"
	body := diffusersRepo().Files[file]
	part := filepath.Join(cache, "models--org--model", "blobs", sha(body)+".incomplete")
	f.BreakNext(1000)
	if _, err := client(t, f, cache).PullFile(context.Background(), "org/model", "", file); err == nil {
		t.Fatal("a broken connection did not fail the pull")
	}
	if st, err := os.Stat(part); err != nil || st.Size() != 1000 {
		t.Fatalf("partial file: %v, %v", st, err)
	}
	got, err := client(t, f, cache).PullFile(context.Background(), "org/model", "", file)
	if err != nil {
		t.Fatal(err)
	}
	if r := f.CDNRanges(); r[len(r)-1] != "bytes=1000-" {
		t.Errorf("resume sent Range %q, want bytes=1000-", r[len(r)-1])
	}
	if b, err := os.ReadFile(filepath.Join(got.Dir, file)); err != nil || string(b) != string(body) {
		t.Errorf("resumed file differs (%v)", err)
	}
	if _, err := os.Stat(part); err == nil {
		t.Error(".incomplete left after completion")
	}

	// Range ignored (200 with the whole body): written from the start.
	cache2 := t.TempDir()
	f.BreakNext(700)
	client(t, f, cache2).PullFile(context.Background(), "org/model", "", file)
	f.SetIgnoreRange(true)
	got, err = client(t, f, cache2).PullFile(context.Background(), "org/model", "", file)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(got.Dir, file)); string(b) != string(body) {
		t.Error("restarted download differs")
	}
}

// TestPullFileRevision: a file at a commit writes no ref; at main it
// writes refs/main. A missing file is a 404 that says so.
func TestPullFileRevision(t *testing.T) {
	f := hubtest.New(t, map[string]*hubtest.Repo{"org/model": diffusersRepo()})
	cache := t.TempDir()
	c := client(t, f, cache)
	if _, err := c.PullFile(context.Background(), "org/model", commitA, "unet/config.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cache, "models--org--model", "refs", "main")); err == nil {
		t.Error("a pull by commit wrote refs/main")
	}
	if _, err := c.PullFile(context.Background(), "org/model", "", "nope.safetensors"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing file: %v", err)
	}
}

// TestReadsHuggingFaceHubCache builds a cache exactly as huggingface_hub
// leaves one (refs/main without newline, relative links, a dangling link of
// a deleted blob, a datasets-- folder) and checks Snapshot and List.
func TestReadsHuggingFaceHubCache(t *testing.T) {
	cache := t.TempDir()
	root := filepath.Join(cache, "models--stable-diffusion-v1-5--stable-diffusion-v1-5")
	snap := filepath.Join(root, "snapshots", commitA)
	blob := sha([]byte("x"))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "blobs"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "refs"), 0o755))
	must(os.MkdirAll(filepath.Join(snap, "unet"), 0o755))
	must(os.WriteFile(filepath.Join(root, "blobs", blob), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(root, "refs", "main"), []byte(commitA), 0o644))
	must(os.Symlink("../../blobs/"+blob, filepath.Join(snap, "v1-5-pruned-emaonly.safetensors")))
	must(os.Symlink("../../../blobs/"+blob, filepath.Join(snap, "unet", "diffusion_pytorch_model.safetensors")))
	must(os.Symlink("../../blobs/deleted", filepath.Join(snap, "model_index.json")))
	must(os.MkdirAll(filepath.Join(cache, "datasets--a--b", "snapshots", commitA), 0o755))

	dir, commit, ok := Snapshot(cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", "")
	if !ok || dir != snap || commit != commitA {
		t.Fatalf("Snapshot = %s %s %v", dir, commit, ok)
	}
	list := List(cache)
	if len(list) != 1 || list[0].Repo != "stable-diffusion-v1-5/stable-diffusion-v1-5" ||
		!slices.Equal(list[0].Files, []string{"unet/diffusion_pytorch_model.safetensors", "v1-5-pruned-emaonly.safetensors"}) || list[0].Size != 2 {
		t.Errorf("List = %+v", list)
	}
	// Without refs/main (fetched by commit) the snapshot is still found.
	must(os.Remove(filepath.Join(root, "refs", "main")))
	if _, _, ok := Snapshot(cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", ""); !ok {
		t.Error("no snapshot found without refs/main")
	}
}

func TestPipelineFilesVariants(t *testing.T) {
	files := func(paths ...string) []File {
		var out []File
		for _, p := range paths {
			out = append(out, File{Path: p})
		}
		return out
	}
	names := func(fs []File) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Path)
		}
		return out
	}
	// Only variants: fp16 wins over bf16; shards keep their index.
	got, err := PipelineFiles(files(
		"model_index.json",
		"unet/diffusion_pytorch_model.bf16.safetensors",
		"unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
		"unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
		"unet/diffusion_pytorch_model.safetensors.index.fp16.json",
		"unet/diffusion_pytorch_model.safetensors.index.bf16.json",
	), []byte(`{"unet": ["diffusers", "UNet2DConditionModel"]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"model_index.json",
		"unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
		"unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
		"unet/diffusion_pytorch_model.safetensors.index.fp16.json",
	}
	if !slices.Equal(names(got), want) {
		t.Errorf("got %q\nwant %q", names(got), want)
	}
	// No model index (a lone VAE repo): top-level configs and plain
	// weights, a dotted A1111 name kept as plain.
	got, _ = PipelineFiles(files("config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
		"sdxl.vae.safetensors", "sd_xl_base_1.0.safetensors", "diffusion_pytorch_model.fp16.safetensors", "sub/x.safetensors"), nil)
	want = []string{"config.json", "diffusion_pytorch_model.safetensors", "sd_xl_base_1.0.safetensors", "sdxl.vae.safetensors"}
	if !slices.Equal(names(got), want) {
		t.Errorf("got %q\nwant %q", names(got), want)
	}
}

func TestEnvironment(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, v := range []string{"HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT"} {
		t.Setenv(v, "")
	}
	if got := CacheDir(); got != filepath.Join(home, ".cache", "huggingface", "hub") {
		t.Errorf("default cache %s", got)
	}
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got := CacheDir(); got != "/xdg/huggingface/hub" {
		t.Errorf("XDG cache %s", got)
	}
	t.Setenv("HF_HOME", "/hfhome")
	if got := CacheDir(); got != "/hfhome/hub" {
		t.Errorf("HF_HOME cache %s", got)
	}
	t.Setenv("HUGGINGFACE_HUB_CACHE", "/legacy")
	if got := CacheDir(); got != "/legacy" {
		t.Errorf("legacy cache %s", got)
	}
	t.Setenv("HF_HUB_CACHE", "~/hubcache")
	if got := CacheDir(); got != filepath.Join(home, "hubcache") {
		t.Errorf("HF_HUB_CACHE %s", got)
	}

	t.Setenv("HF_HOME", home)
	if Token() != "" {
		t.Error("a token from nowhere")
	}
	os.WriteFile(filepath.Join(home, "token"), []byte("hf_file\n"), 0o600)
	if got := Token(); got != "hf_file" {
		t.Errorf("token file: %q", got)
	}
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacy")
	if got := Token(); got != "hf_legacy" {
		t.Errorf("legacy token: %q", got)
	}
	t.Setenv("HF_TOKEN", " hf_env ")
	if got := Token(); got != "hf_env" {
		t.Errorf("HF_TOKEN: %q", got)
	}

	if Endpoint() != DefaultEndpoint {
		t.Errorf("endpoint %s", Endpoint())
	}
	t.Setenv("HF_ENDPOINT", "https://hf-mirror.example/")
	if Endpoint() != "https://hf-mirror.example" {
		t.Errorf("endpoint %s", Endpoint())
	}
}

// TestHostileHeaders: a commit or ETag that is a path, not an id, is
// refused before anything is written outside the cache.
func TestHostileHeaders(t *testing.T) {
	for _, h := range []map[string]string{
		{"X-Repo-Commit": "../../../../escape", "ETag": `"` + gitOID([]byte("x")) + `"`},
		{"X-Repo-Commit": commitA, "ETag": `"../../escape"`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for k, v := range h {
				w.Header().Set(k, v)
			}
			w.Write([]byte("x"))
		}))
		cache := t.TempDir()
		_, err := client(t, &hubtest.Server{Hub: srv}, cache).PullFile(context.Background(), "org/model", "", "x.json")
		srv.Close()
		if err == nil {
			t.Errorf("%v accepted", h)
		}
		if entries, _ := os.ReadDir(cache); len(entries) > 0 {
			t.Errorf("%v: wrote %v", h, entries)
		}
	}
}
