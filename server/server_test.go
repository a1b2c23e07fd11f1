package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/demo"
)

// testEnv is a server on a loopback listener with CPU workers and a model
// directory holding a copy of the built-in model as checkpoints/digits2.
type testEnv struct {
	t    *testing.T
	srv  *Server
	http *httptest.Server
	dir  string
	// gate, when not nil, holds the workers back until closed.
	gate chan struct{}
}

// gated holds a backend's Serve until its gate opens.
type gated struct {
	Backend
	gate chan struct{}
}

func (g gated) Serve(ctx context.Context, s *Server) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Backend.Serve(ctx, s)
}

var (
	modelDirOnce sync.Once
	modelDir     string
)

// sharedModelDir writes the model directory once per test binary.
func sharedModelDir(t *testing.T) string {
	modelDirOnce.Do(func() {
		d, err := os.MkdirTemp("", "darkroom-serve-models-")
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(d, "checkpoints"), 0o755)
		if err := demo.WriteFile(filepath.Join(d, "checkpoints", "digits2.safetensors")); err != nil {
			t.Fatal(err)
		}
		// A file beside the model directory that no request may reach.
		os.WriteFile(filepath.Join(filepath.Dir(d), "darkroom-serve-secret.safetensors"), []byte("secret"), 0o644)
		modelDir = d
	})
	return modelDir
}

var (
	sharedOnce sync.Once
	shared     *engine.Engine
	sharedErr  error
)

// sharedEngine is the workers' CPU engine, one for the test binary, so
// that the built-in model loads once (slow under the race detector).
func sharedEngine(t *testing.T) *engine.Engine {
	dir := sharedModelDir(t)
	sharedOnce.Do(func() {
		shared, sharedErr = engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{dir}, NamesOnly: true})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// newEnv starts a server with workers CPU workers (0: none, jobs only
// queue); gate holds them back until env.start.
func newEnv(t *testing.T, opts Options, workers int, gate bool) *testEnv {
	t.Helper()
	opts.ModelDirs = []string{sharedModelDir(t)}
	var runners []*Runner
	for i := range workers {
		runners = append(runners, &Runner{Engine: sharedEngine(t), Name: fmt.Sprintf("cpu-%d", i), Scratch: t.TempDir(), PreviewEvery: time.Millisecond})
	}
	var back Backend = NewLocal(runners...)
	var g chan struct{}
	if gate || workers == 0 {
		g = make(chan struct{})
		back = gated{back, g}
	}
	env := newEnvBackend(t, opts, back)
	env.gate = g
	return env
}

// start opens the gate.
func (e *testEnv) start() { close(e.gate) }

// call is one HTTP request: token and client may be "".
type call struct {
	method, path, token, client string
	body                        any // string, []byte or a value marshalled to JSON
}

func (e *testEnv) do(c call) (int, []byte) {
	e.t.Helper()
	var body io.Reader
	switch b := c.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(js)
	}
	req, err := http.NewRequest(c.method, e.http.URL+c.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.client != "" {
		req.Header.Set(ClientHeader, c.client)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// want does the call and checks its status, decoding the answer into v
// (when not nil).
func (e *testEnv) want(status int, c call, v any) []byte {
	e.t.Helper()
	got, b := e.do(c)
	if got != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, got, status, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			e.t.Fatalf("%s %s: %v: %s", c.method, c.path, err, b)
		}
	}
	return b
}

// wait polls job id until it ends.
func (e *testEnv) wait(id, token, client string) jobView {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var v jobView
		e.want(200, call{method: "GET", path: "/v1/jobs/" + id, token: token, client: client}, &v)
		if v.State != StateQueued && v.State != StateRunning {
			return v
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatalf("job %s did not end", id)
	return jobView{}
}

// directEngine runs the peer images, one for the test binary.
var (
	directOnce   sync.Once
	directEngine *engine.Engine
	directErr    error
)

// direct runs req on an engine of its own, as `darkroom gen` runs it: the peer
// of the server's images.
func direct(t *testing.T, req engine.Request) *image.NRGBA {
	t.Helper()
	return directBatch(t, req)[0]
}

func decodePNG(t *testing.T, b []byte) (*image.NRGBA, map[string]string) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	text, err := engine.ReadPNGText(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// An opaque image decodes as RGBA; its pixels are the NRGBA ones.
	n := image.NewNRGBA(img.Bounds())
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			n.Set(x, y, img.At(x, y))
		}
	}
	return n, text
}

