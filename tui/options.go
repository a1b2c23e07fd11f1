package tui

import (
	"errors"
	"fmt"
	"strings"

	"github.com/darkroom-ai/darkroom/engine"
)

// The options line sets every request field the editor has no input of
// its own for (init image, mask, hires fix, LoRAs, guidance, …) as
// name=value words, named by their `darkroom gen` flags and parsed by the
// engine's field table (engine.RequestField.Set and Check), so the TUI
// knows no field of its own and a new engine field is an option at once.

// ownedFields maps the JSON name of each request field that has its own
// input in the editor to that input. The options line refuses them: a
// request has one source for each field.
var ownedFields = map[string]field{
	"prompt":    fieldPrompt,
	"negative":  fieldNegative,
	"model":     fieldModel,
	"sampler":   fieldSampler,
	"scheduler": fieldScheduler,
	"steps":     fieldSteps,
	"cfg":       fieldCFG,
	"seed":      fieldSeed,
	"width":     fieldSize,
	"height":    fieldSize,
	"batch":     fieldBatch,
}

// ownedHint tells to set a field in its own input in, not in options.
func ownedHint(in field) string {
	return fmt.Sprintf("use the %s field above, not options", fieldLabels[in])
}

// optionFields returns the request fields the options line sets, in the
// field table's order.
func optionFields() []engine.RequestField {
	var out []engine.RequestField
	for _, f := range engine.RequestFields() {
		if _, owned := ownedFields[f.Name]; !owned && f.Flag != "" {
			out = append(out, f)
		}
	}
	return out
}

// optionError is an engine field error about an option, told with the
// option's name (its flag) instead of the field's JSON name:
// `clip-skip -1: must be ≥ 1 (0 means 1)`.
type optionError struct {
	flag string
	fe   *engine.FieldError
}

func (e *optionError) Error() string { return e.fe.Describe(e.flag) }
func (e *optionError) Unwrap() error { return e.fe }

// asOption returns err told with the option name flag when it is an
// engine field error, else err.
func asOption(err error, flag string) error {
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		return &optionError{flag: flag, fe: fe}
	}
	return err
}

// optionFieldError tells an engine field error about an option field
// with the option's name, as the options line spells it
// (`max-sequence-length 300: this model has no T5 text encoder`); other
// errors, and those about the editor's own fields, are returned as they
// are.
func optionFieldError(err error) error {
	fe, ok := err.(*engine.FieldError)
	if !ok {
		return err
	}
	if _, owned := ownedFields[fe.Field]; owned {
		return err
	}
	f, ok := engine.FieldByName(fe.Field)
	if !ok || f.Flag == "" {
		return err
	}
	return &optionError{flag: f.Flag, fe: fe}
}

// optionWord is one word of the options line: its text with the quotes
// taken out, and the rune offsets of its first rune and of the rune after
// it in the line.
type optionWord struct {
	text       string
	start, end int
}

// splitOptions splits the options line into words at white space outside
// quotes. Double quotes group a value with spaces (inside them \" is a
// quote and \\ a backslash; other backslashes are kept, as in Windows
// paths), single quotes group literally; quotes may sit anywhere in a
// word (init-image="my photo.png"). An unterminated quote is an error,
// and the words are returned anyway, the last running to the end.
func splitOptions(line string) ([]optionWord, error) {
	r := []rune(line)
	var words []optionWord
	var err error
	for i := 0; i < len(r); {
		if isSpace(r[i]) {
			i++
			continue
		}
		start := i
		var b strings.Builder
		var quote rune
	scan:
		for ; i < len(r); i++ {
			c := r[i]
			switch {
			case quote == '"' && c == '\\' && i+1 < len(r) && (r[i+1] == '"' || r[i+1] == '\\'):
				i++
				b.WriteRune(r[i])
			case quote != 0 && c == quote:
				quote = 0
			case quote != 0:
				b.WriteRune(c)
			case c == '"' || c == '\'':
				quote = c
			case isSpace(c):
				break scan
			default:
				b.WriteRune(c)
			}
		}
		if quote != 0 && err == nil {
			err = fmt.Errorf("unterminated %c quote in %s", quote, string(r[start:i]))
		}
		words = append(words, optionWord{text: b.String(), start: start, end: i})
	}
	return words, err
}

func isSpace(c rune) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// lookupOption returns the option field a name (a flag, or a JSON name)
// refers to, or an error saying that it is unknown, or that it has its
// own input in the editor.
func lookupOption(name string) (engine.RequestField, error) {
	n := strings.ToLower(name)
	for _, f := range engine.RequestFields() {
		if f.Flag != n && f.Name != n {
			continue
		}
		if in, owned := ownedFields[f.Name]; owned {
			return f, fmt.Errorf("%s: %s", n, ownedHint(in))
		}
		return f, nil
	}
	if n == "" {
		return engine.RequestField{}, errors.New("a value with no option name (want name=value)")
	}
	msg := fmt.Sprintf("unknown option %q", name)
	if near := nearestOption(n); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", near)
	}
	return engine.RequestField{}, errors.New(msg)
}

