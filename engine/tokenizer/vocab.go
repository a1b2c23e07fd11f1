package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// Special tokens of the CLIP vocabulary.
const (
	StartOfText = "<|startoftext|>"
	EndOfText   = "<|endoftext|>"
	wordEnd     = "</w>"
)

// bundledVocab is OpenAI CLIP's merge list (see NOTICE.md).
//
//go:embed bpe_simple_vocab_16e6.txt.gz
var bundledVocab []byte

// clipMerges is how many merges of the bundled list CLIP uses: its
// vocabulary has 49408 entries, 2*256 byte tokens, 2 special tokens and the
// rest merges (CLIP's simple_tokenizer reads lines 1 to 49152-256-2).
const clipMerges = 49152 - 256 - 2

// maxVocab bounds the size of a loaded vocabulary, so that a hostile file
// cannot make the loader allocate without limit.
const maxVocab = 1 << 20

// mergeKey identifies a pair of adjacent symbols by their ids.
type mergeKey struct{ a, b int32 }

// mergeVal is the priority of a merge (lower merges first) and the id of
// the merged symbol.
type mergeVal struct{ rank, id int32 }

// tables is an immutable CLIP vocabulary: the encoder, the decoder and the
// merge ranks. It is shared by every CLIP built from the same source.
type tables struct {
	encoder map[string]int32
	decoder []string // id -> token; "" where the id is unused
	merges  map[mergeKey]mergeVal
	bos     int32
	eos     int32
	unk     int32
	// byteSym[b] is the vocabulary id of the single-byte symbol for byte b
	// in the middle of a word and byteSymEnd[b] at its end (-1: missing).
	byteSym    [256]int32
	byteSymEnd [256]int32
}

// byteRunes returns CLIP's (GPT-2's) reversible byte-to-character map: the
// printable Latin-1 bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for
// themselves, and the other 68 bytes take the characters U+0100 onwards in
// byte order, so that no byte maps to whitespace or a control character.
func byteRunes() [256]rune {
	var m [256]rune
	next := rune(256)
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xa1 && b <= 0xac || b >= 0xae && b <= 0xff {
			m[b] = rune(b)
		} else {
			m[b] = next
			next++
		}
	}
	return m
}

var (
	byteToRune = byteRunes()
	runeToByte = func() map[rune]byte {
		m := make(map[rune]byte, 256)
		for b, r := range byteToRune {
			m[r] = byte(b)
		}
		return m
	}()
)

// bundledTables parses the embedded vocabulary once per process.
var bundledTables = sync.OnceValues(func() (*tables, error) {
	merges, err := readBundledMerges(bundledVocab, clipMerges)
	if err != nil {
		return nil, fmt.Errorf("bundled clip vocabulary: %w", err)
	}
	// The vocabulary in CLIP's order: bytes, bytes at word end, merges,
	// then the two special tokens.
	// CLIP lists the byte characters in the order bytes_to_unicode builds
	// them: the printable bytes ascending, then the others ascending.
	var order []rune
	for _, r := range byteToRune {
		if r < 256 {
			order = append(order, r)
		}
	}
	for _, r := range byteToRune {
		if r >= 256 {
			order = append(order, r)
		}
	}
	vocab := make([]string, 0, 512+len(merges)+2)
	for _, r := range order {
		vocab = append(vocab, string(r))
	}
	for _, r := range order {
		vocab = append(vocab, string(r)+wordEnd)
	}
	for _, m := range merges {
		vocab = append(vocab, m[0]+m[1])
	}
	vocab = append(vocab, StartOfText, EndOfText)
	encoder := make(map[string]int32, len(vocab))
	for i, tok := range vocab {
		encoder[tok] = int32(i)
	}
	t, err := newTables(encoder, merges)
	if err != nil {
		return nil, fmt.Errorf("bundled clip vocabulary: %w", err)
	}
	return t, nil
})

// readBundledMerges reads the first n merges of a gzipped CLIP merge list
// (a header line, then one "left right" pair per line).
func readBundledMerges(gz []byte, n int) ([][2]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("open gzip: %w", err)
	}
	defer zr.Close()
	sc := bufio.NewScanner(zr)
	merges := make([][2]string, 0, n)
	line := 0
	for len(merges) < n && sc.Scan() {
		line++
		if line == 1 {
			continue // "#version: 0.2"
		}
		a, b, ok := splitMerge(sc.Text())
		if !ok {
			return nil, fmt.Errorf("line %d: malformed merge %q", line, sc.Text())
		}
		merges = append(merges, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read merges: %w", err)
	}
	if len(merges) < n {
		return nil, fmt.Errorf("only %d merges, want %d", len(merges), n)
	}
	return merges, nil
}

