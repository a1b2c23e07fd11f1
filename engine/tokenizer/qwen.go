package tokenizer

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Qwen is the byte-level BPE tokenizer of the Qwen2, Qwen2.5 and Qwen3
// language models, the text encoders of Z-Image (Qwen3-4B) and Qwen-Image
// (Qwen2.5-VL-7B). It reproduces transformers' Qwen2TokenizerFast (the
// tokenizers library), whose pipeline, implemented here step by step, is:
//
//  1. added tokens (<|endoftext|>, <|im_start|>, <|im_end|>, the vision
//     tokens, <think>, ...) found in the raw text become their ids directly,
//     leftmost then longest; the text between them goes on alone;
//  2. normalization of that text: Unicode NFC;
//  3. pre-tokenization with the Qwen2 pattern (see qwenSplit): contractions,
//     letter runs with one leading non-letter, single digits, punctuation
//     runs, newline and space runs;
//  4. each piece's UTF-8 bytes mapped to GPT-2's 256 byte characters and
//     BPE merges applied by rank.
//
// No special tokens are added around the text. A Qwen is immutable (but for
// its internal cache) and safe for concurrent use.
type Qwen struct {
	t     *tables
	cache bpeCache
	// raw are the added tokens matched in the raw text; norm those matched
	// in the normalized text (normalized: true; Qwen's have none).
	raw, norm []addedToken
	byID      map[int]addedToken
	// ignoreMerges: a piece that is a token as a whole is that token.
	ignoreMerges bool
	pad, eos     int
	size         int
	// Source is where the vocabulary came from: a file or folder path, or
	// "bundled qwen2.5" / "bundled qwen3".
	Source string
}

// The bundled Qwen vocabulary (see NOTICE.md): vocab.json, merges.txt and
// tokenizer_config.json of ComfyUI's comfy/text_encoders/qwen25_tokenizer,
// gzip-compressed and otherwise unchanged.
var (
	//go:embed qwen25_vocab.json.gz
	bundledQwenVocab []byte
	//go:embed qwen25_merges.txt.gz
	bundledQwenMerges []byte
	//go:embed qwen25_tokenizer_config.json.gz
	bundledQwenConfig []byte
)

// qwen3Added are the added tokens in which Qwen3's tokenizer_config.json
// differs from the bundled Qwen2.5 one: ids 151665 to 151668, which ComfyUI's
// copy gives to <|img|>, <|endofimg|>, <|meta|> and <|endofmeta|>. None of
// them is special. The rest of the vocabulary, merges and added tokens is the
// same.
var qwen3Added = []addedToken{
	{content: "<tool_response>", id: 151665},
	{content: "</tool_response>", id: 151666},
	{content: "<think>", id: 151667},
	{content: "</think>", id: 151668},
}

// bundledQwenFiles are the three bundled files, decompressed.
var bundledQwenFiles = sync.OnceValues(func() ([3][]byte, error) {
	var out [3][]byte
	for i, gz := range [][]byte{bundledQwenVocab, bundledQwenMerges, bundledQwenConfig} {
		b, err := gunzip(gz)
		if err != nil {
			return out, fmt.Errorf("bundled qwen tokenizer: %w", err)
		}
		out[i] = b
	}
	return out, nil
})

var bundledQwen25 = sync.OnceValues(func() (*Qwen, error) {
	f, err := bundledQwenFiles()
	if err != nil {
		return nil, err
	}
	q, err := ParseQwen(f[0], f[1], f[2])
	if err != nil {
		return nil, fmt.Errorf("bundled qwen tokenizer: %w", err)
	}
	q.Source = "bundled qwen2.5"
	return q, nil
})

