package tokenizer

import (
	"encoding/json"
	"os"
	"testing"
)

// TestNFC compares nfc with Python's unicodedata.normalize("NFC") on the
// generated cases (random mixes of letters, combining marks, composites,
// composition exclusions, singletons and Hangul, some given decomposed).
func TestNFC(t *testing.T) {
	b, err := os.ReadFile("testdata/nfc_cases.json")
	if err != nil {
		t.Fatalf("read cases: %v", err)
	}
	var f struct {
		Unicode string `json:"unicode"`
		Cases   []struct {
			In  string `json:"in"`
			NFC string `json:"nfc"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse cases: %v", err)
	}
	if f.Unicode != nfcUnicodeVersion {
		t.Fatalf("cases are for Unicode %s, tables for %s", f.Unicode, nfcUnicodeVersion)
	}
	if len(f.Cases) < 100 {
		t.Fatalf("only %d cases", len(f.Cases))
	}
	changed := 0
	for i, c := range f.Cases {
		if got := nfc(c.In); got != c.NFC {
			t.Errorf("case %d: nfc(%+q) = %+q, want %+q", i, c.In, got, c.NFC)
		}
		if c.In != c.NFC {
			changed++
		}
	}
	if changed < len(f.Cases)/4 {
		t.Errorf("only %d of %d cases change under NFC; the cases are too easy", changed, len(f.Cases))
	}
}

func TestNFCExamples(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ascii", "hello", "hello"},
		{"composed stays", "café", "café"},
		{"decomposed composes", "cafe\u0301", "café"},
		{"reorder marks", "e\u0302\u0323", "\u1ec7"}, // e + circumflex + dot below -> ệ
		{"singleton ohm", "\u2126", "\u03a9"},
		{"exclusion", "\u0958", "\u0915\u093c"},
		{"hangul lvt", "\u1100\u1161\u11a8", "\uac01"},
		{"lone mark", "\u0301a", "\u0301a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nfc(tc.in); got != tc.want {
				t.Errorf("nfc(%+q) = %+q, want %+q", tc.in, got, tc.want)
			}
		})
	}
}
