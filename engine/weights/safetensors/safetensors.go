// Package safetensors reads and writes the safetensors checkpoint format.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON header
// mapping each tensor name to {dtype, shape, data_offsets} (plus an optional
// "__metadata__" object of strings), then the raw little-endian tensor data.
// Offsets are relative to the start of the data area.
//
// Open validates the whole header before returning: sizes are bounded
// before anything is allocated, every tensor must lie inside the data area,
// tensors must not overlap, and shape times dtype size must equal the stored
// length. Tensor bytes are served zero-copy from a read-only memory mapping.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/internal/mapfile"
)

// MaxHeaderSize bounds the JSON header length accepted by Open (100 MiB),
// so a corrupt length field cannot make the reader allocate without limit.
const MaxHeaderSize = 100 << 20

// MetadataKey is the reserved header key that holds the string metadata.
const MetadataKey = "__metadata__"

// ErrFormat is matched (with errors.Is) by every error that reports a
// malformed or unsupported file, as opposed to an I/O failure.
var ErrFormat = errors.New("invalid safetensors file")

// Error reports a malformed file. Its message is one line: the file path
// (when known) and what is wrong.
type Error struct {
	Path string // file path, empty for in-memory data
	Msg  string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Is makes errors.Is(err, ErrFormat) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrFormat }

// TensorInfo describes one stored tensor.
type TensorInfo struct {
	Name  string
	DType tensor.DType
	Shape tensor.Shape
	// Size is the stored byte length (Shape.NumElements() * DType.Size()).
	Size int64
	// File is the path of the file that holds the tensor.
	File string
}

type entry struct {
	info       TensorInfo
	begin, end int64 // absolute offsets into data
}

// File is an open safetensors file. It implements weights.Source. Its
// methods may be called concurrently, but not concurrently with Close.
type File struct {
	path    string
	data    []byte        // whole file
	mapping *mapfile.Data // the file's mapping, nil for FromBytes
	closed  bool
	names   []string
	tensors map[string]*entry
	meta    map[string]string
}

// Open maps a safetensors file read-only and validates its header.
func Open(path string) (*File, error) {
	m, err := mapfile.Open(path, "safetensors file")
	if me := (*mapfile.Error)(nil); errors.As(err, &me) {
		return nil, &Error{Path: me.Path, Msg: me.Msg}
	} else if err != nil {
		return nil, err
	}
	sf, err := parse(m.Bytes, path)
	if err != nil {
		m.Close()
		return nil, err
	}
	sf.mapping = m
	return sf, nil
}

// FromBytes parses an in-memory safetensors file. The returned File aliases
// data, which must not be modified while the File is in use.
func FromBytes(data []byte) (*File, error) {
	return parse(data, "")
}

func checkHeaderLen(n uint64, size int64) error {
	if n > uint64(size-8) {
		return fmt.Errorf("header length %d exceeds file size %d", n, size)
	}
	if n > MaxHeaderSize {
		return fmt.Errorf("header length %d exceeds the %d byte limit", n, MaxHeaderSize)
	}
	if n < 2 {
		return fmt.Errorf("header length %d is too short for a JSON object", n)
	}
	return nil
}

// rawEntry is one header value as written; pointers detect missing fields.
type rawEntry struct {
	DType   *string  `json:"dtype"`
	Shape   *[]int64 `json:"shape"`
	Offsets *[]int64 `json:"data_offsets"`
}

