package tui

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
)

// TestApplyOptions applies options lines to the default request: what
// they set (through the engine's field table), and the one-line error for
// each kind of mistake, naming the option.
func TestApplyOptions(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    func(r *engine.Request) // changes from the default request
		wantErr string
	}{
		{"empty", "", func(*engine.Request) {}, ""},
		{"only spaces", "  \t ", func(*engine.Request) {}, ""},
		{"img2img", "guidance=3.5 init-image=photo.png denoise=0.5", func(r *engine.Request) {
			r.Guidance, r.InitImage, r.Denoise = 3.5, "photo.png", 0.5
		}, ""},
		{"inpaint", "init-image=room.png mask=mask.png mask-blur=8 mask-grow=4", func(r *engine.Request) {
			r.InitImage, r.Mask, r.MaskBlur, r.MaskGrow = "room.png", "mask.png", 8, 4
		}, ""},
		{"hires and flux", "hires=2 hires-denoise=0.45 hires-upscaler=latent-bicubic max-sequence-length=256 shift=1.15", func(r *engine.Request) {
			r.Hires, r.HiresDenoise, r.HiresUpscaler, r.MaxSequenceLength, r.Shift = 2, 0.45, "latent-bicubic", 256, 1.15
		}, ""},
		{"extra spaces", "  hires=2   clip-skip=2 ", func(r *engine.Request) { r.Hires, r.ClipSkip = 2, 2 }, ""},
		{"double quotes", `init-image="my photo.png" denoise=0.6`, func(r *engine.Request) { r.InitImage, r.Denoise = "my photo.png", 0.6 }, ""},
		{"whole word quoted", `"init-image=my photo.png"`, func(r *engine.Request) { r.InitImage = "my photo.png" }, ""},
		{"single quotes", `mask='a "b" c.png'`, func(r *engine.Request) { r.Mask = `a "b" c.png` }, ""},
		{"escapes in double quotes", `mask="say \"hi\" \\ ok.png"`, func(r *engine.Request) { r.Mask = `say "hi" \ ok.png` }, ""},
		{"backslashes kept", `init-image=C:\img\x.png`, func(r *engine.Request) { r.InitImage = `C:\img\x.png` }, ""},
		{"lists append", "lora=style:0.8 text-encoder=clip_l.safetensors lora=detail text-encoder=t5.safetensors", func(r *engine.Request) {
			r.LoRAs = []string{"style:0.8", "detail"}
			r.TextEncoders = []string{"clip_l.safetensors", "t5.safetensors"}
		}, ""},
		{"bare bool", "zsnr", func(r *engine.Request) { r.ZSNR = true }, ""},
		{"bool with value", "zsnr=false", func(*engine.Request) {}, ""},
		{"JSON name", "clip_skip=2 init_image=x.png", func(r *engine.Request) { r.ClipSkip, r.InitImage = 2, "x.png" }, ""},
		{"empty string value", "vae=", func(*engine.Request) {}, ""},
		{"variation and refiner", "variation-seed=7 variation-strength=0.3 refiner=sdxl_refiner.safetensors refiner-switch=0.7 convention=diffusers", func(r *engine.Request) {
			r.VariationSeed, r.VariationStrength, r.Refiner, r.RefinerSwitch, r.Convention = 7, 0.3, "sdxl_refiner.safetensors", 0.7, "diffusers"
		}, ""},

		{"unknown, near a name", "guidence=3.5", nil, `unknown option "guidence" (did you mean guidance?)`},
		{"unknown", "foo=1", nil, `unknown option "foo"`},
		{"bad number", "denoise=abc", nil, `denoise "abc": want a number`},
		{"out of range", "denoise=2", nil, "denoise 2: must be more than 0 and at most 1 (0 means 1)"},
		{"named by flag", "clip-skip=-1", nil, "clip-skip -1: must be ≥ 1 (0 means 1)"},
		{"bad enum", "resize=zoom", nil, `resize "zoom": unknown; valid: crop, fill, stretch`},
		{"bad list value names it", "lora=a lora=", nil, `lora "": an empty LoRA`},
		{"bad bool", "zsnr=maybe", nil, `zsnr "maybe": want a boolean (true or false)`},
		{"first error wins", "hires=9 denoise=2", nil, "hires 9: must be between 1 and 4 (0: off)"},
		{"no value", "denoise", nil, "denoise: want denoise=VALUE"},
		{"no name", "=0.5", nil, "a value with no option name"},
		{"given twice", "denoise=0.5 denoise=0.6", nil, "denoise given twice (only list options such as lora repeat)"},
		{"unterminated quote", `init-image="my photo.png`, nil, `unterminated " quote in init-image="my photo.png`},

		{"owned: steps", "steps=30", nil, "steps: use the steps field above, not options"},
		{"owned: width", "hires=2 width=768", nil, "width: use the size field above, not options"},
		{"owned: height", "height=768", nil, "height: use the size field above, not options"},
		{"owned: prompt", `prompt="a cat"`, nil, "prompt: use the Prompt field above, not options"},
		{"owned: negative", "negative=ugly", nil, "negative: use the Negative field above, not options"},
		{"owned: model", "model=sd15", nil, "model: use the model field above, not options"},
		{"owned: sampler", "sampler=euler", nil, "sampler: use the sampler field above, not options"},
		{"owned: scheduler", "scheduler=karras", nil, "scheduler: use the sched field above, not options"},
		{"owned: cfg", "cfg=4", nil, "cfg: use the cfg field above, not options"},
		{"owned: seed", "seed=1", nil, "seed: use the seed field above, not options"},
		{"owned: batch", "batch=2", nil, "batch: use the batch field above, not options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := engine.DefaultRequest()
			err := applyOptions(&got, tt.line)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is more than one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := engine.DefaultRequest()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("request\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// An option's field error is still the engine's *FieldError underneath,
// with the field's JSON name.
func TestApplyOptionsFieldError(t *testing.T) {
	r := engine.DefaultRequest()
	err := applyOptions(&r, "mask-blur=300")
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Field != "mask_blur" || fe.Value != 300 {
		t.Fatalf("err %v (%#v), want a FieldError for mask_blur 300", err, fe)
	}
	if err.Error() != "mask-blur 300: must be between 0 and 256 pixels" {
		t.Errorf("message %q", err)
	}
}

// Every request field has exactly one input: its own, or the options
// line; the owned names are real fields.
func TestOptionFieldsCoverTable(t *testing.T) {
	options := map[string]bool{}
	for _, f := range optionFields() {
		options[f.Name] = true
	}
	for _, f := range engine.RequestFields() {
		_, owned := ownedFields[f.Name]
		if owned == options[f.Name] {
			t.Errorf("field %s: owned %v, option %v", f.Name, owned, options[f.Name])
		}
	}
	for name := range ownedFields {
		if _, ok := engine.FieldByName(name); !ok {
			t.Errorf("owned field %q is not a request field", name)
		}
	}
	for _, name := range []string{"init_image", "mask", "denoise", "mask_blur", "outpaint", "hires", "variation_seed", "loras", "refiner", "clip_skip", "convention", "guidance", "max_sequence_length", "shift"} {
		if !options[name] {
			t.Errorf("%s is not an option", name)
		}
	}
}

// formatOptions writes what differs from the defaults, quoted where
// needed, and applyOptions reads it back to the same request.
func TestFormatOptionsRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		set  func(r *engine.Request)
		want string
	}{
		{"defaults", func(*engine.Request) {}, ""},
		{"owned fields are not options", func(r *engine.Request) { r.Steps, r.Width, r.Prompt, r.Seed = 5, 64, "a cat", 9 }, ""},
		{"img2img", func(r *engine.Request) { r.Guidance, r.Denoise, r.InitImage = 3.5, 0.5, "x.png" }, "guidance=3.5 denoise=0.5 init-image=x.png"},
		{"quoted", func(r *engine.Request) { r.InitImage, r.Mask = "my photo.png", `a "b".png` }, `init-image="my photo.png" mask="a \"b\".png"`},
		{"backslash unquoted", func(r *engine.Request) { r.InitImage = `C:\x.png` }, `init-image=C:\x.png`},
		{"backslash quoted", func(r *engine.Request) { r.InitImage = `C:\my x.png` }, `init-image="C:\\my x.png"`},
		{"lists and bool", func(r *engine.Request) {
			r.LoRAs, r.TextEncoders, r.ZSNR = []string{"a:0.5", "b c"}, []string{"t5.safetensors"}, true
		}, `text-encoder=t5.safetensors lora=a:0.5 lora="b c" zsnr`},
		{"hires", func(r *engine.Request) { r.Hires, r.HiresSteps, r.HiresUpscaler = 1.5, 10, "latent-nearest" }, "hires=1.5 hires-upscaler=latent-nearest hires-steps=10"},
		{"big seed", func(r *engine.Request) { r.VariationSeed, r.VariationStrength = 1<<63+5, 0.25 }, "variation-seed=9223372036854775813 variation-strength=0.25"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := engine.DefaultRequest()
			tt.set(&r)
			got := formatOptions(r)
			if got != tt.want {
				t.Fatalf("formatOptions = %q, want %q", got, tt.want)
			}
			back := engine.DefaultRequest()
			if err := applyOptions(&back, got); err != nil {
				t.Fatal(err)
			}
			for _, f := range optionFields() {
				if a, b := f.String(&back), f.String(&r); a != b {
					t.Errorf("%s: read back %q, want %q", f.Flag, a, b)
				}
			}
		})
	}
}

