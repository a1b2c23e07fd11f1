package cmd

import (
	"errors"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
)

// genSamples holds, per request field, a stored value and a different
// value given as a flag (as Set parses them).
var genSamples = map[string][2]string{
	"prompt":      {"stored prompt", "flag prompt"},
	"negative":    {"stored negative", "flag negative"},
	"steps":       {"12", "13"},
	"sampler":     {"heun", "dpmpp_2m"},
	"scheduler":   {"karras", "exponential"},
	"cfg":         {"4.5", "6"},
	"seed":        {"5", "7"},
	"width":       {"64", "96"},
	"height":      {"128", "160"},
	"model":       {"stored-model", "flag-model"},
	"clip_skip":   {"2", "3"},
	"batch":       {"2", "4"},
	"batch_index": {"1", "2"},
	// Added through the table alone:
	"vae":                      {"stored-vae.safetensors", "flag-vae.safetensors"},
	"denoise":                  {"0.5", "0.75"},
	"convention":               {"diffusers", "comfyui"},
	"text_encoders":            {"stored-te.safetensors", "flag-te.safetensors"},
	"loras":                    {"stored.safetensors:0.5", "flag.safetensors:0.8"},
	"prediction":               {"eps", "v"},
	"zsnr":                     {"true", "false"},
	"original_width":           {"2048", "1024"},
	"original_height":          {"1536", "768"},
	"crop_top":                 {"16", "32"},
	"crop_left":                {"8", "24"},
	"target_width":             {"1152", "1024"},
	"target_height":            {"896", "768"},
	"aesthetic_score":          {"7", "5"},
	"negative_aesthetic_score": {"2", "3"},
	"refiner":                  {"stored-refiner.safetensors", "flag-refiner.safetensors"},
	"refiner_switch":           {"0.7", "0.6"},
	"guidance":                 {"4.5", "2.5"},
	"max_sequence_length":      {"256", "128"},
	"shift":                    {"1.15", "0.9"},
	"slg_layers":               {"7,8,9", "8"},
	"slg_scale":                {"2.8", "3.5"},
	"slg_start":                {"0.02", "0.05"},
	"slg_end":                  {"0.2", "0.25"},
	"refiner_denoise":          {"0.3", "0.25"},
	"init_image":               {"stored.png", "flag.png"},
	"resize":                   {"fill", "stretch"},
	"denoise_steps":            {"a1111", "diffusers"},
	"mask":                     {"stored-mask.png", "flag-mask.png"},
	"mask_grow":                {"4", "6"},
	"mask_blur":                {"2", "8"},
	"outpaint":                 {"32", "0,64,0,64"},
	"outpaint_feather":         {"24", "16"},
	"hires":                    {"2", "1.5"},
	"hires_denoise":            {"0.45", "0.6"},
	"hires_upscaler":           {"latent-bislerp", "4x-UltraSharp"},
	"hires_steps":              {"12", "15"},
	"variation_seed":           {"77", "78"},
	"variation_strength":       {"0.3", "0.4"},
	"seed_resize_from_w":       {"768", "640"},
	"seed_resize_from_h":       {"512", "448"},
}

