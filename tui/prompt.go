package tui

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/demo"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// field is one input of the prompt editor.
type field int

// Prompt editor fields, in Tab order.
const (
	fieldPrompt field = iota
	fieldNegative
	fieldModel
	fieldSampler
	fieldScheduler
	fieldSteps
	fieldCFG
	fieldSeed
	fieldSize
	fieldBatch
	fieldOptions
	numFields
)

var fieldLabels = [numFields]string{"Prompt", "Negative", "model", "sampler", "sched", "steps", "cfg", "seed", "size", "batch", "options"}

// promptHeight is the pane's height including its frame in the full
// layout (a three-row prompt text area); the compact layout's is 11.
const promptHeight = 14

// negativePlaceholder and optionsPlaceholder are what the empty
// negative prompt and options line show.
const (
	negativePlaceholder = "Negative prompt (optional)"
	optionsPlaceholder  = "name=value … (hires=2)"
)

// PromptPane edits the next job: multi-line prompt and negative prompt,
// model, sampler, scheduler, steps, CFG, seed, size and batch, and the
// options line, name=value words for every other request field
// (options.go).
type PromptPane struct {
	c                    *Common
	prompt, negative     textEdit
	options              textEdit
	model                string
	sampler, scheduler   string
	samplers, schedulers []string
	text                 [numFields]textEdit // steps, cfg, seed, size, batch
	focus                field
	focused              bool
	compact              bool
	width                int
}

// NewPromptPane returns an editor holding engine.DefaultRequest's values.
func NewPromptPane(c *Common) *PromptPane {
	p := &PromptPane{c: c, samplers: sampling.Samplers(), schedulers: sampling.Schedulers()}
	p.prompt = newTextEdit("Describe the image…", 3, true)
	p.negative = newTextEdit(negativePlaceholder, 1, false)
	p.options = newTextEdit(optionsPlaceholder, 1, false)
	for f := fieldSteps; f <= fieldBatch; f++ {
		p.text[f] = newNumberEdit(numberRunes[f])
	}
	p.Load(engine.DefaultRequest())
	p.setText(fieldSeed, "random")
	return p
}

// numberRunes are the runes each number field takes besides digits: a
// float's '.', the seed's '-' (-1 is random), the size's 'x'.
var numberRunes = map[field]string{fieldCFG: ".", fieldSeed: "-", fieldSize: "xX×"}

// newNumberEdit returns a one-line editor, the prompt's editor, that
// takes only digits and the runes in extra.
func newNumberEdit(extra string) textEdit {
	t := newTextEdit("", 1, false)
	t.limit = 24
	t.accept = func(r rune) bool { return r >= '0' && r <= '9' || strings.ContainsRune(extra, r) }
	return t
}

// textOf returns a number field's text.
func (p *PromptPane) textOf(f field) string { return p.text[f].Value() }

// setText sets a number field's text, the cursor at its end.
func (p *PromptPane) setText(f field, v string) { p.text[f].SetValue(v) }

// SetCompact gives the prompt text area one row instead of three and
// puts the negative prompt beside its label, for terminals under
// fullHeight rows.
func (p *PromptPane) SetCompact(on bool) {
	p.compact = on
	p.prompt.height, p.negative.placeholder = 3, negativePlaceholder
	if on {
		p.prompt.height, p.negative.placeholder = 1, "(optional)"
	}
}

// Height is the pane's height including its frame.
func (p *PromptPane) Height() int { return len(p.rowFields()) + 2 }

// rowFields lists the fields on each row inside the pane's frame, as
// Render draws them: the row's left field and its right one (numFields
// when the row holds one field).
func (p *PromptPane) rowFields() [][2]field {
	var rows [][2]field
	one := func(f field, n int) {
		for range n {
			rows = append(rows, [2]field{f, numFields})
		}
	}
	one(fieldPrompt, 1+p.prompt.height) // label and text
	if p.compact {
		one(fieldNegative, 1) // label and text on one row
	} else {
		one(fieldNegative, 2)
	}
	one(fieldModel, 1)
	rows = append(rows, [2]field{fieldSampler, fieldScheduler}, [2]field{fieldSteps, fieldCFG}, [2]field{fieldSeed, fieldSize}, [2]field{fieldBatch, numFields})
	one(fieldOptions, 1)
	return rows
}

// negativeWidth is the width of the negative prompt's text: under its
// label, or right of it in the compact layout.
func (p *PromptPane) negativeWidth() int {
	if p.compact {
		return p.width - 2 - len(fieldLabels[fieldNegative]) - 2
	}
	return p.width - 3
}

// SetWidth sets the pane's outer width.
func (p *PromptPane) SetWidth(w int) {
	p.width = w
}

// Focus puts the cursor in field f.
func (p *PromptPane) Focus(f field) tea.Cmd {
	p.focused = true
	p.focus = f
	return nil
}

// Blur takes the cursor out of the pane.
func (p *PromptPane) Blur() {
	p.focused = false
}

