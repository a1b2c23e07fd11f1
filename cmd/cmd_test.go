package cmd

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

const tinyDir = "../testdata/reference/sd1-tiny-a"

// run executes darkroom in-process and captures its output and exit code.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestVersion(t *testing.T) {
	out, errOut, code := run(t, "version")
	want := "darkroom dev (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if code != 0 || out != want || errOut != "" {
		t.Errorf("version: code %d, out %q, err %q; want %q", code, out, errOut, want)
	}
	if out2, _, _ := run(t, "--version"); out2 != want {
		t.Errorf("--version = %q, want %q", out2, want)
	}
}

func TestHelpTeaches(t *testing.T) {
	out, _, code := run(t, "--help")
	if code != 0 {
		t.Fatalf("code %d", code)
	}
	for _, want := range []string{"Stable Diffusion", "darkroom info", "diffusers", ".safetensors", "completion", "version", "SD1.x"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestCompletion(t *testing.T) {
	out, _, code := run(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "bash completion") || !strings.Contains(out, "darkroom") {
		t.Errorf("completion bash: code %d, %d bytes", code, len(out))
	}
}

// TestInfoBuiltinModel describes the embedded model by its name.
func TestInfoBuiltinModel(t *testing.T) {
	t.Chdir(t.TempDir()) // no file of that name here
	out, errOut, code := run(t, "info", "darkroom-digits")
	if code != 0 || errOut != "" {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"path    built-in darkroom-digits (embedded in the binary, 3.5 MiB compressed)\n",
		"family  SD1.x",
		"  10.0 MiB  634 tensors  -  darkroom-digits.safetensors\n",
		"UNet          channels 32 × [1 2], 2 res blocks/level",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInfoTinyModel(t *testing.T) {
	var tables []string
	for _, path := range []string{filepath.Join(tinyDir, "single.safetensors"), filepath.Join(tinyDir, "diffusers")} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			out, errOut, code := run(t, "info", path)
			if code != 0 || errOut != "" {
				t.Fatalf("code %d, stderr %q", code, errOut)
			}
			for _, want := range []string{
				"total   600 tensors, 5.8M parameters, 11.1 MiB stored",
				"diffusion model  model.diffusion_model.      304        1.1M  2.1 MiB  F16:304",
				"VAE              first_stage_model.          244        1.4M  2.7 MiB  F16:244",
				"text encoder     cond_stage_model.            52        3.3M  6.3 MiB  F16:52",
				"hyperparameters",
			} {
				if !strings.Contains(out, want+"\n") {
					t.Errorf("output lacks line %q:\n%s", want, out)
				}
			}
			// The deciding key is named as the user's files store it; a
			// diffusers folder adds the file and its pipeline class.
			want := "family  SD1.x (found key \"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight\")\n"
			if strings.HasSuffix(path, "diffusers") {
				want = "family  SD1.x (found key \"text_model.embeddings.token_embedding.weight\" (in text_encoder/model.safetensors), model_index.json _class_name=\"StableDiffusionPipeline\")\n"
			}
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
			// Hyperparameters come from the model packages' ConfigFromWeights.
			for _, want := range []string{
				"\n  UNet          channels 32 × [1 2], 2 res blocks/level",
				"\n  VAE           channels 32 × [1 1 2 2], 2 res blocks/level",
				"\n  text encoder  width 64, 3 layers",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			i := strings.Index(out, "component")
			j := strings.Index(out, "files")
			if i < 0 || j < i {
				t.Fatalf("no component table:\n%s", out)
			}
			tables = append(tables, out[i:j])
		})
	}
	if len(tables) == 2 && tables[0] != tables[1] {
		t.Errorf("single file and diffusers folder summarize differently:\n%s\n%s", tables[0], tables[1])
	}
}

func TestInfoOtherFamilies(t *testing.T) {
	dir := t.TempDir()
	one := safetensors.Tensor{DType: tensor.BF16, Shape: tensor.Shape{2, 3}, Data: make([]byte, 12)}
	cases := []struct {
		name  string
		keys  []string
		wants []string
	}{
		{"sdxl", []string{"model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight", "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "conditioner.embedders.1.model.ln_final.weight"},
			[]string{`family  SDXL (base) (found key "conditioner.embedders.1.model.ln_final.weight", key "model.diffusion_model.label_emb.0.0.weight" (adm 3))`, "text encoders    conditioner.embedders.", "BF16:2"}},
		{"unknown", []string{"foo.bar.weight", "foo.baz", "lonely"},
			[]string{"family  unknown model family: 3 tensors, names starting foo.bar. (1), foo. (1), lonely (1)", "other      foo.", "other      (top level)", "total   3 tensors, 18 parameters, 36 B stored"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := map[string]safetensors.Tensor{}
			for _, k := range c.keys {
				ts[k] = one
			}
			path := filepath.Join(dir, c.name+".safetensors")
			if err := safetensors.Write(path, ts, nil); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := run(t, "info", path)
			if code != 0 || errOut != "" {
				t.Fatalf("code %d, stderr %q", code, errOut)
			}
			for _, want := range c.wants {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func withHeader(js string, data int) []byte {
	b := make([]byte, 8, 8+len(js)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(js)))
	b = append(b, js...)
	return append(b, make([]byte, data)...)
}

func TestInfoBadInput(t *testing.T) {
	dir := t.TempDir()
	single, err := os.ReadFile(filepath.Join(tinyDir, "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	huge := make([]byte, 16)
	binary.LittleEndian.PutUint64(huge, 1<<63)
	os.Mkdir(filepath.Join(dir, "notamodel"), 0o755)
	os.WriteFile(filepath.Join(dir, "notamodel", "notes.txt"), []byte("hello"), 0o644)

	cases := []struct {
		name string
		data []byte // nil: do not create the file
		want string // message after "darkroom: <path>: "
	}{
		{"nonexistent.safetensors", nil, "no such file or directory"},
		{"notamodel", nil, "not a model: a folder needs model_index.json or unet/, vae/, text_encoder/, transformer/ (diffusers layout)"},
		{"empty.safetensors", []byte{}, "file of 0 bytes is too short for a safetensors header"},
		{"garbage.safetensors", []byte("PK\x03\x04 this is a zip file, not a checkpoint"), "header length 7595448452415441744 exceeds file size 41"},
		{"truncated.safetensors", single[:1000], "header length 75736 exceeds file size 1000"},
		{"truncated-data.safetensors", single[:100000], `tensor "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": data offsets [9856 6334080] outside data area of 24256 bytes`},
		{"header2p63.safetensors", huge, "header length 9223372036854775808 exceeds file size 16"},
		{"offsets.safetensors", withHeader(`{"x":{"dtype":"F32","shape":[24],"data_offsets":[0,96]}}`, 64), `tensor "x": data offsets [0 96] outside data area of 64 bytes`},
		{"mismatch.safetensors", withHeader(`{"x":{"dtype":"F16","shape":[4,4],"data_offsets":[0,30]}}`, 32), `tensor "x": shape [4 4] of F16 needs 32 bytes, data offsets [0 30] hold 30`},
		{"json.safetensors", withHeader(`{"x":{"dtype":"F16",`, 0), "header is not valid JSON: unexpected EOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name)
			if c.data != nil {
				if err := os.WriteFile(path, c.data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, errOut, code := run(t, "info", path)
			want := "darkroom: " + path + ": " + c.want + "\n"
			if code != 1 || errOut != want || out != "" {
				t.Errorf("code %d\nstderr %q\nwant   %q\nstdout %q", code, errOut, want, out)
			}
		})
	}
}

func TestUsageErrorsAreOneLine(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `darkroom: unknown command "frobnicate" (see 'darkroom --help')`},
		{"missing arg", []string{"info"}, "darkroom: darkroom info needs one PATH (a .safetensors file or a diffusers folder), got 0 argument(s) (see 'darkroom info --help')"},
		{"extra arg", []string{"info", "a", "b"}, "darkroom: darkroom info needs one PATH (a .safetensors file or a diffusers folder), got 2 argument(s) (see 'darkroom info --help')"},
		{"unknown flag", []string{"info", "--nope", "x"}, "darkroom: unknown flag: --nope (see 'darkroom info --help')"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := run(t, c.args...)
			if code != 1 || out != "" || errOut != c.want+"\n" {
				t.Errorf("code %d, stdout %q\nstderr %q\nwant   %q", code, out, errOut, c.want)
			}
		})
	}
}

func TestFormatError(t *testing.T) {
	cases := []struct{ in, want string }{
		{"x: broken", "darkroom: x: broken"},
		{"first\nsecond\r\n third\n", "darkroom: first; second; third"},
		{"  ", "darkroom: unknown error"},
	}
	for _, c := range cases {
		if got := FormatError(errors.New(c.in)); got != c.want {
			t.Errorf("FormatError(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestBinary builds darkroom and runs it on a missing file: one line on
// stderr, exit status 1, no stack trace.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "darkroom")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	missing := filepath.Join(t.TempDir(), "missing.safetensors")
	var stdout, stderr bytes.Buffer
	c := exec.Command(bin, "info", missing)
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1", err)
	}
	want := "darkroom: " + missing + ": no such file or directory\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stderr %q, want %q; stdout %q", stderr.String(), want, stdout.String())
	}

	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "darkroom dev (go") {
		t.Errorf("version: %q, %v", out, err)
	}
}

// TestInfoRealKeyLists runs darkroom info on every real-size key list in
// testdata/keyshapes: each model's family (the list's own) is named with the
// key that decided it, and lists of families not runnable yet say so.
func TestInfoRealKeyLists(t *testing.T) {
	files, err := filepath.Glob("../testdata/keyshapes/*.json.gz")
	if err != nil || len(files) < 30 {
		t.Fatalf("key lists: %d (%v)", len(files), err)
	}
	families := map[string]string{"SDXL refiner": "SDXL (refiner)"}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errOut, code := run(t, "info", f)
			if code != 0 || errOut != "" {
				t.Fatalf("code %d, stderr %q", code, errOut)
			}
			var kl struct {
				Family string `json:"family"`
			}
			gz, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer gz.Close()
			r, err := gzip.NewReader(gz)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.NewDecoder(r).Decode(&kl); err != nil {
				t.Fatal(err)
			}
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "family ") {
					line = strings.TrimSpace(strings.TrimPrefix(l, "family"))
				}
			}
			if kl.Family == "component" {
				if !strings.HasPrefix(line, "unknown model family: ") && !strings.Contains(line, "(found key ") {
					t.Errorf("component list: family line %q", line)
				}
				return
			}
			want := kl.Family
			if w, ok := families[want]; ok {
				want = w
			}
			if !strings.HasPrefix(line, want) || !strings.Contains(line, "(found key \"") {
				t.Errorf("family line %q, want %s with its deciding key", line, want)
			}
			runnable := strings.HasPrefix(line, "SD1.x") || strings.HasPrefix(line, "SD2.x") || strings.HasPrefix(line, "SDXL") || strings.HasPrefix(line, "Flux.1") || strings.HasPrefix(line, "SD3") ||
				strings.HasPrefix(line, "Z-Image") || strings.HasPrefix(line, "Qwen-Image")
			if runnable == strings.HasSuffix(line, "; not supported yet") {
				t.Errorf("family line %q: runnable families say nothing, others \"not supported yet\"", line)
			}
		})
	}
}
