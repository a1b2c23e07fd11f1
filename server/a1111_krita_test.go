package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// directBatch is direct's engine run keeping every image of the batch.
func directBatch(t *testing.T, req engine.Request) []*image.NRGBA {
	t.Helper()
	directOnce.Do(func() { directEngine, directErr = engine.Open(engine.Options{Device: "cpu"}) })
	if directErr != nil {
		t.Fatal(directErr)
	}
	res, err := directEngine.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Images
}

// samePix tells whether two images have the same pixels.
func samePix(a, b *image.NRGBA) bool {
	return a.Bounds() == b.Bounds() && string(a.Pix) == string(b.Pix)
}

// fixtureBody is a fixture decoded as a JSON object.
func fixtureBody(t *testing.T, name string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(fixture(t, name)), &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// writeB64 writes a base64 image of a body to a file for the direct run.
func writeB64(t *testing.T, name, b64 string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestA1111Krita posts the bodies that the Cyanic SD-Krita plugin sends
// for txt2img, img2img and inpainting (testdata/a1111/README.md) and
// checks each image against the engine's for the request the body means.
func TestA1111Krita(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	base := engine.DefaultRequest()
	base.Width, base.Height, base.Steps, base.CFG = 32, 32, 4, 7

	// txt2img with the plugin's random seed (-1): the answer says which
	// seed ran.
	var ans a1111Answer
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", client: "krita", body: fixture(t, "krita_txt2img.json")}, &ans)
	info := ans.info(t)
	seed, _ := info["seed"].(float64)
	if len(ans.Images) != 1 || ans.Parameters["n_iter"] != 1.0 || ans.Parameters["batch_size"] != 1.0 {
		t.Fatalf("txt2img: %d images, parameters %v", len(ans.Images), ans.Parameters)
	}
	req := base
	// "DPM++ 2M" with no scheduler is DPM++ 2M Karras in A1111 1.9+.
	req.Prompt, req.Seed, req.Sampler, req.Scheduler = "a handwritten digit 3", uint64(seed), "dpmpp_2m", "karras"
	img, _ := decodeB64PNG(t, ans.Images[0])
	samePixels(t, "krita txt2img", img, direct(t, req))
	if s, _ := info["all_seeds"].([]any); len(s) != 1 || s[0] != seed || info["sampler_name"] != "DPM++ 2M" {
		t.Errorf("txt2img info %v", info)
	}

	// img2img: strength 0.7, just resize, A1111's steps.
	body := fixtureBody(t, "krita_img2img.json")
	init := body["init_images"].([]any)[0].(string)
	env.want(200, call{method: "POST", path: "/sdapi/v1/img2img", client: "krita", body: body}, &ans)
	ireq := base
	ireq.Prompt, ireq.Negative, ireq.Seed, ireq.Sampler = "a handwritten digit 7", "blurry", 77, "euler_ancestral"
	ireq.InitImage, ireq.Denoise, ireq.Resize, ireq.DenoiseSteps = writeB64(t, "init.png", init), 0.7, engine.ResizeStretch, engine.DenoiseStepsA1111
	img, _ = decodeB64PNG(t, ans.Images[0])
	samePixels(t, "krita img2img", img, direct(t, ireq))
	if _, ok := ans.Parameters["init_images"]; ok {
		t.Error("the answer's parameters repeat the init image without include_init_images")
	}

	// inpainting: the mask, blur 4, original content, whole picture.
	body = fixtureBody(t, "krita_inpaint.json")
	mask := body["mask"].(string)
	env.want(200, call{method: "POST", path: "/sdapi/v1/img2img", client: "krita", body: body}, &ans)
	preq := ireq
	preq.Negative, preq.Seed, preq.Sampler = "", 5, "euler"
	preq.Mask, preq.MaskBlur = writeB64(t, "mask.png", mask), 4
	img, _ = decodeB64PNG(t, ans.Images[0])
	inpainted := direct(t, preq)
	samePixels(t, "krita inpaint", img, inpainted)
	initImg, _ := decodeB64PNG(t, init)
	if img.NRGBAAt(1, 1) != initImg.NRGBAAt(1, 1) || img.NRGBAAt(16, 20) == initImg.NRGBAAt(16, 20) {
		t.Errorf("inpaint: kept pixel %v (init %v), repainted pixel %v (init %v)", img.NRGBAAt(1, 1), initImg.NRGBAAt(1, 1), img.NRGBAAt(16, 20), initImg.NRGBAAt(16, 20))
	}

	// "Inpaint not masked" inverts the mask; include_init_images repeats
	// the images in the parameters.
	body["inpainting_mask_invert"] = 1
	body["include_init_images"] = true
	env.want(200, call{method: "POST", path: "/sdapi/v1/img2img", client: "krita", body: body}, &ans)
	mimg, _ := decodeB64PNG(t, mask)
	inv := image.NewGray(mimg.Bounds())
	for i := range inv.Pix {
		inv.Pix[i] = 255 - mimg.Pix[4*i]
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "inverted.png"))
	if err != nil {
		t.Fatal(err)
	}
	png.Encode(f, inv)
	f.Close()
	preq.Mask = f.Name()
	img, _ = decodeB64PNG(t, ans.Images[0])
	samePixels(t, "krita inpaint not masked", img, direct(t, preq))
	if img.NRGBAAt(1, 1) == initImg.NRGBAAt(1, 1) || samePix(img, inpainted) {
		t.Error("inpaint not masked kept the area outside the mask or made the masked run's image")
	}
	if got, _ := ans.Parameters["init_images"].([]any); len(got) != 1 || got[0] != init || ans.Parameters["mask"] != mask {
		t.Errorf("include_init_images: parameters lack the images: %d init images", len(got))
	}

	// The inpainting modes darkroom lacks are refused, naming the key.
	for key, v := range map[string]any{"inpainting_fill": 0, "inpaint_full_res": 1} {
		b := fixtureBody(t, "krita_inpaint.json")
		b[key] = v
		var e errorBody
		env.want(400, call{method: "POST", path: "/sdapi/v1/img2img", client: "krita", body: b}, &e)
		if e.Field != key || !strings.HasPrefix(e.Detail, key) || !strings.Contains(e.Detail, "send") {
			t.Errorf("%s %v: %+v", key, v, e)
		}
		// Without a mask they mean nothing and pass.
		delete(b, "mask")
		env.want(200, call{method: "POST", path: "/sdapi/v1/img2img", client: "krita", body: b}, nil)
	}
}

// TestA1111NIter: n_iter 3 × batch_size 2 runs three jobs of two images,
// seeded seed, seed+2, seed+4, equal to three engine batches; info says
// so. n_iter beyond MaxNIter is a 400.
func TestA1111NIter(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	var ans a1111Answer
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", body: `{"prompt": "a 5", "seed": 40, "steps": 3, "width": 32, "height": 32, "cfg_scale": 7, "batch_size": 2, "n_iter": 3, "sampler_name": "Euler a"}`}, &ans)
	if len(ans.Images) != 6 {
		t.Fatalf("%d images, want 6", len(ans.Images))
	}
	req := engine.DefaultRequest()
	req.Prompt, req.Steps, req.Width, req.Height, req.Batch, req.CFG, req.Sampler = "a 5", 3, 32, 32, 2, 7, "euler_ancestral"
	var texts []string
	for k := range 3 {
		req.Seed = uint64(40 + 2*k)
		want := directBatch(t, req)
		for i := range 2 {
			img, text := decodeB64PNG(t, ans.Images[2*k+i])
			samePixels(t, fmt.Sprintf("batch %d image %d", k, i), img, want[i])
			texts = append(texts, text[engine.ChunkParameters])
		}
	}
	info := ans.info(t)
	seeds, _ := info["all_seeds"].([]any)
	if fmt.Sprint(seeds) != "[40 40 42 42 44 44]" || info["seed"] != 40.0 || info["index_of_first_image"] != 0.0 || info["batch_size"] != 2.0 {
		t.Errorf("info: seed %v, all_seeds %v, index_of_first_image %v, batch_size %v", info["seed"], seeds, info["index_of_first_image"], info["batch_size"])
	}
	infotexts, _ := info["infotexts"].([]any)
	if len(infotexts) != 6 || infotexts[2] != texts[2] || !strings.Contains(texts[4], "Seed: 44") {
		t.Errorf("infotexts %v, PNG texts %q", infotexts, texts)
	}

	var e errorBody
	env.want(400, call{method: "POST", path: "/sdapi/v1/txt2img", body: fmt.Sprintf(`{"steps": 2, "n_iter": %d}`, MaxNIter+1)}, &e)
	if e.Field != "n_iter" || !strings.Contains(e.Detail, "n_iter 101") {
		t.Errorf("n_iter beyond the bound: %+v", e)
	}
}

// TestA1111NIterQueue: a queue that fills midway through the batches
// answers 429 and cancels those already queued; a client that hangs up
// cancels every batch; /progress counts the batches.
func TestA1111NIterQueue(t *testing.T) {
	env := newEnv(t, Options{QueueSize: 2}, 0, true)
	var e errorBody
	env.want(429, call{method: "POST", path: "/sdapi/v1/txt2img", body: `{"steps": 2, "n_iter": 3}`}, &e)
	if !strings.Contains(e.Error, "queue is full") {
		t.Errorf("429 body %+v", e)
	}
	env.srv.mu.Lock()
	n := 0
	for _, j := range env.srv.jobs {
		n++
		if j.state != StateCancelled {
			t.Errorf("job %s of the refused request is %s", j.ID, j.state)
		}
	}
	env.srv.mu.Unlock()
	if n != 2 {
		t.Errorf("%d jobs, want the 2 queued before the queue filled", n)
	}

	// The places are free again: two batches queue; the client's
	// progress counts both; hanging up cancels both.
	ctx, cancel := context.WithCancel(context.Background())
	hreq, _ := http.NewRequestWithContext(ctx, "POST", env.http.URL+"/sdapi/v1/txt2img", strings.NewReader(`{"steps": 2, "n_iter": 2, "width": 32, "height": 32}`))
	hreq.Header.Set(ClientHeader, "krita")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(hreq)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	var prog struct {
		State struct {
			JobCount int `json:"job_count"`
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for prog.State.JobCount != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("progress job_count %d, want 2", prog.State.JobCount)
		}
		time.Sleep(2 * time.Millisecond)
		env.want(200, call{method: "GET", path: "/sdapi/v1/progress", client: "krita"}, &prog)
	}
	cancel()
	<-done
	for {
		env.want(200, call{method: "GET", path: "/sdapi/v1/progress", client: "krita"}, &prog)
		if prog.State.JobCount == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the hang-up %d jobs remain", prog.State.JobCount)
		}
		time.Sleep(2 * time.Millisecond)
	}
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"steps": 2}`}, nil)
	env.want(202, call{method: "POST", path: "/v1/jobs", body: `{"steps": 2}`}, nil)
}

// TestA1111Refused: each A1111 option darkroom lacks is a 400 naming the
// key and what to send, when set; its empty values pass.
func TestA1111Refused(t *testing.T) {
	env := newEnv(t, Options{}, 1, false)
	base := `{"prompt": "a 1", "steps": 2, "width": 32, "height": 32, "sampler_name": "Euler a", %s}`
	for _, c := range []struct{ key, set, unset string }{
		{"restore_faces", "true", "false"},
		{"tiling", "true", "null"},
		{"styles", `["cinematic"]`, "[]"},
		{"script_name", `"X/Y/Z plot"`, `"None"`},
		{"script_args", `[1, 2]`, "[]"},
		{"alwayson_scripts", `{"ControlNet": {"args": [{"enabled": true}]}}`, `{"ControlNet": {"args": []}}`},
		{"s_churn", "0.5", "0"},
		{"s_noise", "0.9", "1"},
		{"s_min_uncond", "0.2", "0"},
		{"initial_noise_multiplier", "0", "1.0"},
		{"disable_extra_networks", "true", "false"},
		{"hr_checkpoint_name", `"other.safetensors"`, `"Use same checkpoint"`},
		{"hr_sampler_name", `"DDIM"`, `"Use same sampler"`},
		{"latent_mask", `"abc"`, "null"},
		{"infotext", `"a 1\nSteps: 2"`, `""`},
		{"eta", "0.5", "1"},
	} {
		var e errorBody
		env.want(400, call{method: "POST", path: "/sdapi/v1/txt2img", body: fmt.Sprintf(base, fmt.Sprintf("%q: %s", c.key, c.set))}, &e)
		if e.Field != c.key || !strings.HasPrefix(e.Detail, c.key+" ") || !strings.Contains(e.Detail, "darkroom") || !strings.Contains(e.Detail, "send") {
			t.Errorf("%s %s: %+v", c.key, c.set, e)
		}
		env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", body: fmt.Sprintf(base, fmt.Sprintf("%q: %s", c.key, c.unset))}, nil)
	}
	// eta belongs to ancestral samplers: Euler has none, so any passes.
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", body: `{"steps": 2, "width": 32, "height": 32, "sampler_name": "Euler", "eta": 0.3}`}, nil)
	// A hires target size of one factor maps; another aspect is refused.
	var ans a1111Answer
	env.want(200, call{method: "POST", path: "/sdapi/v1/txt2img", body: `{"steps": 2, "width": 32, "height": 32, "enable_hr": true, "hr_resize_x": 48, "hr_resize_y": 48, "hr_second_pass_steps": 1}`}, &ans)
	if img, _ := decodeB64PNG(t, ans.Images[0]); img.Bounds().Dx() != 48 || img.Bounds().Dy() != 48 {
		t.Errorf("hr_resize 48x48 made %v", img.Bounds())
	}
	var e errorBody
	env.want(400, call{method: "POST", path: "/sdapi/v1/txt2img", body: `{"steps": 2, "width": 32, "height": 32, "enable_hr": true, "hr_resize_x": 64, "hr_resize_y": 48}`}, &e)
	if e.Field != "hr_resize_x" {
		t.Errorf("hr_resize of another aspect: %+v", e)
	}
}