// Typing reports whether keys go into a text field (so single letters are
// text, not commands).
func (p *PromptPane) Typing() bool {
	return p.focused && p.focus != fieldModel && p.focus != fieldSampler && p.focus != fieldScheduler
}

// SetModel selects the model for new jobs. Selecting the built-in
// darkroom-digits model sets its own size, steps and cfg (its images are
// 32×32); leaving it restores the defaults when they are still its own.
func (p *PromptPane) SetModel(name string) {
	builtinSize := fmt.Sprintf("%dx%d", demo.Width, demo.Height)
	switch {
	case name == engine.DefaultModel && p.model != engine.DefaultModel:
		p.setText(fieldSize, builtinSize)
		p.setText(fieldSteps, strconv.Itoa(demo.Steps))
		p.setText(fieldCFG, strconv.FormatFloat(demo.CFG, 'g', -1, 64))
	case name != engine.DefaultModel && p.model == engine.DefaultModel && p.textOf(fieldSize) == builtinSize:
		d := engine.DefaultRequest()
		p.setText(fieldSize, fmt.Sprintf("%dx%d", d.Width, d.Height))
		p.setText(fieldSteps, strconv.Itoa(d.Steps))
		p.setText(fieldCFG, strconv.FormatFloat(d.CFG, 'g', -1, 64))
	}
	p.model = name
}

// Model returns the selected model.
func (p *PromptPane) Model() string { return p.model }

// Update handles a key for the focused field.
func (p *PromptPane) Update(msg tea.Msg) tea.Cmd {
	switch p.focus {
	case fieldPrompt:
		p.prompt.Update(msg, p.width-3)
		return nil
	case fieldNegative:
		p.negative.Update(msg, p.negativeWidth())
		return nil
	case fieldOptions:
		p.options.Update(msg, 1<<20) // one row, scrolled sideways
		return nil
	}
	if p.focus >= fieldSteps {
		// A seed of "random" is a word, not digits: the first edit
		// replaces it.
		if p.focus == fieldSeed && p.textOf(fieldSeed) == "random" {
			if k, ok := msg.(tea.KeyPressMsg); ok && k.Text == "" && !slices.Contains([]string{"backspace", "ctrl+h", "ctrl+w", "ctrl+u", "delete", "ctrl+d"}, k.String()) {
				return nil
			}
			p.setText(fieldSeed, "")
		}
		p.text[p.focus].Update(msg, 1<<20) // one row, never wrapped
		return nil
	}
	k, ok := msg.(tea.KeyPressMsg)
	if !ok {
		return nil
	}
	keys := p.c.Keys
	switch p.focus {
	case fieldSampler:
		p.sampler = cycle(p.samplers, p.sampler, keys, k)
	case fieldScheduler:
		p.scheduler = cycle(p.schedulers, p.scheduler, keys, k)
	}
	return nil
}

// cycle moves through names with left/right.
func cycle(names []string, cur string, keys KeyMap, k tea.KeyPressMsg) string {
	if len(names) == 0 {
		return cur
	}
	i := slices.Index(names, cur)
	switch {
	case key.Matches(k, keys.Left):
		i = (i - 1 + len(names)) % len(names)
	case key.Matches(k, keys.Right), k.Code == ' ':
		i = (i + 1) % len(names)
	default:
		return cur
	}
	return names[i]
}

// Request builds a job from the editor. An empty or "random" seed draws
// one from randSeed.
func (p *PromptPane) Request(randSeed func() uint64) (engine.Request, error) {
	req := engine.DefaultRequest()
	req.Model = p.model
	req.Prompt = strings.TrimSpace(p.prompt.Value())
	req.Negative = strings.TrimSpace(p.negative.Value())
	req.Sampler, req.Scheduler = p.sampler, p.scheduler
	if req.Model == "" {
		return req, fmt.Errorf("no model selected (ctrl+o picks one; run with --models DIR to search a folder)")
	}
	var err error
	if req.Steps, err = atoiField("steps", p.textOf(fieldSteps)); err != nil {
		return req, err
	}
	if req.Batch, err = atoiField("batch", p.textOf(fieldBatch)); err != nil {
		return req, err
	}
	if req.CFG, err = strconv.ParseFloat(strings.TrimSpace(p.textOf(fieldCFG)), 64); err != nil {
		return req, fmt.Errorf("cfg %q: not a number", p.textOf(fieldCFG))
	}
	switch s := strings.TrimSpace(p.textOf(fieldSeed)); s {
	case "", "random", "-1":
		req.Seed = randSeed()
	default:
		if req.Seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			return req, fmt.Errorf("seed %q: want a whole number or random", s)
		}
	}
	if req.Width, req.Height, err = parseSize(p.textOf(fieldSize)); err != nil {
		return req, err
	}
	if err := applyOptions(&req, p.options.Value()); err != nil {
		return req, fmt.Errorf("options: %w", err)
	}
	if err := req.Validate(); err != nil {
		return req, optionsValidateError(err)
	}
	return req, nil
}

