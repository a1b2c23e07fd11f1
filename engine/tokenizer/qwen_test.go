package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// qwenFixture is testdata/qwen_tokens.json, written by
// tools/reference/gen_qwen_tokenizer_fixtures.py: transformers'
// Qwen2TokenizerFast (5.17, tokenizers 0.23.2) over the bundled vocabulary.
type qwenFixture struct {
	Transformers string `json:"transformers"`
	Agree        bool   `json:"agree"`
	Cases        []struct {
		Text   string `json:"text"`
		Qwen25 []int  `json:"qwen25"`
		Qwen3  []int  `json:"qwen3"`
		NFC    bool   `json:"decodes_to_nfc"`
	} `json:"cases"`
	ZImage []struct {
		Prompt     string `json:"prompt"`
		Text       string `json:"text"`
		NoThinking string `json:"text_no_thinking"`
		IDs        []int  `json:"ids"`
		Mask       []int  `json:"mask"`
		Full       []int  `json:"ids_full"`
	} `json:"zimage"`
	QwenImage struct {
		Template     string `json:"template"`
		Drop         int    `json:"drop"`
		PrefixTokens int    `json:"prefix_tokens"`
		MaxLength    int    `json:"max_length"`
		Cases        []struct {
			Prompt  string `json:"prompt"`
			Text    string `json:"text"`
			IDs     []int  `json:"ids"`
			Mask    []int  `json:"mask"`
			Full    []int  `json:"ids_full"`
			Dropped string `json:"dropped"`
		} `json:"cases"`
	} `json:"qwen_image"`
	Special   map[string][]int `json:"special"`
	VocabSize map[string]int   `json:"vocab_size"`
}

func loadQwenFixture(t testing.TB) *qwenFixture {
	t.Helper()
	data, err := os.ReadFile("testdata/qwen_tokens.json")
	if err != nil {
		t.Fatal(err)
	}
	var f qwenFixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if !f.Agree {
		t.Fatal("fixture: transformers and the assembled tokenizers pipeline disagreed")
	}
	return &f
}

func qwenPair(t testing.TB) (q25, q3 *Qwen) {
	t.Helper()
	q25, err := NewQwen25()
	if err != nil {
		t.Fatal(err)
	}
	q3, err = NewQwen3()
	if err != nil {
		t.Fatal(err)
	}
	return q25, q3
}

// firstDiff describes where two id lists part.
func firstDiff(got, want []int) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("len %d vs %d, first difference at %d: got %v want %v",
		len(got), len(want), i, got[i:min(i+5, len(got))], want[i:min(i+5, len(want))])
}

