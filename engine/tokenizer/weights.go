package tokenizer

import (
	"math"
	"strconv"
	"strings"
)

// Segment is a run of prompt text with its attention weight.
type Segment struct {
	Text   string
	Weight float64
}

// Escapes for literal parentheses, \( and \), while parsing weights.
const (
	escClose = "\x00\x01"
	escOpen  = "\x00\x02"
)

// ParseWeights splits a prompt into weighted segments with ComfyUI's
// syntax: "(text)" multiplies the weight by 1.1 (nesting multiplies again),
// "(text:1.3)" sets it to 1.3 for text (an explicit weight replaces the
// enclosing one), and \( \) are literal parentheses. Unbalanced
// parentheses are kept as text, as ComfyUI does. Unlike ComfyUI, weights
// that are not finite numbers stay text, weights are clamped to ±100, and
// groups nested deeper than 32 levels are kept as text.
func ParseWeights(text string) []Segment {
	segs := tokenWeights(escapeParens(text), 1, 0)
	for i := range segs {
		segs[i].Text = unescapeParens(segs[i].Text)
	}
	return segs
}

// escapeParens hides the literal parentheses \( and \) from the weight
// parser, as ComfyUI's escape_important does.
func escapeParens(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, `\)`, escClose), `\(`, escOpen)
}

// unescapeParens turns hidden parentheses into plain ones, as ComfyUI's
// unescape_important does.
func unescapeParens(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, escClose, ")"), escOpen, "(")
}

// splitParentheses splits s into top-level parenthesised groups (with their
// parentheses) and the text between them.
func splitParentheses(s string) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			if depth == 0 && cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			cur.WriteRune(r)
			depth++
		case r == ')':
			depth--
			cur.WriteRune(r)
			if depth == 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// maxWeightNesting bounds the parenthesis depth that is parsed for weights
// (deeper groups are kept as text), so hostile prompts cannot make parsing
// quadratic; ComfyUI users nest a handful of levels.
const maxWeightNesting = 32

// maxWeight bounds a segment's weight: beyond it the text encoder's
// output is meaningless (1.1^1000 overflows).
const maxWeight = 100

func tokenWeights(s string, weight float64, depth int) []Segment {
	var out []Segment
	if depth >= maxWeightNesting {
		return []Segment{{Text: s, Weight: weight}}
	}
	for _, part := range splitParentheses(s) {
		if len(part) >= 2 && part[0] == '(' && part[len(part)-1] == ')' {
			inner := part[1 : len(part)-1]
			w := weight * 1.1
			if i := strings.LastIndexByte(inner, ':'); i > 0 {
				if v, err := strconv.ParseFloat(strings.TrimSpace(inner[i+1:]), 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) {
					w = v
					inner = inner[:i]
				}
			}
			w = max(-maxWeight, min(maxWeight, w))
			out = append(out, tokenWeights(inner, w, depth+1)...)
			continue
		}
		out = append(out, Segment{Text: part, Weight: weight})
	}
	return out
}

// WeightedChunks tokenizes a prompt into windows of ContextLength ids and
// the weight of each id, as ComfyUI's SD1 tokenizer does: the prompt is split
// into weighted segments (ParseWeights), each segment is tokenized as a whole
// and batched into windows like a word of ChunkWords (a segment of at least 8
// tokens may be split across windows, a shorter one moves whole to the next
// window). Start, end and padding tokens have weight 1. pad is EOS() for SD1
// and CLIP-L. "embedding:NAME" is text here; see WeightedChunksWith.
func (c *CLIP) WeightedChunks(text string, pad int) (ids [][]int, weights [][]float64) {
	ids, weights, _, _ = c.WeightedChunksWith(text, pad, nil)
	return ids, weights
}

// EmbeddingPrefix introduces a textual-inversion embedding in a prompt, as
// ComfyUI spells it: "a photo of embedding:my-style".
const EmbeddingPrefix = "embedding:"

