package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// normalize applies the normalizer of HF's CLIPTokenizer (the tokenizers
// backend that transformers 5 uses; no ftfy): Unicode NFC, every maximal run
// of whitespace replaced by one space, then per-character lowercasing.
func normalize(s string) string {
	s = nfc(s)
	var b strings.Builder
	b.Grow(len(s))
	inSpace := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		writeLower(&b, r)
	}
	return b.String()
}

// writeLower writes the full lowercase mapping of r. It equals Go's simple
// mapping except for U+0130 (capital I with dot above), whose
// unconditional full mapping is "i" followed by U+0307 combining dot above;
// the tokenizers library lowercases with Rust's char::to_lowercase, which
// uses the full mapping. Context-dependent rules (final sigma) do not apply
// to a per-character mapping.
func writeLower(b *strings.Builder, r rune) {
	if r == 'İ' {
		b.WriteString("i\u0307")
		return
	}
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		b.WriteByte(byte(r))
		return
	}
	b.WriteRune(unicode.ToLower(r))
}

// pretokenize splits normalized text into the pieces that BPE encodes
// separately. It is a hand-written matcher for CLIP's pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// scanned leftmost-first and keeping only the matches (whitespace between
// them is dropped). Go's regexp could express the pattern, but a direct
// scan is several times faster and makes the alternation order explicit.
// The byte-level step that follows in the tokenizers pipeline splits each
// match again with GPT-2's pattern ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|
// ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+); that changes nothing except a
// special-token match, which it cuts in three (handled below).
func pretokenize(s string, emit func(piece string)) {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case unicode.IsSpace(r):
			i += size
		case r == '<' && (strings.HasPrefix(s[i:], StartOfText) || strings.HasPrefix(s[i:], EndOfText)):
			// A special token's text that survived to this point (it was
			// not in the raw text, e.g. "<|ENDOFTEXT|>" lowercased) is one
			// match of the pattern, which the byte-level step then splits
			// into "<|", the name and "|>".
			n := len(StartOfText)
			if s[i+2] == 'e' {
				n = len(EndOfText)
			}
			emit(s[i : i+2])
			emit(s[i+2 : i+n-2])
			emit(s[i+n-2 : i+n])
			i += n
		case r == '\'' && contraction(s[i+1:]) > 0:
			n := 1 + contraction(s[i+1:])
			emit(s[i : i+n])
			i += n
		case unicode.IsLetter(r):
			j := i + size
			for j < len(s) {
				r2, n := utf8.DecodeRuneInString(s[j:])
				if !unicode.IsLetter(r2) {
					break
				}
				j += n
			}
			emit(s[i:j])
			i = j
		case unicode.IsNumber(r):
			emit(s[i : i+size])
			i += size
		default:
			j := i + size
			for j < len(s) {
				r2, n := utf8.DecodeRuneInString(s[j:])
				if unicode.IsSpace(r2) || unicode.IsLetter(r2) || unicode.IsNumber(r2) {
					break
				}
				j += n
			}
			emit(s[i:j])
			i = j
		}
	}
}

// contraction returns the length of the contraction suffix (after the
// apostrophe) that s starts with, in the pattern's order, or 0.
func contraction(s string) int {
	for _, c := range [...]string{"s", "t", "re", "ve", "m", "ll", "d"} {
		if strings.HasPrefix(s, c) {
			return len(c)
		}
	}
	return 0
}