var bundledQwen3 = sync.OnceValues(func() (*Qwen, error) {
	q25, err := bundledQwen25()
	if err != nil {
		return nil, err
	}
	q := &Qwen{t: q25.t, ignoreMerges: q25.ignoreMerges, pad: q25.pad, eos: q25.eos, Source: "bundled qwen3"}
	var added []addedToken
	for _, a := range q25.byID {
		if a.id < qwen3Added[0].id || a.id > qwen3Added[len(qwen3Added)-1].id {
			added = append(added, a)
		}
	}
	if err := q.setAdded(append(added, qwen3Added...)); err != nil {
		return nil, fmt.Errorf("bundled qwen3 tokenizer: %w", err)
	}
	return q, nil
})

// NewQwen25 returns the tokenizer of Qwen2.5-VL (Qwen-Image's text
// encoder) over the vocabulary bundled with this package: 151643 tokens and
// the added tokens of ComfyUI's tokenizer_config.json, 151669 in all. It is
// parsed once per process.
func NewQwen25() (*Qwen, error) { return bundledQwen25() }

// NewQwen3 returns the tokenizer of Qwen3 (Z-Image's text encoder): the
// bundled vocabulary with Qwen3's added tokens, <think> (151667) and
// </think> (151668) among them.
func NewQwen3() (*Qwen, error) { return bundledQwen3() }

// LoadQwen reads a Qwen tokenizer from path: a tokenizer.json, or a folder
// (a diffusers tokenizer/ folder) holding a tokenizer.json or a vocab.json
// and merges.txt. A tokenizer_config.json beside them supplies the added
// tokens (when there is no tokenizer.json; an added_tokens.json, as older
// folders have, adds to them) and the padding and end tokens.
func LoadQwen(path string) (*Qwen, error) {
	dir, file := path, ""
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("load qwen tokenizer: %w", err)
	} else if !st.IsDir() {
		dir, file = filepath.Dir(path), path
	}
	cfg, err := readOptional(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, fmt.Errorf("load qwen tokenizer: %w", err)
	}
	if file == "" {
		if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
			file = filepath.Join(dir, "tokenizer.json")
		}
	}
	var q *Qwen
	if file != "" {
		data, err := readFile(file)
		if err != nil {
			return nil, fmt.Errorf("load qwen tokenizer: %w", err)
		}
		if q, err = ParseQwenJSON(data, cfg); err != nil {
			return nil, fmt.Errorf("load qwen tokenizer %s: %w", file, err)
		}
		q.Source = file
		return q, nil
	}
	v, err := readFile(filepath.Join(dir, "vocab.json"))
	if err != nil {
		return nil, fmt.Errorf("load qwen tokenizer: %s has neither tokenizer.json nor vocab.json: %w", dir, err)
	}
	m, err := readFile(filepath.Join(dir, "merges.txt"))
	if err != nil {
		return nil, fmt.Errorf("load qwen tokenizer: %w", err)
	}
	extra, err := readOptional(filepath.Join(dir, "added_tokens.json"))
	if err != nil {
		return nil, fmt.Errorf("load qwen tokenizer: %w", err)
	}
	if q, err = parseQwenFiles(v, m, cfg, extra); err != nil {
		return nil, fmt.Errorf("load qwen tokenizer %s: %w", dir, err)
	}
	q.Source = dir
	return q, nil
}

// QwenFamily names the bundled vocabulary FindQwen falls back to.
type QwenFamily int

// The Qwen families of the text encoders.
const (
	// Qwen25 is Qwen2.5-VL, Qwen-Image's text encoder (NewQwen25).
	Qwen25 QwenFamily = iota
	// Qwen3 is Qwen3, Z-Image's text encoder (NewQwen3).
	Qwen3
)

// FindQwen returns the Qwen tokenizer of a model folder: dir/tokenizer (a
// diffusers ZImagePipeline or QwenImagePipeline folder) or dir itself when
// either holds a tokenizer.json or vocab.json; otherwise (a single model
// file, dir ""), the bundled vocabulary of family. A tokenizer that is
// present but does not parse is an error, never silently replaced.
func FindQwen(dir string, family QwenFamily) (*Qwen, error) {
	if dir != "" {
		for _, sub := range []string{"tokenizer", "."} {
			d := filepath.Join(dir, sub)
			for _, f := range []string{"tokenizer.json", "vocab.json"} {
				if _, err := os.Stat(filepath.Join(d, f)); err == nil {
					return LoadQwen(d)
				}
			}
		}
	}
	if family == Qwen3 {
		return NewQwen3()
	}
	return NewQwen25()
}

