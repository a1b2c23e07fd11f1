package tokenizer

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// t5Fixture is testdata/reference/t5-tiny/tokens.json, made by
// tools/reference/gen_t5_fixtures.py with transformers' T5TokenizerFast
// ("hf") and the tokenizers library ("file": the bundled tokenizer.json as
// it is; "legacy": its original t5-v1_1 pipeline, WhitespaceSplit and a
// Replace to " ").
type t5Fixture struct {
	TokenizerSHA256 string            `json:"tokenizer_sha256"`
	Prompts         []string          `json:"prompts"`
	HF              []t5RefCase       `json:"hf"`
	File            []t5RefCase       `json:"file"`
	Legacy          []t5RefCase       `json:"legacy"`
	Versions        map[string]string `json:"versions"`
}

type t5RefCase struct {
	IDs     []int `json:"ids"`
	Mask    []int `json:"mask"`
	IDs256  []int `json:"ids256"`
	Mask256 []int `json:"mask256"`
	IDs512  []int `json:"ids512"`
	Mask512 []int `json:"mask512"`
}

const t5FixturePath = refDir + "t5-tiny/tokens.json"

func loadT5Fixture(t *testing.T) t5Fixture {
	t.Helper()
	b, err := os.ReadFile(t5FixturePath)
	if os.IsNotExist(err) {
		t.Skipf("%s absent: make it with tools/reference/gen_t5_fixtures.py", t5FixturePath)
	}
	if err != nil {
		t.Fatal(err)
	}
	var f t5Fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse %s: %v", t5FixturePath, err)
	}
	if len(f.Prompts) < 40 || len(f.HF) != len(f.Prompts) {
		t.Fatalf("%s: %d prompts, %d cases", t5FixturePath, len(f.Prompts), len(f.HF))
	}
	return f
}

func bundledT5JSON(t testing.TB) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(bundledT5))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkT5 compares tok's ids and masks with every case of ref: the
// untruncated form and max_length 256 and 512, padded.
func checkT5(t *testing.T, name string, tok *T5, prompts []string, ref []t5RefCase, withMask bool) {
	t.Helper()
	bad := 0
	for i, p := range prompts {
		c := ref[i]
		ids, mask := tok.Encode(p, 0, false)
		if !slices.Equal(ids, c.IDs) || withMask && !slices.Equal(mask, c.Mask) {
			bad++
			t.Errorf("%s prompt %d %q:\n got %v\nwant %v", name, i, short(p), ids, c.IDs)
			continue
		}
		for _, n := range []struct {
			n         int
			ids, mask []int
		}{{256, c.IDs256, c.Mask256}, {512, c.IDs512, c.Mask512}} {
			ids, mask := tok.Encode(p, n.n, true)
			if !slices.Equal(ids, n.ids) || !slices.Equal(mask, n.mask) {
				bad++
				t.Errorf("%s prompt %d %q, max_length %d: ids or mask differ", name, i, short(p), n.n)
			}
		}
	}
	if bad == 0 {
		t.Logf("%s: %d prompts equal (untruncated, 256 and 512 padded)", name, len(prompts))
	}
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// TestT5MatchesTransformers checks the bundled tokenizer against
// T5TokenizerFast over the same tokenizer.json.
func TestT5MatchesTransformers(t *testing.T) {
	f := loadT5Fixture(t)
	sum := sha256.Sum256(bundledT5JSON(t))
	if got := hex.EncodeToString(sum[:]); got != f.TokenizerSHA256 {
		t.Fatalf("fixture made from tokenizer.json %s, bundled is %s", f.TokenizerSHA256, got)
	}
	tok, err := NewT5()
	if err != nil {
		t.Fatal(err)
	}
	checkT5(t, "T5TokenizerFast", tok, f.Prompts, f.HF, true)
	checkT5(t, "tokenizers", tok, f.Prompts, f.File, false)
}

// TestT5LegacyPipeline checks the original t5-v1_1 layout of
// tokenizer.json (Replace to " ", WhitespaceSplit, Metaspace always).
func TestT5LegacyPipeline(t *testing.T) {
	f := loadT5Fixture(t)
	if len(f.Legacy) != len(f.Prompts) {
		t.Skip("fixture has no legacy cases")
	}
	var doc map[string]any
	if err := json.Unmarshal(bundledT5JSON(t), &doc); err != nil {
		t.Fatal(err)
	}
	norm := doc["normalizer"].(map[string]any)["normalizers"].([]any)
	doc["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{
		norm[0],
		map[string]any{"type": "Replace", "pattern": map[string]any{"Regex": " {2,}"}, "content": " "},
	}}
	doc["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
		map[string]any{"type": "WhitespaceSplit"},
		map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
	}}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseT5(data)
	if err != nil {
		t.Fatal(err)
	}
	checkT5(t, "legacy", tok, f.Prompts, f.Legacy, false)
}

func TestT5Bundled(t *testing.T) {
	tok, err := NewT5()
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != 32100 || tok.Pad() != 0 || tok.EOS() != 1 || tok.Source != "bundled" {
		t.Fatalf("vocab %d, pad %d, eos %d, source %q", tok.VocabSize(), tok.Pad(), tok.EOS(), tok.Source)
	}
	for id, want := range map[int]string{0: "<pad>", 1: "</s>", 2: "<unk>", 3: "▁", 32000: "<extra_id_99>", 32099: "<extra_id_0>"} {
		if got, _ := tok.Token(id); got != want {
			t.Errorf("token %d = %q, want %q", id, got, want)
		}
	}
	ids, mask := tok.Encode("a cat", 8, true)
	if !slices.Equal(ids[len(ids)-5:], []int{1, 0, 0, 0, 0}) || !slices.Equal(mask, []int{1, 1, 1, 1, 0, 0, 0, 0}) {
		t.Errorf("padded: %v %v", ids, mask)
	}
	ids, _ = tok.Encode(strings.Repeat("cat ", 50), 5, false)
	if len(ids) != 5 || ids[4] != 1 {
		t.Errorf("truncated to 5: %v", ids)
	}
	if ids, _ := tok.Encode("cat", 1, true); !slices.Equal(ids, []int{1}) {
		t.Errorf("max_length 1: %v", ids)
	}
}

