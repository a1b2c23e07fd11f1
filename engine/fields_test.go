package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fieldSamples holds, for every request field, a valid value other than
// the default, as Set parses it (a list field: its values, Set one by one).
// A1111 text stores model and VAE names, so those samples are names.
var fieldSamples = map[string][]string{
	"prompt":      {"a cat, (fluffy:1.2)\nline two"},
	"negative":    {"blurry\nugly, low quality"},
	"steps":       {"33"},
	"sampler":     {"dpmpp_2m"},
	"scheduler":   {"karras"},
	"cfg":         {"5.5"},
	"seed":        {"18446744073709551615"},
	"width":       {"640"},
	"height":      {"384"},
	"model":       {"sd15-pruned"},
	"clip_skip":   {"2"},
	"batch":       {"3"},
	"batch_index": {"2"},
	// Added through the table alone:
	"vae":                      {"vae-ft-mse.safetensors"},
	"denoise":                  {"0.45"},
	"convention":               {"diffusers"},
	"text_encoders":            {"clip_l.safetensors", "t5xxl_fp16.safetensors"},
	"loras":                    {"style.safetensors:0.8", "detail:1:0.5"},
	"prediction":               {"v"},
	"zsnr":                     {"true"},
	"original_width":           {"2048"},
	"original_height":          {"1536"},
	"crop_top":                 {"16"},
	"crop_left":                {"8"},
	"target_width":             {"1152"},
	"target_height":            {"896"},
	"aesthetic_score":          {"7"},
	"negative_aesthetic_score": {"2"},
	"refiner":                  {"sd_xl_refiner_1.0"},
	"refiner_switch":           {"0.7"},
	"guidance":                 {"4.5"},
	"max_sequence_length":      {"256"},
	"shift":                    {"1.15"},
	"slg_layers":               {"7,8,9"},
	"slg_scale":                {"2.8"},
	"slg_start":                {"0.02"},
	"slg_end":                  {"0.2"},
	"refiner_denoise":          {"0.3"},
	"init_image":               {"photo.png"},
	"resize":                   {"fill"},
	"denoise_steps":            {"a1111"},
	"mask":                     {"mask.png"},
	"mask_grow":                {"6"},
	"mask_blur":                {"4"},
	"outpaint":                 {"0,64,0,64"},
	"outpaint_feather":         {"24"},
	"hires":                    {"2"},
	"hires_denoise":            {"0.45"},
	"hires_upscaler":           {"latent-bislerp", "4x-UltraSharp"},
	"hires_steps":              {"12"},
	"variation_seed":           {"77"},
	"variation_strength":       {"0.3"},
	"seed_resize_from_w":       {"768"},
	"seed_resize_from_h":       {"512"},
}

// fieldBad holds, for every field with a validation, a value it refuses.
var fieldBad = map[string]string{
	"steps":       "0",
	"sampler":     "nope",
	"scheduler":   "nope",
	"cfg":         "-1",
	"width":       "1001",
	"height":      "8192",
	"clip_skip":   "-1",
	"batch":       "65",
	"batch_index": "65",
	// Added through the table alone:
	"denoise":                  "1.5",
	"convention":               "auto",
	"text_encoders":            "",
	"loras":                    "style:0.8x",
	"prediction":               "x0",
	"original_width":           "-1",
	"original_height":          "99999",
	"crop_top":                 "-8",
	"crop_left":                "-8",
	"target_width":             "-1",
	"target_height":            "-1",
	"aesthetic_score":          "11",
	"negative_aesthetic_score": "-1",
	"refiner_switch":           "1",
	"guidance":                 "-1",
	"max_sequence_length":      "513",
	"shift":                    "-0.5",
	"slg_layers":               "none",
	"slg_scale":                "11",
	"slg_start":                "-0.1",
	"slg_end":                  "1.5",
	"refiner_denoise":          "1",
	"resize":                   "shrink",
	"denoise_steps":            "forge",
	"mask_grow":                "-1",
	"mask_blur":                "999",
	"outpaint":                 "1,2,3",
	"outpaint_feather":         "-4",
	"hires":                    "0.5",
	"hires_denoise":            "2",
	"hires_upscaler":           "latent-bilnear",
	"hires_steps":              "-1",
	"variation_strength":       "1.5",
	"seed_resize_from_w":       "-1",
	"seed_resize_from_h":       "99999",
}