func samePixels(t *testing.T, what string, got, want *image.NRGBA) {
	t.Helper()
	if got.Bounds() != want.Bounds() {
		t.Fatalf("%s: size %v, want %v", what, got.Bounds(), want.Bounds())
	}
	if !bytes.Equal(got.Pix, want.Pix) {
		diff := 0
		for i := range got.Pix {
			if got.Pix[i] != want.Pix[i] {
				diff++
			}
		}
		t.Fatalf("%s: %d of %d bytes differ from darkroom gen's image", what, diff, len(got.Pix))
	}
}

// TestJob runs a job through POST /v1/jobs and the SSE stream; its image
// equals the engine's for the same request (what `darkroom gen` writes),
// and carries A1111 parameters.
func TestJob(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	var v jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"prompt": "a handwritten digit 7", "seed": 42, "steps": 6}`}, &v)
	if v.ID == "" || v.State != StateQueued {
		t.Fatalf("answer %+v", v)
	}
	// The SSE stream: progress events with rising steps, then done.
	resp, err := http.Get(env.http.URL + "/v1/jobs/" + v.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var event string
	var done jobView
	lastStep, events := 0, 0
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev jobView
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		events++
		if ev.Phase != "sample" && event != "done" {
			continue
		}
		if ev.Step < lastStep {
			t.Fatalf("step went back from %d to %d (%s %s)", lastStep, ev.Step, ev.Phase, data[:200])
		}
		lastStep = ev.Step
		if event == "done" {
			done = ev
			break
		}
	}
	if done.State != StateDone || len(done.Images) != 1 {
		t.Fatalf("done event %+v after %d events", done.State, events)
	}
	if lastStep != 6 || done.Total != 6 {
		t.Errorf("last step %d of %d, want 6 of 6", lastStep, done.Total)
	}
	img, text := decodePNG(t, done.Images[0])
	req := engine.DefaultRequest()
	req.Prompt, req.Seed, req.Steps = "a handwritten digit 7", 42, 6
	req.Width, req.Height, req.CFG = demo.Width, demo.Height, demo.CFG
	samePixels(t, "POST /v1/jobs", img, direct(t, req))
	got, _, err := engine.ParseA1111Parameters(text[engine.ChunkParameters])
	if err != nil {
		t.Fatal(err)
	}
	if got.Steps != 6 || got.Seed != 42 || got.Width != demo.Width || got.Prompt != req.Prompt {
		t.Errorf("PNG parameters %q", text[engine.ChunkParameters])
	}
	// The same image by its own route.
	raw := env.want(200, call{method: "GET", path: "/v1/jobs/" + v.ID + "/images/0.png"}, nil)
	if !bytes.Equal(raw, done.Images[0]) {
		t.Error("GET images/0.png differs from the done event's image")
	}
	env.want(404, call{method: "GET", path: "/v1/jobs/" + v.ID + "/images/1.png"}, nil)
	env.want(404, call{method: "GET", path: "/v1/jobs/nosuchjob"}, nil)
	var list struct{ Jobs []jobView }
	env.want(200, call{method: "GET", path: "/v1/jobs"}, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != v.ID {
		t.Errorf("GET /v1/jobs: %+v", list.Jobs)
	}
}

// TestModelsAndDevices lists the models by name (no server paths) and the
// workers; a model of the model directory runs by its name.
func TestModelsAndDevices(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	var models struct{ Models []modelView }
	b := env.want(200, call{method: "GET", path: "/v1/models"}, &models)
	if strings.Contains(string(b), env.dir) {
		t.Errorf("/v1/models shows a server path: %s", b)
	}
	names := map[string]bool{}
	for _, m := range models.Models {
		names[m.Name] = true
	}
	if !names[engine.DefaultModel] || !names["digits2"] {
		t.Fatalf("/v1/models: %s", b)
	}
	var devs struct {
		Devices []struct{ Kind string }
		Workers []WorkerInfo
	}
	env.want(200, call{method: "GET", path: "/v1/devices"}, &devs)
	if len(devs.Workers) != 1 || devs.Workers[0].Name != "cpu-0" || len(devs.Devices) == 0 || devs.Devices[len(devs.Devices)-1].Kind != "cpu" {
		t.Fatalf("/v1/devices: %+v", devs)
	}
	var v jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"model": "digits2", "prompt": "a 3", "seed": 3, "steps": 3, "width": 32, "height": 32}`}, &v)
	done := env.wait(v.ID, "", "")
	if done.State != StateDone {
		t.Fatalf("job %+v", done)
	}
	env.want(200, call{method: "GET", path: "/v1/devices"}, &devs)
	if l := devs.Workers[0].Loaded; !slices.Contains(l, "digits2") {
		t.Errorf("loaded models %v, want digits2 among them", l)
	}
	// Admin: probe the file, list families, unload.
	var probe map[string]any
	env.want(200, call{method: "GET", path: "/v1/admin/probe?model=digits2"}, &probe)
	if probe["family"] != "SD1.x" || probe["runnable"] != true {
		t.Errorf("probe: %v", probe)
	}
	var fam struct{ Families []string }
	env.want(200, call{method: "GET", path: "/v1/admin/families"}, &fam)
	if !strings.Contains(strings.Join(fam.Families, ","), "SD1.x") {
		t.Errorf("families %v", fam.Families)
	}
	var un struct{ Unloaded int }
	env.want(200, call{method: "POST", path: "/v1/admin/unload"}, &un)
	if un.Unloaded < 1 {
		t.Errorf("unloaded %d models, want digits2 at least", un.Unloaded)
	}
	var after struct{ Workers []WorkerInfo }
	env.want(200, call{method: "GET", path: "/v1/devices"}, &after)
	if l := after.Workers[0].Loaded; len(l) != 0 {
		t.Errorf("loaded after unload: %v", l)
	}
	var q struct{ Jobs []jobView }
	env.want(200, call{method: "GET", path: "/v1/admin/queue"}, &q)
	if len(q.Jobs) != 0 {
		t.Errorf("admin queue: %+v", q.Jobs)
	}
}