// readOptional reads a file that may be absent (nil, nil).
func readOptional(path string) ([]byte, error) {
	b, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// qwenConfig is the part of tokenizer_config.json the tokenizer reads.
type qwenConfig struct {
	Added   map[string]addedJSON `json:"added_tokens_decoder"`
	Pad     json.RawMessage      `json:"pad_token"`
	EOS     json.RawMessage      `json:"eos_token"`
	Special []json.RawMessage    `json:"additional_special_tokens"`
}

// tokenName reads a tokenizer_config token entry: a string, an object with
// a "content", or null ("").
func tokenName(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return o.Content
	}
	return ""
}

func parseQwenConfig(data []byte) (*qwenConfig, error) {
	var c qwenConfig
	if len(data) == 0 {
		return &c, nil
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("parse tokenizer_config.json: %w", err)
	}
	return &c, nil
}

// ParseQwen builds a Qwen tokenizer from the contents of vocab.json,
// merges.txt and (optional, nil for none) tokenizer_config.json, whose
// added_tokens_decoder lists the added tokens, as transformers'
// Qwen2TokenizerFast does for a folder without tokenizer.json. It fails,
// rather than panics, on malformed input.
func ParseQwen(vocabJSON, mergesTXT, configJSON []byte) (*Qwen, error) {
	return parseQwenFiles(vocabJSON, mergesTXT, configJSON, nil)
}

// parseQwenFiles is ParseQwen with the contents of an older folder's
// added_tokens.json (token -> id; nil for none), whose tokens join those of
// added_tokens_decoder that it does not repeat, special if the config names
// them as its end, padding or additional special tokens.
func parseQwenFiles(vocabJSON, mergesTXT, configJSON, addedTokensJSON []byte) (*Qwen, error) {
	encoder, merges, err := parseVocabMerges(vocabJSON, mergesTXT)
	if err != nil {
		return nil, err
	}
	t, err := newBPETables(encoder, merges, "")
	if err != nil {
		return nil, err
	}
	cfg, err := parseQwenConfig(configJSON)
	if err != nil {
		return nil, err
	}
	var added []addedToken
	for k, a := range cfg.Added {
		var id int
		if _, err := fmt.Sscan(k, &id); err != nil || fmt.Sprint(id) != k {
			return nil, fmt.Errorf("tokenizer_config.json: added token id %q is not a number", k)
		}
		a.ID = id
		tok, err := a.token()
		if err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: %w", err)
		}
		added = append(added, tok)
	}
	if len(addedTokensJSON) > 0 {
		var extra map[string]int
		if err := json.Unmarshal(addedTokensJSON, &extra); err != nil {
			return nil, fmt.Errorf("parse added_tokens.json: %w", err)
		}
		special := map[string]bool{tokenName(cfg.Pad): true, tokenName(cfg.EOS): true}
		for _, s := range cfg.Special {
			special[tokenName(s)] = true
		}
		for content, id := range extra {
			if _, ok := cfg.Added[fmt.Sprint(id)]; ok {
				continue
			}
			tok, err := addedJSON{ID: id, Content: content, Special: special[content]}.token()
			if err != nil {
				return nil, fmt.Errorf("added_tokens.json: %w", err)
			}
			added = append(added, tok)
		}
	}
	q := &Qwen{t: t}
	if err := q.setAdded(added); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: %w", err)
	}
	if err := q.setPadEOS(cfg); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: %w", err)
	}
	return q, nil
}

