package server

import (
	"encoding/base64"
	"encoding/json"
	"image"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// a1111Answer is the answer of /sdapi/v1/txt2img and img2img.
type a1111Answer struct {
	Images     []string
	Parameters map[string]any
	Info       string
}

// info decodes the answer's info text.
func (a a1111Answer) info(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(a.Info), &m); err != nil {
		t.Fatalf("info is not JSON: %v: %q", err, a.Info)
	}
	return m
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "a1111", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestA1111Clients posts the request bodies of A1111 clients (webuiapi,
// A1111's own API docs) and checks the answers against what A1111
// returns (images as base64 PNGs with "parameters", info as a JSON text
// with infotexts and seeds) and the images against the engine's for the
// request the body means.
func TestA1111Clients(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)

	// webuiapi txt2img: Euler a, seed 1234, 5 steps, 32x32.
	var ans a1111Answer
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", body: fixture(t, "webuiapi_txt2img.json")}, &ans)
	if len(ans.Images) != 1 || ans.Parameters["prompt"] != "a handwritten digit 4" {
		t.Fatalf("answer: %d images, parameters %v", len(ans.Images), ans.Parameters)
	}
	info := ans.info(t)
	req := engine.DefaultRequest()
	req.Prompt, req.Seed, req.Steps, req.Width, req.Height, req.CFG, req.Sampler = "a handwritten digit 4", 1234, 5, 32, 32, 7, "euler_ancestral"
	img, text := decodeB64PNG(t, ans.Images[0])
	samePixels(t, "webuiapi txt2img", img, direct(t, req))
	texts, _ := info["infotexts"].([]any)
	if len(texts) != 1 || texts[0] != text[engine.ChunkParameters] {
		t.Fatalf("infotexts %v, PNG parameters %q", texts, text[engine.ChunkParameters])
	}
	if !strings.Contains(text[engine.ChunkParameters], "Sampler: Euler a") || !strings.Contains(text[engine.ChunkParameters], "Seed: 1234") {
		t.Errorf("parameters %q", text[engine.ChunkParameters])
	}
	if info["seed"] != 1234.0 || info["sampler_name"] != "Euler a" || info["sd_model_name"] != engine.DefaultModel {
		t.Errorf("info %v", info)
	}

	// webuiapi img2img of that image: strength 0.6, A1111's step rule.
	init := strings.Replace(fixture(t, "webuiapi_img2img.json"), "__INIT__", ans.Images[0], 1)
	env.want(200, call{method: "POST", path: "/sdapi/v1/img2img", body: init}, &ans)
	if len(ans.Images) != 1 {
		t.Fatalf("img2img: %d images", len(ans.Images))
	}
	if _, ok := ans.Parameters["init_images"]; ok {
		t.Error("the answer's parameters repeat the init image")
	}
	initPath := filepath.Join(t.TempDir(), "init.png")
	b, _ := base64.StdEncoding.DecodeString(initB64(init))
	os.WriteFile(initPath, b, 0o644)
	ireq := req
	ireq.Seed, ireq.Steps, ireq.InitImage, ireq.Denoise = 99, 8, initPath, 0.6
	ireq.Resize, ireq.DenoiseSteps = engine.ResizeStretch, engine.DenoiseStepsA1111
	img, _ = decodeB64PNG(t, ans.Images[0])
	samePixels(t, "webuiapi img2img", img, direct(t, ireq))
	if d := ans.info(t)["denoising_strength"]; d != 0.6 {
		t.Errorf("img2img info denoising_strength %v", d)
	}

	// The docs' example: random seed, DPM++ 2M Karras, batch of 2. Its
	// placeholder style "string" is refused (darkroom has no styles);
	// without it the body runs.
	docs := fixture(t, "openapi_txt2img.json")
	var refused errorBody
	env.want(400, call{method: "POST", path: "/sdapi/v1/txt2img", body: docs}, &refused)
	if refused.Field != "styles" || !strings.Contains(refused.Detail, "styles") {
		t.Errorf("the docs' example with a style: %+v", refused)
	}
	docs = strings.Replace(docs, `"styles": ["string"]`, `"styles": []`, 1)
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", body: docs}, &ans)
	info = ans.info(t)
	if len(ans.Images) != 2 || info["sampler_name"] != "DPM++ 2M" || info["scheduler"] != "Karras" || info["negative_prompt"] != "string" {
		t.Fatalf("docs example: %d images, info %v", len(ans.Images), info)
	}
	seeds, _ := info["all_seeds"].([]any)
	if len(seeds) != 2 || info["seed"].(float64) < 0 {
		t.Errorf("seeds %v", info["all_seeds"])
	}
}

// initB64 is the init image the img2img body holds.
func initB64(body string) string {
	var b struct {
		InitImages []string `json:"init_images"`
	}
	json.Unmarshal([]byte(body), &b)
	return b.InitImages[0]
}

func decodeB64PNG(t *testing.T, s string) (*image.NRGBA, map[string]string) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("image not base64: %v", err)
	}
	return decodePNG(t, b)
}

