// Package gguf reads GGUF files, the tensor format of ggml, llama.cpp,
// stable-diffusion.cpp and city96's ComfyUI-GGUF.
//
// A file is the magic "GGUF", a uint32 version (2 or 3), the tensor and
// key/value counts (uint64), the key/value metadata, one record per tensor
// (name, dimensions ne[0] first, ggml type, offset into the data area),
// padding to the alignment (metadata "general.alignment", default 32) and
// the tensor data. Everything is little-endian.
//
// Open validates the whole header before returning: every count and
// length is bounded by the bytes that remain before anything is
// allocated, element counts and byte sizes cannot overflow, the first
// dimension is a whole number of blocks, every offset is aligned, every
// tensor lies inside the data area and no two overlap. Tensor bytes are
// served zero-copy from a read-only memory mapping (Blocks); Raw and
// Float32 dequantise the block-quantised types to float32.
//
// Shapes are reported in PyTorch order (ggml's ne reversed), or as the
// "comfy.gguf.orig_shape.<name>" metadata gives them for the tensors
// ComfyUI-GGUF's converter flattened to rows of 256.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"unicode/utf8"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/internal/mapfile"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// ErrFormat is matched (with errors.Is) by every error that reports a
// malformed or unsupported file, as opposed to an I/O failure.
var ErrFormat = errors.New("invalid GGUF file")

// Error reports a malformed file. Its message is one line: the file path
// (when known) and what is wrong.
type Error struct {
	Path string // file path, empty for in-memory data
	Msg  string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Path == "" {
		return "gguf: " + e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Is makes errors.Is(err, ErrFormat) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrFormat }

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when "general.alignment" is absent.
const DefaultAlignment = 32

// MaxDims bounds a tensor's number of dimensions. ggml has 4
// (GGML_MAX_DIMS); gguf-py writes more (the 5-D tensors that
// ComfyUI-GGUF's fix_5d_tensors.py adds back), so up to 8 are read.
const MaxDims = 8

// MaxArrayLen bounds a metadata array's length (16 Mi values, 64 times
// the largest tokenizer vocabulary in use), so that a corrupt or hostile
// header cannot make the reader hold gigabytes of values.
const MaxArrayLen = 1 << 24

// OrigShapePrefix starts the metadata key under which ComfyUI-GGUF's
// converter stores a tensor's original shape when it stored the tensor
// flattened to rows of 256 elements ("comfy.gguf.orig_shape.<name>").
const OrigShapePrefix = "comfy.gguf.orig_shape."

// ValueType is the type of a metadata value.
type ValueType uint32

// The metadata value types of the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueSizes = [...]int{TypeUint8: 1, TypeInt8: 1, TypeUint16: 2, TypeInt16: 2, TypeUint32: 4, TypeInt32: 4,
	TypeFloat32: 4, TypeBool: 1, TypeString: 8, TypeArray: 12, TypeUint64: 8, TypeInt64: 8, TypeFloat64: 8}

// Value is one metadata value: Type says which Go type V holds (uint8,
// int8, uint16, int16, uint32, int32, float32, bool, string, uint64,
// int64, float64, or for TypeArray an Array).
type Value struct {
	Type ValueType
	V    any
}

// Array is a metadata array: Elem is the element type and Values holds
// the elements as Value.V would (arrays of arrays are refused).
type Array struct {
	Elem   ValueType
	Values []any
}

// Tensor describes one stored tensor.
type Tensor struct {
	Name string
	Type Type
	// Dims are ggml's ne: the fastest-varying dimension first.
	Dims []int64
	// Shape is the PyTorch shape: Dims reversed, or the
	// comfy.gguf.orig_shape metadata when present.
	Shape tensor.Shape
	// Offset is the absolute byte offset in the file, Size the byte length.
	Offset, Size int64
}

