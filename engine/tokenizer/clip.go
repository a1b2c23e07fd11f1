// Package tokenizer turns prompts into token ids for the text encoders.
//
// CLIP is the byte-level BPE tokenizer of OpenAI CLIP, as Stable Diffusion
// 1.x/2.x, SDXL, SD3 and Flux use it. It reproduces Hugging Face
// transformers' CLIPTokenizer, the tokenizer that ComfyUI and diffusers call:
// in transformers 5 that class is backed by the tokenizers library and never
// uses ftfy. Its pipeline, implemented here step by step, is:
//
//  1. special tokens: the literal strings <|startoftext|> and <|endoftext|>
//     in the raw text become their ids directly (case-sensitive);
//  2. normalization of the text between them: Unicode NFC, each run of
//     Unicode whitespace replaced by one space, per-character lowercasing;
//  3. pre-tokenization with CLIP's pattern (contractions, runs of letters,
//     single digits, runs of other non-space characters; spaces dropped);
//  4. each piece's UTF-8 bytes mapped to CLIP's 256 byte characters, "</w>"
//     appended to the last one, and BPE merges applied by rank;
//  5. <|startoftext|> (49406) before and <|endoftext|> (49407) after.
//
// Unlike the old Python ("slow") tokenizer without ftfy, this pipeline does
// not delete control characters or put spaces around CJK characters; unlike
// OpenAI's own simple_tokenizer, it does not run ftfy or unescape HTML.
//
// T5 (t5.go) is T5's SentencePiece Unigram tokenizer, and Qwen (qwen.go)
// the byte-level BPE of the Qwen language models that condition Z-Image
// and Qwen-Image, with those pipelines' prompt templates (qwenprompt.go).
package tokenizer

import (
	"container/heap"
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode/utf8"
)

// ContextLength is the number of tokens a CLIP text encoder reads.
const ContextLength = 77

// maxWordTokens is ComfyUI's max_word_length: a word of at least this many
// tokens may be split across two chunks; a shorter one moves whole to the
// next chunk.
const maxWordTokens = 8

// cacheLimit bounds the BPE cache; it is emptied when full.
const cacheLimit = 1 << 14

// maxCachedPiece is the longest piece (in bytes) worth caching.
const maxCachedPiece = 64

// maxFileSize bounds vocab.json and merges.txt.
const maxFileSize = 64 << 20

// CLIP is a CLIP BPE tokenizer. It is safe for concurrent use.
type CLIP struct {
	t     *tables
	cache bpeCache
}

// NewCLIP returns a tokenizer over OpenAI CLIP's vocabulary, bundled with
// this package (49408 tokens). The vocabulary is parsed once per process;
// later calls only allocate a new BPE cache.
func NewCLIP() (*CLIP, error) {
	t, err := bundledTables()
	if err != nil {
		return nil, err
	}
	return newCLIP(t), nil
}

// LoadCLIP returns a tokenizer over the vocabulary of a model folder: the
// paths of its vocab.json (token to id) and merges.txt, as diffusers and
// transformers lay them out in the tokenizer/ subfolder.
func LoadCLIP(vocabJSON, mergesTXT string) (*CLIP, error) {
	v, err := readFile(vocabJSON)
	if err != nil {
		return nil, fmt.Errorf("load clip tokenizer: %w", err)
	}
	m, err := readFile(mergesTXT)
	if err != nil {
		return nil, fmt.Errorf("load clip tokenizer: %w", err)
	}
	return ParseCLIP(v, m)
}