// TestA1111Routes: sd-models, samplers, schedulers, the per-client model
// switch of /options, /progress with a preview, and /interrupt.
func TestA1111Routes(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	var models []map[string]any
	env.want(200, call{method: "GET", path: "/sdapi/v1/sd-models"}, &models)
	titles := map[string]bool{}
	for _, m := range models {
		titles[m["title"].(string)] = true
		if strings.Contains(m["filename"].(string), "/") {
			t.Errorf("sd-models shows a path: %v", m)
		}
	}
	if !titles[engine.DefaultModel] || !titles["digits2.safetensors"] {
		t.Fatalf("sd-models: %v", models)
	}
	var samplers []struct {
		Name    string
		Aliases []string
	}
	env.want(200, call{method: "GET", path: "/sdapi/v1/samplers"}, &samplers)
	names := map[string]bool{}
	for _, s := range samplers {
		names[s.Name] = true
	}
	for _, n := range []string{"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "UniPC"} {
		if !names[n] {
			t.Errorf("samplers lack %q", n)
		}
	}
	var scheds []struct{ Name, Label string }
	env.want(200, call{method: "GET", path: "/sdapi/v1/schedulers"}, &scheds)
	labels := map[string]string{}
	for _, s := range scheds {
		labels[s.Name] = s.Label
	}
	if labels["karras"] != "Karras" || labels["automatic"] != "Automatic" || labels["sgm_uniform"] != "SGM Uniform" {
		t.Errorf("schedulers %v", scheds)
	}

	// The model switch is the caller's: another client keeps its model.
	env.want(200, call{method: "POST", path: "/sdapi/v1/options", client: "krita", body: `{"sd_model_checkpoint": "digits2.safetensors [0123456789]", "samples_format": "png"}`}, nil)
	var opts map[string]any
	env.want(200, call{method: "GET", path: "/sdapi/v1/options", client: "krita"}, &opts)
	if opts["sd_model_checkpoint"] != "digits2" {
		t.Errorf("options after the switch: %v", opts)
	}
	env.want(200, call{method: "GET", path: "/sdapi/v1/options", client: "other"}, &opts)
	if opts["sd_model_checkpoint"] != engine.DefaultModel {
		t.Errorf("another client's options: %v", opts)
	}
	var ans a1111Answer
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", client: "krita", body: `{"prompt": "a 2", "steps": 2, "width": 32, "height": 32, "seed": 5}`}, &ans)
	if m := ans.info(t)["sd_model_name"]; m != "digits2" {
		t.Errorf("after the switch the model is %v", m)
	}

	// A long job: /progress shows its steps and a preview; another
	// client's interrupt leaves it; the owner's interrupt stops it.
	var wg sync.WaitGroup
	var long a1111Answer
	wg.Go(func() {
		env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", client: "bot", body: `{"prompt": "a 9", "steps": 150, "width": 32, "height": 32, "seed": 9}`}, &long)
	})
	var prog struct {
		Progress     float64
		CurrentImage *string `json:"current_image"`
		State        struct {
			SamplingStep  int `json:"sampling_step"`
			SamplingSteps int `json:"sampling_steps"`
			JobCount      int `json:"job_count"`
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		env.want(200, call{method: "GET", path: "/sdapi/v1/progress", client: "bot"}, &prog)
		if prog.State.SamplingStep > 0 && prog.CurrentImage != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress: %+v", prog)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if prog.State.SamplingSteps != 150 || prog.Progress <= 0 || prog.Progress >= 1 || prog.State.JobCount != 1 {
		t.Errorf("progress %+v", prog)
	}
	img, _ := decodeB64PNG(t, *prog.CurrentImage)
	if img.Bounds().Dx() < 1 {
		t.Error("empty preview")
	}
	env.want(200, call{method: "GET", path: "/sdapi/v1/progress", client: "other"}, &prog)
	if prog.State.JobCount != 0 || prog.CurrentImage != nil {
		t.Errorf("another client sees progress %+v", prog)
	}
	env.want(200, call{method: "POST", path: "/sdapi/v1/interrupt", client: "other"}, nil)
	time.Sleep(20 * time.Millisecond)
	env.want(200, call{method: "GET", path: "/sdapi/v1/progress", client: "bot"}, &prog)
	if prog.State.JobCount != 1 {
		t.Fatalf("another client's interrupt stopped the job: %+v", prog)
	}
	env.want(200, call{method: "POST", path: "/sdapi/v1/interrupt", client: "bot"}, nil)
	wg.Wait()
	if long.info(t)["interrupted"] != true || len(long.Images) != 0 {
		t.Errorf("interrupted job: %d images, info %v", len(long.Images), long.Info)
	}
}

// TestA1111AutomaticScheduler: a sampler named without a schedule, with
// the scheduler left out or "Automatic", runs A1111's own choice for it
// (1.9 and later): DPM++ 2M is Karras, DPM++ 2M SDE exponential, Euler the
// model's; a named scheduler or one in the sampler's name wins.
func TestA1111AutomaticScheduler(t *testing.T) {
	env := newEnv(t, Options{}, 0, false)
	for _, c := range []struct{ body, sampler, scheduler string }{
		{`{"sampler_name": "DPM++ 2M"}`, "dpmpp_2m", "karras"},
		{`{"sampler_name": "DPM++ 2M", "scheduler": "Automatic"}`, "dpmpp_2m", "karras"},
		{`{"sampler_index": "DPM++ 2M SDE"}`, "dpmpp_2m_sde", "exponential"},
		{`{"sampler_name": "DPM2 a"}`, "dpm_2_ancestral", "karras"},
		{`{"sampler_name": "DPM++ 2M", "scheduler": "Uniform"}`, "dpmpp_2m", "Uniform"},
		{`{"sampler_name": "DPM++ 2M Exponential"}`, "dpmpp_2m", "exponential"},
		{`{"sampler_name": "Euler a"}`, "euler_ancestral", engine.DefaultRequest().Scheduler},
	} {
		var b a1111Body
		var keys map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c.body), &b); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal([]byte(c.body), &keys)
		task, err := env.srv.a1111Task(caller{name: "local", admin: true}, b, keys, false)
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if task.Request.Sampler != c.sampler || task.Request.Scheduler != c.scheduler {
			t.Errorf("%s: sampler %q scheduler %q, want %q %q", c.body, task.Request.Sampler, task.Request.Scheduler, c.sampler, c.scheduler)
		}
	}
}
