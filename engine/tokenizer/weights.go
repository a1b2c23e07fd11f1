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
	text = strings.ReplaceAll(text, `\)`, escClose)
	text = strings.ReplaceAll(text, `\(`, escOpen)
	segs := tokenWeights(text, 1, 0)
	for i := range segs {
		segs[i].Text = strings.ReplaceAll(strings.ReplaceAll(segs[i].Text, escClose, ")"), escOpen, "(")
	}
	return segs
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
// and CLIP-L.
func (c *CLIP) WeightedChunks(text string, pad int) (ids [][]int, weights [][]float64) {
	var groups [][]int
	var groupWeights []float64
	for _, seg := range ParseWeights(text) {
		g := c.appendIDs(nil, seg.Text)
		if len(g) == 0 {
			continue
		}
		groups = append(groups, g)
		groupWeights = append(groupWeights, seg.Weight)
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
	return ids, weights
}
