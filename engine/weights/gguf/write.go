package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// KeyValue is one metadata entry for Encode.
type KeyValue struct {
	Key   string
	Value Value
}

// WriteTensor is one tensor for Encode: Dims in ggml order (ne[0]
// first) and Data, its stored bytes.
type WriteTensor struct {
	Name string
	Type Type
	Dims []int64
	Data []byte
}

// Encode writes a GGUF version 3 file: the metadata in the given order,
// then the tensors in the given order, each at the next multiple of the
// alignment ("general.alignment" when kv holds it as a uint32, else 32).
// For tests, fixtures and tools.
func Encode(w io.Writer, kv []KeyValue, tensors []WriteTensor) error {
	align := int64(DefaultAlignment)
	for _, e := range kv {
		if a, ok := e.Value.V.(uint32); ok && e.Key == "general.alignment" && a != 0 {
			align = int64(a)
		}
	}
	bw := bufio.NewWriter(w)
	var pos int64
	put := func(b []byte) {
		n, _ := bw.Write(b)
		pos += int64(n)
	}
	le := binary.LittleEndian
	putU32 := func(v uint32) { put(le.AppendUint32(nil, v)) }
	putU64 := func(v uint64) { put(le.AppendUint64(nil, v)) }
	putStr := func(s string) { putU64(uint64(len(s))); put([]byte(s)) }
	put([]byte(Magic))
	putU32(3)
	putU64(uint64(len(tensors)))
	putU64(uint64(len(kv)))
	putScalar := func(t ValueType, v any) error {
		ok := true
		switch t {
		case TypeUint8:
			var x uint8
			x, ok = v.(uint8)
			put([]byte{x})
		case TypeInt8:
			var x int8
			x, ok = v.(int8)
			put([]byte{byte(x)})
		case TypeUint16:
			var x uint16
			x, ok = v.(uint16)
			put(le.AppendUint16(nil, x))
		case TypeInt16:
			var x int16
			x, ok = v.(int16)
			put(le.AppendUint16(nil, uint16(x)))
		case TypeUint32:
			var x uint32
			x, ok = v.(uint32)
			putU32(x)
		case TypeInt32:
			var x int32
			x, ok = v.(int32)
			putU32(uint32(x))
		case TypeFloat32:
			var x float32
			x, ok = v.(float32)
			putU32(math.Float32bits(x))
		case TypeBool:
			var x bool
			x, ok = v.(bool)
			b := byte(0)
			if x {
				b = 1
			}
			put([]byte{b})
		case TypeString:
			var x string
			x, ok = v.(string)
			putStr(x)
		case TypeUint64:
			var x uint64
			x, ok = v.(uint64)
			putU64(x)
		case TypeInt64:
			var x int64
			x, ok = v.(int64)
			putU64(uint64(x))
		case TypeFloat64:
			var x float64
			x, ok = v.(float64)
			putU64(math.Float64bits(x))
		default:
			return fmt.Errorf("cannot write value type %d", t)
		}
		if !ok {
			return fmt.Errorf("value %v (%T) is not of value type %d", v, v, t)
		}
		return nil
	}
	for _, e := range kv {
		putStr(e.Key)
		putU32(uint32(e.Value.Type))
		if e.Value.Type == TypeArray {
			arr, ok := e.Value.V.(Array)
			if !ok {
				return fmt.Errorf("metadata %q: value %T is not an Array", e.Key, e.Value.V)
			}
			putU32(uint32(arr.Elem))
			putU64(uint64(len(arr.Values)))
			for _, v := range arr.Values {
				if err := putScalar(arr.Elem, v); err != nil {
					return fmt.Errorf("metadata %q: %w", e.Key, err)
				}
			}
			continue
		}
		if err := putScalar(e.Value.Type, e.Value.V); err != nil {
			return fmt.Errorf("metadata %q: %w", e.Key, err)
		}
	}
	padded := func(n int64) int64 { return (n + align - 1) / align * align }
	var off int64
	for _, t := range tensors {
		putStr(t.Name)
		putU32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			putU64(uint64(d))
		}
		putU32(uint32(t.Type))
		putU64(uint64(off))
		off = padded(off + int64(len(t.Data)))
	}
	zeros := make([]byte, align)
	put(zeros[:padded(pos)-pos])
	for _, t := range tensors {
		put(t.Data)
		put(zeros[:padded(int64(len(t.Data)))-int64(len(t.Data))])
	}
	return bw.Flush()
}
