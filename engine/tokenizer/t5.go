package tokenizer

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// T5 is the SentencePiece Unigram tokenizer of T5 v1.1, the text encoder
// of Flux and SD3, read from a Hugging Face tokenizer.json. It reproduces
// transformers' T5TokenizerFast (the tokenizers library), whose pipeline,
// implemented here step by step, is:
//
//  1. added tokens (<pad>, </s>, <unk>, <extra_id_N>) found in the raw
//     text become their ids directly; the text between them goes on alone;
//  2. normalization: the precompiled charsmap (NFKC plus SentencePiece's
//     NMT rules, per grapheme cluster as tokenizers applies it), then the
//     file's Strip / Replace steps (runs of spaces become one);
//  3. pre-tokenization: WhitespaceSplit if the file has it, and Metaspace:
//     spaces become "▁", a "▁" is prepended, pieces split before each "▁";
//  4. each piece segmented by the Viterbi best path over the piece scores,
//     unknown characters becoming <unk> (runs of them one <unk>);
//  5. the post-processor's special tokens (</s>) appended.
//
// A T5 is immutable and safe for concurrent use.
type T5 struct {
	model  *unigram
	added  []addedToken
	norm   []func(string) string
	pre    []preStep
	prefix []int // post-processor ids before the text
	suffix []int // and after it (T5: </s>)
	pad    int
	eos    int
	// Source is where the vocabulary came from: a file path, or "bundled".
	Source string
}

// addedJSON is an added token as tokenizer.json's added_tokens and
// tokenizer_config.json's added_tokens_decoder (keyed by id) write it.
type addedJSON struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	SingleWord bool   `json:"single_word"`
	Special    bool   `json:"special"`
}

// token checks an added token's entry and converts it.
func (a addedJSON) token() (addedToken, error) {
	if a.Content == "" || a.ID < 0 || a.ID >= maxVocab {
		return addedToken{}, fmt.Errorf("added token %q with id %d", a.Content, a.ID)
	}
	if a.SingleWord {
		return addedToken{}, fmt.Errorf("added token %q: single_word is not supported", a.Content)
	}
	return addedToken{content: a.Content, id: a.ID, lstrip: a.LStrip, rstrip: a.RStrip,
		normalized: a.Normalized, special: a.Special}, nil
}

// addedToken is an entry of tokenizer.json's added_tokens, matched in the
// raw text.
type addedToken struct {
	content        string
	id             int
	lstrip, rstrip bool
	// normalized: matched in the normalized text rather than the raw one;
	// special: a control token (skipped by a decode that skips them).
	// Both are read by the Qwen tokenizer only.
	normalized, special bool
}

// piece is a span of text on its way through the pre-tokenizers; first is
// set on the span that starts the input (Metaspace's "first" scheme).
type piece struct {
	text  string
	first bool
}

// preStep is one pre-tokenizer.
type preStep func([]piece) []piece

// bundledT5 is the T5 v1.1 vocabulary as FLUX.1-schnell's tokenizer_2
// ships it (see NOTICE.md), gzip-compressed.
//
//go:embed t5_tokenizer.json.gz
var bundledT5 []byte

var bundledT5Once = sync.OnceValues(func() (*T5, error) {
	data, err := gunzip(bundledT5)
	if err != nil {
		return nil, fmt.Errorf("bundled t5 tokenizer: %w", err)
	}
	t, err := ParseT5(data)
	if err != nil {
		return nil, fmt.Errorf("bundled t5 tokenizer: %w", err)
	}
	t.Source = "bundled"
	return t, nil
})

// NewT5 returns the tokenizer over the T5 v1.1 vocabulary bundled with
// this package (32000 pieces and 100 <extra_id_N> sentinels), for model
// files that come without a tokenizer. It is parsed once per process.
func NewT5() (*T5, error) { return bundledT5Once() }