func parse(data []byte, path string) (*File, error) {
	fail := func(format string, args ...any) error {
		return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	size := int64(len(data))
	if size < 8 {
		return nil, fail("file of %d bytes is too short for a safetensors header", size)
	}
	n := binary.LittleEndian.Uint64(data)
	if err := checkHeaderLen(n, size); err != nil {
		return nil, fail("%s", err.Error())
	}
	header := data[8 : 8+n]
	dataStart := 8 + int64(n)
	dataLen := size - dataStart
	if !utf8.Valid(header) {
		return nil, fail("header is not valid UTF-8")
	}

	sf := &File{path: path, data: data, tensors: map[string]*entry{}}
	dec := json.NewDecoder(bytes.NewReader(header))
	tok, err := dec.Token()
	if err != nil {
		return nil, fail("header is not valid JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fail("header is not a JSON object")
	}
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fail("header is not valid JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fail("header is not valid JSON: object key is not a string")
		}
		if name == MetadataKey {
			if seenMeta {
				return nil, fail("duplicate %q in header", MetadataKey)
			}
			seenMeta = true
			var meta map[string]string
			if err := dec.Decode(&meta); err != nil {
				return nil, fail("%s: %v", MetadataKey, jsonMsg(err))
			}
			sf.meta = meta
			continue
		}
		if _, dup := sf.tensors[name]; dup {
			return nil, fail("duplicate tensor name %q", name)
		}
		var msg json.RawMessage
		if err := dec.Decode(&msg); err != nil {
			return nil, fail("header is not valid JSON: %v", jsonMsg(err))
		}
		if len(msg) == 0 || msg[0] != '{' {
			return nil, fail("tensor %q: entry is not a JSON object", name)
		}
		var raw rawEntry
		if err := json.Unmarshal(msg, &raw); err != nil {
			return nil, fail("tensor %q: %v", name, jsonMsg(err))
		}
		e, err := checkEntry(name, &raw, dataLen)
		if err != nil {
			return nil, fail("tensor %q: %v", name, err)
		}
		e.begin += dataStart
		e.end += dataStart
		e.info.File = path
		sf.tensors[name] = e
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, fail("header is not valid JSON: %v", err)
	}
	if rest := bytes.TrimLeft(header[dec.InputOffset():], " \t\r\n"); len(rest) != 0 {
		return nil, fail("header has trailing data after the JSON object")
	}

	// No two tensors may share bytes.
	byBegin := make([]*entry, 0, len(sf.tensors))
	for _, e := range sf.tensors {
		byBegin = append(byBegin, e)
	}
	sort.Slice(byBegin, func(i, j int) bool {
		if byBegin[i].begin != byBegin[j].begin {
			return byBegin[i].begin < byBegin[j].begin
		}
		return byBegin[i].info.Name < byBegin[j].info.Name
	})
	for i := 1; i < len(byBegin); i++ {
		a, b := byBegin[i-1], byBegin[i]
		if b.begin < a.end {
			return nil, fail("tensors %q and %q overlap: data offsets [%d %d] and [%d %d]",
				a.info.Name, b.info.Name, a.begin-dataStart, a.end-dataStart, b.begin-dataStart, b.end-dataStart)
		}
	}

	sf.names = make([]string, 0, len(sf.tensors))
	for name := range sf.tensors {
		sf.names = append(sf.names, name)
	}
	sort.Strings(sf.names)
	return sf, nil
}

// jsonMsg shortens encoding/json errors to the part a user can act on.
func jsonMsg(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return "unexpected JSON " + te.Value
		}
		return fmt.Sprintf("%s: unexpected JSON %s", te.Field, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func checkEntry(name string, raw *rawEntry, dataLen int64) (*entry, error) {
	if raw.DType == nil {
		return nil, errors.New("missing dtype")
	}
	if raw.Shape == nil {
		return nil, errors.New("missing shape")
	}
	if raw.Offsets == nil {
		return nil, errors.New("missing data_offsets")
	}
	dt, err := tensor.ParseDType(*raw.DType)
	if err != nil {
		return nil, err
	}
	shape := make(tensor.Shape, len(*raw.Shape))
	elems := int64(1)
	for i, d := range *raw.Shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension %d in shape %v", d, *raw.Shape)
		}
		if d > math.MaxInt || (d != 0 && elems > math.MaxInt64/d) {
			return nil, fmt.Errorf("shape %v is too large", *raw.Shape)
		}
		elems *= d
		shape[i] = int(d)
	}
	es := int64(dt.Size())
	if elems > math.MaxInt64/es {
		return nil, fmt.Errorf("shape %v of %v is too large", *raw.Shape, dt)
	}
	nbytes := elems * es
	offs := *raw.Offsets
	if len(offs) != 2 {
		return nil, fmt.Errorf("data_offsets has %d values, want 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin {
		return nil, fmt.Errorf("invalid data offsets [%d %d]", begin, end)
	}
	if end > dataLen {
		return nil, fmt.Errorf("data offsets [%d %d] outside data area of %d bytes", begin, end, dataLen)
	}
	if end-begin != nbytes {
		return nil, fmt.Errorf("shape %v of %v needs %d bytes, data offsets [%d %d] hold %d",
			shape, dt, nbytes, begin, end, end-begin)
	}
	return &entry{
		info:  TensorInfo{Name: name, DType: dt, Shape: shape, Size: nbytes},
		begin: begin,
		end:   end,
	}, nil
}

// Path returns the file path given to Open (empty for FromBytes).
func (f *File) Path() string { return f.path }

// Names returns every tensor name, sorted. The caller must not modify it.
func (f *File) Names() []string { return f.names }

// Info describes a tensor; ok is false when the name is absent.
func (f *File) Info(name string) (TensorInfo, bool) {
	e, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	info := e.info
	info.Shape = info.Shape.Clone()
	return info, true
}

// Metadata returns the "__metadata__" strings of the header (nil if none).
func (f *File) Metadata() map[string]string { return f.meta }

// Raw returns the stored bytes of a tensor. The slice aliases the read-only
// mapping: never write to it, and do not use it after Close.
func (f *File) Raw(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("tensor %q: file is closed", name)
	}
	e, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return f.data[e.begin:e.end:e.end], nil
}

// Float32 returns a freshly allocated float32 copy of a tensor.
func (f *File) Float32(name string) ([]float32, error) {
	raw, err := f.Raw(name)
	if err != nil {
		return nil, err
	}
	e := f.tensors[name]
	out := make([]float32, e.info.Size/int64(e.info.DType.Size()))
	if err := tensor.ToFloat32(e.info.DType, raw, out); err != nil {
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
	f.data = nil
	if f.mapping != nil {
		if err := f.mapping.Close(); err != nil {
			return fmt.Errorf("%s: unmap: %w", f.path, err)
		}
	}
	return nil
}