// qwenPattern is the Split pattern of Qwen2's tokenizer.json, the only
// pre-tokenizer pattern this tokenizer implements (see qwenSplit).
const qwenPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// qwenJSON is the part of tokenizer.json the Qwen tokenizer reads.
type qwenJSON struct {
	AddedTokens  []addedJSON `json:"added_tokens"`
	Normalizer   *component  `json:"normalizer"`
	PreTokenizer *struct {
		Type          string `json:"type"`
		PreTokenizers []struct {
			Type    string `json:"type"`
			Pattern struct {
				Regex string `json:"Regex"`
			} `json:"pattern"`
			Behavior       string `json:"behavior"`
			Invert         bool   `json:"invert"`
			AddPrefixSpace bool   `json:"add_prefix_space"`
			UseRegex       bool   `json:"use_regex"`
		} `json:"pretokenizers"`
	} `json:"pre_tokenizer"`
	Model struct {
		Type         string            `json:"type"`
		Vocab        json.RawMessage   `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"`
		Dropout      *float64          `json:"dropout"`
		Prefix       *string           `json:"continuing_subword_prefix"`
		Suffix       *string           `json:"end_of_word_suffix"`
		ByteFallback bool              `json:"byte_fallback"`
		IgnoreMerges bool              `json:"ignore_merges"`
	} `json:"model"`
}

// ParseQwenJSON builds a Qwen tokenizer from the contents of a
// tokenizer.json (BPE model, NFC normalizer, the Qwen2 Split pattern then a
// ByteLevel pre-tokenizer without its own regex) and, optionally (nil), of
// the tokenizer_config.json beside it, for the padding and end tokens. It
// fails, rather than panics, on malformed input and on pipeline steps it
// does not implement, naming what it expected.
func ParseQwenJSON(data, configJSON []byte) (*Qwen, error) {
	var doc qwenJSON
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	m := doc.Model
	switch {
	case m.Type != "BPE":
		return nil, fmt.Errorf("model type %q, want \"BPE\" (a byte-level vocabulary such as Qwen's)", m.Type)
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, errors.New("bpe dropout is not supported")
	case m.ByteFallback:
		return nil, errors.New("bpe byte_fallback is not supported (Qwen has none)")
	case m.Prefix != nil && *m.Prefix != "", m.Suffix != nil && *m.Suffix != "":
		return nil, errors.New("bpe continuing_subword_prefix / end_of_word_suffix are not supported (Qwen has none)")
	case len(m.Merges) > maxVocab:
		return nil, fmt.Errorf("bpe model with more than %d merges", maxVocab)
	}
	vocab, err := decodeVocab(m.Vocab)
	if err != nil {
		return nil, fmt.Errorf("bpe vocab is not an object of token ids: %w", err)
	}
	if len(vocab) == 0 || len(vocab) > maxVocab {
		return nil, fmt.Errorf("bpe model with %d tokens, want 1 to %d", len(vocab), maxVocab)
	}
	if n := doc.Normalizer; n != nil && n.Type != "NFC" {
		return nil, fmt.Errorf("unsupported normalizer %q (want NFC)", n.Type)
	}
	if err := checkQwenPreTokenizer(&doc); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	merges := make([][2]string, len(m.Merges))
	for i, raw := range m.Merges {
		// "a b" (older files) or ["a", "b"] (tokenizers 0.20 on).
		var s string
		if json.Unmarshal(raw, &s) == nil {
			a, b, ok := splitMerge(s)
			if !ok {
				return nil, fmt.Errorf("merge %d: malformed %q", i+1, s)
			}
			merges[i] = [2]string{a, b}
			continue
		}
		var p []string
		if json.Unmarshal(raw, &p) != nil || len(p) != 2 || p[0] == "" || p[1] == "" {
			return nil, fmt.Errorf("merge %d is neither \"a b\" nor [\"a\", \"b\"]", i+1)
		}
		merges[i] = [2]string{p[0], p[1]}
	}
	t, err := newBPETables(vocab, merges, "")
	if err != nil {
		return nil, err
	}
	var added []addedToken
	for _, a := range doc.AddedTokens {
		tok, err := a.token()
		if err != nil {
			return nil, err
		}
		added = append(added, tok)
	}
	q := &Qwen{t: t, ignoreMerges: m.IgnoreMerges}
	if err := q.setAdded(added); err != nil {
		return nil, err
	}
	cfg, err := parseQwenConfig(configJSON)
	if err != nil {
		return nil, err
	}
	if err := q.setPadEOS(cfg); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: %w", err)
	}
	return q, nil
}

