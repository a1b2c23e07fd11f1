package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// Tensor is one tensor to write: its dtype, shape and little-endian bytes.
type Tensor struct {
	DType tensor.DType
	Shape tensor.Shape
	Data  []byte
}

// Write creates (or truncates) path and writes tensors and metadata to it as
// a safetensors file. See Encode for the layout.
func Write(path string, tensors map[string]Tensor, metadata map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write safetensors: %w", err)
	}
	if err := Encode(f, tensors, metadata); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Encode writes a safetensors file to w. Tensors are stored in sorted name
// order, contiguously; the header is padded with spaces so that the data
// area starts at a multiple of 8 bytes. Metadata may be nil.
func Encode(w io.Writer, tensors map[string]Tensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for name, t := range tensors {
		if name == MetadataKey {
			return fmt.Errorf("tensor name %q is reserved", name)
		}
		if t.DType.Size() == 0 {
			return fmt.Errorf("tensor %q: invalid dtype %v", name, t.DType)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("tensor %q: negative dimension in shape %v", name, t.Shape)
			}
		}
		if want := t.Shape.NumElements() * t.DType.Size(); len(t.Data) != want {
			return fmt.Errorf("tensor %q: shape %v of %v needs %d bytes, got %d", name, t.Shape, t.DType, want, len(t.Data))
		}
		names = append(names, name)
	}
	sort.Strings(names)

	var hdr bytes.Buffer
	hdr.WriteByte('{')
	if metadata != nil {
		hdr.WriteString(`"` + MetadataKey + `":`)
		m, err := json.Marshal(metadata)
		if err != nil {
			return fmt.Errorf("encode metadata: %w", err)
		}
		hdr.Write(m)
	}
	var off int64
	for i, name := range names {
		t := tensors[name]
		if i > 0 || metadata != nil {
			hdr.WriteByte(',')
		}
		key, err := json.Marshal(name)
		if err != nil {
			return fmt.Errorf("encode name %q: %w", name, err)
		}
		hdr.Write(key)
		shape := t.Shape
		if shape == nil {
			shape = tensor.Shape{} // a scalar is written as [], never null
		}
		sh, err := json.Marshal([]int(shape))
		if err != nil {
			return fmt.Errorf("encode shape of %q: %w", name, err)
		}
		end := off + int64(len(t.Data))
		fmt.Fprintf(&hdr, `:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, t.DType.String(), sh, off, end)
		off = end
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(hdr.Len()))
	bw.Write(lenBuf[:])
	bw.Write(hdr.Bytes())
	for _, name := range names {
		bw.Write(tensors[name].Data)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write safetensors: %w", err)
	}
	return nil
}
