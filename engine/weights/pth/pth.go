// Package pth reads PyTorch checkpoints (.pth, .pt, .ckpt, .bin) without
// running them.
//
// A PyTorch checkpoint is a pickle: a program for Python's pickle virtual
// machine, which may import any global and call it (os.system, eval,
// subprocess.Popen). torch.load(weights_only=True) guards against that
// with a restricted unpickler that knows the few globals a state dict of
// tensors needs. No well-kept Go library does the same (Go pickle
// libraries aim to rebuild arbitrary Python objects, not to refuse them),
// so this package implements its own small machine: the data opcodes of
// protocols 0–5, the globals of torch's allow list for tensors
// (torch._utils._rebuild_tensor_v2 and _rebuild_parameter, the typed
// storages torch.FloatStorage / HalfStorage / BFloat16Storage / …,
// collections.OrderedDict, builtins set / frozenset / dict, _codecs.encode
// for protocol 2 bytes) and nothing that can call anything else. A pickle
// that names another global, or uses INST / OBJ / the extension registry,
// is refused with an *UnsafeError naming it, before anything is built.
//
// Two containers are read: torch.save's zip archive (<root>/data.pkl, the
// storages in <root>/data/<key>, little-endian), and the legacy format of
// torch before 1.6 (magic number, protocol and system-info pickles, the
// main pickle, the storage keys, then each storage's element count and
// bytes). The tar format of torch before 0.4 and TorchScript archives are
// refused with a line saying so.
//
// The file's nested dicts become flat dotted names ("body.0.weight"); a
// training checkpoint's wrapper ("params_ema", "params", "state_dict",
// "model": the first present that holds tensors) is unwrapped, and
// non-tensor leaves (epoch counters, hyper-parameters) are dropped. Tensor
// views (strides, storage offsets, shared storages) are honoured: Raw
// returns each tensor's elements contiguous, little-endian; float64
// tensors are narrowed to float32. A *File implements weights.Source.
package pth

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/internal/mapfile"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// ErrFormat is matched (errors.Is) by every error that reports a
// malformed or unsupported checkpoint.
var ErrFormat = errors.New("invalid PyTorch checkpoint")

// ErrUnsafe is matched (errors.Is) by an *UnsafeError: a checkpoint
// refused because loading it could run code.
var ErrUnsafe = errors.New("unsafe PyTorch checkpoint")