// TestAuth: with tokens, a request without one or with a wrong one gets
// 401; a client sees and cancels only its own jobs; admin routes need an
// admin token. Without tokens, only loopback is served.
func TestAuth(t *testing.T) {
	env := newEnv(t, Options{Tokens: []Token{{Name: "alice", Secret: "a-secret"}, {Name: "bob", Secret: "b-secret"}, {Name: "root", Secret: "r-secret", Admin: true}}}, 0, true)
	for _, c := range []call{
		{method: "GET", path: "/v1/models"},
		{method: "GET", path: "/v1/models", token: "wrong"},
		{method: "POST", path: "/sdapi/v1/txt2img", body: `{}`},
		{method: "GET", path: "/sdapi/v1/sd-models", token: "a-secretX"},
		{method: "GET", path: "/no/such/route"},
	} {
		got, b := env.do(c)
		if got != 401 {
			t.Errorf("%s %s token %q: status %d, want 401: %s", c.method, c.path, c.token, got, b)
		}
	}
	env.want(404, call{method: "GET", path: "/no/such/route", token: "a-secret"}, nil)
	var v jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", token: "a-secret", body: `{"prompt": "x", "steps": 2}`}, &v)
	if v.Client != "alice" || v.State != StateQueued {
		t.Fatalf("job %+v", v)
	}
	env.want(403, call{method: "GET", path: "/v1/jobs/" + v.ID, token: "b-secret"}, nil)
	env.want(403, call{method: "DELETE", path: "/v1/jobs/" + v.ID, token: "b-secret"}, nil)
	env.want(403, call{method: "GET", path: "/v1/jobs/" + v.ID + "/events", token: "b-secret"}, nil)
	var list struct{ Jobs []jobView }
	env.want(200, call{method: "GET", path: "/v1/jobs", token: "b-secret"}, &list)
	if len(list.Jobs) != 0 {
		t.Errorf("bob sees %d jobs", len(list.Jobs))
	}
	// A sub-client of alice cannot cancel alice's job either.
	env.want(403, call{method: "DELETE", path: "/v1/jobs/" + v.ID, token: "a-secret", client: "bot"}, nil)
	for _, p := range []string{"/v1/admin/families", "/v1/admin/queue", "/v1/admin/probe?model=digits2"} {
		env.want(403, call{method: "GET", path: p, token: "a-secret"}, nil)
		env.want(200, call{method: "GET", path: p, token: "r-secret"}, nil)
	}
	env.want(403, call{method: "POST", path: "/v1/admin/unload", token: "b-secret"}, nil)
	// Bob's interrupt leaves alice's job alone; alice cancels her own.
	env.want(200, call{method: "POST", path: "/sdapi/v1/interrupt", token: "b-secret"}, nil)
	env.want(200, call{method: "GET", path: "/v1/jobs/" + v.ID, token: "a-secret"}, &v)
	if v.State != StateQueued {
		t.Fatalf("after bob's interrupt alice's job is %s", v.State)
	}
	env.want(200, call{method: "DELETE", path: "/v1/jobs/" + v.ID, token: "a-secret"}, &v)
	if v.State != StateCancelled {
		t.Fatalf("after alice's cancel her job is %s", v.State)
	}
	// The admin may cancel anyone's job.
	env.want(202, call{method: "POST", path: "/v1/jobs", token: "b-secret", body: `{"prompt": "x", "steps": 2}`}, &v)
	env.want(200, call{method: "DELETE", path: "/v1/jobs/" + v.ID, token: "r-secret"}, &v)
	if v.State != StateCancelled {
		t.Fatalf("after the admin's cancel bob's job is %s", v.State)
	}

	open, err := New(Options{}, NewLocal())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	err = open.ListenAndServe(context.Background(), "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("serving all interfaces without a token: %v", err)
	}
	for addr, want := range map[string]bool{"127.0.0.1:7860": true, "[::1]:1": true, "localhost:7860": true, ":7860": false, "0.0.0.0:7860": false, "192.168.1.2:7860": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) = %v", addr, !want)
		}
	}
}