// The hint names the options that start with the word under the cursor,
// the first with its usage cut to about 60 runes.
func TestHintFor(t *testing.T) {
	usage := func(flag string) string {
		for _, f := range engine.RequestFields() {
			if f.Flag == flag {
				return ansiTrunc(strings.ReplaceAll(f.Usage, "`", ""), optionHintUsage)
			}
		}
		t.Fatalf("no field %s", flag)
		return ""
	}
	tests := []struct {
		name      string
		line      string
		cur       int // -1: the end
		wantName  string
		wantText  string // the text, or its prefix when it ends in "*"
		wantAlsos string
	}{
		{"empty", "", -1, "options", optionsExample, ""},
		{"between words", "hires=2  denoise=0.5", 8, "options", optionsExample, ""},
		{"prefix", "den", -1, "denoise", usage("denoise"), "denoise-steps"},
		{"in the value", "denoise=0.", -1, "denoise", usage("denoise"), ""},
		{"exact name first", "hires", -1, "hires", usage("hires"), "hires-denoise hires-upscaler hires-steps"},
		{"second word", "guidance=3 mas", -1, "mask", usage("mask"), "mask-grow mask-blur"},
		{"cursor inside the first word", "guidance=3 mas", 3, "guidance", usage("guidance"), ""},
		{"quoted value", `init-image="my pho`, -1, "init-image", usage("init-image"), ""},
		{"list", "lora=", -1, "lora", usage("lora"), ""},
		{"owned prefix", "ste", -1, "steps", "use the steps field above, not options", ""},
		{"owned", "width=8", -1, "width", "use the size field above, not options", ""},
		{"unknown", "xyz", -1, "xyz", `no option starts with "xyz"`, ""},
		{"unknown with value, near", "guidence=3", -1, "guidence", `no option "guidence"; did you mean guidance?`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := tt.cur
			if cur < 0 {
				cur = len([]rune(tt.line))
			}
			h := hintFor(tt.line, cur)
			text, also, _ := strings.Cut(h.text, " · also ")
			if h.name != tt.wantName || text != tt.wantText || also != tt.wantAlsos {
				t.Errorf("hint %q %q, want %q %q · also %q", h.name, h.text, tt.wantName, tt.wantText, tt.wantAlsos)
			}
		})
	}
	// Usage is cut to optionHintUsage cells.
	if h := hintFor("init-image", 10); len([]rune(h.text)) != optionHintUsage || !strings.HasSuffix(h.text, "…") {
		t.Errorf("usage not cut to %d: %q", optionHintUsage, h.text)
	}
}

func TestSplitOptions(t *testing.T) {
	words, err := splitOptions(`a=1  "b=x y" c='d'e`)
	if err != nil {
		t.Fatal(err)
	}
	want := []optionWord{{"a=1", 0, 3}, {"b=x y", 5, 12}, {"c=de", 13, 19}}
	if !reflect.DeepEqual(words, want) {
		t.Errorf("words %+v, want %+v", words, want)
	}
	words, err = splitOptions(`a=1 b="x`)
	if err == nil || len(words) != 2 || words[1] != (optionWord{"b=x", 4, 8}) {
		t.Errorf("unterminated: words %+v, err %v", words, err)
	}
}