// Error reports a malformed or unsupported checkpoint in one line: the
// file and what is wrong.
type Error struct {
	Path string
	Msg  string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Is makes errors.Is(err, ErrFormat) true.
func (e *Error) Is(target error) bool { return target == ErrFormat }

// Wrappers are the keys of training checkpoints whose value is the state
// dict, in the order they are preferred (basicsr saves both params_ema
// and params; the EMA weights are the released ones).
var Wrappers = []string{"params_ema", "params", "state_dict", "model"}

// File is an open PyTorch checkpoint. It implements weights.Source. Its
// methods may be called concurrently, but not concurrently with Close.
type File struct {
	path    string
	data    []byte
	mapping *mapfile.Data // nil for FromBytes
	closed  bool
	names   []string
	tensors map[string]*tensorRef
	wrapper string
}

// Open maps a checkpoint read-only and reads its tensor table. A file
// whose pickle could run code is refused with an *UnsafeError.
func Open(path string) (*File, error) {
	m, err := mapfile.Open(path, "PyTorch checkpoint")
	if me := (*mapfile.Error)(nil); errors.As(err, &me) {
		return nil, &Error{me.Path, me.Msg}
	} else if err != nil {
		return nil, err
	}
	pf, err := parse(m.Bytes, path)
	if err != nil {
		m.Close()
		return nil, err
	}
	pf.mapping = m
	return pf, nil
}

// FromBytes reads an in-memory checkpoint; name stands for its path in
// errors. The File aliases data, which must not change while it is used.
func FromBytes(name string, data []byte) (*File, error) {
	return parse(data, name)
}

func parse(data []byte, path string) (*File, error) {
	bad := func(format string, args ...any) error { return &Error{path, fmt.Sprintf(format, args...)} }
	var root any
	var err error
	switch {
	case len(data) < 4:
		return nil, bad("file of %d bytes is too short for a PyTorch checkpoint", len(data))
	case bytes.HasPrefix(data, []byte("PK\x03\x04")) || bytes.HasPrefix(data, []byte("PK\x05\x06")):
		root, err = readZip(data)
	case data[0] == 0x80:
		root, err = readLegacy(data)
	case len(data) > 262 && string(data[257:262]) == "ustar":
		return nil, bad("torch's tar checkpoint format (before torch 0.4) is not supported; convert it to .safetensors")
	default:
		return nil, bad("not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)")
	}
	if err != nil {
		var ue *UnsafeError
		if errors.As(err, &ue) {
			ue.Path = path
			return nil, ue
		}
		return nil, bad("%v", err)
	}
	tensors, wrapper, err := flatten(root)
	if err != nil {
		return nil, bad("%v", err)
	}
	f := &File{path: path, data: data, tensors: tensors, wrapper: wrapper}
	for n := range tensors {
		f.names = append(f.names, n)
	}
	sort.Strings(f.names)
	return f, nil
}

// readZip reads torch.save's zip archive.
func readZip(data []byte) (any, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("not a valid zip archive (truncated?): %v", err)
	}
	var pkl *zip.File
	files := map[string]*zip.File{}
	for _, zf := range zr.File {
		files[zf.Name] = zf
		if dir, base := path.Split(zf.Name); base == "data.pkl" && strings.Count(dir, "/") == 1 && pkl == nil {
			pkl = zf
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("a zip archive without <name>/data.pkl: not a torch.save checkpoint")
	}
	root := strings.TrimSuffix(pkl.Name, "data.pkl")
	if files[root+"constants.pkl"] != nil || files[root+"code/"] != nil || hasPrefix(zr.File, root+"code/") {
		return nil, fmt.Errorf("a TorchScript archive (torch.jit.save), not a checkpoint of tensors")
	}
	if bo := files[root+"byteorder"]; bo != nil {
		b, err := entryBytes(data, bo)
		if err != nil {
			return nil, err
		}
		if s := strings.TrimSpace(string(b)); s != "little" {
			return nil, fmt.Errorf("byte order %q (only little-endian checkpoints are read)", s)
		}
	}
	src, err := entryBytes(data, pkl)
	if err != nil {
		return nil, err
	}
	storages := map[string]*storage{}
	m := &machine{data: src, persistent: func(id pyTuple) (any, error) { return addStorage(storages, id, false) }}
	obj, err := m.run()
	if err != nil {
		return nil, err
	}
	for key, st := range storages {
		zf := files[root+"data/"+key]
		if zf == nil {
			return nil, fmt.Errorf("storage %s: no %sdata/%s in the archive", key, root, key)
		}
		b, err := entryBytes(data, zf)
		if err != nil {
			return nil, err
		}
		if err := st.attach(b); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

func hasPrefix(files []*zip.File, prefix string) bool {
	for _, f := range files {
		if strings.HasPrefix(f.Name, prefix) {
			return true
		}
	}
	return false
}

// entryBytes returns a zip entry's contents: a slice of data when it is
// stored (torch's archives are), else its inflated bytes.
func entryBytes(data []byte, zf *zip.File) ([]byte, error) {
	const maxInflated = 1 << 34
	if zf.Method == zip.Store {
		off, err := zf.DataOffset()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", zf.Name, err)
		}
		n := zf.UncompressedSize64
		if zf.CompressedSize64 != n || off < 0 || n > uint64(len(data)) || uint64(off) > uint64(len(data))-n {
			return nil, fmt.Errorf("%s: %d bytes at %d past the end of the file (truncated?)", zf.Name, n, off)
		}
		return data[off : off+int64(n) : off+int64(n)], nil
	}
	if zf.UncompressedSize64 > maxInflated {
		return nil, fmt.Errorf("%s: %d bytes inflated is too large", zf.Name, zf.UncompressedSize64)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", zf.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(zf.UncompressedSize64)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", zf.Name, err)
	}
	return b, nil
}

func addStorage(storages map[string]*storage, id pyTuple, legacy bool) (*storage, error) {
	st, err := newStorage(id, legacy)
	if err != nil {
		return nil, err
	}
	if old, ok := storages[st.key]; ok {
		if old.typeName != st.typeName || old.numel != st.numel {
			return nil, fmt.Errorf("storage %s declared as %s of %d and %s of %d", st.key, old.typeName, old.numel, st.typeName, st.numel)
		}
		return old, nil
	}
	storages[st.key] = st
	return st, nil
}

// legacyMagic is the first pickle of a legacy checkpoint.
const legacyMagic = "1950a86a20f9469cfc6c"

// readLegacy reads torch's pre-1.6 format: five pickles in a row, then
// each storage as an int64 element count and its bytes.
func readLegacy(data []byte) (any, error) {
	m := &machine{data: data}
	next := func(what string) (any, error) {
		m.stack, m.marks, m.memo = nil, nil, nil
		v, err := m.run()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return v, nil
	}
	magic, err := next("magic number")
	if err != nil {
		return nil, err
	}
	if fmt.Sprintf("%x", magic) != legacyMagic {
		return nil, fmt.Errorf("a pickle that is not a torch checkpoint (no torch magic number)")
	}
	if _, err := next("protocol version"); err != nil {
		return nil, err
	}
	info, err := next("system info")
	if err != nil {
		return nil, err
	}
	if d, ok := info.(*pyDict); ok {
		if le, ok := d.get("little_endian"); ok && le != true {
			return nil, fmt.Errorf("a big-endian checkpoint (only little-endian checkpoints are read)")
		}
	}
	storages := map[string]*storage{}
	m.persistent = func(id pyTuple) (any, error) { return addStorage(storages, id, true) }
	obj, err := next("checkpoint")
	if err != nil {
		return nil, err
	}
	m.persistent = nil
	keys, err := next("storage keys")
	if err != nil {
		return nil, err
	}
	kl, ok := keys.(*pyList)
	if !ok {
		return nil, fmt.Errorf("storage keys of type %s", typeName(keys))
	}
	for _, k := range kl.items {
		key, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("a storage key of type %s", typeName(k))
		}
		st := storages[key]
		if st == nil {
			return nil, fmt.Errorf("storage %s is listed but no tensor uses it", key)
		}
		n, err := m.u64()
		if err != nil {
			return nil, fmt.Errorf("storage %s: %w", key, err)
		}
		if int64(n) != st.numel {
			return nil, fmt.Errorf("storage %s holds %d elements, its tensors declare %d", key, n, st.numel)
		}
		b, err := m.need(int(st.numel) * st.typ.size)
		if err != nil {
			return nil, fmt.Errorf("storage %s: %w", key, err)
		}
		if err := st.attach(b); err != nil {
			return nil, err
		}
	}
	for key, st := range storages {
		if st.data == nil && st.numel > 0 {
			return nil, fmt.Errorf("storage %s has no data", key)
		}
	}
	return obj, nil
}