// TestBadRequests: malformed JSON, unknown keys, invalid fields, limits
// and paths are refused with a 4xx naming what is wrong; nothing is
// queued.
func TestBadRequests(t *testing.T) {
	env := newEnv(t, Options{Limits: Limits{MaxBody: 4096, MaxSteps: 50, MaxPixels: 256 * 256, MaxBatch: 2}}, 1, true)
	img := pngB64(t, 16, 16)
	big := pngB64(t, 300, 300)
	for _, tc := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/jobs", `{"prompt": "x"`, 400, "not a JSON object"},
		{"/v1/jobs", `[1, 2]`, 400, "not a JSON object"},
		{"/v1/jobs", `{"prompt": "x", "stpes": 3}`, 400, `unknown field "stpes"`},
		{"/v1/jobs", `{"steps": "many"}`, 400, "steps: want a int"},
		{"/v1/jobs", `{"width": 1001}`, 400, "width 1001"},
		{"/v1/jobs", `{"sampler": "eulr"}`, 400, "sampler"},
		{"/v1/jobs", `{"steps": 51}`, 400, "at most 50"},
		{"/v1/jobs", `{"batch": 3}`, 400, "at most 2 images"},
		{"/v1/jobs", `{"width": 512, "height": 512}`, 400, "at most 65536 pixels"},
		{"/v1/jobs", `{"width": 128, "height": 128, "hires": 4}`, 400, "at most 65536 pixels"},
		{"/v1/jobs", `{"prompt": "` + strings.Repeat("x", 5000) + `"}`, 413, "over 4096 bytes"},
		{"/v1/jobs", `{"model": "../darkroom-serve-secret"}`, 400, "not a path"},
		{"/v1/jobs", `{"model": "checkpoints/../../darkroom-serve-secret.safetensors"}`, 400, "not a path"},
		{"/v1/jobs", `{"model": "/etc/passwd"}`, 400, "not a path"},
		{"/v1/jobs", `{"model": "nosuchmodel"}`, 400, "no model of that name"},
		{"/v1/jobs", `{"refiner": "../../x"}`, 400, "not a path"},
		{"/v1/jobs", `{"init_image": "/etc/passwd", "denoise": 0.5}`, 400, "init_image: not base64"},
		{"/v1/jobs", `{"init_image": "aGVsbG8=", "denoise": 0.5}`, 400, "not a PNG"},
		{"/v1/jobs", `{"init_image": "` + big + `", "denoise": 0.5, "width": 32, "height": 32}`, 400, "init image 300x300"},
		{"/sdapi/v1/txt2img", `{"prompt": 7}`, 400, "prompt: want a string"},
		{"/sdapi/v1/txt2img", `{"sampler_name": "Eulr a"}`, 400, "unknown sampler"},
		{"/sdapi/v1/txt2img", `{"steps": 0}`, 400, "steps 0"},
		{"/sdapi/v1/txt2img", `{"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}`, 400, "not a path"},
		{"/sdapi/v1/img2img", `{"prompt": "x"}`, 400, "init_images"},
		{"/sdapi/v1/img2img", `{"init_images": ["` + img + `"], "resize_mode": 3}`, 400, "resize_mode 3"},
		{"/sdapi/v1/options", `{"sd_model_checkpoint": "nosuch"}`, 400, "no model of that name"},
	} {
		got, b := env.do(call{method: "POST", path: tc.path, body: tc.body})
		var e errorBody
		json.Unmarshal(b, &e)
		if got != tc.status || !strings.Contains(e.Error, tc.want) || e.Detail != e.Error {
			t.Errorf("POST %s %.80s: %d %s, want %d and %q", tc.path, tc.body, got, b, tc.status, tc.want)
		}
	}
	if n := env.srv.queue.len(); n != 0 {
		t.Errorf("%d bad requests were queued", n)
	}
	// Names of other files (VAE, LoRA, upscaler) are checked where the job
	// runs: the job fails naming the field, and reads nothing outside.
	env.start()
	for _, tc := range []struct{ body, field string }{
		{`{"vae": "../../darkroom-serve-secret", "model": "digits2", "steps": 2, "width": 32, "height": 32}`, "vae"},
		{`{"loras": ["/etc/passwd"], "model": "digits2", "steps": 2, "width": 32, "height": 32}`, "loras"},
		{`{"hires": 2, "hires_upscaler": "../../../x", "steps": 2, "width": 32, "height": 32}`, "hires_upscaler"},
	} {
		var v jobView
		env.want(202, call{method: "POST", path: "/v1/jobs", body: tc.body}, &v)
		v = env.wait(v.ID, "", "")
		if v.State != StateFailed || v.Field != tc.field || !strings.Contains(v.Error, "not a path") {
			t.Errorf("%s: job %s field %q error %q", tc.body, v.State, v.Field, v.Error)
		}
	}
}