// sampleRequest is DefaultRequest with every field set to its sample.
func sampleRequest(t *testing.T) Request {
	t.Helper()
	r := DefaultRequest()
	for _, f := range RequestFields() {
		vs, ok := fieldSamples[f.Name]
		if !ok {
			t.Fatalf("field %s has no sample in fieldSamples", f.Name)
		}
		var zero Request
		f.Copy(&r, &zero) // a list field starts empty
		for _, v := range vs {
			if err := f.Set(&r, v); err != nil {
				t.Fatalf("%s: Set(%q): %v", f.Name, v, err)
			}
		}
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("sample request: %v", err)
	}
	return r
}

// TestFieldsCoverRequest fails when a Request field has no table entry, or
// an entry names no Request field: the table and the struct agree.
func TestFieldsCoverRequest(t *testing.T) {
	var tags []string
	rt := reflect.TypeFor[Request]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			t.Errorf("Request.%s has no json name", rt.Field(i).Name)
			continue
		}
		tags = append(tags, name)
	}
	var names []string
	for _, f := range RequestFields() {
		names = append(names, f.Name)
	}
	for _, n := range tags {
		if !slices.Contains(names, n) {
			t.Errorf("Request field %q has no entry in the field table (engine/fields.go)", n)
		}
	}
	for _, n := range names {
		if !slices.Contains(tags, n) {
			t.Errorf("field table entry %q is no Request json name", n)
		}
	}
	// Each entry reads and writes its own struct field: setting the sample
	// through the table changes exactly that JSON key.
	base := DefaultRequest()
	baseJSON := jsonMap(t, base)
	for _, f := range RequestFields() {
		r := base
		var zero Request
		f.Copy(&r, &zero)
		for _, v := range fieldSamples[f.Name] {
			if err := f.Set(&r, v); err != nil {
				t.Fatal(err)
			}
		}
		got := jsonMap(t, r)
		for k := range mergeKeys(baseJSON, got) {
			if changed := fmt.Sprint(baseJSON[k]) != fmt.Sprint(got[k]); changed != (k == f.Name) {
				t.Errorf("setting %s changed JSON key %q: %v → %v", f.Name, k, baseJSON[k], got[k])
			}
		}
	}
}

func jsonMap(t *testing.T, r Request) map[string]any {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mergeKeys(a, b map[string]any) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func TestFieldNamesUnique(t *testing.T) {
	seen := map[string]string{}
	for _, f := range RequestFields() {
		for _, n := range []string{"name " + f.Name, "flag " + f.Flag, "short " + f.Short} {
			if strings.HasSuffix(n, " ") {
				continue
			}
			if other, ok := seen[n]; ok {
				t.Errorf("%s used by %s and %s", n, other, f.Name)
			}
			seen[n] = f.Name
		}
		if f.Flag != "" && f.Usage == "" {
			t.Errorf("%s: flag --%s has no usage text", f.Name, f.Flag)
		}
		if g, ok := FieldByName(f.Name); !ok || g.Flag != f.Flag {
			t.Errorf("FieldByName(%q) = %+v, %v", f.Name, g, ok)
		}
	}
	if _, ok := FieldByName("nope"); ok {
		t.Error("FieldByName found nope")
	}
}

// TestDefaultRequest pins the defaults of `darkroom gen`.
func TestDefaultRequest(t *testing.T) {
	want := Request{Steps: 20, CFG: 7, Sampler: "euler", Scheduler: "normal", Width: 512, Height: 512, Batch: 1, ClipSkip: 1}
	if got := DefaultRequest(); !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultRequest() = %+v, want %+v", got, want)
	}
	d := DefaultRequest()
	if err := d.Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}

// TestFieldSetString: String formats what Set parses, and Set refuses
// malformed text with a FieldError naming the field.
func TestFieldSetString(t *testing.T) {
	want := sampleRequest(t)
	for _, f := range RequestFields() {
		var r Request
		texts := []string{f.String(&want)}
		if f.Kind == KindStrings { // String joins, Set appends one
			texts = fieldSamples[f.Name]
			if got := f.String(&want); got != strings.Join(texts, ",") {
				t.Errorf("%s: String() = %q", f.Name, got)
			}
		}
		for _, s := range texts {
			if err := f.Set(&r, s); err != nil {
				t.Errorf("%s: Set(%q) = %v", f.Name, s, err)
			}
		}
		if !reflect.DeepEqual(f.Value(&r), f.Value(&want)) {
			t.Errorf("%s: Set(String()) gave %#v, want %#v", f.Name, f.Value(&r), f.Value(&want))
		}
		if f.Kind == KindString || f.Kind == KindStrings {
			continue
		}
		err := f.Set(&r, "x1")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != f.Name || fe.Value != "x1" {
			t.Errorf("%s: Set(\"x1\") = %v, want a FieldError for the field", f.Name, err)
		} else if !strings.HasPrefix(err.Error(), f.Name+` "x1": want a`) {
			t.Errorf("%s: Set(\"x1\") = %q", f.Name, err)
		}
	}
}

