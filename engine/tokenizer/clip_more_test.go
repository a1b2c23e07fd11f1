package tokenizer

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBundledEqualsFolder checks that the vocabulary built from OpenAI's
// merge list equals the model folder's vocab.json and merges.txt entry for
// entry, so both sources give identical ids for every input.
func TestBundledEqualsFolder(t *testing.T) {
	a, b := mustCLIP(t).t, mustLoadTiny(t).t
	if len(a.encoder) != 49408 {
		t.Errorf("bundled vocabulary has %d tokens, want 49408", len(a.encoder))
	}
	if !maps.Equal(a.encoder, b.encoder) {
		n := 0
		for tok, id := range a.encoder {
			if id2, ok := b.encoder[tok]; !ok || id2 != id {
				if n < 5 {
					t.Errorf("token %q: bundled id %d, folder id %d (present %v)", tok, id, id2, ok)
				}
				n++
			}
		}
		t.Fatalf("vocabularies differ (%d tokens; sizes %d and %d)", n, len(a.encoder), len(b.encoder))
	}
	if !maps.Equal(a.merges, b.merges) {
		t.Fatalf("merge tables differ: %d and %d merges", len(a.merges), len(b.merges))
	}
	if len(a.merges) != clipMerges {
		t.Errorf("bundled merges = %d, want %d", len(a.merges), clipMerges)
	}
	if a.bos != 49406 || a.eos != 49407 || b.bos != 49406 || b.eos != 49407 {
		t.Errorf("special ids: bundled %d/%d, folder %d/%d, want 49406/49407", a.bos, a.eos, b.bos, b.eos)
	}
}