// ParseCLIP is LoadCLIP over the contents of vocab.json and merges.txt. It
// fails, rather than panics, on malformed input: invalid JSON, negative or
// repeated ids, a merge whose parts or result are not in the vocabulary, or
// a vocabulary without <|startoftext|> and <|endoftext|>.
func ParseCLIP(vocabJSON, mergesTXT []byte) (*CLIP, error) {
	t, err := loadTables(vocabJSON, mergesTXT)
	if err != nil {
		return nil, fmt.Errorf("load clip tokenizer: %w", err)
	}
	return newCLIP(t), nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := readLimited(f, maxFileSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

func newCLIP(t *tables) *CLIP {
	return &CLIP{t: t}
}

// BOS returns the id of <|startoftext|> (49406 in CLIP's vocabulary).
func (c *CLIP) BOS() int { return int(c.t.bos) }

// EOS returns the id of <|endoftext|> (49407), which is also CLIP's padding
// and unknown token.
func (c *CLIP) EOS() int { return int(c.t.eos) }

// VocabSize returns one more than the largest token id.
func (c *CLIP) VocabSize() int { return len(c.t.decoder) }

// Token returns the vocabulary string of id, in CLIP's byte-character
// alphabet, and whether id is a token.
func (c *CLIP) Token(id int) (string, bool) {
	if id < 0 || id >= len(c.t.decoder) || c.t.decoder[id] == "" {
		return "", false
	}
	return c.t.decoder[id], true
}

// Encode returns the ids of text with <|startoftext|> first and
// <|endoftext|> last, never truncated: HF's
// tokenizer(text)["input_ids"].
func (c *CLIP) Encode(text string) []int {
	ids := []int{c.BOS()}
	ids = c.appendIDs(ids, text)
	return append(ids, c.EOS())
}

// Encode77 returns exactly ContextLength ids: HF's
// tokenizer(text, padding="max_length", max_length=77, truncation=True).
// Text beyond 75 tokens is cut, <|endoftext|> stays last, and short
// prompts are padded with <|endoftext|>.
func (c *CLIP) Encode77(text string) []int {
	body := c.appendIDs(nil, text)
	return c.Pad(body, ContextLength, c.EOS())
}

// Pad wraps body (ids without special tokens) in <|startoftext|> ...
// <|endoftext|>, truncating body so that the result fits in length, and
// fills the rest with pad. It panics if length < 2.
func (c *CLIP) Pad(body []int, length, pad int) []int {
	if length < 2 {
		panic(fmt.Sprintf("tokenizer: Pad length %d < 2", length))
	}
	body = body[:min(len(body), length-2)]
	out := make([]int, 0, length)
	out = append(out, c.BOS())
	out = append(out, body...)
	out = append(out, c.EOS())
	for len(out) < length {
		out = append(out, pad)
	}
	return out
}

// appendIDs appends the ids of text, without start and end tokens.
func (c *CLIP) appendIDs(ids []int, text string) []int {
	text = strings.ToValidUTF8(text, "\uFFFD")
	for text != "" {
		// Split off the next special token, matched in the raw text.
		i, special := nextSpecial(text)
		ids = c.appendPlain(ids, text[:i])
		if special == "" {
			break
		}
		if special == StartOfText {
			ids = append(ids, c.BOS())
		} else {
			ids = append(ids, c.EOS())
		}
		text = text[i+len(special):]
	}
	return ids
}

// nextSpecial returns the index of the first special token in s and the
// token, or len(s) and "".
func nextSpecial(s string) (int, string) {
	best, tok := len(s), ""
	for _, sp := range [...]string{StartOfText, EndOfText} {
		if i := strings.Index(s, sp); i >= 0 && i < best {
			best, tok = i, sp
		}
	}
	return best, tok
}

// appendPlain appends the ids of text that holds no special token.
func (c *CLIP) appendPlain(ids []int, text string) []int {
	if text == "" {
		return ids
	}
	pretokenize(normalize(text), func(piece string) {
		for _, id := range c.bpe(piece) {
			ids = append(ids, int(id))
		}
	})
	return ids
}

// bpe returns the ids of one piece, from the cache when possible. The
// result must not be modified.
func (c *CLIP) bpe(piece string) []int32 { return c.cache.ids(c.t, piece) }

// bpeCache memoizes the BPE of short pieces; it is safe for concurrent
// use, and its zero value is ready.
type bpeCache struct {
	mu sync.Mutex
	m  map[string][]int32
}

// ids returns t.merge(piece), from the cache when possible. The result must
// not be modified.
func (c *bpeCache) ids(t *tables, piece string) []int32 {
	cacheable := len(piece) <= maxCachedPiece
	if cacheable {
		c.mu.Lock()
		ids, ok := c.m[piece]
		c.mu.Unlock()
		if ok {
			return ids
		}
	}
	ids := t.merge(piece)
	if cacheable {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= cacheLimit {
			c.m = make(map[string][]int32)
		}
		c.m[piece] = ids
		c.mu.Unlock()
	}
	return ids
}

// symbol is one node of the doubly linked list that BPE merges.
type symbol struct {
	id         int32 // vocabulary id; -1 if the byte has no token
	prev, next int32 // neighbour indices; -1 at the ends
	gone       bool  // merged into its left neighbour
}

// pairCand is a candidate merge of symbol pos with its right neighbour.
type pairCand struct {
	rank, pos int32
	left, rgt int32 // the ids when queued, to detect stale candidates
	merged    int32
}

type pairHeap []pairCand

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairCand)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// merge runs BPE over the bytes of piece: start from one symbol per byte
// (the last one carrying "</w>"), then repeatedly merge the adjacent pair
// with the lowest merge rank, leftmost first, until no pair has a rank. This
// is the order of the tokenizers library; CLIP's Python loop, which merges
// every occurrence of the best pair per pass, gives the same result because
// a merge can only create pairs of higher rank than itself. Bytes without a
// token become the unknown token, or are dropped if there is none.
func (t *tables) merge(piece string) []int32 {
	n := len(piece)
	if n == 0 {
		return nil
	}
	syms := make([]symbol, n)
	for i := 0; i < n; i++ {
		id := t.byteSym[piece[i]]
		if i == n-1 {
			id = t.byteSymEnd[piece[i]]
		}
		syms[i] = symbol{id: id, prev: int32(i - 1), next: int32(i + 1)}
	}
	syms[n-1].next = -1

	var h pairHeap
	push := func(pos int32) {
		r := syms[pos].next
		if r < 0 || syms[pos].id < 0 || syms[r].id < 0 {
			return
		}
		if m, ok := t.merges[mergeKey{syms[pos].id, syms[r].id}]; ok {
			heap.Push(&h, pairCand{rank: m.rank, pos: pos, left: syms[pos].id, rgt: syms[r].id, merged: m.id})
		}
	}
	for i := 0; i < n-1; i++ {
		push(int32(i))
	}
	for h.Len() > 0 {
		cand := heap.Pop(&h).(pairCand)
		l := &syms[cand.pos]
		if l.gone || l.id != cand.left || l.next < 0 {
			continue
		}
		r := &syms[l.next]
		if r.id != cand.rgt {
			continue
		}
		// Merge r into l.
		l.id = cand.merged
		r.gone = true
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = cand.pos
		}
		if l.prev >= 0 {
			push(l.prev)
		}
		push(cand.pos)
	}
	out := make([]int32, 0, n)
	for i := int32(0); i >= 0; i = syms[i].next {
		id := syms[i].id
		if id < 0 {
			if t.unk < 0 {
				continue // no unknown token: the byte is dropped, as tokenizers does
			}
			id = t.unk
		}
		out = append(out, id)
	}
	return out
}