// splitMerge splits "left right" into its two non-empty halves.
func splitMerge(s string) (a, b string, ok bool) {
	a, b, ok = strings.Cut(s, " ")
	if !ok || a == "" || b == "" || strings.Contains(b, " ") {
		return "", "", false
	}
	return a, b, true
}

// loadTables builds tables from a diffusers/transformers tokenizer folder's
// vocab.json (token -> id) and merges.txt.
func loadTables(vocabJSON, mergesTXT []byte) (*tables, error) {
	encoder, merges, err := parseVocabMerges(vocabJSON, mergesTXT)
	if err != nil {
		return nil, err
	}
	return newTables(encoder, merges)
}

// parseVocabMerges parses a vocab.json (token -> id) and a merges.txt.
func parseVocabMerges(vocabJSON, mergesTXT []byte) (map[string]int32, [][2]string, error) {
	encoder, err := decodeVocab(vocabJSON)
	if err != nil {
		return nil, nil, fmt.Errorf("parse vocab.json: %w", err)
	}
	if len(encoder) == 0 {
		return nil, nil, errors.New("parse vocab.json: empty vocabulary")
	}
	if len(encoder) > maxVocab {
		return nil, nil, fmt.Errorf("parse vocab.json: %d tokens, more than %d", len(encoder), maxVocab)
	}
	merges, err := parseMerges(mergesTXT)
	if err != nil {
		return nil, nil, fmt.Errorf("parse merges.txt: %w", err)
	}
	return encoder, merges, nil
}

// decodeVocab decodes a JSON object of tokens to ids, by scanVocabJSON
// when it can.
func decodeVocab(data []byte) (map[string]int32, error) {
	if m, ok := scanVocabJSON(data); ok {
		return m, nil
	}
	var m map[string]int32
	err := json.Unmarshal(data, &m)
	return m, err
}

// scanVocabJSON is a fast reader of the common shape of vocab.json, a flat
// object of strings to integer ids, without encoding/json's reflection
// (ParseQwen of the bundled 151643 tokens: 0.2 s instead of 0.44 s). It
// gives up (false) on
// anything it does not fully understand: invalid UTF-8, a control
// character, an id that is not a plain int32, or any other JSON than one
// object; the caller then lets encoding/json parse the input (and report
// its errors), so the result is always encoding/json's.
func scanVocabJSON(data []byte) (map[string]int32, bool) {
	i := 0
	ws := func() {
		for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
			i++
		}
	}
	ws()
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	i++
	m := make(map[string]int32, min(bytes.Count(data, []byte{','})+1, maxVocab))
	ws()
	if i < len(data) && data[i] == '}' {
		i++
		ws()
		return m, i == len(data)
	}
	for {
		// A key: the quoted string, unescaped by encoding/json if it holds
		// a backslash.
		if i >= len(data) || data[i] != '"' {
			return nil, false
		}
		start, escaped := i, false
		for i++; i < len(data) && data[i] != '"'; i++ {
			switch {
			case data[i] == '\\':
				escaped = true
				i++
			case data[i] < 0x20:
				return nil, false
			}
		}
		if i >= len(data) {
			return nil, false
		}
		i++
		quoted := data[start:i]
		var key string
		if escaped {
			if json.Unmarshal(quoted, &key) != nil {
				return nil, false
			}
		} else {
			key = string(quoted[1 : len(quoted)-1])
		}
		if !utf8.ValidString(key) {
			return nil, false
		}
		ws()
		if i >= len(data) || data[i] != ':' {
			return nil, false
		}
		i++
		ws()
		// An id: an optional minus and decimal digits, no leading zero.
		neg := i < len(data) && data[i] == '-'
		if neg {
			i++
		}
		d0, v := i, int64(0)
		for ; i < len(data) && '0' <= data[i] && data[i] <= '9'; i++ {
			v = v*10 + int64(data[i]-'0')
			if v > 1<<31 {
				return nil, false
			}
		}
		if i == d0 || i-d0 > 1 && data[d0] == '0' || i < len(data) && (data[i] == '.' || data[i] == 'e' || data[i] == 'E') {
			return nil, false
		}
		if neg {
			v = -v
		}
		if v > 1<<31-1 || v < -1<<31 {
			return nil, false
		}
		m[key] = int32(v)
		ws()
		if i >= len(data) {
			return nil, false
		}
		if data[i] == '}' {
			i++
			ws()
			return m, i == len(data)
		}
		if data[i] != ',' {
			return nil, false
		}
		i++
		ws()
	}
}