func TestFindT5(t *testing.T) {
	dir := t.TempDir()
	// No tokenizer: the bundled one.
	tok, err := FindT5(dir)
	if err != nil || tok.Source != "bundled" {
		t.Fatalf("empty folder: %v, %v", tok, err)
	}
	// A CLIP tokenizer.json in tokenizer_2 (SD3) is passed over; a T5 one
	// in tokenizer_3 is used.
	write := func(rel string, data []byte) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("tokenizer_2/tokenizer.json", []byte(`{"model":{"type":"BPE","vocab":{},"merges":[]}}`))
	p := write("tokenizer_3/tokenizer.json", bundledT5JSON(t))
	tok, err = FindT5(dir)
	if err != nil || tok.Source != p {
		t.Fatalf("SD3 layout: source %v, %v", tok, err)
	}
	// A broken Unigram tokenizer.json is an error naming the file.
	p = write("tokenizer_2/tokenizer.json", []byte(`{"model":{"type":"Unigram","unk_id":0,"vocab":[["a"]]}}`))
	if _, err := FindT5(dir); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("broken tokenizer_2: %v", err)
	}
	// LoadT5 takes the folder or the file.
	if tok, err := LoadT5(filepath.Dir(write("x/tokenizer.json", bundledT5JSON(t)))); err != nil || tok.VocabSize() != 32100 {
		t.Fatalf("LoadT5(folder): %v", err)
	}
}

func TestT5BadInput(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", "tokenizer.json")
	clipJSON := `{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}`
	for name, c := range map[string]struct {
		data string
		want string
	}{
		"not json":      {"{", "not a tokenizer.json"},
		"bpe":           {clipJSON, `model type "BPE", want "Unigram"`},
		"no unk":        {`{"model":{"type":"Unigram","vocab":[["a",0]]}}`, "without unk_id"},
		"unk range":     {`{"model":{"type":"Unigram","unk_id":5,"vocab":[["a",0]]}}`, "outside the vocabulary"},
		"bad entry":     {`{"model":{"type":"Unigram","unk_id":0,"vocab":[["a"]]}}`, "vocab entry 0"},
		"byte fallback": {`{"model":{"type":"Unigram","unk_id":0,"byte_fallback":true,"vocab":[["a",0]]}}`, "byte_fallback"},
		"no pad":        {`{"model":{"type":"Unigram","unk_id":0,"vocab":[["a",0]]}}`, "no <pad>"},
		"normalizer":    {`{"normalizer":{"type":"NFKC"},"model":{"type":"Unigram","unk_id":0,"vocab":[["<pad>",0]]}}`, `unsupported normalizer "NFKC"`},
		"charsmap":      {`{"normalizer":{"type":"Precompiled","precompiled_charsmap":"AAAA"},"model":{"type":"Unigram","unk_id":0,"vocab":[["<pad>",0]]}}`, "precompiled charsmap"},
		"charsmap b64":  {`{"normalizer":{"type":"Precompiled","precompiled_charsmap":"%%%"},"model":{"type":"Unigram","unk_id":0,"vocab":[["<pad>",0]]}}`, "precompiled_charsmap"},
		"pre":           {`{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"Unigram","unk_id":0,"vocab":[["<pad>",0]]}}`, `unsupported pre-tokenizer "ByteLevel"`},
		"post":          {`{"post_processor":{"type":"RobertaProcessing"},"model":{"type":"Unigram","unk_id":0,"vocab":[["<pad>",0]]}}`, `unsupported post-processor "RobertaProcessing"`},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(p, []byte(c.data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadT5(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s and %q", name, err, p, c.want)
		}
	}
	if _, err := LoadT5(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
}

// TestCharsmapTruncatedTrie feeds lookups to a trie whose offsets point
// outside it: no panic, no match.
func TestCharsmapTruncatedTrie(t *testing.T) {
	blob := []byte{8, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 'x', 0}
	cm, err := parseCharsmap(blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a", "\xff\xfe", "hello", "\x00"} {
		if _, ok := cm.firstMatch(s); ok {
			t.Errorf("match for %q", s)
		}
		_ = cm.normalize(s)
	}
}

// FuzzT5 checks Encode never panics and its padded form has the length
// asked for with </s> in place.
func FuzzT5(f *testing.F) {
	for _, s := range []string{"", "a photo", "  x  ", "東京", "\r\n\t", "</s><pad>", "e\u0301\u0301"} {
		f.Add(s)
	}
	tok, err := NewT5()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, mask := tok.Encode(s, 16, true)
		if len(ids) != 16 || len(mask) != 16 {
			t.Fatalf("%q: %d ids, %d mask", s, len(ids), len(mask))
		}
		n := 0
		for _, m := range mask {
			n += m
		}
		if n == 0 || ids[n-1] != tok.EOS() {
			t.Fatalf("%q: no </s> before the padding: %v %v", s, ids, mask)
		}
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("%q: id %d", s, id)
			}
		}
		_ = fmt.Sprint(ids)
	})
}
