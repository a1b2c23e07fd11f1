package tokenizer

import (
	"slices"
	"sort"
	"strings"
)

// This file implements Unicode Normalization Form C (UAX #15): canonical
// decomposition, canonical reordering of combining marks, then canonical
// composition. The data tables are generated (nfc_tables.go); the standard
// library has none and golang.org/x/text is not a dependency of this module.

type cccRange struct {
	lo, hi rune
	class  uint8
}

type decomposition struct {
	r rune
	d string
}

type composition struct {
	a, b, c rune
}

// Hangul syllable arithmetic (Unicode chapter 3.12).
const (
	hangulS = 0xAC00
	hangulL = 0x1100
	hangulV = 0x1161
	hangulT = 0x11A7
	countL  = 19
	countV  = 21
	countT  = 28
	countN  = countV * countT
	countS  = countL * countN
)

// combiningClass returns the canonical combining class of r.
func combiningClass(r rune) uint8 {
	if r < 0x300 {
		return 0
	}
	i := sort.Search(len(cccRanges), func(i int) bool { return cccRanges[i].hi >= r })
	if i < len(cccRanges) && cccRanges[i].lo <= r {
		return cccRanges[i].class
	}
	return 0
}

// appendDecomposed appends the full canonical decomposition of r.
func appendDecomposed(dst []rune, r rune) []rune {
	if r < 0xC0 {
		return append(dst, r)
	}
	if s := r - hangulS; s >= 0 && s < countS {
		dst = append(dst, hangulL+s/countN, hangulV+(s%countN)/countT)
		if t := s % countT; t != 0 {
			dst = append(dst, hangulT+t)
		}
		return dst
	}
	i := sort.Search(len(decompositions), func(i int) bool { return decompositions[i].r >= r })
	if i < len(decompositions) && decompositions[i].r == r {
		for _, d := range decompositions[i].d {
			dst = append(dst, d)
		}
		return dst
	}
	return append(dst, r)
}

// compose returns the primary composite of the pair a, b, if any.
func compose(a, b rune) (rune, bool) {
	if l := a - hangulL; l >= 0 && l < countL {
		if v := b - hangulV; v >= 0 && v < countV {
			return hangulS + (l*countV+v)*countT, true
		}
		return 0, false
	}
	if s := a - hangulS; s >= 0 && s < countS && s%countT == 0 {
		if t := b - hangulT; t > 0 && t < countT {
			return a + t, true
		}
		return 0, false
	}
	i := sort.Search(len(compositions), func(i int) bool {
		c := compositions[i]
		return c.a > a || c.a == a && c.b >= b
	})
	if i < len(compositions) && compositions[i].a == a && compositions[i].b == b {
		return compositions[i].c, true
	}
	return 0, false
}

// nfc returns s in Normalization Form C. Text made only of code points below
// U+0300, which are all stable under NFC, is returned as is.
func nfc(s string) string {
	fast := true
	for i := 0; i < len(s); i++ {
		// U+0300 is the first code point whose UTF-8 lead byte is 0xCC.
		if s[i] >= 0xCC {
			fast = false
			break
		}
	}
	if fast {
		return s
	}

	// Decompose.
	type char struct {
		r     rune
		class uint8
	}
	var tmp []rune
	cs := make([]char, 0, len(s))
	for _, r := range s {
		tmp = appendDecomposed(tmp[:0], r)
		for _, d := range tmp {
			cs = append(cs, char{d, combiningClass(d)})
		}
	}
	// Reorder: stable sort of each run of non-starters by class.
	for i := 0; i < len(cs); {
		if cs[i].class == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(cs) && cs[j].class != 0 {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(cs[i:j], func(a, b char) int { return int(a.class) - int(b.class) })
		}
		i = j
	}
	// Compose: each character combines with the last starter unless a
	// character of the same or higher class (or a starter) lies between.
	out := cs[:0]
	starter := -1 // index in out of the last starter
	for _, ch := range cs {
		if starter >= 0 {
			last := out[len(out)-1].class
			blocked := len(out)-1 != starter && (last == 0 || last >= ch.class)
			if !blocked {
				if comp, ok := compose(out[starter].r, ch.r); ok {
					out[starter].r = comp
					continue
				}
			}
		}
		if ch.class == 0 {
			starter = len(out)
		}
		out = append(out, ch)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, ch := range out {
		b.WriteRune(ch.r)
	}
	return b.String()
}