// flatten names every tensor of the checkpoint's dict tree by its dotted
// path, after unwrapping a training checkpoint's wrapper key.
func flatten(root any) (map[string]*tensorRef, string, error) {
	d, ok := root.(*pyDict)
	if !ok {
		return nil, "", fmt.Errorf("the checkpoint holds a %s, not a dict of tensors", typeName(root))
	}
	wrapper := ""
	for _, w := range Wrappers {
		if v, ok := d.get(w); ok {
			if inner, ok := v.(*pyDict); ok && holdsTensor(inner, 0) {
				d, wrapper = inner, w
				break
			}
		}
	}
	out := map[string]*tensorRef{}
	budget := 1 << 20
	onPath := map[*pyDict]bool{}
	var walk func(d *pyDict, prefix string, depth int) error
	walk = func(d *pyDict, prefix string, depth int) error {
		if depth > 64 || onPath[d] {
			return fmt.Errorf("dicts nested %d deep or in a cycle", depth)
		}
		onPath[d] = true
		defer delete(onPath, d)
		for i, k := range d.keys {
			if budget--; budget < 0 {
				return fmt.Errorf("more than a million entries")
			}
			var name string
			switch k := k.(type) {
			case string:
				name = k
			case int64:
				name = strconv.FormatInt(k, 10)
			default:
				continue
			}
			switch v := d.vals[i].(type) {
			case *tensorRef:
				if _, dup := out[prefix+name]; dup {
					return fmt.Errorf("two tensors named %q", prefix+name)
				}
				out[prefix+name] = v
			case *pyDict:
				if err := walk(v, prefix+name+".", depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(d, "", 0); err != nil {
		return nil, "", err
	}
	if len(out) == 0 {
		return nil, "", fmt.Errorf("the checkpoint holds no tensors")
	}
	return out, wrapper, nil
}

func holdsTensor(d *pyDict, depth int) bool {
	if depth > 8 {
		return false
	}
	for _, v := range d.vals {
		switch v := v.(type) {
		case *tensorRef:
			return true
		case *pyDict:
			if v != d && holdsTensor(v, depth+1) {
				return true
			}
		}
	}
	return false
}

// Path returns the path given to Open (the name given to FromBytes).
func (f *File) Path() string { return f.path }

// Names returns every tensor name, sorted. The caller must not modify it.
func (f *File) Names() []string { return f.names }

// Wrapper returns the training checkpoint's key that held the state dict
// ("params_ema", ...), or "" when the tensors were at the top level.
func (f *File) Wrapper() string { return f.wrapper }

// Metadata returns nil: PyTorch checkpoints carry no safetensors-style
// string metadata.
func (f *File) Metadata() map[string]string { return nil }

// Info describes a tensor; ok is false when the name is absent. Float64
// tensors are described (and read) as F32.
func (f *File) Info(name string) (safetensors.TensorInfo, bool) {
	t, ok := f.tensors[name]
	if !ok {
		return safetensors.TensorInfo{}, false
	}
	dt := t.st.typ.dt
	return safetensors.TensorInfo{
		Name:  name,
		DType: dt,
		Shape: tensor.Shape(t.shape).Clone(),
		Size:  int64(t.numel() * dt.Size()),
		File:  f.path,
	}, true
}

// Raw returns a tensor's elements, contiguous and little-endian. The slice
// may alias the read-only mapping: never write to it, and do not keep it
// past Close.
func (f *File) Raw(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("tensor %q: file is closed", name)
	}
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return t.bytes(), nil
}

// Float32 returns a freshly allocated float32 copy of a tensor.
func (f *File) Float32(name string) ([]float32, error) {
	raw, err := f.Raw(name)
	if err != nil {
		return nil, err
	}
	t := f.tensors[name]
	out := make([]float32, t.numel())
	if err := tensor.ToFloat32(t.st.typ.dt, raw, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}

// Close releases the mapping. Slices returned by Raw become invalid.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	if f.mapping != nil {
		return f.mapping.Close()
	}
	return nil
}