// LoadT5 reads a T5 tokenizer from path: a tokenizer.json, or a folder
// holding one (a diffusers tokenizer_2/ or tokenizer_3/ folder).
func LoadT5(path string) (*T5, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("load t5 tokenizer: %w", err)
	}
	t, err := ParseT5(data)
	if err != nil {
		return nil, fmt.Errorf("load t5 tokenizer %s: %w", path, err)
	}
	t.Source = path
	return t, nil
}

// FindT5 returns the T5 tokenizer of a model folder: the first Unigram
// tokenizer.json of dir/tokenizer_2 (Flux), dir/tokenizer_3 (SD3) or dir
// itself, or the bundled vocabulary when there is none (a single model
// file, or a folder without a tokenizer). A tokenizer.json of another kind
// (SD3's CLIP tokenizer_2) is passed over; a Unigram one that does not
// parse is an error, never silently replaced.
func FindT5(dir string) (*T5, error) {
	if dir != "" {
		for _, sub := range []string{"tokenizer_2", "tokenizer_3", "."} {
			p := filepath.Join(dir, sub, "tokenizer.json")
			data, err := readFile(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("load t5 tokenizer: %w", err)
			}
			if !isUnigram(data) {
				continue
			}
			t, err := ParseT5(data)
			if err != nil {
				return nil, fmt.Errorf("load t5 tokenizer %s: %w", p, err)
			}
			t.Source = p
			return t, nil
		}
	}
	return NewT5()
}

// isUnigram reports whether a tokenizer.json's model is a Unigram one.
func isUnigram(data []byte) bool {
	var doc struct {
		Model struct {
			Type string `json:"type"`
		} `json:"model"`
	}
	return json.Unmarshal(data, &doc) == nil && doc.Model.Type == "Unigram"
}

