package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// qwenSplit splits normalized text into the pieces that BPE encodes
// separately, emitting every piece in order (together they are the whole
// text). It is a hand-written matcher for the Qwen2 pattern (qwenPattern)
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
//	 ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// scanned leftmost-first as the tokenizers library's Split (Isolated) does
// with Oniguruma. Go's regexp has no lookahead; a direct scan is also
// faster. At each position the first alternative that matches wins:
//
//  1. an apostrophe and a contraction, case-insensitive (Unicode case
//     folding, so U+017F long s counts as s);
//  2. a run of letters, with at most one leading character that is not a
//     letter, digit, CR or LF (a space, a symbol, an emoji);
//  3. one digit (so numbers are split digit by digit);
//  4. an optional space, a run of characters that are not whitespace,
//     letters or digits, then any CRs and LFs;
//  5. whitespace up to and including the last CR or LF of its run;
//  6. a run of whitespace at the end of the text, or a run without its last
//     character (which then starts the next piece, as in " word");
//  7. a single whitespace character before a non-space.
//
// \s is Unicode White_Space (unicode.IsSpace), \p{L} and \p{N} are the
// general categories L and N (unicode.IsLetter, unicode.IsNumber).
func qwenSplit(s string, emit func(piece string)) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		// 1. contractions.
		if r == '\'' {
			if m := qwenContraction(s[i+1:]); m > 0 {
				emit(s[i : i+1+m])
				i += 1 + m
				continue
			}
		}
		// 2. letters, optionally after one non-letter.
		if isLetter(r) {
			j := letterRun(s, i+n)
			emit(s[i:j])
			i = j
			continue
		}
		if r != '\r' && r != '\n' && !isNumber(r) && i+n < len(s) {
			if r2, n2 := utf8.DecodeRuneInString(s[i+n:]); isLetter(r2) {
				j := letterRun(s, i+n+n2)
				emit(s[i:j])
				i = j
				continue
			}
		}
		// 3. one digit.
		if isNumber(r) {
			emit(s[i : i+n])
			i += n
			continue
		}
		// 4. punctuation run, optionally after one space, then newlines.
		p := -1
		if r == ' ' {
			if i+1 < len(s) {
				if r2, _ := utf8.DecodeRuneInString(s[i+1:]); isOther(r2) {
					p = i + 1
				}
			}
		} else if !isSpace(r) {
			p = i // not a letter, digit or space
		}
		if p >= 0 {
			j := p
			for j < len(s) {
				r2, n2 := utf8.DecodeRuneInString(s[j:])
				if !isOther(r2) {
					break
				}
				j += n2
			}
			for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
				j++
			}
			emit(s[i:j])
			i = j
			continue
		}
		// r is whitespace: find its run [i, j), its last CR/LF and the
		// start of its last character.
		j, lastNL, lastStart := i, -1, i
		for j < len(s) {
			r2, n2 := utf8.DecodeRuneInString(s[j:])
			if !isSpace(r2) {
				break
			}
			if r2 == '\r' || r2 == '\n' {
				lastNL = j
			}
			lastStart = j
			j += n2
		}
		switch {
		case lastNL >= 0: // 5.
			j = lastNL + 1
		case j == len(s): // 6, at the end of the text.
		case lastStart > i: // 6, leaving the last space to the next piece.
			j = lastStart
		} // else 7: the single whitespace character.
		emit(s[i:j])
		i = j
	}
}

// qwenContraction returns the length of the contraction (after the
// apostrophe) that s starts with: s, t, re, ve, m, ll or d in any case, or 0.
func qwenContraction(s string) int {
	if s == "" {
		return 0
	}
	lower := func(i int) byte {
		if i < len(s) && 'A' <= s[i] && s[i] <= 'Z' {
			return s[i] + 'a' - 'A'
		}
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	switch lower(0) {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if lower(1) == 'e' {
			return 2
		}
	case 'l':
		if lower(1) == 'l' {
			return 2
		}
	}
	// U+017F LATIN SMALL LETTER LONG S case-folds to s.
	if len(s) >= 2 && s[0] == 0xC5 && s[1] == 0xBF {
		return 2
	}
	return 0
}

// letterRun returns the end of the run of letters starting at i.
func letterRun(s string, i int) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !isLetter(r) {
			break
		}
		i += n
	}
	return i
}

// isLetter is \p{L}, with an ASCII fast path.
func isLetter(r rune) bool {
	if r < utf8.RuneSelf {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	return unicode.IsLetter(r)
}

// isNumber is \p{N}, with an ASCII fast path.
func isNumber(r rune) bool {
	if r < utf8.RuneSelf {
		return '0' <= r && r <= '9'
	}
	return unicode.IsNumber(r)
}

// isSpace is \s: Unicode White_Space.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || '\t' <= r && r <= '\r'
	}
	return unicode.IsSpace(r)
}

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isSpace(r) && !isLetter(r) && !isNumber(r) }
