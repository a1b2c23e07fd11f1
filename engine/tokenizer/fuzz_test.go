package tokenizer

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// tinyVocab returns a small valid vocab.json and merges.txt: the byte
// characters, "ab</w>" from two merges, and the special tokens.
func tinyVocab(t testing.TB) (vocab, merges []byte) {
	t.Helper()
	enc := map[string]int{}
	for _, r := range byteToRune {
		enc[string(r)] = len(enc)
	}
	for _, r := range byteToRune {
		enc[string(r)+wordEnd] = len(enc)
	}
	enc["ab</w>"] = len(enc)
	enc["ca"] = len(enc)
	enc[StartOfText] = len(enc)
	enc[EndOfText] = len(enc)
	v, err := json.Marshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	return v, []byte("#version: 0.2\na b</w>\nc a\n")
}

func TestParseCLIPErrors(t *testing.T) {
	v, m := tinyVocab(t)
	tests := []struct {
		name          string
		vocab, merges string
		wantErr       string
	}{
		{"bad json", "{", string(m), "parse vocab.json"},
		{"empty vocab", "{}", string(m), "empty vocabulary"},
		{"negative id", `{"a":-1}`, "", "out of range"},
		{"shared id", `{"a":0,"b":0}`, "", "share id"},
		{"no specials", `{"a":0}`, "", "has no <|startoftext|>"},
		{"merge out of vocabulary", string(v), "x y\n", "not in vocabulary"},
		{"malformed merge", string(v), "#version: 0.2\nabc\n", "malformed merge"},
		{"three parts", string(v), "a b c\n", "malformed merge"},
		{"invalid utf-8 merges", string(v), "a \xff\n", "not valid utf-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCLIP([]byte(tc.vocab), []byte(tc.merges))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	c, err := ParseCLIP(v, m)
	if err != nil {
		t.Fatalf("valid tiny vocabulary: %v", err)
	}
	// "cab" = c a b</w> -> "ca" then "ab</w>"? The merge ranks decide: a b</w>
	// (rank 0) before c a (rank 1), so c + ab</w>.
	got := c.Encode("cab")
	want := []int{c.BOS(), int(c.t.encoder["c"]), int(c.t.encoder["ab</w>"]), c.EOS()}
	if len(got) != len(want) || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("tiny Encode(cab) = %v, want %v", got, want)
	}
	if _, err := LoadCLIP("does/not/exist.json", "nope.txt"); err == nil {
		t.Fatal("LoadCLIP of missing files succeeded")
	}
}

// FuzzParseCLIP feeds arbitrary vocab.json and merges.txt contents to the
// loader: it must fail or succeed without panicking, and a tokenizer it
// accepts must encode with ids inside its vocabulary.
func FuzzParseCLIP(f *testing.F) {
	v, m := tinyVocab(f)
	f.Add(v, m)
	f.Add(v, []byte("a b</w>\r\n\r\nc a"))
	f.Add([]byte(`{"<|startoftext|>":0,"<|endoftext|>":1,"a":2,"b":3,"ab":4}`), []byte("a b\n"))
	f.Add([]byte(`{"<|startoftext|>":0,"<|endoftext|>":1000}`), []byte(""))
	f.Add([]byte(`[1,2]`), []byte("\xff"))
	f.Fuzz(func(t *testing.T, vocab, merges []byte) {
		c, err := ParseCLIP(vocab, merges)
		if err != nil {
			return
		}
		for _, s := range []string{"", "ab cab", "Hello, World! 123 🐱", "<|endoftext|>x"} {
			for _, id := range c.Encode(s) {
				if _, ok := c.Token(id); !ok {
					t.Fatalf("Encode(%q) gave id %d outside the vocabulary", s, id)
				}
			}
			_ = c.Decode(c.Encode77(s))
		}
	})
}

// FuzzEncode checks, for any text, that encoding never panics, that ids
// are tokens, that the shapes are right, and that the tokens spell the
// normalized text: the tokens' bytes, each with its "</w>" word end
// removed, concatenate to the normalized text without its spaces. For text
// of lowercase ASCII letters and spaces, Decode inverts Encode up to
// whitespace.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{
		"a photograph of an astronaut riding a horse", "", "Hello, World!",
		"it's a dog's life -- isn't it?", "naïve café résumé", "emoji 🐱 test",
		"cafe\u0301 \u0130stanbul", "a\x00b\xffc", "<|endoftext|>", "aaaaaaaaaaaaaaaaaaaa",
	} {
		f.Add(s)
	}
	// Seed with the HF fixture's prompts too.
	if b, err := os.ReadFile(refDir + "tokens.json"); err == nil {
		var fx struct {
			Cases []struct {
				Prompt string `json:"prompt"`
			} `json:"cases"`
		}
		if json.Unmarshal(b, &fx) == nil {
			for _, c := range fx.Cases {
				f.Add(c.Prompt)
			}
		}
	}
	c := mustCLIP(f)
	f.Fuzz(func(t *testing.T, text string) {
		ids := c.Encode(text)
		if len(ids) < 2 || ids[0] != c.BOS() || ids[len(ids)-1] != c.EOS() {
			t.Fatalf("Encode(%q) = %v: missing start or end token", text, ids)
		}
		for _, id := range ids {
			if id < 0 || id >= c.VocabSize() {
				t.Fatalf("Encode(%q): id %d out of range", text, id)
			}
		}
		if e := c.Encode77(text); len(e) != ContextLength || e[76] != c.EOS() {
			t.Fatalf("Encode77(%q) = %v", text, e)
		}
		for _, ch := range c.Chunks77(text) {
			if len(ch) != ContextLength || ch[0] != c.BOS() {
				t.Fatalf("Chunks77(%q) has chunk %v", text, ch)
			}
		}

		valid := strings.ToValidUTF8(text, "\uFFFD")
		if strings.Contains(valid, "<|") {
			return // special tokens are not spelled out
		}
		var spelled []byte
		for _, id := range ids[1 : len(ids)-1] {
			tok, _ := c.Token(id)
			tok = strings.TrimSuffix(tok, wordEnd)
			for _, r := range tok {
				b, ok := runeToByte[r]
				if !ok {
					t.Fatalf("token %q holds a non-byte character", tok)
				}
				spelled = append(spelled, b)
			}
		}
		want := strings.ReplaceAll(normalize(valid), " ", "")
		if string(spelled) != want {
			t.Fatalf("tokens of %q spell %q, want %q", text, spelled, want)
		}
		if !utf8.ValidString(want) {
			t.Fatalf("normalize(%q) is not valid utf-8", text)
		}

		if strings.Trim(text, "abcdefghijklmnopqrstuvwxyz ") == "" {
			if got, w := c.Decode(ids), strings.Join(strings.Fields(text), " "); got != w {
				t.Fatalf("Decode(Encode(%q)) = %q, want %q", text, got, w)
			}
		}
	})
}

// FuzzScanVocabJSON: whatever the fast vocab.json reader accepts,
// encoding/json accepts too, with the same map.
func FuzzScanVocabJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"a": 1, "b":2 } `, `{"\u00e9\"": -3}`, `{"a":01}`, `{"a":1,}`, `{"a":1e2}`,
		`{"a":2147483648}`, `{"a":-2147483648}`, "{\"\xff\":1}", `{"a":1}x`, `{"Ġ":0,"ĠĠ":1}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := scanVocabJSON([]byte(s))
		if !ok {
			return
		}
		var want map[string]int32
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("scanVocabJSON accepted %q, encoding/json: %v", s, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %v, encoding/json %v", s, got, want)
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Fatalf("%q: %v, encoding/json %v", s, got, want)
			}
		}
	})
}