// nearestOption returns the option name within two edits of name, or the
// only one name starts, or "".
func nearestOption(name string) string {
	best, bestD := "", 3
	var prefixed []string
	for _, f := range optionFields() {
		if d := editDistance(name, f.Flag); d < bestD {
			best, bestD = f.Flag, d
		}
		if strings.HasPrefix(f.Flag, name) {
			prefixed = append(prefixed, f.Flag)
		}
	}
	if best == "" && len(prefixed) == 1 {
		best = prefixed[0]
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// applyOptions applies the options line to r: each word is name=value,
// name a request field's flag (init-image, denoise, hires, lora, …) set
// with the field table's Set and checked with its Check. A list option
// (lora, text-encoder) appends each time it is given; another option
// given twice is an error, as is a field the editor has its own input
// for. A bool option may be given bare (zsnr). The first problem is
// returned, naming the option: `denoise 2: must be more than 0 and at
// most 1 (0 means 1)`.
func applyOptions(r *engine.Request, line string) error {
	words, err := splitOptions(line)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, w := range words {
		name, value, hasValue := strings.Cut(w.text, "=")
		f, err := lookupOption(name)
		if err != nil {
			return err
		}
		if !hasValue {
			if f.Kind != engine.KindBool {
				return fmt.Errorf("%s: want %s=VALUE", f.Flag, f.Flag)
			}
			value = "true"
		}
		if f.Kind != engine.KindStrings && seen[f.Name] {
			return fmt.Errorf("%s given twice (only list options such as lora repeat)", f.Flag)
		}
		seen[f.Name] = true
		if err := f.Set(r, value); err != nil {
			return asOption(err, f.Flag)
		}
		if err := f.Check(r); err != nil {
			var fe *engine.FieldError
			if errors.As(err, &fe) && f.Kind == engine.KindStrings {
				// Name the value just given, not the whole list.
				c := *fe
				c.Value = value
				err = &c
			}
			return asOption(err, f.Flag)
		}
	}
	return nil
}

// formatOptions writes the options line of r: every option field whose
// value differs from engine.DefaultRequest's, as name=value in the field
// table's order (a list field once per value, a true bool bare), quoted
// where needed. applyOptions on the default request reads it back to r.
func formatOptions(r engine.Request) string {
	def := engine.DefaultRequest()
	var words []string
	for _, f := range optionFields() {
		switch f.Kind {
		case engine.KindStrings:
			for _, v := range f.Value(&r).([]string) {
				words = append(words, f.Flag+"="+quoteOption(v))
			}
		case engine.KindBool:
			if f.Value(&r).(bool) != f.Value(&def).(bool) {
				if f.Value(&r).(bool) {
					words = append(words, f.Flag)
				} else {
					words = append(words, f.Flag+"=false")
				}
			}
		default:
			if s := f.String(&r); s != f.String(&def) {
				words = append(words, f.Flag+"="+quoteOption(s))
			}
		}
	}
	return strings.Join(words, " ")
}

// quoteOption quotes a value for the options line when it is empty or
// holds white space or quotes.
func quoteOption(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\"'") {
		return v
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// optionHintUsage is how many runes of an option's usage the hint shows.
const optionHintUsage = 60

// optionHint is the hint line for the options input: a name (drawn as a
// key) and its text.
type optionHint struct {
	name, text string
}

// optionsExample is the hint on an empty word.
const optionsExample = "name=value, e.g. init-image=x.png denoise=0.5 mask=m.png hires=2 guidance=3.5 lora=style:0.8"

// hintFor returns the hint for the word under the cursor (a rune index)
// of the options line: the options whose names start with the word's
// name, the first (an exact match first) with its usage cut to
// optionHintUsage runes, the others named after it; with the cursor on no
// word, an example.
func hintFor(line string, cur int) optionHint {
	words, _ := splitOptions(line)
	var word *optionWord
	for i := range words {
		if words[i].start <= cur && cur <= words[i].end {
			word = &words[i]
			break
		}
	}
	if word == nil || word.text == "" {
		return optionHint{name: "options", text: optionsExample}
	}
	name, _, hasValue := strings.Cut(word.text, "=")
	name = strings.ToLower(name)
	var matches []engine.RequestField
	for _, f := range optionFields() {
		switch {
		case f.Flag == name || f.Name == name:
			matches = append([]engine.RequestField{f}, matches...)
		case !hasValue && strings.HasPrefix(f.Flag, name):
			matches = append(matches, f)
		}
	}
	if len(matches) == 0 {
		// A field with its own input says so.
		for _, f := range engine.RequestFields() {
			if in, owned := ownedFields[f.Name]; owned && (f.Flag == name || !hasValue && strings.HasPrefix(f.Flag, name)) {
				return optionHint{name: f.Flag, text: ownedHint(in)}
			}
		}
		msg := fmt.Sprintf("no option starts with %q", name)
		if hasValue {
			msg = fmt.Sprintf("no option %q", name)
		}
		if near := nearestOption(name); near != "" {
			msg += fmt.Sprintf("; did you mean %s?", near)
		}
		return optionHint{name: name, text: msg}
	}
	text := ansiTrunc(strings.ReplaceAll(matches[0].Usage, "`", ""), optionHintUsage)
	if len(matches) > 1 {
		names := make([]string, 0, len(matches)-1)
		for _, f := range matches[1:] {
			names = append(names, f.Flag)
		}
		text += " · also " + strings.Join(names, " ")
	}
	return optionHint{name: matches[0].Flag, text: text}
}