// TestValidateNamesFields: each refused value is a *FieldError naming its
// field, with the messages the CLI has always printed (after the name).
func TestValidateNamesFields(t *testing.T) {
	for _, f := range RequestFields() {
		bad, ok := fieldBad[f.Name]
		if f.check == nil {
			if ok {
				t.Errorf("%s has a bad sample but no validation", f.Name)
			}
			continue
		}
		if !ok {
			t.Errorf("field %s has a validation but no value in fieldBad", f.Name)
			continue
		}
		r := DefaultRequest()
		if err := f.Set(&r, bad); err != nil {
			t.Fatalf("%s: Set(%q): %v", f.Name, bad, err)
		}
		err := r.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != f.Name {
			t.Errorf("%s = %q: Validate() = %v, want a FieldError for %s", f.Name, bad, err, f.Name)
			continue
		}
		if !strings.HasPrefix(err.Error(), f.Name+" ") || !reflect.DeepEqual(fe.Value, f.Value(&r)) {
			t.Errorf("%s: error %q, value %#v", f.Name, err, fe.Value)
		}
		if f.Check(&r) == nil {
			t.Errorf("%s: Check accepts %q", f.Name, bad)
		}
	}
	for _, c := range []struct {
		mutate func(*Request)
		want   string
	}{
		{func(r *Request) { r.Width = 1001 }, "width 1001: must be a multiple of 8 between 8 and 4096"},
		{func(r *Request) { r.Height = 4 }, "height 4: must be a multiple of 8 between 8 and 4096"},
		{func(r *Request) { r.Steps = 1001 }, "steps 1001: must be between 1 and 1000"},
		{func(r *Request) { r.CFG = 101 }, "cfg 101: must be between 0 and 100"},
		{func(r *Request) { r.Batch = 0 }, "batch 0: must be between 1 and 64"},
		{func(r *Request) { r.ClipSkip = -2 }, "clip_skip -2: must be ≥ 1 (0 means 1)"},
		{func(r *Request) { r.Sampler = "x" }, `sampler "x": unknown; valid: ddim, ddpm,`},
		{func(r *Request) { r.Scheduler = "x" }, `scheduler "x": unknown; valid: beta, ddim_uniform,`},
		{func(r *Request) { r.ClipSkip = 0 }, ""},
		{func(r *Request) { r.Convention = "ComfyUI" }, `convention "ComfyUI": unknown; valid: comfyui, diffusers`},
		{func(r *Request) { r.Convention = "comfyui" }, ""},
		{func(r *Request) { r.Convention = "diffusers" }, ""},
		{func(r *Request) { r.Denoise = -0.1 }, "denoise -0.1: must be more than 0 and at most 1 (0 means 1)"},
		{func(r *Request) { r.Denoise = math.NaN() }, "denoise NaN: must be"},
		{func(r *Request) { r.Denoise = 1 }, ""},
		{func(r *Request) { r.TextEncoders = []string{"a", ""} }, `text_encoders ["a" ""]: an empty file name`},
		{func(r *Request) { r.VAE, r.TextEncoders = "/v/x.safetensors", []string{"a"} }, ""},
	} {
		r := DefaultRequest()
		c.mutate(&r)
		err := r.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		} else if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want %q", err, c.want)
		}
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, c := range []struct {
		e    *FieldError
		want string
	}{
		{&FieldError{Field: "width", Value: 1001, Msg: "m"}, "width 1001: m"},
		{&FieldError{Field: "sampler", Value: "a b", Msg: "m"}, `sampler "a b": m`},
		{&FieldError{Field: "cfg", Value: 0.5, Msg: "m"}, "cfg 0.5: m"},
		{&FieldError{Field: "model", Msg: "m"}, "model: m"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
		if got := c.e.Describe("--x"); got != "--x"+strings.TrimPrefix(c.want, c.e.Field) {
			t.Errorf("Describe = %q", got)
		}
	}
}