// t5JSON is the part of tokenizer.json the T5 tokenizer reads.
type t5JSON struct {
	AddedTokens   []addedJSON     `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Model         struct {
		Type         string          `json:"type"`
		UnkID        *int            `json:"unk_id"`
		Vocab        json.RawMessage `json:"vocab"`
		ByteFallback bool            `json:"byte_fallback"`
	} `json:"model"`
}

// ParseT5 builds a T5 tokenizer from the contents of a tokenizer.json. It
// fails, rather than panics, on malformed input and on pipeline steps it
// does not implement, naming what it expected.
func ParseT5(data []byte) (*T5, error) {
	var doc t5JSON
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	m := doc.Model
	if m.Type != "Unigram" {
		return nil, fmt.Errorf("model type %q, want \"Unigram\" (a SentencePiece vocabulary such as T5's)", m.Type)
	}
	if m.ByteFallback {
		return nil, errors.New("unigram byte_fallback is not supported (T5 has none)")
	}
	if m.UnkID == nil {
		return nil, errors.New("unigram model without unk_id")
	}
	var vocab [][]json.RawMessage
	if err := json.Unmarshal(m.Vocab, &vocab); err != nil {
		return nil, fmt.Errorf("unigram vocab is not a list of [piece, score] pairs: %w", err)
	}
	if len(vocab) > maxVocab {
		return nil, fmt.Errorf("vocabulary of %d pieces exceeds %d", len(vocab), maxVocab)
	}
	pieces := make([]string, len(vocab))
	scores := make([]float64, len(vocab))
	for i, e := range vocab {
		if len(e) != 2 || json.Unmarshal(e[0], &pieces[i]) != nil || json.Unmarshal(e[1], &scores[i]) != nil {
			return nil, fmt.Errorf("vocab entry %d is not a [piece, score] pair", i)
		}
	}
	model, err := newUnigram(pieces, scores, *m.UnkID)
	if err != nil {
		return nil, fmt.Errorf("unigram vocabulary: %w", err)
	}
	t := &T5{model: model, pad: -1, eos: -1}
	for _, a := range doc.AddedTokens {
		tok, err := a.token()
		if err != nil {
			return nil, err
		}
		t.added = append(t.added, tok)
		switch a.Content {
		case "<pad>":
			t.pad = a.ID
		case "</s>":
			t.eos = a.ID
		}
	}
	if t.pad < 0 {
		if id, ok := model.ids["<pad>"]; ok {
			t.pad = int(id)
		} else {
			return nil, errors.New("no <pad> token")
		}
	}
	if t.norm, err = parseNormalizer(doc.Normalizer); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	if t.pre, err = parsePreTokenizer(doc.PreTokenizer); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.prefix, t.suffix, err = parsePostProcessor(doc.PostProcessor); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	return t, nil
}

// isNull reports whether a raw JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// component is the common shape of tokenizer.json pipeline steps.
type component struct {
	Type string `json:"type"`
	// Sequence
	Normalizers   []json.RawMessage `json:"normalizers"`
	PreTokenizers []json.RawMessage `json:"pretokenizers"`
	// Precompiled
	Charsmap *string `json:"precompiled_charsmap"`
	// Strip
	StripLeft  bool `json:"strip_left"`
	StripRight bool `json:"strip_right"`
	// Replace
	Pattern struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Content string `json:"content"`
	// Prepend
	Prepend string `json:"prepend"`
	// Metaspace
	Replacement    string `json:"replacement"`
	AddPrefixSpace *bool  `json:"add_prefix_space"`
	PrependScheme  string `json:"prepend_scheme"`
	Split          *bool  `json:"split"`
}

func parseNormalizer(raw json.RawMessage) ([]func(string) string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var out []func(string) string
		for _, n := range c.Normalizers {
			f, err := parseNormalizer(n)
			if err != nil {
				return nil, err
			}
			out = append(out, f...)
		}
		return out, nil
	case "Precompiled":
		if c.Charsmap == nil || *c.Charsmap == "" {
			return nil, nil // no charsmap: no normalization
		}
		blob, err := base64.StdEncoding.DecodeString(*c.Charsmap)
		if err != nil {
			return nil, fmt.Errorf("precompiled_charsmap: %w", err)
		}
		cm, err := parseCharsmap(blob)
		if err != nil {
			return nil, err
		}
		return []func(string) string{cm.normalize}, nil
	case "Strip":
		l, r := c.StripLeft, c.StripRight
		return []func(string) string{func(s string) string {
			if l {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if r {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}}, nil
	case "Replace":
		content := c.Content
		switch {
		case c.Pattern.Regex != nil:
			re, err := regexp.Compile(*c.Pattern.Regex)
			if err != nil {
				return nil, fmt.Errorf("replace pattern %q: %w", *c.Pattern.Regex, err)
			}
			return []func(string) string{func(s string) string { return re.ReplaceAllLiteralString(s, content) }}, nil
		case c.Pattern.String != nil && *c.Pattern.String != "":
			old := *c.Pattern.String
			return []func(string) string{func(s string) string { return strings.ReplaceAll(s, old, content) }}, nil
		}
		return nil, errors.New("replace without a Regex or String pattern")
	case "Prepend":
		p := c.Prepend
		return []func(string) string{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	}
	return nil, fmt.Errorf("unsupported normalizer %q (want Precompiled, Strip, Replace, Prepend or a Sequence of them)", c.Type)
}

func parsePreTokenizer(raw json.RawMessage) ([]preStep, error) {
	if isNull(raw) {
		return nil, nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var out []preStep
		for _, p := range c.PreTokenizers {
			f, err := parsePreTokenizer(p)
			if err != nil {
				return nil, err
			}
			out = append(out, f...)
		}
		return out, nil
	case "WhitespaceSplit":
		return []preStep{whitespaceSplit}, nil
	case "Metaspace":
		return parseMetaspace(c)
	}
	return nil, fmt.Errorf("unsupported pre-tokenizer %q (want Metaspace, WhitespaceSplit or a Sequence of them)", c.Type)
}

// whitespaceSplit splits on runs of whitespace, dropping them.
func whitespaceSplit(in []piece) []piece {
	var out []piece
	for _, p := range in {
		s := p.text
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) {
				i += n
				continue
			}
			j := i
			for j < len(s) {
				r, m := utf8.DecodeRuneInString(s[j:])
				if unicode.IsSpace(r) {
					break
				}
				j += m
			}
			out = append(out, piece{text: s[i:j], first: p.first && i == 0})
			i = j
		}
	}
	return out
}

func parseMetaspace(c component) ([]preStep, error) {
	repl, n := utf8.DecodeRuneInString(c.Replacement)
	if n == 0 || n != len(c.Replacement) || repl == utf8.RuneError {
		return nil, fmt.Errorf("metaspace replacement %q is not one character", c.Replacement)
	}
	scheme := c.PrependScheme
	if scheme == "" {
		scheme = "always"
		if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
			scheme = "never"
		}
	}
	if scheme != "always" && scheme != "first" && scheme != "never" {
		return nil, fmt.Errorf("metaspace prepend_scheme %q (want always, first or never)", scheme)
	}
	split := c.Split == nil || *c.Split
	rs := string(repl)
	return []preStep{func(in []piece) []piece {
		var out []piece
		for _, p := range in {
			s := strings.ReplaceAll(p.text, " ", rs)
			if s != "" && !strings.HasPrefix(s, rs) && (scheme == "always" || scheme == "first" && p.first) {
				s = rs + s
			}
			if !split {
				if s != "" {
					out = append(out, piece{text: s, first: p.first})
				}
				continue
			}
			// Split before each replacement character (MergedWithNext).
			start := 0
			for i := 0; i < len(s); {
				if strings.HasPrefix(s[i:], rs) && i > start {
					out = append(out, piece{text: s[start:i], first: p.first && start == 0})
					start = i
				}
				_, m := utf8.DecodeRuneInString(s[i:])
				i += m
			}
			if start < len(s) {
				out = append(out, piece{text: s[start:], first: p.first && start == 0})
			}
		}
		return out
	}}, nil
}

// parsePostProcessor returns the special-token ids a TemplateProcessing
// post-processor puts around a single sequence.
func parsePostProcessor(raw json.RawMessage) (prefix, suffix []int, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	var c struct {
		Type   string `json:"type"`
		Single []struct {
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []int `json:"ids"`
		} `json:"special_tokens"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, nil, err
	}
	if c.Type != "TemplateProcessing" {
		return nil, nil, fmt.Errorf("unsupported post-processor %q (want TemplateProcessing)", c.Type)
	}
	seen := false
	for _, it := range c.Single {
		switch {
		case it.Sequence != nil:
			if seen {
				return nil, nil, errors.New("template with the sequence twice")
			}
			seen = true
		case it.SpecialToken != nil:
			st, ok := c.SpecialTokens[it.SpecialToken.ID]
			if !ok {
				return nil, nil, fmt.Errorf("template token %q not in special_tokens", it.SpecialToken.ID)
			}
			if seen {
				suffix = append(suffix, st.IDs...)
			} else {
				prefix = append(prefix, st.IDs...)
			}
		default:
			return nil, nil, errors.New("template piece neither Sequence nor SpecialToken")
		}
	}
	if !seen {
		return nil, nil, errors.New("template without the sequence")
	}
	return prefix, suffix, nil
}