// checkQwenPreTokenizer accepts only Qwen2's pre-tokenizer: Split with
// qwenPattern (Isolated), then ByteLevel without prefix space or regex.
func checkQwenPreTokenizer(doc *qwenJSON) error {
	p := doc.PreTokenizer
	if p == nil || p.Type != "Sequence" || len(p.PreTokenizers) != 2 {
		return errors.New("want a Sequence of Split (the Qwen2 pattern) and ByteLevel")
	}
	s, b := p.PreTokenizers[0], p.PreTokenizers[1]
	if s.Type != "Split" || s.Pattern.Regex != qwenPattern || s.Behavior != "Isolated" || s.Invert {
		return fmt.Errorf("first step %s %q (%s), want Split with the Qwen2 pattern %q, Isolated", s.Type, s.Pattern.Regex, s.Behavior, qwenPattern)
	}
	if b.Type != "ByteLevel" || b.AddPrefixSpace || b.UseRegex {
		return fmt.Errorf("second step %s (add_prefix_space %v, use_regex %v), want ByteLevel without either", b.Type, b.AddPrefixSpace, b.UseRegex)
	}
	return nil
}

// setAdded checks and installs the added tokens.
func (q *Qwen) setAdded(added []addedToken) error {
	q.raw, q.norm = nil, nil
	q.byID = make(map[int]addedToken, len(added))
	q.size = len(q.t.decoder)
	for _, a := range added {
		if a.content == "" || a.id < 0 || a.id >= maxVocab {
			return fmt.Errorf("added token %q with id %d", a.content, a.id)
		}
		if old, ok := q.byID[a.id]; ok {
			return fmt.Errorf("added tokens %q and %q share id %d", old.content, a.content, a.id)
		}
		q.byID[a.id] = a
		q.size = max(q.size, a.id+1)
		if a.normalized {
			q.norm = append(q.norm, a)
		} else {
			q.raw = append(q.raw, a)
		}
	}
	// A fixed order, so that equal-length ties (there are none in Qwen's
	// vocabulary) resolve the same way on every run.
	for _, l := range [][]addedToken{q.raw, q.norm} {
		slices.SortFunc(l, func(a, b addedToken) int { return a.id - b.id })
	}
	return nil
}

// setPadEOS sets the padding and end tokens from tokenizer_config.json,
// defaulting to <|endoftext|> and <|im_end|> as Qwen's files name them.
func (q *Qwen) setPadEOS(cfg *qwenConfig) error {
	pad, eos := tokenName(cfg.Pad), tokenName(cfg.EOS)
	if pad == "" {
		pad = "<|endoftext|>"
	}
	if eos == "" {
		eos = "<|im_end|>"
	}
	q.pad, q.eos = q.id(pad), q.id(eos)
	if q.pad < 0 {
		return fmt.Errorf("padding token %q is not in the vocabulary", pad)
	}
	return nil
}

// id returns the id of an added or vocabulary token, or -1.
func (q *Qwen) id(tok string) int {
	for _, a := range q.byID {
		if a.content == tok {
			return a.id
		}
	}
	if id, ok := q.t.encoder[tok]; ok {
		return int(id)
	}
	return -1
}

// Pad is the id of the padding token (<|endoftext|>, 151643).
func (q *Qwen) Pad() int { return q.pad }

// EOS is the id of the end token (<|im_end|>, 151645; -1 if none).
func (q *Qwen) EOS() int { return q.eos }

// VocabSize is one more than the largest token id, added tokens included
// (151669 for the bundled vocabularies; the models' embeddings have 151936
// rows).
func (q *Qwen) VocabSize() int { return q.size }