// parseMerges reads a merges.txt: an optional "#version" first line, then
// one "left right" pair per line; blank lines are skipped.
func parseMerges(data []byte) ([][2]string, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid utf-8")
	}
	merges := make([][2]string, 0, min(bytes.Count(data, []byte{'\n'})+1, maxVocab))
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || i == 0 && strings.HasPrefix(line, "#version") {
			continue
		}
		if len(merges) >= maxVocab {
			return nil, fmt.Errorf("more than %d merges", maxVocab)
		}
		a, b, ok := splitMerge(line)
		if !ok {
			return nil, fmt.Errorf("line %d: malformed merge %q", i+1, line)
		}
		merges = append(merges, [2]string{a, b})
	}
	return merges, nil
}

// newTables checks a CLIP vocabulary and its merges and indexes them.
func newTables(encoder map[string]int32, merges [][2]string) (*tables, error) {
	t, err := newBPETables(encoder, merges, wordEnd)
	if err != nil {
		return nil, err
	}
	var ok bool
	if t.bos, ok = encoder[StartOfText]; !ok {
		return nil, fmt.Errorf("vocabulary has no %s", StartOfText)
	}
	if t.eos, ok = encoder[EndOfText]; !ok {
		return nil, fmt.Errorf("vocabulary has no %s", EndOfText)
	}
	t.unk = t.eos // CLIP's unknown token is <|endoftext|>
	return t, nil
}

// newBPETables checks a byte-level BPE vocabulary and its merges and
// indexes them. suffix is the end-of-word marker the last byte symbol of a
// piece carries ("</w>" for CLIP, "" for GPT-2-style vocabularies such as
// Qwen's). The tables have no unknown token (unk -1) and no bos or eos.
func newBPETables(encoder map[string]int32, merges [][2]string, suffix string) (*tables, error) {
	t := &tables{encoder: encoder, merges: make(map[mergeKey]mergeVal, len(merges)), bos: -1, eos: -1, unk: -1}
	maxID := int32(-1)
	for tok, id := range encoder {
		if id < 0 || id >= maxVocab {
			return nil, fmt.Errorf("token %q: id %d out of range [0, %d)", tok, id, maxVocab)
		}
		maxID = max(maxID, id)
	}
	t.decoder = make([]string, maxID+1)
	for tok, id := range encoder {
		if t.decoder[id] != "" {
			return nil, fmt.Errorf("tokens %q and %q share id %d", t.decoder[id], tok, id)
		}
		if tok == "" {
			return nil, fmt.Errorf("empty token with id %d", id)
		}
		t.decoder[id] = tok
	}
	for i, m := range merges {
		a, okA := encoder[m[0]]
		b, okB := encoder[m[1]]
		id, okM := encoder[m[0]+m[1]]
		if !okA || !okB || !okM {
			return nil, fmt.Errorf("merge %d (%q %q): token not in vocabulary", i+1, m[0], m[1])
		}
		// A repeated pair takes its last rank, as both CLIP's dict of ranks
		// and the tokenizers library's merge map do.
		t.merges[mergeKey{a, b}] = mergeVal{rank: int32(i), id: id}
	}
	for b, r := range byteToRune {
		t.byteSym[b], t.byteSymEnd[b] = -1, -1
		if id, ok := encoder[string(r)]; ok {
			t.byteSym[b] = id
		}
		if id, ok := encoder[string(r)+suffix]; ok {
			t.byteSymEnd[b] = id
		}
	}
	return t, nil
}

// readLimited reads at most limit bytes from r, failing if there are more.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// gunzip decompresses an embedded file.
func gunzip(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return readLimited(zr, maxFileSize)
}