// Decode turns ids back into text the way CLIP's own tokenizer does: special
// tokens (<|startoftext|>, <|endoftext|>, so also padding) and ids outside
// the vocabulary are skipped, the tokens' byte characters become bytes again,
// each "</w>" becomes a space, and the trailing space is trimmed. Bytes that
// do not form valid UTF-8 become U+FFFD. The result is the normalized text
// with a space after every word piece: "a cat, sitting" decodes as
// "a cat , sitting".
func (c *CLIP) Decode(ids []int) string {
	var raw []byte
	for _, id := range ids {
		if id == c.BOS() || id == c.EOS() {
			continue
		}
		tok, ok := c.Token(id)
		if !ok {
			continue
		}
		for len(tok) > 0 {
			if strings.HasPrefix(tok, wordEnd) {
				raw = append(raw, ' ')
				tok = tok[len(wordEnd):]
				continue
			}
			r, size := utf8.DecodeRuneInString(tok)
			if b, ok := runeToByte[r]; ok {
				raw = append(raw, b)
			} else {
				// Not a byte character (only possible with a custom
				// vocabulary): keep the character itself.
				raw = append(raw, tok[:size]...)
			}
			tok = tok[size:]
		}
	}
	return strings.TrimSuffix(strings.ToValidUTF8(string(raw), "\uFFFD"), " ")
}

