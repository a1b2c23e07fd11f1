package pth

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// fixtures is testdata/reference/upscale/pth, written by torch
// (tools/reference/gen_upscaler_fixtures.py).
func fixtures() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "reference", "upscale", "pth")
}

func needFixtures(t testing.TB) string {
	t.Helper()
	d := fixtures()
	if _, err := os.Stat(filepath.Join(d, "benign.pth")); err != nil {
		t.Skipf("no torch-written fixtures in %s", d)
	}
	return d
}

// pk builds protocol-2 pickles by hand, as torch.save writes them.
type pk struct{ bytes.Buffer }

func (p *pk) op(b ...byte) *pk { p.Write(b); return p }
func (p *pk) str(s string) *pk {
	p.WriteByte('X')
	_ = binary.Write(&p.Buffer, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}
func (p *pk) global(mod, name string) *pk {
	p.WriteString("c" + mod + "\n" + name + "\n")
	return p
}
func (p *pk) int(v int) *pk {
	p.WriteByte('J')
	_ = binary.Write(&p.Buffer, binary.LittleEndian, int32(v))
	return p
}
func (p *pk) ints(v ...int) *pk {
	p.op('(')
	for _, x := range v {
		p.int(x)
	}
	return p.op('t')
}

// tensorSpec is one tensor of a hand-made checkpoint: a view of storage key.
type tensorSpec struct {
	name, key, storage string
	offset             int
	size, stride       []int
	numel              int
}

// statePickle writes {name: _rebuild_tensor_v2(storage, offset, size,
// stride, False, OrderedDict())} with storages as BINPERSID ids.
func statePickle(specs []tensorSpec) []byte {
	p := &pk{}
	p.op(0x80, 2, '}', '(')
	for _, s := range specs {
		p.str(s.name)
		p.global("torch._utils", "_rebuild_tensor_v2").op('(')
		p.op('(').str("storage").global("torch", s.storage).str(s.key).str("cpu").int(s.numel).op('t', 'Q')
		p.int(s.offset).ints(s.size...).ints(s.stride...).op(0x89)
		p.global("collections", "OrderedDict").op(')', 'R')
		p.op('t', 'R')
	}
	p.op('u', '.')
	return p.Bytes()
}

// torchZip lays out data.pkl and storages as torch.save does.
func torchZip(t testing.TB, pkl []byte, storages map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	add := func(name string, b []byte) {
		w, err := z.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	add("archive/data.pkl", pkl)
	add("archive/byteorder", []byte("little"))
	for k, b := range storages {
		add("archive/data/"+k, b)
	}
	add("archive/version", []byte("3\n"))
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func handMade(t testing.TB) []byte {
	specs := []tensorSpec{
		{name: "a", key: "0", storage: "FloatStorage", size: []int{2, 3}, stride: []int{3, 1}, numel: 6},
		{name: "at", key: "0", storage: "FloatStorage", size: []int{3, 2}, stride: []int{1, 3}, numel: 6},
		{name: "row", key: "0", storage: "FloatStorage", offset: 3, size: []int{3}, stride: []int{1}, numel: 6},
	}
	return torchZip(t, statePickle(specs), map[string][]byte{"0": f32bytes(0, 1, 2, 3, 4, 5)})
}

func TestHandMade(t *testing.T) {
	f, err := FromBytes("hand.pth", handMade(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Names(); !slices.Equal(got, []string{"a", "at", "row"}) {
		t.Fatalf("names %v", got)
	}
	want := map[string][]float32{"a": {0, 1, 2, 3, 4, 5}, "at": {0, 3, 1, 4, 2, 5}, "row": {3, 4, 5}}
	for name, w := range want {
		got, err := f.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, w) {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	info, _ := f.Info("at")
	if info.DType != tensor.F32 || !info.Shape.Equal(tensor.Shape{3, 2}) || info.Size != 24 || info.File != "hand.pth" {
		t.Errorf("info %+v", info)
	}
}

// TestRefusals checks that every pickle able to run code, and every
// malformed file, gets one line and no File.
func TestRefusals(t *testing.T) {
	good := handMade(t)
	wrap := func(pkl []byte) []byte { return torchZip(t, pkl, nil) }
	cases := []struct {
		name, data string
		unsafe     bool
		want       string
	}{
		{"system via REDUCE", string(wrap((&pk{}).op(0x80, 2).global("posix", "system").op('(').str("echo pwned").op('t', 'R', '.').Bytes())), true,
			"x.pth: refuses to load: the pickle calls posix.system (a checkpoint that could run code); convert it to .safetensors"},
		{"eval via __builtin__", string(wrap((&pk{}).op(0x80, 2).global("__builtin__", "eval").op('(').str("1").op('t', 'R', '.').Bytes())), true,
			"the pickle calls builtins.eval"},
		{"STACK_GLOBAL", string(wrap((&pk{}).op(0x80, 4).str("subprocess").str("Popen").op(0x93, '.').Bytes())), true,
			"the pickle calls subprocess.Popen"},
		{"INST", string(wrap([]byte("(Vecho pwned\nios\nsystem\n."))), true,
			"the pickle calls os.system through the INST opcode"},
		{"OBJ", string(wrap((&pk{}).op('(').global("collections", "OrderedDict").op('o', '.').Bytes())), true,
			"through the OBJ opcode"},
		{"EXT1", string(wrap([]byte{0x80, 2, 0x82, 1, '.'})), true, "uses the EXT1 opcode"},
		{"truncated", string(good[:len(good)/2]), false, "x.pth: not a valid zip archive"},
		{"empty", "", false, "x.pth: file of 0 bytes is too short"},
		{"text", "hello world", false, "x.pth: not a PyTorch checkpoint"},
		{"no STOP", string(wrap([]byte{0x80, 2, '}'})), false, "no STOP opcode"},
		{"list root", string(wrap([]byte{0x80, 2, ']', '.'})), false, "holds a list, not a dict of tensors"},
		{"no tensors", string(wrap([]byte{0x80, 2, '}', '.'})), false, "holds no tensors"},
		{"outside storage", string(torchZip(t, statePickle([]tensorSpec{{name: "a", key: "0", storage: "FloatStorage", size: []int{4}, stride: []int{2}, numel: 6}}), map[string][]byte{"0": f32bytes(0, 1, 2, 3, 4, 5)})), false,
			"outside its storage"},
		{"short storage", string(torchZip(t, statePickle([]tensorSpec{{name: "a", key: "0", storage: "FloatStorage", size: []int{6}, stride: []int{1}, numel: 6}}), map[string][]byte{"0": f32bytes(0, 1)})), false,
			"storage 0: 8 bytes, want 24"},
		{"missing storage", string(torchZip(t, statePickle([]tensorSpec{{name: "a", key: "7", storage: "FloatStorage", size: []int{1}, stride: []int{1}, numel: 1}}), nil)), false,
			"no archive/data/7"},
		{"bool storage", string(torchZip(t, statePickle([]tensorSpec{{name: "a", key: "0", storage: "BoolStorage", size: []int{1}, stride: []int{1}, numel: 1}}), map[string][]byte{"0": {1}})), false,
			"torch.BoolStorage, which darkroom has no dtype for"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := FromBytes("x.pth", []byte(c.data))
			if err == nil {
				f.Close()
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "x.pth: ") || !strings.Contains(msg, c.want) {
				t.Errorf("error %q, want one line with %q", msg, c.want)
			}
			if errors.Is(err, ErrUnsafe) != c.unsafe || errors.Is(err, ErrFormat) == c.unsafe {
				t.Errorf("%q: unsafe %v, format %v; want unsafe %v", msg, errors.Is(err, ErrUnsafe), errors.Is(err, ErrFormat), c.unsafe)
			}
		})
	}
}

// TestTorchWritten reads the checkpoints torch wrote (zip with protocols
// 2 and 4, legacy) and compares every tensor with the safetensors copy
// torch wrote beside them.
func TestTorchWritten(t *testing.T) {
	d := needFixtures(t)
	want, err := safetensors.Open(filepath.Join(d, "benign_expect.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	for _, name := range []string{"benign.pth", "benign_p4.pth", "benign_legacy.pth"} {
		t.Run(name, func(t *testing.T) {
			f, err := Open(filepath.Join(d, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !slices.Equal(f.Names(), want.Names()) {
				t.Fatalf("names %v, want %v", f.Names(), want.Names())
			}
			for _, n := range want.Names() {
				wi, _ := want.Info(n)
				gi, _ := f.Info(n)
				if gi.DType != wi.DType || !gi.Shape.Equal(wi.Shape) || gi.Size != wi.Size {
					t.Errorf("%s: %v %v %d, want %v %v %d", n, gi.DType, gi.Shape, gi.Size, wi.DType, wi.Shape, wi.Size)
					continue
				}
				gr, err := f.Raw(n)
				if err != nil {
					t.Fatal(err)
				}
				wr, _ := want.Raw(n)
				if !bytes.Equal(gr, wr) {
					t.Errorf("%s: bytes differ", n)
				}
			}
		})
	}
}

// TestTorchWrittenEvil checks that every malicious checkpoint torch wrote
// is refused with the one line naming its global.
func TestTorchWrittenEvil(t *testing.T) {
	d := needFixtures(t)
	cases := map[string]string{
		"evil_system.pth": "the pickle calls posix.system (a checkpoint that could run code); convert it to .safetensors",
		"evil_eval.pth":   "the pickle calls builtins.eval (a checkpoint that could run code)",
		"evil_popen.pth":  "the pickle calls subprocess.Popen (a checkpoint that could run code)",
		"evil_inst.pth":   "the pickle calls os.system through the INST opcode (a checkpoint that could run code)",
	}
	for name, want := range cases {
		p := filepath.Join(d, name)
		f, err := Open(p)
		if err == nil {
			f.Close()
			t.Errorf("%s: accepted", name)
			continue
		}
		if msg := err.Error(); msg != p+": refuses to load: "+want && !strings.HasPrefix(msg, p+": refuses to load: "+want) {
			t.Errorf("%s: %q, want %q", name, msg, want)
		}
		if !errors.Is(err, ErrUnsafe) {
			t.Errorf("%s: not ErrUnsafe", name)
		}
	}
}

// TestWrapper checks that a training checkpoint's wrapper is unwrapped,
// params_ema before params.
func TestWrapper(t *testing.T) {
	p := &pk{}
	p.op(0x80, 2, '}', '(')
	for _, w := range []string{"params", "params_ema"} {
		p.str(w).op('}', '(').str("w")
		p.global("torch._utils", "_rebuild_tensor_v2").op('(')
		p.op('(').str("storage").global("torch", "FloatStorage").str(w).str("cpu").int(1).op('t', 'Q')
		p.int(0).ints(1).ints(1).op(0x89).global("collections", "OrderedDict").op(')', 'R', 't', 'R')
		p.op('u')
	}
	p.str("iter").int(5).op('u', '.')
	f, err := FromBytes("w.pth", torchZip(t, p.Bytes(), map[string][]byte{"params": f32bytes(1), "params_ema": f32bytes(2)}))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := f.Float32("w")
	if f.Wrapper() != "params_ema" || !slices.Equal(f.Names(), []string{"w"}) || v[0] != 2 {
		t.Errorf("wrapper %q, names %v, w %v", f.Wrapper(), f.Names(), v)
	}
}