// genBad holds, per request field, a flag value refused with a message
// starting with the flag; "" marks a field without validation.
var genBad = map[string]string{
	"prompt":      "",
	"negative":    "",
	"steps":       "0",
	"sampler":     "nope",
	"scheduler":   "nope",
	"cfg":         "101",
	"seed":        "x",
	"width":       "1001",
	"height":      "4",
	"model":       "",
	"clip_skip":   "-1",
	"batch":       "0",
	"batch_index": "-1",
	// Added through the table alone:
	"vae":                      "",
	"denoise":                  "1.5",
	"convention":               "auto",
	"text_encoders":            "",
	"loras":                    "style:0.8x",
	"prediction":               "x0",
	"zsnr":                     "maybe",
	"original_width":           "-1",
	"original_height":          "99999",
	"crop_top":                 "-8",
	"crop_left":                "-8",
	"target_width":             "-1",
	"target_height":            "-1",
	"aesthetic_score":          "11",
	"negative_aesthetic_score": "-1",
	"refiner":                  "",
	"refiner_switch":           "1",
	"guidance":                 "-1",
	"max_sequence_length":      "513",
	"shift":                    "-0.5",
	"slg_layers":               "none",
	"slg_scale":                "11",
	"slg_start":                "-0.1",
	"slg_end":                  "1.5",
	"refiner_denoise":          "1",
	"init_image":               "",
	"resize":                   "shrink",
	"denoise_steps":            "forge",
	"mask":                     "",
	"mask_grow":                "-1",
	"mask_blur":                "999",
	"outpaint":                 "1,2,3",
	"outpaint_feather":         "-4",
	"hires":                    "0.5",
	"hires_denoise":            "2",
	"hires_upscaler":           "latent-bilnear",
	"hires_steps":              "-1",
	"variation_seed":           "",
	"variation_strength":       "1.5",
	"seed_resize_from_w":       "-1",
	"seed_resize_from_h":       "99999",
}

// storedPNG writes a PNG whose darkroom chunk holds the stored samples.
func storedPNG(t *testing.T) (string, engine.Request) {
	t.Helper()
	req := engine.DefaultRequest()
	for _, f := range engine.RequestFields() {
		s, ok := genSamples[f.Name]
		if !ok {
			t.Fatalf("field %s has no sample in genSamples", f.Name)
		}
		var zero engine.Request
		f.Copy(&req, &zero)
		if err := f.Set(&req, s[0]); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "stored.png")
	if err := engine.SavePNG(path, image.NewNRGBA(image.Rect(0, 0, 1, 1)), req, "", ""); err != nil {
		t.Fatal(err)
	}
	return path, req
}

// genRequest parses args as gen's flags and returns the request they make.
func genRequest(t *testing.T, args ...string) (engine.Request, error) {
	t.Helper()
	c, f := newGenCmdFlags()
	if err := c.ParseFlags(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return f.request(c)
}

// TestGenFromPrecedence: with --from, a flag given explicitly wins and
// every other field keeps the stored value, for every request field.
func TestGenFromPrecedence(t *testing.T) {
	path, stored := storedPNG(t)
	got, err := genRequest(t, "--from", path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, stored) {
		t.Errorf("--from alone:\n got %+v\nwant %+v", got, stored)
	}
	for _, field := range engine.RequestFields() {
		if field.Flag == "" {
			continue
		}
		t.Run(field.Name, func(t *testing.T) {
			flagValue := genSamples[field.Name][1]
			got, err := genRequest(t, "--from", path, "--"+field.Flag+"="+flagValue)
			if err != nil {
				t.Fatal(err)
			}
			want := stored
			var zero engine.Request
			field.Copy(&want, &zero)
			if err := field.Set(&want, flagValue); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("--%s %s:\n got %+v\nwant %+v", field.Flag, flagValue, got, want)
			}
			if field.Short != "" { // the shorthand too
				if got, err := genRequest(t, "--from", path, "-"+field.Short, flagValue); err != nil || !reflect.DeepEqual(got, want) {
					t.Errorf("-%s %s: %+v, %v", field.Short, flagValue, got, err)
				}
			}
		})
	}
	// A repeated flag gives a list; given, it replaces the stored list.
	got, err = genRequest(t, "--from", path, "--text-encoder", "a", "--text-encoder", "b,c")
	if err != nil || !reflect.DeepEqual(got.TextEncoders, []string{"a", "b,c"}) {
		t.Errorf("--text-encoder twice: %q, %v", got.TextEncoders, err)
	}
	// -s -1 draws a new seed even with --from.
	if got, err := genRequest(t, "--from", path, "-s", "-1"); err != nil || got.Seed == stored.Seed {
		t.Errorf("-s -1 with --from: seed %d, %v", got.Seed, err)
	}
}