// optionsValidateError tells a Validate error about an option field with
// the option's name, after "options: " (`options: batch-index 3: the
// batch has 1 images`); errors about the editor's own fields are kept.
func optionsValidateError(err error) error {
	if e := optionFieldError(err); e != err {
		return fmt.Errorf("options: %w", e)
	}
	return err
}

// Options returns the options line's text.
func (p *PromptPane) Options() string { return p.options.Value() }

// optionsWidth is the width of the options input, right of its label.
func (p *PromptPane) optionsWidth() int { return p.width - 2 - len(fieldLabels[fieldOptions]) - 2 }

// OptionsHint returns the hint line for the word under the options
// input's cursor (hintFor) when the input is focused, styled and cut to
// w cells.
func (p *PromptPane) OptionsHint(w int) (string, bool) {
	if !p.focused || p.focus != fieldOptions {
		return "", false
	}
	s := p.c.Styles
	h := hintFor(p.options.Value(), p.options.cur)
	return fitWidth(s.HelpKey.Render(h.name)+" "+s.HelpDesc.Render(h.text), w), true
}

func atoiField(name, s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a whole number", name, s)
	}
	return n, nil
}

// parseSize parses "512x768" (or a single number for a square).
func parseSize(s string) (w, h int, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	ws, hs, ok := strings.Cut(strings.ReplaceAll(s, "×", "x"), "x")
	if !ok {
		hs = ws
	}
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("size %q: want WIDTHxHEIGHT, e.g. 512x512", s)
	}
	return w, h, nil
}

// Load fills the editor with req's parameters (a history item's).
func (p *PromptPane) Load(req engine.Request) {
	p.prompt.SetValue(req.Prompt)
	p.negative.SetValue(req.Negative)
	if req.Model != "" {
		p.model = req.Model
	}
	p.sampler, p.scheduler = req.Sampler, req.Scheduler
	p.setText(fieldSteps, strconv.Itoa(req.Steps))
	p.setText(fieldCFG, strconv.FormatFloat(req.CFG, 'g', -1, 64))
	p.setText(fieldSeed, strconv.FormatUint(req.Seed, 10))
	p.setText(fieldSize, fmt.Sprintf("%dx%d", req.Width, req.Height))
	p.setText(fieldBatch, strconv.Itoa(req.Batch))
	p.options.SetValue(formatOptions(req))
}

// SetSeedRandom makes the next job draw a new seed.
func (p *PromptPane) SetSeedRandom() { p.setText(fieldSeed, "random") }

// Render draws the pane, h rows high, inside its frame.
func (p *PromptPane) Render(h int) string {
	s := p.c.Styles
	iw := p.width - 2
	label := func(f field) string {
		if p.focused && p.focus == f {
			return s.FieldFocused.Render("▸" + fieldLabels[f])
		}
		return s.Label.Render(" " + fieldLabels[f])
	}
	value := func(f field) string {
		var v string
		switch f {
		case fieldModel:
			v = p.model
			if v == "" {
				v = "(none: ctrl+o, --models DIR)"
			}
		case fieldSampler:
			v = p.sampler
		case fieldScheduler:
			v = p.scheduler
		default:
			v = p.textOf(f)
		}
		if p.focused && p.focus == f {
			switch f {
			case fieldSampler, fieldScheduler:
				return s.FieldFocused.Render("‹" + v + "›")
			case fieldModel:
				return s.FieldFocused.Render(v + " ⏎")
			}
			r := p.text[f].value
			c := p.text[f].cur
			return s.FieldFocused.Render(string(r[:c]) + "▏" + string(r[c:]))
		}
		return s.Value.Render(v)
	}
	pair := func(a, b field) string {
		col := iw / 2
		left := fitWidth(label(a)+" "+value(a), col)
		if b == numFields {
			return left
		}
		return left + label(b) + " " + value(b)
	}
	negative := p.negative.View(p.negativeWidth(), p.focused && p.focus == fieldNegative, s)
	if p.compact {
		negative = label(fieldNegative) + " " + negative
	} else {
		negative = label(fieldNegative) + "\n" + indent(negative)
	}
	lines := []string{
		label(fieldPrompt),
		indent(p.prompt.View(iw-1, p.focused && p.focus == fieldPrompt, s)),
		negative,
		label(fieldModel) + "   " + value(fieldModel),
		pair(fieldSampler, fieldScheduler),
		pair(fieldSteps, fieldCFG),
		pair(fieldSeed, fieldSize),
		pair(fieldBatch, numFields),
		label(fieldOptions) + " " + p.options.ViewLine(p.optionsWidth(), p.focused && p.focus == fieldOptions, s),
	}
	return p.c.Box("Prompt", strings.Join(lines, "\n"), p.width, h, p.focused)
}

// indent shifts every line of s right by one cell, under the labels.
func indent(s string) string {
	return " " + strings.ReplaceAll(s, "\n", "\n ")
}
