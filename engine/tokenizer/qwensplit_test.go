package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dlclark/regexp2/v2"
)

// regexpSplit splits s with the Qwen2 pattern itself, run by regexp2 (a
// backtracking engine with lookahead, .NET syntax), keeping every match as
// the tokenizers library's Split (Isolated) does; it also reports text
// between matches, which the pattern never leaves.
func regexpSplit(t testing.TB, re *regexp2.Regexp, s string) []string {
	t.Helper()
	var out []string
	m, err := re.FindStringMatch(s)
	covered := 0
	for ; m != nil && err == nil; m, err = re.FindNextMatch(m) {
		piece := m.String()
		start, _ := m.ByteRange()
		if start != covered {
			out = append(out, "GAP:"+s[covered:start])
		}
		out = append(out, piece)
		covered = start + len(piece)
	}
	if err != nil {
		t.Fatal(err)
	}
	if covered != len(s) {
		out = append(out, "GAP:"+s[covered:])
	}
	return out
}

func handSplit(s string) []string {
	var out []string
	qwenSplit(s, func(p string) { out = append(out, p) })
	return out
}

// qwenAlphabet draws the characters of random test strings from every
// class the pattern distinguishes: ASCII and non-ASCII letters, letters
// that are contraction letters in either case, digits and other numbers,
// CR, LF, ASCII and Unicode spaces, the apostrophe, punctuation, symbols,
// combining marks (not letters), emoji and joiners.
var qwenAlphabet = []rune("aAsStTrReEvVmMlLdDxZé中ひ한ЖΣ0912٣½Ⅷ\r\n\n  \t\v\f\u00a0\u0085\u1680\u2003\u2028\u3000''',.!?-_$€+<>|\u0301\u0300\u093f🐱👍\u200d\u200b\ufe0f\u001f\x00")

func randomQwenText(rng *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteRune(qwenAlphabet[rng.IntN(len(qwenAlphabet))])
	}
	return b.String()
}

// TestQwenSplitMatchesRegexp proves the hand-written splitter equal to the
// pattern as a regex engine with lookahead runs it, on hand-picked and
// random text. regexp2 uses Go's Unicode tables for \p{L}, \p{N} and \s, as
// qwenSplit does, so this checks the matching logic (alternation order,
// backtracking, the (?!\S) lookahead); the Unicode classes themselves are
// checked against the tokenizers library (Oniguruma) by the fixtures. One
// known difference is left out: regexp2's (?i) does not fold U+017F long s
// to s, which Unicode case folding (and so qwenSplit) does.
func TestQwenSplitMatchesRegexp(t *testing.T) {
	re := regexp2.MustCompile(qwenPattern, regexp2.None)
	cases := []string{
		"", " ", "  ", "a", "Hello  world\n\n  it's 2024!!!", "I'M YOU'RE we'Ll 'd 'x",
		"  word", "\tword", "a \n b", "x\r\n\r\n  y", "end   ", "!!!\n\nabc", " 1 22",
		"$hello 3abc", "हिन्दी", "a\u3000\u3000b", "\u2028word", " ?!\n", "''s", "\n \n \n",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		cases = append(cases, randomQwenText(rng, 1+rng.IntN(24)))
	}
	for _, s := range cases {
		want := regexpSplit(t, re, s)
		if got := handSplit(s); !slices.Equal(got, want) {
			t.Fatalf("split %q:\n got %q\nwant %q", s, got, want)
		}
	}
}

// TestQwenContractionLongS: U+017F after an apostrophe is the contraction
// 's under Unicode case folding, so it is split off a following letter.
func TestQwenContractionLongS(t *testing.T) {
	if got, want := handSplit("it'ſx"), []string{"it", "'ſ", "x"}; !slices.Equal(got, want) {
		t.Errorf("split %q, want %q", got, want)
	}
}