// TestGenFieldErrorsNameFlags: a FieldError for any request field reads
// with the field's flag, also when wrapped, and the flags' refusals say
// which flag.
func TestGenFieldErrorsNameFlags(t *testing.T) {
	for _, field := range engine.RequestFields() {
		if field.Flag == "" {
			continue
		}
		fe := &engine.FieldError{Field: field.Name, Value: 9, Msg: "no good"}
		want := "--" + field.Flag + " 9: no good"
		if got := withFlagNames(fe); got.Error() != want || !errors.Is(got, fe) {
			t.Errorf("%s: %q, want %q", field.Name, got, want)
		}
		wrapped := withFlagNames(fmt.Errorf("model x: %w", fe))
		if got := wrapped.Error(); got != "model x: "+want {
			t.Errorf("%s wrapped: %q", field.Name, got)
		}
	}
	// A model check's FieldError (engine/generate.go) reads as before.
	if got := withFlagNames(&engine.FieldError{Field: "clip_skip", Value: 9, Msg: "the text encoder has 3 layers"}).Error(); got != "--clip-skip 9: the text encoder has 3 layers" {
		t.Errorf("clip skip: %q", got)
	}
	if err := errors.New("plain"); withFlagNames(err) != err || withFlagNames(nil) != nil {
		t.Error("withFlagNames changed an error without a FieldError")
	}

	for _, field := range engine.RequestFields() {
		bad, ok := genBad[field.Name]
		if !ok {
			t.Errorf("field %s: add its refused value (or \"\") to genBad", field.Name)
			continue
		}
		if (bad == "" && field.Kind != engine.KindStrings) || field.Flag == "" {
			continue
		}
		t.Run(field.Name, func(t *testing.T) {
			c, f := newGenCmdFlags()
			args := []string{"-m", "some-model", "--" + field.Flag + "=" + bad}
			if err := c.ParseFlags(args); err != nil {
				// Refused while parsing (not a number): pflag names the flag.
				if !strings.Contains(err.Error(), "--"+field.Flag+`" flag: want a`) {
					t.Errorf("%v: %v", args, err)
				}
				return
			}
			req, err := f.request(c)
			if err == nil {
				err = req.Validate()
			}
			err = withFlagNames(err)
			if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("--%s %v", field.Flag, quoteIfString(field, bad))) {
				t.Errorf("%v: %v, want an error naming --%s", args, err, field.Flag)
			}
		})
	}
}

func quoteIfString(field engine.RequestField, s string) string {
	if field.Kind == engine.KindStrings {
		return fmt.Sprintf("%q", []string{s})
	}
	if field.Kind == engine.KindString || field.Name == "seed" {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// TestGenFlagsFromTable: gen has a flag, shorthand and completion for every
// request field of the table.
func TestGenFlagsFromTable(t *testing.T) {
	c, _ := newGenCmdFlags()
	for _, field := range engine.RequestFields() {
		if field.Flag == "" {
			continue
		}
		fl := c.Flags().Lookup(field.Flag)
		if fl == nil {
			t.Errorf("no --%s", field.Flag)
			continue
		}
		if fl.Shorthand != field.Short || fl.Usage != field.Usage {
			t.Errorf("--%s: shorthand %q usage %q", field.Flag, fl.Shorthand, fl.Usage)
		}
		if _, ok := c.GetFlagCompletionFunc(field.Flag); ok != (field.Values != nil) {
			t.Errorf("--%s: completion %v", field.Flag, ok)
		}
	}
}

// TestGenStoresAbsolutePaths: files given by relative paths are stored
// absolute, so that --from works from another directory; names are kept.
func TestGenStoresAbsolutePaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, name := range []string{"m.safetensors", "v.safetensors", "te.safetensors"} {
		if err := os.WriteFile(name, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := genRequest(t, "-m", "m.safetensors", "--vae", "v.safetensors", "--text-encoder", "te.safetensors", "--text-encoder", "clip_g")
	if err != nil {
		t.Fatal(err)
	}
	abs := func(n string) string { return filepath.Join(dir, n) }
	if got.Model != abs("m.safetensors") || got.VAE != abs("v.safetensors") || !reflect.DeepEqual(got.TextEncoders, []string{abs("te.safetensors"), "clip_g"}) {
		t.Errorf("model %q vae %q text encoders %q", got.Model, got.VAE, got.TextEncoders)
	}
}