// Token returns the string of id: an added token's content, or a
// vocabulary token in GPT-2's byte-character alphabet.
func (q *Qwen) Token(id int) (string, bool) {
	if a, ok := q.byID[id]; ok {
		return a.content, true
	}
	if id < 0 || id >= len(q.t.decoder) || q.t.decoder[id] == "" {
		return "", false
	}
	return q.t.decoder[id], true
}

// IsSpecial reports whether id is an added token marked special (the
// control tokens; not <think> or <tool_call>).
func (q *Qwen) IsSpecial(id int) bool {
	a, ok := q.byID[id]
	return ok && a.special
}

// IDs returns the ids of text, nothing added around it: HF's
// tokenizer(text)["input_ids"]. Bytes that are not valid UTF-8 (which a
// Python string cannot hold) are read as U+FFFD.
func (q *Qwen) IDs(text string) []int {
	return q.appendIDs(nil, text)
}

// Encode tokenizes text as Qwen2TokenizerFast does. With maxLen ≤ 0 it
// returns every id and a mask of ones. With maxLen > 0 the ids are cut to
// maxLen (truncation=True, max_length=maxLen) and, with pad, padded on the
// right with Pad() to exactly maxLen (padding="max_length"), the mask 0 on
// the padding.
func (q *Qwen) Encode(text string, maxLen int, pad bool) (ids, mask []int) {
	ids = q.IDs(text)
	if maxLen > 0 && len(ids) > maxLen {
		ids = ids[:maxLen]
	}
	return maskAndPad(ids, maxLen, pad, q.pad)
}

// appendIDs appends the ids of text.
func (q *Qwen) appendIDs(ids []int, text string) []int {
	text = strings.ToValidUTF8(text, "\uFFFD")
	for at := 0; at <= len(text); {
		start, end, tok := nextAdded(q.raw, text, at)
		ids = q.appendNormalized(ids, nfc(text[at:start]))
		if tok == nil {
			break
		}
		ids = append(ids, tok.id)
		at = end
	}
	return ids
}

// appendNormalized appends the ids of normalized text, splitting it on the
// added tokens matched after normalization.
func (q *Qwen) appendNormalized(ids []int, text string) []int {
	for at := 0; at <= len(text); {
		start, end, tok := nextAdded(q.norm, text, at)
		qwenSplit(text[at:start], func(piece string) {
			for _, id := range q.bpe(piece) {
				ids = append(ids, int(id))
			}
		})
		if tok == nil {
			break
		}
		ids = append(ids, tok.id)
		at = end
	}
	return ids
}

// bpe returns the ids of one pre-tokenized piece. The result must not be
// modified.
func (q *Qwen) bpe(piece string) []int32 {
	if q.ignoreMerges {
		if id, ok := q.t.encoder[byteLevel(piece)]; ok {
			return []int32{id}
		}
	}
	return q.cache.ids(q.t, piece)
}

// byteLevel maps the bytes of s to GPT-2's byte characters.
func byteLevel(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// Decode turns ids back into text as Qwen2TokenizerFast's decode does
// (clean_up_tokenization_spaces off): added tokens become their content
// (skipped if special and skipSpecial), vocabulary tokens their bytes, and
// bytes that do not form valid UTF-8 become U+FFFD. Unknown ids are
// skipped. For any valid NFC text, Decode(IDs(text), false) == text.
func (q *Qwen) Decode(ids []int, skipSpecial bool) string {
	var raw []byte
	for _, id := range ids {
		if a, ok := q.byID[id]; ok {
			if !(skipSpecial && a.special) {
				raw = append(raw, a.content...)
			}
			continue
		}
		tok, ok := q.Token(id)
		if !ok {
			continue
		}
		for _, r := range tok {
			if b, ok := runeToByte[r]; ok {
				raw = append(raw, b)
			} else {
				raw = utf8.AppendRune(raw, r)
			}
		}
	}
	return strings.ToValidUTF8(string(raw), "\uFFFD")
}