// pngB64 is a w×h grey PNG, base64.
func pngB64(t *testing.T, w, h int) string {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// TestQueueFull: beyond QueueSize waiting jobs the answer is 429, and a
// cancelled job frees its place.
func TestQueueFull(t *testing.T) {
	env := newEnv(t, Options{QueueSize: 3}, 0, true)
	var ids []string
	for range 3 {
		var v jobView
		env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"steps": 2}`}, &v)
		ids = append(ids, v.ID)
	}
	var e errorBody
	env.want(429, call{method: "POST", path: "/v1/jobs", body: `{"steps": 2}`}, &e)
	if !strings.Contains(e.Error, "queue is full") {
		t.Errorf("429 body %+v", e)
	}
	env.want(429, call{method: "POST", path: "/sdapi/v1/txt2img", body: `{"steps": 2}`}, nil)
	req, _ := http.NewRequest("POST", env.http.URL+"/v1/jobs", strings.NewReader(`{}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After: %d %v", resp.StatusCode, resp.Header)
	}
	env.want(200, call{method: "DELETE", path: "/v1/jobs/" + ids[0]}, nil)
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"steps": 2}`}, nil)
}

// TestFairness: 10 clients queue 20 jobs each, client by client (the
// first floods before the others arrive); the queue serves them
// round-robin, measured twice: the positions the API reports for all 200,
// and the order in which one worker runs a smaller set.
func TestFairness(t *testing.T) {
	env := newEnv(t, Options{QueueSize: 256}, 0, true)
	const clients, each = 10, 20
	type queued struct {
		client string
		id     string
	}
	var all []queued
	var mu sync.Mutex
	var wg sync.WaitGroup
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for c := range clients {
		name := fmt.Sprintf("c%d", c)
		// Client c starts once client c-1 has queued all its jobs; each
		// client's own jobs go in concurrently.
		var cw sync.WaitGroup
		for range each {
			cw.Go(func() {
				var v jobView
				env.want(202, call{method: "POST", path: "/v1/jobs", client: name, body: `{"steps": 1}`}, &v)
				mu.Lock()
				all = append(all, queued{name, v.ID})
				mu.Unlock()
			})
		}
		cw.Wait()
	}
	wg.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	// 200 waiting jobs hold their requests only: well under 100 KiB each.
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if grown > 20<<20 {
		t.Errorf("the heap grew by %d MiB for 200 queued jobs", grown>>20)
	}
	order := make([]string, clients*each)
	for _, q := range all {
		var v jobView
		env.want(200, call{method: "GET", path: "/v1/jobs/" + q.id, client: q.client}, &v)
		if v.Position < 0 || v.Position >= len(order) || order[v.Position] != "" {
			t.Fatalf("job %s of %s: position %d taken or out of range", q.id, q.client, v.Position)
		}
		order[v.Position] = q.client
	}
	// Every window of 10 consecutive places holds the 10 clients.
	for i := 0; i < len(order); i += clients {
		seen := map[string]bool{}
		for _, c := range order[i : i+clients] {
			seen[c] = true
		}
		if len(seen) != clients {
			t.Fatalf("places %d-%d serve %d clients, want %d: %v", i, i+clients-1, len(seen), clients, order[i:i+clients])
		}
	}
	if order[0] != "c0" || order[1] != "c1" || order[9] != "c9" || order[10] != "c0" {
		t.Errorf("first places %v", order[:12])
	}
	t.Logf("200 jobs of 10 clients queued (heap %+d KiB); the first 12 places: %v", grown>>10, order[:12])
}

// TestFairRun runs 3 clients' jobs (5, 2 and 2, the flood first) on one
// worker and checks the order they ran in.
func TestFairRun(t *testing.T) {
	env := newEnv(t, Options{}, 1, true)
	var ids []string
	owner := map[string]string{}
	for _, c := range []struct {
		name string
		n    int
	}{{"flood", 5}, {"b", 2}, {"c", 2}} {
		for range c.n {
			var v jobView
			env.want(202, call{method: "POST", path: "/v1/jobs", client: c.name, body: `{"steps": 1}`}, &v)
			ids = append(ids, v.ID)
			owner[v.ID] = c.name
		}
	}
	env.start()
	type run struct {
		client string
		at     time.Time
	}
	var runs []run
	for _, id := range ids {
		v := env.wait(id, "", owner[id])
		if v.State != StateDone {
			t.Fatalf("job %s: %s %s", id, v.State, v.Error)
		}
		runs = append(runs, run{owner[id], *v.Started})
	}
	slicesSortRuns := func() {
		for i := range runs {
			for k := i + 1; k < len(runs); k++ {
				if runs[k].at.Before(runs[i].at) {
					runs[i], runs[k] = runs[k], runs[i]
				}
			}
		}
	}
	slicesSortRuns()
	var got []string
	for _, r := range runs {
		got = append(got, r.client)
	}
	want := "flood b c flood b c flood flood flood"
	if strings.Join(got, " ") != want {
		t.Errorf("run order %v, want %s", got, want)
	}
}

// TestCancelRunning cancels a running job: it stops before its last step.
func TestCancelRunning(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	var v jobView
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"steps": 150, "seed": 1}`}, &v)
	for {
		env.want(200, call{method: "GET", path: "/v1/jobs/" + v.ID}, &v)
		if v.Step > 0 {
			break
		}
		if v.State != StateQueued && v.State != StateRunning {
			t.Fatalf("job %s before it ran a step", v.State)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if v.Preview == nil {
		t.Error("a running job shows no preview")
	} else if p, err := png.Decode(bytes.NewReader(v.Preview)); err != nil || p.Bounds().Dx() != demo.Width/8 && p.Bounds().Dx() == 0 {
		t.Errorf("preview: %v", err)
	}
	env.want(200, call{method: "DELETE", path: "/v1/jobs/" + v.ID}, nil)
	v = env.wait(v.ID, "", "")
	if v.State != StateCancelled || v.Step >= 150 {
		t.Fatalf("cancelled job: %s at step %d", v.State, v.Step)
	}
	// The worker is free again.
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"steps": 2}`}, &v)
	if v = env.wait(v.ID, "", ""); v.State != StateDone {
		t.Fatalf("next job %s: %s", v.State, v.Error)
	}
}