// Elements returns the number of elements of the tensor.
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is an open GGUF file. It implements weights.Source (under its
// stored names). Its methods may be called concurrently, but not
// concurrently with Close.
type File struct {
	path      string
	data      []byte
	mapping   *mapfile.Data // nil for FromBytes
	closed    bool
	version   uint32
	alignment int64
	kv        map[string]Value
	keys      []string
	names     []string
	tensors   map[string]*Tensor
	meta      map[string]string
}

// Open maps a GGUF file read-only and validates its header.
func Open(path string) (*File, error) {
	m, err := mapfile.Open(path, "GGUF file")
	if me := (*mapfile.Error)(nil); errors.As(err, &me) {
		return nil, &Error{Path: me.Path, Msg: me.Msg}
	} else if err != nil {
		return nil, err
	}
	gf, err := parse(m.Bytes, path)
	if err != nil {
		m.Close()
		return nil, err
	}
	gf.mapping = m
	return gf, nil
}

// FromBytes parses an in-memory GGUF file. The returned File aliases data,
// which must not be modified while the File is in use.
func FromBytes(data []byte) (*File, error) { return parse(data, "") }

// reader is a bounds-checked little-endian cursor over the header.
type reader struct {
	b   []byte
	off int64
	err error
}

func (r *reader) left() int64 { return int64(len(r.b)) - r.off }

func (r *reader) take(n int64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.left() {
		r.err = fmt.Errorf("%s at byte %d runs past the end of the file", what, r.off)
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) u32(what string) uint32 {
	if s := r.take(4, what); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if s := r.take(8, what); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

func (r *reader) str(what string) string {
	n := r.u64(what + " length")
	if r.err != nil {
		return ""
	}
	if n > uint64(r.left()) {
		r.err = fmt.Errorf("%s length %d at byte %d exceeds the %d bytes left", what, n, r.off-8, r.left())
		return ""
	}
	s := r.take(int64(n), what)
	if r.err == nil && !utf8.Valid(s) {
		r.err = fmt.Errorf("%s at byte %d is not valid UTF-8", what, r.off-int64(n))
	}
	return string(s)
}

// scalar reads one value of a non-array type.
func (r *reader) scalar(t ValueType, what string) any {
	switch t {
	case TypeUint8:
		if s := r.take(1, what); s != nil {
			return s[0]
		}
	case TypeInt8:
		if s := r.take(1, what); s != nil {
			return int8(s[0])
		}
	case TypeUint16:
		if s := r.take(2, what); s != nil {
			return binary.LittleEndian.Uint16(s)
		}
	case TypeInt16:
		if s := r.take(2, what); s != nil {
			return int16(binary.LittleEndian.Uint16(s))
		}
	case TypeUint32:
		return r.u32(what)
	case TypeInt32:
		return int32(r.u32(what))
	case TypeFloat32:
		return math.Float32frombits(r.u32(what))
	case TypeBool:
		if s := r.take(1, what); s != nil {
			if s[0] > 1 {
				r.err = fmt.Errorf("%s at byte %d: bool value %d is neither 0 nor 1", what, r.off-1, s[0])
				return nil
			}
			return s[0] == 1
		}
	case TypeString:
		return r.str(what)
	case TypeUint64:
		return r.u64(what)
	case TypeInt64:
		return int64(r.u64(what))
	case TypeFloat64:
		return math.Float64frombits(r.u64(what))
	default:
		r.err = fmt.Errorf("%s at byte %d has unknown value type %d", what, r.off, t)
	}
	return nil
}

func (r *reader) value(what string) Value {
	t := ValueType(r.u32(what + " type"))
	if r.err != nil {
		return Value{}
	}
	if t != TypeArray {
		return Value{Type: t, V: r.scalar(t, what)}
	}
	elem := ValueType(r.u32(what + " array type"))
	n := r.u64(what + " array length")
	if r.err != nil {
		return Value{}
	}
	if elem == TypeArray {
		r.err = fmt.Errorf("%s is an array of arrays, which is not supported", what)
		return Value{}
	}
	if int(elem) >= len(valueSizes) {
		r.err = fmt.Errorf("%s is an array of unknown value type %d", what, elem)
		return Value{}
	}
	if n > MaxArrayLen {
		r.err = fmt.Errorf("%s: array of %d values exceeds the %d value limit", what, n, MaxArrayLen)
		return Value{}
	}
	if n > uint64(r.left())/uint64(valueSizes[elem]) {
		r.err = fmt.Errorf("%s: array of %d values does not fit in the %d bytes left", what, n, r.left())
		return Value{}
	}
	vals := make([]any, 0, min(n, 1<<16))
	for range n {
		vals = append(vals, r.scalar(elem, what))
		if r.err != nil {
			return Value{}
		}
	}
	return Value{Type: TypeArray, V: Array{Elem: elem, Values: vals}}
}

func parse(data []byte, path string) (*File, error) {
	fail := func(format string, args ...any) error {
		return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	if len(data) < 24 {
		return nil, fail("file of %d bytes is too short for a GGUF header", len(data))
	}
	if string(data[:4]) != Magic {
		return nil, fail("bad magic %q, want %q (not a GGUF file)", data[:4], Magic)
	}
	r := &reader{b: data, off: 4}
	version := r.u32("version")
	switch {
	case version == 1:
		return nil, fail("GGUF version 1 is not supported (convert the file to version 3)")
	case version&0xffff == 0 && version != 0:
		return nil, fail("version %#x: a big-endian GGUF file, which is not supported", version)
	case version != 2 && version != 3:
		return nil, fail("unsupported GGUF version %d, want 2 or 3", version)
	}
	nTensors := r.u64("tensor count")
	nKV := r.u64("metadata count")
	// A key/value pair takes at least 8+1 (key) + 4 (type) + 1 bytes, a
	// tensor record at least 8+1 (name) + 4 + 8 (one dim) + 4 + 8.
	if nKV > uint64(r.left())/14 {
		return nil, fail("metadata count %d does not fit in a file of %d bytes", nKV, len(data))
	}
	if nTensors > uint64(r.left())/33 {
		return nil, fail("tensor count %d does not fit in a file of %d bytes", nTensors, len(data))
	}
	// The counts only bound the loops: what is allocated grows with the
	// records actually read, so a large count in a large file costs nothing
	// before the records fail.
	gf := &File{path: path, data: data, version: version, alignment: DefaultAlignment,
		kv: map[string]Value{}, tensors: map[string]*Tensor{}, meta: map[string]string{}}
	for i := uint64(0); i < nKV; i++ {
		key := r.str(fmt.Sprintf("metadata key %d", i))
		if r.err != nil {
			return nil, fail("%v", r.err)
		}
		if key == "" {
			return nil, fail("metadata key %d is empty", i)
		}
		if _, dup := gf.kv[key]; dup {
			return nil, fail("duplicate metadata key %q", key)
		}
		v := r.value(fmt.Sprintf("metadata %q", key))
		if r.err != nil {
			return nil, fail("%v", r.err)
		}
		gf.kv[key] = v
		gf.keys = append(gf.keys, key)
		if s, ok := v.V.(string); ok {
			gf.meta[key] = s
		} else if v.Type != TypeArray {
			gf.meta[key] = fmt.Sprint(v.V)
		}
	}
	if v, ok := gf.kv["general.alignment"]; ok {
		a, isU32 := v.V.(uint32)
		if !isU32 {
			return nil, fail("general.alignment has value type %d, want uint32", v.Type)
		}
		if a == 0 || a&(a-1) != 0 {
			return nil, fail("general.alignment %d is not a power of two", a)
		}
		gf.alignment = int64(a)
	}
	var list []*Tensor
	for i := uint64(0); i < nTensors; i++ {
		t, err := readTensorInfo(r, i)
		if err != nil {
			return nil, fail("%v", err)
		}
		if _, dup := gf.tensors[t.Name]; dup {
			return nil, fail("duplicate tensor name %q", t.Name)
		}
		gf.tensors[t.Name] = t
		list = append(list, t)
	}
	// The data area starts at the end of the header, padded to the alignment.
	dataStart := r.off
	if rem := dataStart % gf.alignment; rem != 0 {
		dataStart += gf.alignment - rem
	}
	if len(list) > 0 && dataStart > int64(len(data)) {
		return nil, fail("data area at byte %d starts past the end of the file (%d bytes)", dataStart, len(data))
	}
	dataLen := int64(len(data)) - dataStart
	for _, t := range list {
		rel := t.Offset
		if rel%gf.alignment != 0 {
			return nil, fail("tensor %q: offset %d is not a multiple of the alignment %d", t.Name, rel, gf.alignment)
		}
		if rel > dataLen || t.Size > dataLen-rel {
			return nil, fail("tensor %q: %d bytes at data offset %d run past the end of the file (data area of %d bytes)", t.Name, t.Size, rel, dataLen)
		}
		t.Offset = dataStart + rel
		if err := gf.applyOrigShape(t); err != nil {
			return nil, fail("tensor %q: %v", t.Name, err)
		}
	}
	sorted := append([]*Tensor(nil), list...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Offset != sorted[j].Offset {
			return sorted[i].Offset < sorted[j].Offset
		}
		return sorted[i].Name < sorted[j].Name
	})
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if b.Offset < a.Offset+a.Size {
			return nil, fail("tensors %q and %q overlap: data offsets %d (+%d bytes) and %d", a.Name, b.Name, a.Offset-dataStart, a.Size, b.Offset-dataStart)
		}
	}
	gf.names = make([]string, 0, len(list))
	for _, t := range list {
		gf.names = append(gf.names, t.Name)
	}
	sort.Strings(gf.names)
	return gf, nil
}

// readTensorInfo reads and checks one tensor record; Offset is still
// relative to the data area.
func readTensorInfo(r *reader, i uint64) (*Tensor, error) {
	name := r.str(fmt.Sprintf("tensor %d name", i))
	if r.err != nil {
		return nil, r.err
	}
	if name == "" {
		return nil, fmt.Errorf("tensor %d has an empty name", i)
	}
	nd := r.u32(fmt.Sprintf("tensor %q dimension count", name))
	if r.err != nil {
		return nil, r.err
	}
	if nd == 0 || nd > MaxDims {
		return nil, fmt.Errorf("tensor %q has %d dimensions, want 1 to %d", name, nd, MaxDims)
	}
	t := &Tensor{Name: name, Dims: make([]int64, nd)}
	elems := uint64(1)
	overflow := false
	for d := range t.Dims {
		v := r.u64(fmt.Sprintf("tensor %q dimension %d", name, d))
		if r.err != nil {
			return nil, r.err
		}
		if v > math.MaxInt64 {
			return nil, fmt.Errorf("tensor %q: dimension %d is %d, too large", name, d, v)
		}
		hi, lo := bits.Mul64(elems, v)
		if hi != 0 || lo > math.MaxInt64 {
			overflow = true
		}
		elems = lo
		t.Dims[d] = int64(v)
	}
	if overflow {
		return nil, fmt.Errorf("tensor %q: dimensions %v overflow the element count", name, t.Dims)
	}
	typ := Type(r.u32(fmt.Sprintf("tensor %q type", name)))
	off := r.u64(fmt.Sprintf("tensor %q offset", name))
	if r.err != nil {
		return nil, r.err
	}
	if !typ.Known() {
		return nil, fmt.Errorf("tensor %q has unknown ggml type %d", name, uint32(typ))
	}
	t.Type = typ
	bs, ts := int64(typ.BlockSize()), int64(typ.TypeSize())
	if t.Dims[0]%bs != 0 {
		return nil, fmt.Errorf("tensor %q: first dimension %d is not a multiple of the %s block size %d", name, t.Dims[0], typ, bs)
	}
	blocks := int64(elems) / bs
	if blocks > math.MaxInt64/ts {
		return nil, fmt.Errorf("tensor %q: %v of %s is too large", name, t.Dims, typ)
	}
	t.Size = blocks * ts
	if off > math.MaxInt64 {
		return nil, fmt.Errorf("tensor %q: offset %d is too large", name, off)
	}
	t.Offset = int64(off)
	t.Shape = make(tensor.Shape, nd)
	for d := range t.Dims {
		if t.Dims[d] > math.MaxInt {
			return nil, fmt.Errorf("tensor %q: dimension %d is too large", name, t.Dims[d])
		}
		t.Shape[int(nd)-1-d] = int(t.Dims[d])
	}
	return t, nil
}

// applyOrigShape replaces t.Shape by its comfy.gguf.orig_shape metadata.
func (f *File) applyOrigShape(t *Tensor) error {
	v, ok := f.kv[OrigShapePrefix+t.Name]
	if !ok {
		return nil
	}
	arr, ok := v.V.(Array)
	if !ok || arr.Elem != TypeInt32 {
		return fmt.Errorf("%s%s is not an array of int32", OrigShapePrefix, t.Name)
	}
	shape := make(tensor.Shape, len(arr.Values))
	n := int64(1)
	for i, x := range arr.Values {
		d := int64(x.(int32))
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return fmt.Errorf("%s%s: shape %v is negative or too large", OrigShapePrefix, t.Name, arr.Values)
		}
		n *= d
		shape[i] = int(d)
	}
	if n != t.Elements() || len(shape) == 0 {
		return fmt.Errorf("%s%s: shape %v holds %d elements, the tensor %d", OrigShapePrefix, t.Name, shape, n, t.Elements())
	}
	t.Shape = shape
	return nil
}

// Path returns the file path given to Open (empty for FromBytes).
func (f *File) Path() string { return f.path }

// Version returns the GGUF version (2 or 3).
func (f *File) Version() uint32 { return f.version }

// Alignment returns the data alignment in bytes.
func (f *File) Alignment() int64 { return f.alignment }

// Names returns every tensor name, sorted. The caller must not modify it.
func (f *File) Names() []string { return f.names }

// Keys returns the metadata keys in file order. The caller must not
// modify it.
func (f *File) Keys() []string { return f.keys }

// KV returns a metadata value; ok is false when the key is absent.
func (f *File) KV(key string) (Value, bool) {
	v, ok := f.kv[key]
	return v, ok
}

// String returns a string metadata value, or "" when the key is absent or
// not a string.
func (f *File) String(key string) string {
	s, _ := f.kv[key].V.(string)
	return s
}

// Architecture returns the "general.architecture" metadata ("flux",
// "t5encoder", ...), or "" when absent (stable-diffusion.cpp writes none).
func (f *File) Architecture() string { return f.String("general.architecture") }

// Metadata returns the scalar metadata values as strings (arrays left
// out), for weights.TensorFile.
func (f *File) Metadata() map[string]string { return f.meta }

// Tensor describes a stored tensor; ok is false when the name is absent.
func (f *File) Tensor(name string) (Tensor, bool) {
	t, ok := f.tensors[name]
	if !ok {
		return Tensor{}, false
	}
	c := *t
	c.Dims = append([]int64(nil), t.Dims...)
	c.Shape = t.Shape.Clone()
	return c, true
}

// DType returns the tensor.DType that Raw serves a tensor of ggml type t
// as: F16 and BF16 as stored, I32 and I64 as stored, everything else as
// F32 (the block-quantised types dequantised).
func DType(t Type) tensor.DType {
	switch t {
	case F16:
		return tensor.F16
	case BF16:
		return tensor.BF16
	case I32:
		return tensor.I32
	case I64:
		return tensor.I64
	}
	return tensor.F32
}

// Info describes a tensor as a weights.Source does: its PyTorch shape and
// the dtype that Raw returns (see DType), Size being Raw's byte length.
func (f *File) Info(name string) (safetensors.TensorInfo, bool) {
	t, ok := f.tensors[name]
	if !ok {
		return safetensors.TensorInfo{}, false
	}
	dt := DType(t.Type)
	return safetensors.TensorInfo{Name: name, DType: dt, Shape: t.Shape.Clone(), Size: t.Elements() * int64(dt.Size()), File: f.path}, true
}

// Blocks returns the stored bytes of a tensor and its ggml type. The slice
// aliases the read-only mapping: never write to it, and do not use it
// after Close.
func (f *File) Blocks(name string) ([]byte, Type, error) {
	if f.closed {
		return nil, 0, fmt.Errorf("tensor %q: file is closed", name)
	}
	t, ok := f.tensors[name]
	if !ok {
		return nil, 0, fmt.Errorf("tensor %q not found", name)
	}
	end := t.Offset + t.Size
	return f.data[t.Offset:end:end], t.Type, nil
}

// Raw returns a tensor's bytes in the dtype Info reports: F32, F16, BF16,
// I32 and I64 tensors as stored (aliasing the mapping, like Blocks), the
// block-quantised types dequantised into a fresh float32 buffer
// (Dequantize). A type Dequantize does not convert is an error.
func (f *File) Raw(name string) ([]byte, error) {
	raw, typ, err := f.Blocks(name)
	if err != nil {
		return nil, err
	}
	switch typ {
	case F32, F16, BF16, I32, I64:
		return raw, nil
	}
	t := f.tensors[name]
	out := make([]byte, 4*t.Elements())
	if err := DequantizeBytes(typ, raw, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}

// Float32 returns a freshly allocated float32 copy of a tensor,
// dequantised when stored quantised.
func (f *File) Float32(name string) ([]float32, error) {
	raw, typ, err := f.Blocks(name)
	if err != nil {
		return nil, err
	}
	t := f.tensors[name]
	out := make([]float32, t.Elements())
	if err := Dequantize(typ, raw, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}

// Close releases the mapping. Slices returned by Blocks and Raw for
// unquantised tensors become invalid.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	f.data = nil
	if f.mapping != nil {
		if err := f.mapping.Close(); err != nil {
			return fmt.Errorf("%s: unmap: %w", f.path, err)
		}
	}
	return nil
}
