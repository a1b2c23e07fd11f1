package tui

import (
	"reflect"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/darkroom-ai/darkroom/engine"
)

func TestPromptRequest(t *testing.T) {
	tests := []struct {
		name    string
		model   string
		fields  map[field]string
		options string
		want    func(r engine.Request) bool
		wantErr string
	}{
		{"defaults", "tiny", nil, "", func(r engine.Request) bool {
			return r.Model == "tiny" && r.Steps == 20 && r.CFG == 7 && r.Width == 512 && r.Height == 512 && r.Batch == 1 && r.Seed == 77 && r.Sampler == "euler"
		}, ""},
		{"explicit", "tiny", map[field]string{fieldSteps: "8", fieldCFG: "4.5", fieldSeed: "123", fieldSize: "64x96", fieldBatch: "2"}, "", func(r engine.Request) bool {
			return r.Steps == 8 && r.CFG == 4.5 && r.Seed == 123 && r.Width == 64 && r.Height == 96 && r.Batch == 2
		}, ""},
		{"square size", "tiny", map[field]string{fieldSize: "256"}, "", func(r engine.Request) bool { return r.Width == 256 && r.Height == 256 }, ""},
		{"seed -1 is random", "tiny", map[field]string{fieldSeed: "-1"}, "", func(r engine.Request) bool { return r.Seed == 77 }, ""},
		{"no model", "", nil, "", nil, "--models"},
		{"bad steps", "tiny", map[field]string{fieldSteps: "many"}, "", nil, "steps \"many\""},
		{"bad cfg", "tiny", map[field]string{fieldCFG: "x"}, "", nil, "cfg \"x\""},
		{"bad seed", "tiny", map[field]string{fieldSeed: "1.5"}, "", nil, "seed \"1.5\""},
		{"bad size", "tiny", map[field]string{fieldSize: "big"}, "", nil, "size \"big\""},
		{"size not /8", "tiny", map[field]string{fieldSize: "100x64"}, "", nil, "multiple of 8"},
		{"zero batch", "tiny", map[field]string{fieldBatch: "0"}, "", nil, "batch 0: must be between 1 and 64"},
		{"options", "tiny", nil, "guidance=3.5 denoise=0.5 init-image=x.png", func(r engine.Request) bool {
			return r.Guidance == 3.5 && r.Denoise == 0.5 && r.InitImage == "x.png" && r.Steps == 20 && r.Hires == 0
		}, ""},
		{"size from the init image", "tiny", map[field]string{fieldSize: "0x0"}, "init-image=x.png denoise=0.6", func(r engine.Request) bool {
			return r.Width == 0 && r.Height == 0 && r.InitImage == "x.png"
		}, ""},
		{"size 0 needs an init image", "tiny", map[field]string{fieldSize: "0x0"}, "", nil, "width 0: 0 (the init image's size) needs an init image"},
		{"bad option", "tiny", nil, "hires=2 denoise=2", nil, "options: denoise 2: must be more than 0 and at most 1 (0 means 1)"},
		{"unknown option", "tiny", nil, "guidence=3.5", nil, `options: unknown option "guidence" (did you mean guidance?)`},
		{"own field in options", "tiny", nil, "steps=9", nil, "options: steps: use the steps field above, not options"},
		{"option checked with the others", "tiny", nil, "batch-index=3", nil, "options: batch-index 3: the batch has 1 images"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
			p := NewPromptPane(c)
			p.SetModel(tt.model)
			p.prompt.SetValue("  a cat \n")
			for f, v := range tt.fields {
				p.setText(f, v)
			}
			p.options.SetValue(tt.options)
			r, err := p.Request(func() uint64 { return 77 })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Prompt != "a cat" || !tt.want(r) {
				t.Errorf("request %+v", r)
			}
		})
	}
}