// TestPNGRoundTripsFields: every field survives the darkroom chunk, and
// every field with an A1111 key survives the parameters text.
func TestPNGRoundTripsFields(t *testing.T) {
	want := sampleRequest(t)
	path := filepath.Join(t.TempDir(), "x.png")
	if err := SavePNG(path, image.NewNRGBA(image.Rect(0, 0, 1, 1)), want, "0123456789", want.Model); err != nil {
		t.Fatal(err)
	}
	got, err := RequestFromPNG(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range RequestFields() {
		if !reflect.DeepEqual(f.Value(&got), f.Value(&want)) {
			t.Errorf("darkroom chunk: %s = %#v, want %#v", f.Name, f.Value(&got), f.Value(&want))
		}
	}

	text := A1111Parameters(want, "0123456789", want.Model)
	parsed, hash, err := ParseA1111Parameters(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if hash != "0123456789" {
		t.Errorf("model hash %q", hash)
	}
	def := DefaultRequest()
	for _, f := range RequestFields() {
		wantV := f.Value(&def) // not in A1111 text: the default
		// A1111 text has one "Denoising strength": with a hires fix it is
		// the second pass's, and an img2img strength is not kept.
		if f.A1111 != "" && !(f.Name == "denoise" && want.Hires > 1) {
			wantV = f.Value(&want)
		}
		if got := f.Value(&parsed); !reflect.DeepEqual(got, wantV) {
			t.Errorf("A1111 text: %s (key %q) = %#v, want %#v\n%s", f.Name, f.A1111, got, wantV, text)
		}
	}
	// Defaults survive too (an empty negative prompt, clip skip 1).
	if parsed, _, err := ParseA1111Parameters(A1111Parameters(def, "", "")); err != nil || !reflect.DeepEqual(parsed, def) {
		t.Errorf("defaults: %+v, %v", parsed, err)
	}
}

// TestParseA1111 reads text as A1111 writes it.
func TestParseA1111(t *testing.T) {
	text := "masterpiece, a castle\non a hill\nNegative prompt: lowres,\nbad hands\n" +
		`Steps: 28, Sampler: Euler a, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592, Size: 768x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "a: 1, b: 2", Clip skip: 2, Version: v1.10.1` + "\n"
	got, hash, err := ParseA1111Parameters(text)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultRequest()
	want.Prompt, want.Negative = "masterpiece, a castle\non a hill", "lowres,\nbad hands"
	want.Steps, want.Sampler, want.Scheduler, want.CFG, want.Seed = 28, "euler_ancestral", "karras", 6.5, 3141592
	want.Width, want.Height, want.Model, want.ClipSkip = 768, 512, "v1-5-pruned-emaonly", 2
	if !reflect.DeepEqual(got, want) || hash != "6ce0161689" {
		t.Errorf("got %+v, hash %q\nwant %+v", got, hash, want)
	}
	// A prompt alone: no settings line.
	if got, _, err := ParseA1111Parameters("just a prompt"); err != nil || got.Prompt != "just a prompt" || got.Steps != 20 {
		t.Errorf("prompt only: %+v, %v", got, err)
	}
	for _, c := range []struct{ text, field string }{
		{"p\nSteps: many, Sampler: Euler, Seed: 1", "steps"},
		{"p\nSteps: 2, Sampler: Euler, Size: big", "width"},
		{"p\nSteps: 2, Sampler: Euler, CFG scale: x", "cfg"},
	} {
		_, _, err := ParseA1111Parameters(c.text)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%q: err %v, want a FieldError for %s", c.text, err, c.field)
		}
	}
}

// TestA1111NewFields: VAE is written as its file's name, the denoising
// strength only below 1 (and not read from A1111's hires fix), and fields
// without an A1111 key stay out of the text.
func TestA1111NewFields(t *testing.T) {
	d := DefaultRequest()
	base := A1111Parameters(d, "", "m")
	r := d
	r.Convention, r.TextEncoders, r.Denoise = "diffusers", []string{"/te/clip_l.safetensors"}, 1
	if got := A1111Parameters(r, "", "m"); got != base {
		t.Errorf("unkeyed fields changed the text: %q", got)
	}
	r.VAE, r.Denoise, r.ClipSkip = `/models/vae/sdxl, fixed.safetensors`, 0.6, 2
	want := "\nSteps: 20, Sampler: Euler, Schedule type: Normal, CFG scale: 7, Seed: 0, Size: 512x512, Model: m, VAE: sdxl  fixed.safetensors, Denoising strength: 0.6, Clip skip: 2, Version: darkroom"
	if got := A1111Parameters(r, "", "m"); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got, _, err := ParseA1111Parameters(want); err != nil || got.VAE != "sdxl  fixed.safetensors" || got.Denoise != 0.6 {
		t.Errorf("parsed %+v, %v", got, err)
	}
	hires := "p\nSteps: 20, Sampler: Euler, Size: 512x512, Denoising strength: 0.7, Hires upscale: 2, Hires upscaler: Latent"
	if got, _, err := ParseA1111Parameters(hires); err != nil || got.Denoise != 0 {
		t.Errorf("hires fix: denoise %v, %v", got.Denoise, err)
	}
}