// EOS is the id of </s> (-1 if the vocabulary has none).
func (t *T5) EOS() int { return t.eos }

// Pad is the id of <pad>.
func (t *T5) Pad() int { return t.pad }

// VocabSize is the number of pieces of the model (T5 v1.1: 32100; the
// encoder's embedding has 32128 rows).
func (t *T5) VocabSize() int { return len(t.model.pieces) }

// Token returns the piece of id, if there is one.
func (t *T5) Token(id int) (string, bool) {
	if id < 0 || id >= len(t.model.pieces) {
		return "", false
	}
	return t.model.pieces[id], true
}

// Encode tokenizes text as T5TokenizerFast does. With maxLen ≤ 0 it
// returns every id, </s> last, and a mask of ones. With maxLen > 0 the ids
// are truncated to maxLen keeping </s> as the last one
// (truncation=True, max_length=maxLen) and, with pad, padded with <pad> to
// exactly maxLen (padding="max_length"), the mask 0 on the padding.
func (t *T5) Encode(text string, maxLen int, pad bool) (ids, mask []int) {
	body := t.encodeBody(nil, text)
	if maxLen > 0 {
		keep := max(maxLen-len(t.prefix)-len(t.suffix), 0)
		if len(body) > keep {
			body = body[:keep]
		}
	}
	ids = make([]int, 0, max(maxLen, len(body)+len(t.prefix)+len(t.suffix)))
	ids = append(ids, t.prefix...)
	ids = append(ids, body...)
	ids = append(ids, t.suffix...)
	return maskAndPad(ids, maxLen, pad, t.pad)
}