func TestEncodeCases(t *testing.T) {
	c := mustCLIP(t)
	tests := []struct {
		name string
		text string
		want []int
	}{
		// Special tokens in the raw text map to their ids, case-sensitively.
		{"special tokens", "a<|endoftext|>b<|startoftext|>", []int{49406, 320, 49407, 321, 49406, 49407}},
		// Unicode whitespace (no-break space, ideographic space) separates.
		{"unicode spaces", "a\u00a0a\u3000a", []int{49406, 320, 320, 320, 49407}},
		// Decomposed input is composed first (NFC): same ids as "café".
		{"nfd", "cafe\u0301", c.Encode("café")},
		{"upper equals lower", "ASTRONAUT", c.Encode("astronaut")},
		// Not a special token (case differs), so it is normalized and
		// matched by the pattern's special alternative, which the byte-level
		// step cuts in three. Derived from the tokenizers pipeline; no HF
		// fixture covers it.
		{"special text after lowercasing", "<|ENDOFTEXT|>!", c.Encode("<| endoftext |> !")},
		{"invalid utf-8 is U+FFFD", "a\xffb", c.Encode("a\ufffdb")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.Encode(tc.text); !slices.Equal(got, tc.want) {
				t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	c := mustCLIP(t)
	tests := []struct{ in, want string }{
		{"a photograph of an astronaut riding a horse", "a photograph of an astronaut riding a horse"},
		{"Hello, World!", "hello , world !"},
		{"naïve café", "naïve café"},
		{"emoji 🐱 test", "emoji 🐱 test"},
		{"", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := c.Decode(c.Encode77(tc.in)); got != tc.want {
				t.Errorf("Decode(Encode77(%q)) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := c.Decode([]int{-1, 320, 1 << 30, 49408, 320}); got != "a a" {
		t.Errorf("Decode with invalid ids = %q, want %q", got, "a a")
	}
}

func TestPad(t *testing.T) {
	c := mustCLIP(t)
	got := c.Pad([]int{1, 2, 3, 4, 5}, 5, 0)
	if want := []int{49406, 1, 2, 3, 49407}; !slices.Equal(got, want) {
		t.Errorf("Pad truncating = %v, want %v", got, want)
	}
	got = c.Pad([]int{7}, 6, 0)
	if want := []int{49406, 7, 49407, 0, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("Pad padding = %v, want %v", got, want)
	}
}

func TestChunks77(t *testing.T) {
	c := mustCLIP(t)
	bos, eos := c.BOS(), c.EOS()

	t.Run("short prompt equals Encode77", func(t *testing.T) {
		for _, p := range []string{"", "a photograph of an astronaut riding a horse", "Hello, World!"} {
			ch := c.Chunks77(p)
			if len(ch) != 1 || !slices.Equal(ch[0], c.Encode77(p)) {
				t.Errorf("Chunks77(%q) = %v, want [%v]", p, ch, c.Encode77(p))
			}
		}
	})

	t.Run("long prompt", func(t *testing.T) {
		// 100 one-token words: 75 in the first window, 25 in the second.
		p := strings.Repeat("a ", 100)
		ch := c.Chunks77(p)
		if len(ch) != 2 {
			t.Fatalf("got %d chunks, want 2", len(ch))
		}
		for i, w := range ch {
			if len(w) != 77 || w[0] != bos {
				t.Fatalf("chunk %d: len %d first %d", i, len(w), w[0])
			}
		}
		if !slices.Equal(ch[0], c.Encode77(p)) {
			t.Errorf("first chunk differs from Encode77")
		}
		want := append([]int{bos}, slices.Repeat([]int{320}, 25)...)
		want = append(want, slices.Repeat([]int{eos}, 77-len(want))...)
		if !slices.Equal(ch[1], want) {
			t.Errorf("second chunk = %v, want %v", ch[1], want)
		}
	})

	t.Run("short groups move whole", func(t *testing.T) {
		// 74 one-token words, then a parenthesised 2-token group ("it's"
		// is it + 's) that does not fit in the last free slot: it moves
		// whole to the second window, as in ComfyUI.
		p := strings.Repeat("a ", 74) + "(it's:1.0)"
		ch := c.Chunks77(p)
		if len(ch) != 2 {
			t.Fatalf("got %d chunks, want 2", len(ch))
		}
		if ch[0][75] != eos || ch[0][76] != eos || ch[0][74] != 320 {
			t.Errorf("first chunk tail = %v, want ... 320 eos eos", ch[0][72:])
		}
		if got, want := ch[1][:4], []int{bos, 585, 568, eos}; !slices.Equal(got, want) {
			t.Errorf("second chunk starts %v, want %v", got, want)
		}
	})

	t.Run("long segments split", func(t *testing.T) {
		// Without parentheses the prompt is one segment of 76 tokens
		// (>= 8), split at the window boundary.
		p := strings.Repeat("a ", 74) + "it's"
		ch := c.Chunks77(p)
		if len(ch) != 2 {
			t.Fatalf("got %d chunks, want 2", len(ch))
		}
		if ch[0][75] != 585 || ch[0][76] != eos {
			t.Errorf("first chunk tail = %v, want ... 585 eos", ch[0][72:])
		}
		if got, want := ch[1][:3], []int{bos, 568, eos}; !slices.Equal(got, want) {
			t.Errorf("second chunk starts %v, want %v", got, want)
		}
	})

	t.Run("pad token", func(t *testing.T) {
		ch := c.ChunkWords(c.Words("a cat"), 77, 0)
		if len(ch) != 1 || ch[0][3] != eos || ch[0][4] != 0 || ch[0][76] != 0 {
			t.Errorf("ChunkWords pad 0 = %v", ch)
		}
	})

	t.Run("tiny windows terminate", func(t *testing.T) {
		ch := c.ChunkWords([][]int{{1, 2, 3}, {4}}, 3, 0)
		want := [][]int{{bos, 1, eos}, {bos, 2, eos}, {bos, 3, eos}, {bos, 4, eos}}
		if fmt.Sprint(ch) != fmt.Sprint(want) {
			t.Errorf("got %v, want %v", ch, want)
		}
	})
}

func TestNewCLIPIsCheap(t *testing.T) {
	mustCLIP(t) // parse once
	start := time.Now()
	for range 100 {
		mustCLIP(t)
	}
	if d := time.Since(start) / 100; d > time.Millisecond {
		t.Errorf("NewCLIP after the first call takes %v, want < 1ms", d)
	}
}

func TestConcurrentEncode(t *testing.T) {
	c := mustCLIP(t)
	want := c.Encode("a photograph of an astronaut riding a horse")
	done := make(chan []int)
	for range 8 {
		go func() { done <- c.Encode("a photograph of an astronaut riding a horse") }()
	}
	for range 8 {
		if got := <-done; !slices.Equal(got, want) {
			t.Fatalf("concurrent Encode = %v, want %v", got, want)
		}
	}
}

func BenchmarkNewCLIP(b *testing.B) {
	mustCLIP(b)
	for b.Loop() {
		mustCLIP(b)
	}
}

func BenchmarkEncode(b *testing.B) {
	c := mustCLIP(b)
	p := "a highly detailed photograph of an astronaut riding a horse on the moon, 8k, trending on artstation, by greg rutkowski"
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			c.Encode(p)
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			c2, _ := NewCLIP()
			c2.Encode(p)
		}
	})
}

// Regression: a word must be normalised (lowercased) before lookup, so
// "A" is "a</w>" (320), not the raw byte token "A</w>".
func TestWordsNormalises(t *testing.T) {
	c, err := NewCLIP()
	if err != nil {
		t.Fatal(err)
	}
	got := c.Chunks77("A watercolor painting of a lighthouse at dusk")[0]
	want := c.Encode77("A watercolor painting of a lighthouse at dusk")
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Chunks77 %v\nEncode77 %v", got[:12], want[:12])
		}
	}
}
