package tokenizer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// charsmap is a SentencePiece "precompiled charsmap": the normalization
// rules of a SentencePiece model (for T5, NFKC plus SentencePiece's NMT
// rules) compiled into a darts-clone double-array trie over UTF-8 byte
// strings, whose values are offsets into a blob of NUL-terminated
// replacement strings. The serialised form is a little-endian uint32 trie
// size in bytes, the trie's 32-bit units, then the strings.
type charsmap struct {
	units []uint32
	norm  []byte
}

// parseCharsmap decodes a serialised precompiled charsmap.
func parseCharsmap(blob []byte) (*charsmap, error) {
	if len(blob) < 4 {
		return nil, errors.New("precompiled charsmap: shorter than its 4-byte header")
	}
	size := binary.LittleEndian.Uint32(blob)
	if size%4 != 0 || uint64(size) > uint64(len(blob)-4) || size == 0 {
		return nil, fmt.Errorf("precompiled charsmap: trie of %d bytes in a blob of %d", size, len(blob))
	}
	units := make([]uint32, size/4)
	for i := range units {
		units[i] = binary.LittleEndian.Uint32(blob[4+4*i:])
	}
	return &charsmap{units: units, norm: blob[4+size:]}, nil
}

// Double-array unit fields (darts-clone's DoubleArrayUnit).
func unitHasLeaf(u uint32) bool  { return (u>>8)&1 == 1 }
func unitValue(u uint32) uint32  { return u & (1<<31 - 1) }
func unitLabel(u uint32) uint32  { return u & (1<<31 | 0xff) }
func unitOffset(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }

// firstMatch returns the replacement of the shortest key of the trie that
// is a prefix of s, as Hugging Face tokenizers' Precompiled normalizer
// (spm_precompiled) takes it: the first value of a common-prefix search,
// whatever part of s the key covers. A NUL byte ends the search.
func (c *charsmap) firstMatch(s string) (string, bool) {
	n := uint32(len(c.units))
	pos := unitOffset(c.units[0])
	for i := 0; i < len(s); i++ {
		b := uint32(s[i])
		if b == 0 {
			break
		}
		pos ^= b
		if pos >= n {
			return "", false
		}
		u := c.units[pos]
		if unitLabel(u) != b {
			return "", false
		}
		pos ^= unitOffset(u)
		if pos >= n {
			return "", false
		}
		if unitHasLeaf(u) {
			v := int(unitValue(c.units[pos]))
			if v >= len(c.norm) {
				return "", false
			}
			end := v
			for end < len(c.norm) && c.norm[end] != 0 {
				end++
			}
			return string(c.norm[v:end]), true
		}
	}
	return "", false
}

// normalize applies the charsmap as tokenizers' Precompiled normalizer
// does: text is cut into extended grapheme clusters; a cluster shorter than
// 6 bytes that starts with a key is replaced whole by that key's
// replacement; otherwise each character is replaced by its own mapping or
// kept. (SentencePiece itself takes the longest match instead; T5's
// tokenizer.json users, transformers and diffusers, get tokenizers'.)
func (c *charsmap) normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for len(s) > 0 {
		n := graphemeLen(s)
		g := s[:n]
		s = s[n:]
		if len(g) < 6 {
			if r, ok := c.firstMatch(g); ok {
				b.WriteString(r)
				continue
			}
		}
		for len(g) > 0 {
			_, m := utf8.DecodeRuneInString(g)
			if r, ok := c.firstMatch(g[:m]); ok {
				b.WriteString(r)
			} else {
				b.WriteString(g[:m])
			}
			g = g[m:]
		}
	}
	return b.String()
}

// Grapheme cluster break classes that matter to normalize: only clusters
// of several characters in fewer than 6 bytes change its result, and those
// form by the rules for CR LF, controls, extenders, spacing marks and
// prepended characters (UAX #29 GB3–GB5, GB9, GB9a, GB9b). Hangul syllable
// sequences, regional-indicator pairs and emoji ZWJ sequences always span 6
// bytes or more, where clusters and single characters are treated alike.
type gcb uint8

const (
	gcbOther gcb = iota
	gcbCR
	gcbLF
	gcbControl
	gcbExtend
	gcbSpacingMark
	gcbPrepend
)

// prepend lists the Grapheme_Cluster_Break=Prepend characters (Unicode 15).
var prepend = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x0600, Hi: 0x0605, Stride: 1}, {Lo: 0x06dd, Hi: 0x06dd, Stride: 1},
		{Lo: 0x070f, Hi: 0x070f, Stride: 1}, {Lo: 0x0890, Hi: 0x0891, Stride: 1},
		{Lo: 0x08e2, Hi: 0x08e2, Stride: 1}, {Lo: 0x0d4e, Hi: 0x0d4e, Stride: 1},
	},
	R32: []unicode.Range32{
		{Lo: 0x110bd, Hi: 0x110bd, Stride: 1}, {Lo: 0x110cd, Hi: 0x110cd, Stride: 1},
		{Lo: 0x111c2, Hi: 0x111c3, Stride: 1}, {Lo: 0x1193f, Hi: 0x1193f, Stride: 1},
		{Lo: 0x11941, Hi: 0x11941, Stride: 1}, {Lo: 0x11a3a, Hi: 0x11a3a, Stride: 1},
		{Lo: 0x11a84, Hi: 0x11a89, Stride: 1}, {Lo: 0x11d46, Hi: 0x11d46, Stride: 1},
		{Lo: 0x11f02, Hi: 0x11f02, Stride: 1},
	},
}

func graphemeClass(r rune) gcb {
	switch {
	case r == '\r':
		return gcbCR
	case r == '\n':
		return gcbLF
	case r == 0x200c || r == 0x200d: // ZWNJ is Extend; ZWJ joins like it here
		return gcbExtend
	case unicode.Is(prepend, r):
		return gcbPrepend
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Other_Grapheme_Extend) || r >= 0x1f3fb && r <= 0x1f3ff:
		return gcbExtend
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
		return gcbControl
	case r == 0x0e33 || r == 0x0eb3 || unicode.Is(unicode.Mc, r):
		return gcbSpacingMark
	}
	return gcbOther
}

// graphemeLen returns the byte length of the grapheme cluster s starts
// with (s non-empty).
func graphemeLen(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	prev := graphemeClass(r)
	for n < len(s) {
		r, m := utf8.DecodeRuneInString(s[n:])
		next := graphemeClass(r)
		if !joins(prev, next) {
			break
		}
		n += m
		prev = next
	}
	return n
}

// joins reports whether no cluster boundary falls between characters of
// classes a and b.
func joins(a, b gcb) bool {
	switch {
	case a == gcbCR && b == gcbLF: // GB3
		return true
	case a == gcbCR || a == gcbLF || a == gcbControl: // GB4
		return false
	case b == gcbCR || b == gcbLF || b == gcbControl: // GB5
		return false
	case b == gcbExtend || b == gcbSpacingMark: // GB9, GB9a
		return true
	case a == gcbPrepend: // GB9b
		return true
	}
	return false
}
