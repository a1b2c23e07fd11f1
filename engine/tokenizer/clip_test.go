package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
)

const (
	refDir       = "../../testdata/reference/"
	tinyTokenDir = refDir + "sd1-tiny-a/diffusers/tokenizer/"
)

type tokenCase struct {
	Prompt         string `json:"prompt"`
	IDs77          []int  `json:"ids_77"`
	IDsUntruncated []int  `json:"ids_untruncated"`
}

func readTokenCases(t *testing.T) []tokenCase {
	t.Helper()
	b, err := os.ReadFile(refDir + "tokens.json")
	if err != nil {
		t.Fatalf("read tokens.json: %v", err)
	}
	var f struct {
		Tokenizer string      `json:"tokenizer"`
		Cases     []tokenCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse tokens.json: %v", err)
	}
	if len(f.Cases) == 0 {
		t.Fatal("tokens.json has no cases")
	}
	return f.Cases
}

func mustCLIP(t testing.TB) *CLIP {
	t.Helper()
	c, err := NewCLIP()
	if err != nil {
		t.Fatalf("NewCLIP: %v", err)
	}
	return c
}

func mustLoadTiny(t testing.TB) *CLIP {
	t.Helper()
	c, err := LoadCLIP(tinyTokenDir+"vocab.json", tinyTokenDir+"merges.txt")
	if err != nil {
		t.Fatalf("LoadCLIP: %v", err)
	}
	return c
}

// TestEncodeMatchesHF checks every prompt of the HF CLIPTokenizer fixture,
// with both the bundled vocabulary and the model folder's files.
func TestEncodeMatchesHF(t *testing.T) {
	cases := readTokenCases(t)
	for _, src := range []struct {
		name string
		tok  *CLIP
	}{{"bundled", mustCLIP(t)}, {"folder", mustLoadTiny(t)}} {
		for i, tc := range cases {
			t.Run(fmt.Sprintf("%s/%d", src.name, i), func(t *testing.T) {
				if got := src.tok.Encode(tc.Prompt); !slices.Equal(got, tc.IDsUntruncated) {
					t.Errorf("Encode(%q)\n got %v\nwant %v", tc.Prompt, got, tc.IDsUntruncated)
				}
				if got := src.tok.Encode77(tc.Prompt); !slices.Equal(got, tc.IDs77) {
					t.Errorf("Encode77(%q)\n got %v\nwant %v", tc.Prompt, got, tc.IDs77)
				}
			})
		}
	}
}