func TestQwenMatchesTransformers(t *testing.T) {
	f := loadQwenFixture(t)
	q25, q3 := qwenPair(t)
	if len(f.Cases) < 60 {
		t.Fatalf("fixture has %d prompts, want at least 60", len(f.Cases))
	}
	for i, c := range f.Cases {
		for _, v := range []struct {
			name string
			q    *Qwen
			want []int
		}{{"qwen2.5", q25, c.Qwen25}, {"qwen3", q3, c.Qwen3}} {
			if got := v.q.IDs(c.Text); !slices.Equal(got, v.want) {
				t.Errorf("case %d %s %q: %s", i, v.name, trunc(c.Text), firstDiff(got, v.want))
			}
		}
		// transformers decodes every case back to the NFC text; so must we.
		if got, want := q25.Decode(c.Qwen25, false), nfc(c.Text); c.NFC && got != want {
			t.Errorf("case %d: Decode = %q, want %q", i, trunc(got), trunc(want))
		}
	}
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func TestQwenSpecialTokens(t *testing.T) {
	f := loadQwenFixture(t)
	q25, q3 := qwenPair(t)
	for name, q := range map[string]*Qwen{"qwen25": q25, "qwen3": q3} {
		var special []int
		for id := 0; id < q.VocabSize(); id++ {
			if q.IsSpecial(id) {
				special = append(special, id)
			}
		}
		if !slices.Equal(special, f.Special[name]) {
			t.Errorf("%s special ids %v, want %v", name, special, f.Special[name])
		}
		if q.VocabSize() != f.VocabSize[name] {
			t.Errorf("%s VocabSize %d, want %d", name, q.VocabSize(), f.VocabSize[name])
		}
		if q.Pad() != 151643 || q.EOS() != 151645 {
			t.Errorf("%s Pad, EOS = %d, %d, want 151643, 151645", name, q.Pad(), q.EOS())
		}
	}
	if tok, _ := q3.Token(151667); tok != "<think>" {
		t.Errorf("qwen3 token 151667 = %q, want <think>", tok)
	}
	if got := q3.Decode(q3.IDs("<|im_start|>a<think>b</think>"), true); got != "a<think>b</think>" {
		t.Errorf("Decode skipping special tokens = %q", got)
	}
}

func TestQwenTemplates(t *testing.T) {
	f := loadQwenFixture(t)
	q25, q3 := qwenPair(t)
	for i, z := range f.ZImage {
		if got := ZImageTemplate.Apply(z.Prompt); got != z.Text {
			t.Errorf("zimage %d: template %q, want %q", i, got, z.Text)
		}
		if got := Qwen3Chat(z.Prompt, true); got != z.Text {
			t.Errorf("zimage %d: Qwen3Chat(thinking) %q, want %q", i, got, z.Text)
		}
		if got := Qwen3Chat(z.Prompt, false); got != z.NoThinking {
			t.Errorf("zimage %d: Qwen3Chat(no thinking) %q, want %q", i, got, z.NoThinking)
		}
		checkTemplate(t, fmt.Sprint("zimage ", i), q3, ZImageTemplate, z.Prompt, z.IDs, z.Mask, z.Full)
	}
	qi := f.QwenImage
	if QwenImageTemplate.Apply("{}") != qi.Template || QwenImageTemplate.MaxLength != qi.MaxLength {
		t.Errorf("Qwen-Image template %q (max %d), want %q (max %d)", QwenImageTemplate.Apply("{}"), QwenImageTemplate.MaxLength, qi.Template, qi.MaxLength)
	}
	if QwenImageTemplate.Drop != qi.Drop || len(q25.IDs(QwenImageTemplate.Prefix)) != qi.PrefixTokens || qi.PrefixTokens != qi.Drop {
		t.Errorf("Qwen-Image drop %d, prefix of %d tokens; diffusers drops %d, its prefix has %d", QwenImageTemplate.Drop, len(q25.IDs(QwenImageTemplate.Prefix)), qi.Drop, qi.PrefixTokens)
	}
	for i, c := range qi.Cases {
		if got := QwenImageTemplate.Apply(c.Prompt); got != c.Text {
			t.Errorf("qwen-image %d: template %q, want %q", i, got, c.Text)
		}
		checkTemplate(t, fmt.Sprint("qwen-image ", i), q25, QwenImageTemplate, c.Prompt, c.IDs, c.Mask, c.Full)
		if got := q25.Decode(c.IDs[:QwenImageTemplate.Drop], false); got != c.Dropped {
			t.Errorf("qwen-image %d: dropped prefix %q, want %q", i, got, c.Dropped)
		}
		// ComfyUI finds the same 34 tokens in the ids of the templated text.
		if got := ComfyQwenImageDrop(c.Full); !strings.HasPrefix(c.Prompt, "<|im_start|>") && got != qi.Drop {
			t.Errorf("qwen-image %d: ComfyQwenImageDrop = %d, want %d", i, got, qi.Drop)
		}
	}
}

// checkTemplate compares the ids and mask of a templated prompt, and the
// untruncated ids of its text, with the pipeline's.
func checkTemplate(t *testing.T, name string, q *Qwen, tpl PromptTemplate, prompt string, wantIDs, wantMask, full []int) {
	t.Helper()
	ids, mask := q.EncodeTemplate(tpl, prompt)
	if !slices.Equal(ids, wantIDs) || !slices.Equal(mask, wantMask) {
		t.Errorf("%s ids: %s; mask equal %v", name, firstDiff(ids, wantIDs), slices.Equal(mask, wantMask))
	}
	if got := q.IDs(tpl.Apply(prompt)); !slices.Equal(got, full) {
		t.Errorf("%s untruncated: %s", name, firstDiff(got, full))
	}
}

func TestPromptTemplateKept(t *testing.T) {
	for _, tc := range []struct {
		tpl         PromptTemplate
		n, from, to int
	}{
		{QwenImageTemplate, 1058, 34, 546}, // QwenImagePipeline's max_sequence_length=512
		{QwenImageTemplate, 41, 34, 41},
		{QwenImageTemplate, 10, 10, 10},
		{ZImageTemplate, 512, 0, 512},
	} {
		if from, to := tc.tpl.Kept(tc.n); from != tc.from || to != tc.to {
			t.Errorf("Kept(%d) with drop %d = [%d, %d), want [%d, %d)", tc.n, tc.tpl.Drop, from, to, tc.from, tc.to)
		}
	}
}

func TestComfyQwenImage(t *testing.T) {
	q25, _ := qwenPair(t)
	chat := "<|im_start|>user\ninjected<|im_end|>"
	if got := ComfyQwenImage(chat); got != chat {
		t.Errorf("ComfyQwenImage(%q) = %q, want it unchanged", chat, got)
	}
	if got := ComfyQwenImage("a cat"); got != QwenImageTemplate.Apply("a cat") {
		t.Errorf("ComfyQwenImage(a cat) = %q", got)
	}
	if got, want := ComfyQwenImage(`a \(cat\) (dog:1.2)`), QwenImageTemplate.Apply("a (cat) (dog:1.2)"); got != want {
		t.Errorf("ComfyQwenImage with escapes = %q, want %q", got, want)
	}
	// One <|im_start|> then "user" "\n": ComfyUI drops those three tokens.
	if got := ComfyQwenImageDrop(q25.IDs(chat)); got != 3 {
		t.Errorf("ComfyQwenImageDrop(%q) = %d, want 3", chat, got)
	}
	if got := ComfyQwenImageDrop([]int{1, 2, 3}); got != 2 {
		t.Errorf("ComfyQwenImageDrop without <|im_start|> = %d, want 2 (keep the last token)", got)
	}
}

// writeQwenFolder writes the bundled files as a transformers tokenizer
// folder.
func writeQwenFolder(t *testing.T, dir string) {
	t.Helper()
	files, err := bundledQwenFiles()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"vocab.json", "merges.txt", "tokenizer_config.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), files[i], 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// qwenTokenizerJSON builds a tokenizer.json in the layout of Qwen's own
// files: from the bundled vocabulary, or with tiny, from the 256 byte
// characters, one merge and <|endoftext|>.
func qwenTokenizerJSON(t *testing.T, tiny bool, mutate func(doc map[string]any)) []byte {
	t.Helper()
	var (
		vocab  map[string]int
		merges []any
		added  []map[string]any
	)
	if tiny {
		vocab = map[string]int{}
		for _, r := range byteToRune {
			vocab[string(r)] = len(vocab)
		}
		vocab["ĠĠ"] = len(vocab)
		merges = []any{"Ġ Ġ"}
		added = []map[string]any{{"id": len(vocab), "content": "<|endoftext|>", "special": true}}
	} else {
		files, err := bundledQwenFiles()
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(files[0], &vocab); err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(strings.TrimSpace(string(files[1])), "\n") {
			if i == 0 {
				continue
			}
			if i%2 == 0 { // both merge spellings
				a, b, _ := strings.Cut(line, " ")
				merges = append(merges, []string{a, b})
			} else {
				merges = append(merges, line)
			}
		}
		q25, _ := qwenPair(t)
		for id := len(q25.t.decoder); id < q25.VocabSize(); id++ {
			a := q25.byID[id]
			added = append(added, map[string]any{"id": id, "content": a.content, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": a.special})
		}
	}
	doc := map[string]any{
		"version":      "1.0",
		"added_tokens": added,
		"normalizer":   map[string]any{"type": "NFC"},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": qwenPattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		}},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
			"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": merges},
	}
	if mutate != nil {
		mutate(doc)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestLoadQwenFolders(t *testing.T) {
	f := loadQwenFixture(t)
	root := t.TempDir()

	// A diffusers folder with tokenizer/vocab.json, merges.txt and config.
	vm := filepath.Join(root, "vm")
	writeQwenFolder(t, filepath.Join(vm, "tokenizer"))
	// A diffusers folder with tokenizer/tokenizer.json.
	tj := filepath.Join(root, "tj")
	if err := os.MkdirAll(filepath.Join(tj, "tokenizer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tj, "tokenizer", "tokenizer.json"), qwenTokenizerJSON(t, false, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	// An older layout: the added tokens in added_tokens.json, the config
	// naming only the special ones.
	old := filepath.Join(root, "old")
	writeQwenFolder(t, filepath.Join(old, "tokenizer"))
	q25, _ := qwenPair(t)
	extra := map[string]int{}
	var special []string
	for id, a := range q25.byID {
		extra[a.content] = id
		if a.special && a.content != "<|endoftext|>" && a.content != "<|im_end|>" {
			special = append(special, a.content)
		}
	}
	for name, v := range map[string]any{
		"added_tokens.json":     extra,
		"tokenizer_config.json": map[string]any{"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "additional_special_tokens": special},
	} {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(filepath.Join(old, "tokenizer", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	qo, err := FindQwen(old, Qwen25)
	if err != nil {
		t.Fatal(err)
	}
	for id := range q25.VocabSize() {
		if qo.IsSpecial(id) != q25.IsSpecial(id) {
			t.Errorf("added_tokens.json folder: IsSpecial(%d) = %v", id, qo.IsSpecial(id))
		}
	}
	for _, dir := range []string{vm, tj, old} {
		q, err := FindQwen(dir, Qwen3)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(q.Source, filepath.Join(dir, "tokenizer")) {
			t.Errorf("FindQwen(%s).Source = %q, want the folder's tokenizer", dir, q.Source)
		}
		for i, c := range f.Cases {
			if got := q.IDs(c.Text); !slices.Equal(got, c.Qwen25) {
				t.Errorf("%s case %d %q: %s", dir, i, trunc(c.Text), firstDiff(got, c.Qwen25))
			}
		}
	}
	// No tokenizer in the folder: the bundled one of the family.
	q, err := FindQwen(t.TempDir(), Qwen3)
	if err != nil || q.Source != "bundled qwen3" {
		t.Errorf("FindQwen(empty dir, qwen3) = %v, %v; want the bundled qwen3", q, err)
	}
	if q, err := FindQwen("", Qwen25); err != nil || q.Source != "bundled qwen2.5" {
		t.Errorf("FindQwen(\"\", qwen2.5) = %v, %v; want the bundled qwen2.5", q, err)
	}
}

func TestParseQwenErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(doc map[string]any)
		wantErr string
	}{
		{"unigram", func(d map[string]any) { d["model"].(map[string]any)["type"] = "Unigram" }, `want "BPE"`},
		{"byte fallback", func(d map[string]any) { d["model"].(map[string]any)["byte_fallback"] = true }, "byte_fallback"},
		{"normalizer", func(d map[string]any) { d["normalizer"] = map[string]any{"type": "NFKC"} }, "want NFC"},
		{"pattern", func(d map[string]any) {
			d["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)["pattern"] = map[string]any{"Regex": `\s+`}
		}, "Qwen2 pattern"},
		{"byte level regex", func(d map[string]any) {
			d["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[1].(map[string]any)["use_regex"] = true
		}, "ByteLevel without"},
		{"no pre-tokenizer", func(d map[string]any) { d["pre_tokenizer"] = nil }, "Sequence of Split"},
		{"bad merge", func(d map[string]any) { d["model"].(map[string]any)["merges"] = []any{"abc"} }, "malformed"},
		{"merge outside vocab", func(d map[string]any) { d["model"].(map[string]any)["merges"] = []any{"Ġ zzzz"} }, "not in vocabulary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQwenJSON(qwenTokenizerJSON(t, true, tc.mutate), nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	var doc struct {
		Model struct {
			Vocab json.RawMessage `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(qwenTokenizerJSON(t, true, nil), &doc); err != nil {
		t.Fatal(err)
	}
	tinyVocab, tinyMerges := []byte(doc.Model.Vocab), []byte("#version: 0.2\nĠ Ġ\n")
	if _, err := ParseQwen(tinyVocab, tinyMerges, []byte(`{"added_tokens_decoder": {"257": {"content": "<|endoftext|>"}}}`)); err != nil {
		t.Fatalf("tiny vocabulary: %v", err)
	}
	if _, err := ParseQwenJSON(qwenTokenizerJSON(t, true, nil), nil); err != nil {
		t.Fatalf("tiny tokenizer.json: %v", err)
	}
	for _, tc := range []struct {
		name, config, wantErr string
	}{
		{"bad json", "{", "tokenizer_config.json"},
		{"bad id", `{"added_tokens_decoder": {"x": {"content": "<a>"}}}`, "not a number"},
		{"single word", `{"added_tokens_decoder": {"151643": {"content": "<a>", "single_word": true}}}`, "single_word"},
		{"empty token", `{"added_tokens_decoder": {"151643": {"content": ""}}}`, "added token"},
		{"unknown pad", `{"pad_token": "<nope>"}`, "padding token"},
		{"shared id", `{"added_tokens_decoder": {"257": {"content": "<a>"}, "0257": {"content": "<b>"}}}`, "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQwen(tinyVocab, tinyMerges, []byte(tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := LoadQwen(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("LoadQwen of a missing path: no error")
	}
	if _, err := LoadQwen(t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither tokenizer.json nor vocab.json") {
		t.Errorf("LoadQwen of an empty folder: %v", err)
	}
}

// FuzzQwen: tokenizing never panics, every id is in the vocabulary, valid
// NFC text decodes back to itself byte for byte, and the splitter agrees
// with the pattern run by regexp2 (see TestQwenSplitMatchesRegexp).
func FuzzQwen(f *testing.F) {
	for _, s := range []string{
		"", "a cat", "it's 2024!!!\n\n  x", "<|im_start|>user\n<think>\u0301</think><|im_end|>",
		"e\u0301\u0323", "👨\u200d👩\u200d👧", "\xff\xfe<|endoftext|", "\t \r\n\u3000\u0085", "一只猫123",
	} {
		f.Add(s)
	}
	_, q3 := qwenPair(f)
	re := regexp2.MustCompile(qwenPattern, regexp2.None)
	f.Fuzz(func(t *testing.T, s string) {
		ids := q3.IDs(s)
		for _, id := range ids {
			if _, ok := q3.Token(id); !ok {
				t.Fatalf("IDs(%q) has id %d outside the vocabulary", s, id)
			}
		}
		if v := strings.ToValidUTF8(s, "\uFFFD"); nfc(v) == v {
			if got := q3.Decode(ids, false); got != v {
				t.Fatalf("Decode(IDs(%q)) = %q", s, got)
			}
		}
		if utf8.ValidString(s) && !strings.ContainsRune(s, 'ſ') {
			if got, want := handSplit(s), regexpSplit(t, re, s); !slices.Equal(got, want) {
				t.Fatalf("split %q:\n got %q\nwant %q", s, got, want)
			}
		}
	})
}

// BenchmarkQwenEncode tokenizes Z-Image's template around a prompt of about
// 500 tokens, padded to 512, with a warm cache.
func BenchmarkQwenEncode(b *testing.B) {
	_, q3 := qwenPair(b)
	prompt := strings.Repeat("A sweeping view of an ancient mountain monastery at dawn, mist rolling through the valleys, 8k; ", 25)
	b.ReportAllocs()
	for b.Loop() {
		q3.EncodeTemplate(ZImageTemplate, prompt)
	}
}

// BenchmarkQwenEncodeCold is BenchmarkQwenEncode on varied text that the
// cache cannot serve: a mix of scripts, never the same piece twice.
func BenchmarkQwenEncodeCold(b *testing.B) {
	_, q3 := qwenPair(b)
	rng := rand.New(rand.NewPCG(3, 4))
	texts := make([]string, 64)
	for i := range texts {
		texts[i] = randomQwenText(rng, 2000)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q3.cache = bpeCache{}
		q3.IDs(texts[i%len(texts)])
		i++
	}
}

// BenchmarkQwenParse parses the bundled vocabulary (what NewQwen25 does
// once per process).
func BenchmarkQwenParse(b *testing.B) {
	files, err := bundledQwenFiles()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ParseQwen(files[0], files[1], files[2]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestQwenIgnoreMerges: with the model's ignore_merges (Llama 3 style), a
// piece that is a vocabulary token as a whole skips the merges, as the
// tokenizers library does; without it the merges decide.
func TestQwenIgnoreMerges(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		data := qwenTokenizerJSON(t, true, func(d map[string]any) {
			m := d["model"].(map[string]any)
			m["ignore_merges"] = ignore
			vocab := m["vocab"].(map[string]int)
			vocab["ĠĠĠ"] = 258
			d["added_tokens"] = []map[string]any{{"id": 259, "content": "<|endoftext|>", "special": true}}
		})
		dir := t.TempDir()
		path := filepath.Join(dir, "tokenizer.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		// A tokenizer_config.json beside the file names the padding token.
		if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"pad_token": {"content": "ĠĠ"}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		q, err := LoadQwen(path)
		if err != nil {
			t.Fatal(err)
		}
		want := []int{256, 32} // "ĠĠ" then "Ġ" (byte 0x20)
		if ignore {
			want = []int{258}
		}
		if got := q.IDs("   "); !slices.Equal(got, want) {
			t.Errorf("ignore_merges %v: IDs = %v, want %v", ignore, got, want)
		}
		if q.Pad() != 256 || q.EOS() != -1 || q.Source != path {
			t.Errorf("Pad, EOS, Source = %d, %d, %q; want 256, -1, %q", q.Pad(), q.EOS(), q.Source, path)
		}
	}
}

// TestQwenConcurrent: the shared bundled tokenizers and their cache serve
// concurrent callers (run it with -race).
func TestQwenConcurrent(t *testing.T) {
	f := loadQwenFixture(t)
	_, q3 := qwenPair(t)
	done := make(chan string)
	for w := range 4 {
		go func() {
			for i, c := range f.Cases {
				if i%4 == w {
					if got := q3.IDs(c.Text); !slices.Equal(got, c.Qwen3) {
						done <- fmt.Sprintf("case %d: %s", i, firstDiff(got, c.Qwen3))
						return
					}
				}
			}
			done <- ""
		}()
	}
	for range 4 {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}
}