// Words splits text at spaces and newlines (empty words dropped) and
// tokenizes each word on its own, without start and end tokens, as older
// ComfyUI releases batched prompts; current ComfyUI batches whole weighted
// segments instead (WeightedChunks).
func (c *CLIP) Words(text string) [][]int {
	var words [][]int
	for _, w := range strings.Split(strings.ReplaceAll(text, "\n", " "), " ") {
		if w == "" {
			continue
		}
		words = append(words, c.appendIDs(nil, w))
	}
	return words
}

// Chunks77 tokenizes a prompt of any length into windows of ContextLength
// ids the way ComfyUI does for SD1.x and SDXL's CLIP-L (padding with
// <|endoftext|>); see WeightedChunks, whose ids it returns. A prompt of up to
// 75 tokens without weights gives one window equal to Encode77.
func (c *CLIP) Chunks77(text string) [][]int {
	ids, _ := c.WeightedChunks(text, c.EOS())
	return ids
}

// ChunkWords batches word token groups into windows of length ids, as
// ComfyUI's SDTokenizer.tokenize_with_weights does. Each window is
// <|startoftext|>, up to length-2 tokens, <|endoftext|>, then pad up to
// length. A word that does not fit in the current window goes whole to the
// next one, the current window being closed and padded, unless it has at
// least 8 tokens (ComfyUI's max_word_length): then it fills the current
// window and continues in the next. There is always at least one window;
// an empty prompt gives <|startoftext|> <|endoftext|> pad... Pad with
// EOS() for SD1.x and CLIP-L, with 0 for SD2.x's and SDXL's CLIP-G, as
// ComfyUI does. It panics if length < 3.
func (c *CLIP) ChunkWords(words [][]int, length, pad int) [][]int {
	if length < 3 {
		panic(fmt.Sprintf("tokenizer: ChunkWords length %d < 3", length))
	}
	return batchGroups(words, length, c.BOS(), c.EOS(), pad)
}

// batchGroups lays out token groups in windows of length: bos, the groups'
// tokens, eos, then pad, a group of fewer than maxWordTokens moving whole to
// the next window when it does not fit (see ChunkWords).
func batchGroups(groups [][]int, length, bos, eos, pad int) [][]int {
	var chunks [][]int
	batch := []int{bos}
	closeBatch := func() {
		batch = append(batch, eos)
		for len(batch) < length {
			batch = append(batch, pad)
		}
		chunks = append(chunks, batch)
		batch = []int{bos}
	}
	for _, g := range groups {
		large := len(g) >= maxWordTokens
		for len(g) > 0 {
			if len(batch)+len(g) <= length-1 {
				batch = append(batch, g...)
				break
			}
			// ComfyUI would loop forever on a short group that cannot fit
			// even a fresh window (only possible for tiny lengths); split
			// it like a long one instead.
			if large || len(batch) == 1 {
				n := length - 1 - len(batch)
				batch = append(batch, g[:n]...)
				g = g[n:]
			}
			closeBatch()
		}
	}
	closeBatch()
	return chunks
}
