package tokenizer

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseWeights(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []Segment
	}{
		{"a cat", []Segment{{"a cat", 1}}},
		{"a (red) cat", []Segment{{"a ", 1}, {"red", 1.1}, {" cat", 1}}},
		{"((red))", []Segment{{"red", 1.1 * 1.1}}},
		{"(red:1.5) cat", []Segment{{"red", 1.5}, {" cat", 1}}},
		{"((red:1.5))", []Segment{{"red", 1.5}}},                            // explicit weight replaces the enclosing 1.1
		{"(a (b) c:0.5)", []Segment{{"a ", 0.5}, {"b", 0.55}, {" c", 0.5}}}, // nested inside an explicit weight
		{`\(literal\) x`, []Segment{{"(literal) x", 1}}},
		{"(a:b)", []Segment{{"a:b", 1.1}}}, // not a number: the colon is text
		{"a (b", []Segment{{"a ", 1}, {"(b", 1}}},
		{"(x:inf)", []Segment{{"x:inf", 1.1}}}, // not a finite weight: text
		{"(x:1e39)", []Segment{{"x", 100}}},    // clamped
		{"(x:NaN)", []Segment{{"x:NaN", 1.1}}},
		{"", nil},
	} {
		t.Run(c.in, func(t *testing.T) {
			got := ParseWeights(c.in)
			if len(got) != len(c.want) {
				t.Fatalf("ParseWeights(%q) = %v, want %v", c.in, got, c.want)
			}
			for i := range got {
				if got[i].Text != c.want[i].Text || math.Abs(got[i].Weight-c.want[i].Weight) > 1e-12 {
					t.Errorf("segment %d = %+v, want %+v", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestWeightedChunks(t *testing.T) {
	c := mustCLIP(t)
	ids, w := c.WeightedChunks("a (red:1.5) cat", c.EOS())
	if len(ids) != 1 || len(w) != 1 {
		t.Fatalf("%d chunks", len(ids))
	}
	// a=320, red=736, cat=2368.
	if got := fmt.Sprint(ids[0][:5], w[0][:5]); got != fmt.Sprint([]int{49406, 320, 736, 2368, 49407}, []float64{1, 1, 1.5, 1, 1}) {
		t.Errorf("ids/weights = %s", got)
	}
	for _, x := range w[0][5:] {
		if x != 1 {
			t.Fatalf("padding weight %v", x)
		}
	}
	// A prompt without weights tokenizes as a whole: equal to Encode77.
	plain := "a photograph of an astronaut riding a horse"
	ids, _ = c.WeightedChunks(plain, c.EOS())
	if fmt.Sprint(ids[0]) != fmt.Sprint(c.Encode77(plain)) {
		t.Errorf("plain prompt: %v", ids[0][:12])
	}
}

// Deep nesting is bounded: a hostile prompt parses in linear-ish time and
// the weight stays finite.
func TestParseWeightsDeepNesting(t *testing.T) {
	p := strings.Repeat("(", 100000) + "x" + strings.Repeat(")", 100000)
	start := time.Now()
	segs := ParseWeights(p)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("parsing took %v", d)
	}
	for _, s := range segs {
		if math.IsInf(s.Weight, 0) || math.IsNaN(s.Weight) || s.Weight > maxWeight {
			t.Fatalf("weight %v", s.Weight)
		}
	}
}