func TestPromptLoadRoundTrip(t *testing.T) {
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
	p := NewPromptPane(c)
	want := engine.Request{Model: "m", Prompt: "a\nb", Negative: "ugly", Seed: 99, Steps: 12, CFG: 5.5, Sampler: "dpmpp_2m", Scheduler: "karras", Width: 64, Height: 128, Batch: 3, ClipSkip: 1}
	p.options.SetValue("hires=2")
	p.Load(want)
	if o := p.Options(); o != "" {
		t.Errorf("options %q after loading a request without any", o)
	}
	got, err := p.Request(func() uint64 { t.Error("random seed drawn"); return 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}

	// The options come back as the options line, and from it.
	want.Guidance, want.Denoise, want.InitImage, want.Hires, want.ZSNR = 3.5, 0.5, "my photo.png", 2, true
	want.LoRAs = []string{"a:0.5", "b"}
	p.Load(want)
	if o, w := p.Options(), `guidance=3.5 denoise=0.5 lora=a:0.5 lora=b zsnr init-image="my photo.png" hires=2`; o != w {
		t.Errorf("options line %q, want %q", o, w)
	}
	got, err = p.Request(func() uint64 { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip with options:\n got %+v\nwant %+v", got, want)
	}
}

// The options line is a text field like the negative prompt: it takes
// every rune (':' of a LoRA strength, '?', quotes), a pasted newline is a
// space, and the pane draws it on its own row.
func TestOptionsEditing(t *testing.T) {
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
	p := NewPromptPane(c)
	p.SetWidth(80)
	if !strings.Contains(stripANSI(p.Render(promptHeight)), " options name=value … (hires=2)") {
		t.Errorf("no options placeholder:\n%s", stripANSI(p.Render(promptHeight)))
	}
	p.Focus(fieldOptions)
	if !p.Typing() {
		t.Error("options field does not take typing")
	}
	for _, r := range `lora=style:0.8 mask="a?.png"` {
		p.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
	}
	p.Update(tea.PasteMsg{Content: "\nhires=2"})
	if got, want := p.Options(), `lora=style:0.8 mask="a?.png" hires=2`; got != want {
		t.Errorf("options %q, want %q", got, want)
	}
	view := stripANSI(p.Render(promptHeight))
	if !strings.Contains(view, `▸options lora=style:0.8 mask="a?.png" hires=2`) {
		t.Errorf("options row not drawn:\n%s", view)
	}
	if n := len(strings.Split(view, "\n")); n != promptHeight || p.Height() != promptHeight {
		t.Errorf("pane is %d rows (Height %d), want %d", n, p.Height(), promptHeight)
	}
	hint, ok := p.OptionsHint(80)
	if !ok || !strings.HasPrefix(stripANSI(hint), "hires hires fix: upscale") {
		t.Errorf("hint %q %v", stripANSI(hint), ok)
	}
	p.Focus(fieldBatch)
	if _, ok := p.OptionsHint(80); ok {
		t.Error("hint shown with the cursor in batch")
	}
}

func TestTextEdit(t *testing.T) {
	k := func(s string) tea.KeyPressMsg { return tea.KeyPressMsg(parseKey(s)) }
	te := newTextEdit("", 2, true)
	for _, r := range "hello world" {
		te.Update(tea.KeyPressMsg{Code: r, Text: string(r)}, 20)
	}
	te.Update(k("ctrl+w"), 20)
	if te.Value() != "hello " {
		t.Errorf("ctrl+w: %q", te.Value())
	}
	te.Update(k("left"), 20)
	te.Update(k("backspace"), 20)
	te.Update(tea.KeyPressMsg{Code: 'X', Text: "X"}, 20)
	if te.Value() != "hellX " || te.cur != 5 {
		t.Errorf("edit in the middle: %q cursor %d", te.Value(), te.cur)
	}
	te.Update(k("enter"), 20)
	te.Update(tea.PasteMsg{Content: "line2"}, 20)
	if te.Value() != "hellX\nline2 " {
		t.Errorf("newline and paste: %q", te.Value())
	}
	te.Update(k("up"), 20)
	if te.cur != 5 {
		t.Errorf("up: cursor %d, want 5", te.cur)
	}
	one := newTextEdit("", 1, false)
	one.Update(tea.PasteMsg{Content: "a\nb"}, 10)
	one.Update(k("enter"), 10)
	if one.Value() != "a b" {
		t.Errorf("single-line: %q", one.Value())
	}
	// Wrapping: 25 runes with no space at width 10 (9 for text, one for
	// the cursor) → 9+9+7; the view scrolls to the cursor.
	w := newTextEdit("", 2, true)
	w.SetValue(strings.Repeat("abcde", 5))
	rows, _ := w.layout(10)
	if len(rows) != 3 {
		t.Errorf("%d rows, want 3", len(rows))
	}
	s := DefaultStyles(true)
	if v := stripANSI(w.View(10, false, s)); v != "eabcdeabc\ndeabcde" {
		t.Errorf("view %q", v)
	}
	w.Update(k("home"), 10)
	if v := stripANSI(w.View(10, true, s)); v != "abcdeabcd\neabcdeabc" {
		t.Errorf("view after home %q", v)
	}
	// Words move to the next row whole.
	w.SetValue("a red fox in the snow")
	if v := stripANSI(w.View(10, false, s)); v != "fox in \nthe snow" {
		t.Errorf("word wrap %q", v)
	}
	rows, pos := w.layout(10)
	if len(rows) != 3 || pos[len(w.value)] != [2]int{2, 8} {
		t.Errorf("rows %v, end at %v", rows, pos[len(w.value)])
	}
}

// Selecting the built-in model sets its 32×32 defaults; selecting a user
// model afterwards restores the usual ones.
func TestPromptBuiltinModelDefaults(t *testing.T) {
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
	p := NewPromptPane(c)
	p.SetModel(engine.DefaultModel)
	r, err := p.Request(func() uint64 { return 1 })
	if err != nil {
		t.Fatal(err)
	}
	if r.Width != 32 || r.Height != 32 || r.Steps != 20 || r.CFG != 5 {
		t.Errorf("built-in model request %dx%d, %d steps, cfg %g", r.Width, r.Height, r.Steps, r.CFG)
	}
	p.SetModel("sd15")
	r, err = p.Request(func() uint64 { return 1 })
	if err != nil {
		t.Fatal(err)
	}
	d := engine.DefaultRequest()
	if r.Width != d.Width || r.Height != d.Height || r.Steps != d.Steps || r.CFG != d.CFG {
		t.Errorf("user model request %dx%d, %d steps, cfg %g", r.Width, r.Height, r.Steps, r.CFG)
	}
}

// Number fields edit like the prompt (the same editor) and take only what
// their type parses: letters are refused, '.' only in cfg, '-' only in
// the seed, 'x' only in the size.
func TestNumberFieldEditing(t *testing.T) {
	c := &Common{Styles: DefaultStyles(true), Keys: DefaultKeyMap()}
	p := NewPromptPane(c)
	typ := func(s string) {
		for _, r := range s {
			p.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
		}
	}
	keys := func(names ...string) {
		for _, n := range names {
			p.Update(tea.KeyPressMsg(parseKey(n)))
		}
	}
	p.Focus(fieldSteps)
	keys("ctrl+u")
	typ("10abc")
	if got := p.textOf(fieldSteps); got != "10" {
		t.Errorf("letters in steps: %q, want 10", got)
	}
	keys("home")
	typ("2")
	keys("ctrl+e")
	typ("0")
	keys("ctrl+a", "right", "right")
	typ("5")
	if got := p.textOf(fieldSteps); got != "21500" {
		t.Errorf("home/end/right: %q, want 21500", got)
	}
	keys("left", "ctrl+k")
	if got := p.textOf(fieldSteps); got != "21" {
		t.Errorf("ctrl+k: %q, want 21", got)
	}
	keys("ctrl+w")
	if got := p.textOf(fieldSteps); got != "" {
		t.Errorf("ctrl+w: %q, want empty", got)
	}
	typ("12")
	keys("left", "ctrl+u")
	if got := p.textOf(fieldSteps); got != "2" {
		t.Errorf("ctrl+u: %q, want 2", got)
	}
	typ("-.x")
	if got := p.textOf(fieldSteps); got != "2" {
		t.Errorf("signs in steps: %q", got)
	}
	p.Update(tea.PasteMsg{Content: " 3a4 "})
	if got := p.textOf(fieldSteps); got != "342" {
		t.Errorf("paste: %q, want 342", got)
	}
	p.Focus(fieldCFG)
	keys("ctrl+u", "ctrl+k")
	typ("-4.5e")
	if got := p.textOf(fieldCFG); got != "4.5" {
		t.Errorf("cfg: %q, want 4.5", got)
	}
	p.Focus(fieldSize)
	keys("ctrl+u", "ctrl+k")
	typ("64x96.")
	if got := p.textOf(fieldSize); got != "64x96" {
		t.Errorf("size: %q, want 64x96", got)
	}
	// "random" is replaced by the first edit; moving the cursor keeps it.
	p.Focus(fieldSeed)
	p.SetSeedRandom()
	keys("left")
	if got := p.textOf(fieldSeed); got != "random" {
		t.Errorf("left on random: %q", got)
	}
	typ("-1a")
	if got := p.textOf(fieldSeed); got != "-1" {
		t.Errorf("seed: %q, want -1", got)
	}
	// The focused field draws its cursor where it is.
	p.SetWidth(80)
	keys("left")
	if v := stripANSI(p.Render(promptHeight)); !strings.Contains(v, "seed -▏1") {
		t.Errorf("cursor not drawn inside the field:\n%s", v)
	}
}

// A one-row view (the options line) scrolls sideways to the cursor and
// marks what it cuts off; unfocused it shows the start.
func TestTextEditViewLine(t *testing.T) {
	s := DefaultStyles(true)
	te := newTextEdit("ph", 1, false)
	view := func(focused bool) string {
		// The cursor cell is reverse video: bracket it to see it.
		v := strings.NewReplacer("\x1b[7m", "[", "\x1b[27m", "]").Replace(te.ViewLine(10, focused, s))
		return stripANSI(v)
	}
	te.SetValue("abc")
	if got := view(true); got != "abc[ ]" {
		t.Errorf("short, cursor at the end: %q", got)
	}
	te.SetValue("guidance=3.5 den")
	if got := view(true); got != "…=3.5 den[ ]" {
		t.Errorf("long, cursor at the end: %q", got)
	}
	if got := view(false); got != "guidance=…" {
		t.Errorf("long, unfocused: %q", got)
	}
	te.cur = 2
	if got := view(true); got != "gu[i]dance=…" {
		t.Errorf("long, cursor near the start: %q", got)
	}
	te.cur = 11
	if got := view(true); got != "…ance=3.[5]…" {
		t.Errorf("long, cursor inside: %q", got)
	}
	te.cur = len(te.value) - 1 // on the last rune: nothing cut on the right
	if got := view(true); got != "…e=3.5 de[n]" {
		t.Errorf("long, cursor on the last rune: %q", got)
	}
	for cur := 0; cur <= len(te.value); cur++ {
		te.cur = cur
		if w := ansi.StringWidth(te.ViewLine(10, true, s)); w > 10 {
			t.Errorf("cursor %d: %d cells, more than 10", cur, w)
		}
	}
}
