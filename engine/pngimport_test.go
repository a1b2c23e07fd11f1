package engine

import (
	"image"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// ComfyUI's default workflow, as its PNG "prompt" chunk holds it.
const comfyDefault = `{
 "3": {"class_type": "KSampler", "inputs": {"seed": 18446744073709551615, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0,
   "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 768, "height": 512, "batch_size": 2}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat, (fluffy:1.2)", "clip": ["10", 0]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 0]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
 "10": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["4", 1]}}
}`

// A graph beyond the simple one: a LoRA between checkpoint and sampler,
// img2img latents, a combined positive, the seed from another node and a
// second sampler.
const comfyComplex = `{
 "3": {"class_type": "KSampler", "inputs": {"seed": ["20", 0], "steps": 30, "cfg": 7, "sampler_name": "Euler a", "scheduler": "normal", "denoise": 0.6,
   "model": ["11", 0], "positive": ["12", 0], "negative": ["7", 0], "latent_image": ["13", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "11": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "x.safetensors", "strength_model": 1, "strength_clip": 1}},
 "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["7", 0], "conditioning_2": ["7", 0]}},
 "13": {"class_type": "VAEEncode", "inputs": {"pixels": ["14", 0], "vae": ["4", 2]}},
 "14": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
 "20": {"class_type": "PrimitiveNode", "inputs": {"value": 5}},
 "30": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 5}}
}`

func TestParseComfyUIPrompt(t *testing.T) {
	want := DefaultRequest()
	want.Prompt, want.Negative = "a cat, (fluffy:1.2)", "blurry"
	want.Seed, want.Steps, want.CFG, want.Sampler, want.Scheduler = 18446744073709551615, 25, 6.5, "dpmpp_2m", "karras"
	want.Width, want.Height, want.Batch, want.ClipSkip = 768, 512, 2, 2
	want.Model = "v1-5-pruned-emaonly.safetensors"
	complexWant := DefaultRequest()
	complexWant.Steps, complexWant.CFG, complexWant.Sampler, complexWant.Denoise, complexWant.Model = 30, 7, "euler_ancestral", 0.6, "sd15.safetensors"
	for _, c := range []struct {
		name, js string
		want     PNGRequest
		err      string
	}{
		{"default workflow", comfyDefault, PNGRequest{Request: want, Source: ChunkComfyPrompt,
			Fields: []string{"prompt", "negative", "steps", "sampler", "scheduler", "cfg", "seed", "width", "height", "model", "clip_skip", "batch"}}, ""},
		{"complex", comfyComplex, PNGRequest{Request: complexWant, Source: ChunkComfyPrompt,
			Fields: []string{"negative", "steps", "sampler", "scheduler", "cfg", "model", "denoise"},
			Ignored: []string{
				"KSampler.seed of node 3 (not a value)",
				"KSampler.positive from node 12 (ConditioningCombine): not a CLIPTextEncode",
				"KSampler.latent_image from node 13 (VAEEncode): not an empty latent",
				"node 11 (LoraLoader)", "node 12 (ConditioningCombine)", "node 13 (VAEEncode)", "node 14 (LoadImage)", "node 20 (PrimitiveNode)", "node 30 (KSampler)",
			}}, ""},
		{"no sampler", `{"1": {"class_type": "LoadImage", "inputs": {}}}`, PNGRequest{}, "ComfyUI prompt: no KSampler node"},
		{"bad steps", `{"1": {"class_type": "KSampler", "inputs": {"steps": 2.5}}}`, PNGRequest{}, `ComfyUI prompt: KSampler.steps of node 1: steps "2.5": want a whole number`},
		{"not json", `{`, PNGRequest{}, "ComfyUI prompt: unexpected end of JSON input"},
	} {
		got, err := ParseComfyUIPrompt(c.js)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}

// ReadPNGRequest reads darkroom's chunk first, then A1111's text, then
// ComfyUI's graph.
func TestReadPNGRequest(t *testing.T) {
	dir := t.TempDir()
	img := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	write := func(name string, text map[string]string) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := EncodePNG(f, img, text); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return path
	}
	own := DefaultRequest()
	own.Prompt, own.Seed = "mine", 5
	ownPath := filepath.Join(dir, "own.png")
	if err := SavePNG(ownPath, img, own, "", ""); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, f := range RequestFields() {
		all = append(all, f.Name)
	}
	a1111 := "a lighthouse\nNegative prompt: blurry\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 99, Size: 640x448, Model hash: abc, Model: dreamshaper_8, Lora hashes: \"x: 1\", Hires upscale: 2, Denoising strength: 0.5, Version: v1.6.0"
	aWant := DefaultRequest()
	aWant.Prompt, aWant.Negative, aWant.Steps, aWant.Sampler, aWant.Scheduler = "a lighthouse", "blurry", 28, "dpmpp_2m", "karras"
	aWant.CFG, aWant.Seed, aWant.Width, aWant.Height, aWant.Model = 6, 99, 640, 448, "dreamshaper_8"
	aWant.Hires, aWant.HiresDenoise = 2, 0.5 // A1111's hires fix: its Denoising strength is the second pass's
	comfyWant, _ := ParseComfyUIPrompt(comfyDefault)
	for _, c := range []struct {
		name string
		path string
		want PNGRequest
		err  string
	}{
		{"darkroom", ownPath, PNGRequest{Request: own, Source: ChunkDarkroom, Fields: all}, ""},
		{"A1111", write("a1111.png", map[string]string{ChunkParameters: a1111}), PNGRequest{Request: aWant, Source: ChunkParameters,
			Fields:  []string{"prompt", "negative", "steps", "sampler", "scheduler", "cfg", "seed", "width", "height", "model", "hires", "hires_denoise"},
			Ignored: []string{"Lora hashes"}}, ""},
		{"ComfyUI", write("comfy.png", map[string]string{ChunkComfyPrompt: comfyDefault, "workflow": "{}"}), comfyWant, ""},
		{"nothing", write("plain.png", nil), PNGRequest{}, filepath.Join(dir, "plain.png") + `: no generation metadata (no "darkroom", "parameters" or "prompt" chunk)`},
	} {
		got, err := ReadPNGRequest(c.path)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}