// maskAndPad returns ids with a mask of ones and, with pad and maxLen > 0,
// both padded to maxLen (ids with padID, the mask with zeros).
func maskAndPad(ids []int, maxLen int, pad bool, padID int) ([]int, []int) {
	mask := make([]int, len(ids), max(len(ids), maxLen))
	for i := range mask {
		mask[i] = 1
	}
	if maxLen > 0 && pad {
		for len(ids) < maxLen {
			ids = append(ids, padID)
			mask = append(mask, 0)
		}
	}
	return ids, mask
}

// encodeBody appends the ids of text without the post-processor's tokens.
func (t *T5) encodeBody(ids []int, text string) []int {
	at := 0
	for at <= len(text) {
		start, end, tok := nextAdded(t.added, text, at)
		seg := text[at:start]
		ids = t.encodeSegment(ids, seg, at == 0)
		if tok == nil {
			break
		}
		ids = append(ids, tok.id)
		at = end
	}
	return ids
}

// nextAdded finds the leftmost (then longest) token of added in text at or
// after from, as the tokenizers library's added-vocabulary split does;
// start and end include the whitespace its lstrip/rstrip swallow. Without
// one it returns len(text), len(text), nil.
func nextAdded(added []addedToken, text string, from int) (start, end int, tok *addedToken) {
	// The bytes an added token can start with; when there is one (Qwen's
	// all start with '<'), IndexByte jumps from candidate to candidate.
	var first [256]bool
	distinct, only := 0, byte(0)
	for k := range added {
		if c := added[k].content[0]; !first[c] {
			first[c], only = true, c
			distinct++
		}
	}
	if distinct == 0 {
		return len(text), len(text), nil
	}
	for i := from; i < len(text); i++ {
		if distinct == 1 {
			j := strings.IndexByte(text[i:], only)
			if j < 0 {
				break
			}
			i += j
		} else if !first[text[i]] {
			continue
		}
		var best *addedToken
		for k := range added {
			a := &added[k]
			if a.content[0] == text[i] && strings.HasPrefix(text[i:], a.content) && (best == nil || len(a.content) > len(best.content)) {
				best = a
			}
		}
		if best == nil {
			continue
		}
		start, end = i, i+len(best.content)
		if best.lstrip {
			start = from + len(strings.TrimRightFunc(text[from:start], unicode.IsSpace))
		}
		if best.rstrip {
			end = len(text) - len(strings.TrimLeftFunc(text[end:], unicode.IsSpace))
		}
		return start, end, best
	}
	return len(text), len(text), nil
}

// encodeSegment appends the ids of a span of text between added tokens;
// first marks the span that starts the input.
func (t *T5) encodeSegment(ids []int, seg string, first bool) []int {
	if seg == "" {
		return ids
	}
	for _, f := range t.norm {
		seg = f(seg)
	}
	if seg == "" {
		return ids
	}
	pieces := []piece{{text: seg, first: first}}
	for _, p := range t.pre {
		pieces = p(pieces)
	}
	for _, p := range pieces {
		ids = t.model.encode(ids, p.text)
	}
	return ids
}