// EmbeddingLookup returns how many vectors the textual-inversion embedding
// called name has, or an error when there is none.
type EmbeddingLookup func(name string) (vectors int, err error)

// WeightedChunksWith is WeightedChunks with textual-inversion embeddings, as
// ComfyUI's tokenizer finds them: each weighted segment is cut before every
// " embedding:" (or "\nembedding:"), the first word after the prefix names
// the embedding (with trailing commas dropped when the name as written has
// none), its vectors form one group with the segment's weight, and the rest
// of the piece is text. The ids of an embedding's vectors are placeholders,
// -1, -2, … in order of appearance across the prompt; names lists the
// embeddings in that order. A nil lookup leaves "embedding:" as text. tokens
// counts the prompt's tokens and vectors (no start, end or padding).
func (c *CLIP) WeightedChunksWith(text string, pad int, lookup EmbeddingLookup) (ids [][]int, weights [][]float64, names []string, err error) {
	var groups [][]int
	var groupWeights []float64
	next := -1
	add := func(g []int, w float64) {
		if len(g) > 0 {
			groups = append(groups, g)
			groupWeights = append(groupWeights, w)
		}
	}
	for _, seg := range ParseWeights(text) {
		for _, piece := range splitEmbeddings(seg.Text) {
			rest, ok := strings.CutPrefix(piece, EmbeddingPrefix)
			if !ok || lookup == nil {
				add(c.appendIDs(nil, piece), seg.Weight)
				continue
			}
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				add(c.appendIDs(nil, piece), seg.Weight)
				continue
			}
			name, leftover := fields[0], strings.Join(fields[1:], " ")
			n, lerr := lookup(name)
			if lerr != nil {
				if trimmed := strings.TrimRight(name, ","); trimmed != name && trimmed != "" {
					if n2, e2 := lookup(trimmed); e2 == nil {
						n, lerr = n2, nil
						leftover = name[len(trimmed):] + " " + leftover
						name = trimmed
					}
				}
			}
			if lerr != nil {
				return nil, nil, nil, lerr
			}
			g := make([]int, n)
			for i := range g {
				g[i] = next
				next--
			}
			names = append(names, name)
			add(g, seg.Weight)
			add(c.appendIDs(nil, leftover), seg.Weight)
		}
	}
	// Lay out each token's group number (0 for special tokens) the same way
	// as the ids, to find each position's weight.
	tagged := make([][]int, len(groups))
	for i, g := range groups {
		tagged[i] = make([]int, len(g))
		for j := range g {
			tagged[i][j] = i + 1 // group index + 1; 0 marks special tokens
		}
	}
	ids = c.ChunkWords(groups, ContextLength, pad)
	marks := batchGroups(tagged, ContextLength, 0, 0, 0)
	weights = make([][]float64, len(ids))
	for i := range ids {
		weights[i] = make([]float64, len(ids[i]))
		for j := range ids[i] {
			weights[i][j] = 1
			if m := marks[i][j]; m > 0 {
				weights[i][j] = groupWeights[m-1]
			}
		}
	}
	return ids, weights, names, nil
}

// splitEmbeddings cuts text before every " embedding:" and
// "\nembedding:", dropping the separating space or newline and empty
// pieces (ComfyUI's re.split(' embedding:|\nembedding:') with the prefix
// put back).
func splitEmbeddings(text string) []string {
	var out []string
	for {
		i := indexEmbedding(text)
		if i < 0 {
			break
		}
		if i > 0 {
			out = append(out, text[:i])
		}
		text = text[i+1:] // keep "embedding:…"
	}
	if text != "" {
		out = append(out, text)
	}
	return out
}

func indexEmbedding(text string) int {
	best := -1
	for _, sep := range []string{" " + EmbeddingPrefix, "\n" + EmbeddingPrefix} {
		if i := strings.Index(text, sep); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}
