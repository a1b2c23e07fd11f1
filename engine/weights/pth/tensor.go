package pth

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// storageType is one of torch's typed storages as a pickle names it
// (torch.FloatStorage): its element size and the engine dtype it is read
// as (F64 is narrowed to F32; types the engine has no dtype for are
// Invalid and refused when a tensor uses them).
type storageType struct {
	size int
	dt   tensor.DType
	f64  bool
}

var storageTypes = map[string]storageType{
	"FloatStorage":         {4, tensor.F32, false},
	"HalfStorage":          {2, tensor.F16, false},
	"BFloat16Storage":      {2, tensor.BF16, false},
	"DoubleStorage":        {8, tensor.F32, true},
	"LongStorage":          {8, tensor.I64, false},
	"IntStorage":           {4, tensor.I32, false},
	"ByteStorage":          {1, tensor.U8, false},
	"Float8_e4m3fnStorage": {1, tensor.F8E4M3, false},
	"Float8_e5m2Storage":   {1, tensor.F8E5M2, false},
	"ShortStorage":         {2, tensor.Invalid, false},
	"CharStorage":          {1, tensor.Invalid, false},
	"BoolStorage":          {1, tensor.Invalid, false},
}

// storage is one torch storage: a run of elements in the archive
// (data/<key>) or after the pickles (legacy format).
type storage struct {
	typeName string
	typ      storageType
	key      string
	numel    int64
	data     []byte // numel·size bytes, set once the container is read
}

// tensorRef is a tensor as _rebuild_tensor_v2 describes it: a strided
// view of a storage.
type tensorRef struct {
	st     *storage
	offset int64
	shape  []int
	stride []int64
}

// maxDim bounds every size, stride and offset the pickle declares, so
// that bounds arithmetic cannot overflow.
const maxDim = 1 << 40

// newStorage checks a persistent id ('storage', type, key, location,
// numel[, view_metadata]).
func newStorage(id pyTuple, legacy bool) (*storage, error) {
	want := 5
	if legacy {
		want = 6
	}
	if len(id) != want {
		return nil, fmt.Errorf("a persistent id of %d items, want %d", len(id), want)
	}
	if s, ok := id[0].(string); !ok || s != "storage" {
		return nil, fmt.Errorf("a persistent id of kind %v, want storage", id[0])
	}
	g, ok := id[1].(pyGlobal)
	if !ok || g.module != "torch" {
		return nil, fmt.Errorf("a storage of type %s", typeName(id[1]))
	}
	typ, ok := storageTypes[g.name]
	if !ok {
		return nil, fmt.Errorf("a storage of type %s", g)
	}
	key, ok := id[2].(string)
	if !ok {
		return nil, fmt.Errorf("a storage key of type %s", typeName(id[2]))
	}
	n, ok := id[4].(int64)
	if !ok || n < 0 || n > maxDim {
		return nil, fmt.Errorf("storage %s: %v elements", key, id[4])
	}
	if legacy && id[5] != nil {
		return nil, fmt.Errorf("storage %s is a view of another storage (torch before 1.0), which is not supported", key)
	}
	return &storage{typeName: g.String(), typ: typ, key: key, numel: n}, nil
}

// attach sets the storage's bytes, which must hold at least its elements.
func (s *storage) attach(b []byte) error {
	need := s.numel * int64(s.typ.size)
	if int64(len(b)) < need {
		return fmt.Errorf("storage %s: %d bytes, want %d (%d elements of %s)", s.key, len(b), need, s.numel, s.typeName)
	}
	s.data = b[:need:need]
	return nil
}

func asInts(v any, what string) ([]int64, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("tensor %s of type %s, want a tuple", what, typeName(v))
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 || n > maxDim {
			return nil, fmt.Errorf("tensor %s %v", what, []any(t))
		}
		out[i] = n
	}
	return out, nil
}

// rebuildTensor is torch._utils._rebuild_tensor(_v2)(storage,
// storage_offset, size, stride, ...): it checks that the view stays inside
// the storage.
func rebuildTensor(a pyTuple, v2 bool) (any, error) {
	if len(a) < 4 || (!v2 && len(a) != 4) || len(a) > 7 {
		return nil, fmt.Errorf("_rebuild_tensor of %d arguments", len(a))
	}
	st, ok := a[0].(*storage)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor of a %s, not a storage", typeName(a[0]))
	}
	off, ok := a[1].(int64)
	if !ok || off < 0 || off > maxDim {
		return nil, fmt.Errorf("tensor storage offset %v", a[1])
	}
	size, err := asInts(a[2], "size")
	if err != nil {
		return nil, err
	}
	stride, err := asInts(a[3], "stride")
	if err != nil {
		return nil, err
	}
	if len(size) != len(stride) || len(size) > 16 {
		return nil, fmt.Errorf("tensor size %v with stride %v", size, stride)
	}
	numel, last := int64(1), off
	for i := range size {
		if numel = mulCap(numel, size[i]); numel > maxDim {
			return nil, fmt.Errorf("tensor size %v is too large", size)
		}
		if size[i] > 0 {
			last += mulCap(size[i]-1, stride[i])
		}
	}
	if numel > 0 && last >= st.numel {
		return nil, fmt.Errorf("tensor (offset %d, size %v, stride %v) outside its storage %s of %d elements", off, size, stride, st.key, st.numel)
	}
	if st.typ.dt == tensor.Invalid {
		return nil, fmt.Errorf("a tensor of %s, which darkroom has no dtype for", st.typeName)
	}
	shape := make([]int, len(size))
	for i, s := range size {
		shape[i] = int(s)
	}
	return &tensorRef{st: st, offset: off, shape: shape, stride: stride}, nil
}

// mulCap multiplies non-negative a and b, saturating past maxDim² so
// that bounds checks stay correct without overflow.
func mulCap(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/4/b {
		return math.MaxInt64 / 4
	}
	return a * b
}

// contiguous reports whether the view is the storage's elements in
// row-major order (strides of size-1 dimensions do not matter).
func (t *tensorRef) contiguous() bool {
	want := int64(1)
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.shape[i] != 1 && t.stride[i] != want {
			return false
		}
		want *= int64(t.shape[i])
	}
	return true
}

func (t *tensorRef) numel() int {
	return tensor.Shape(t.shape).NumElements()
}

// bytes returns the tensor's elements, row-major, little-endian, in the
// dtype Info reports: a slice of the storage when the view is contiguous
// and needs no conversion, else a fresh copy.
func (t *tensorRef) bytes() []byte {
	es := t.st.typ.size
	n := t.numel()
	var raw []byte
	if t.contiguous() {
		raw = t.st.data[t.offset*int64(es) : (t.offset+int64(n))*int64(es)]
	} else {
		raw = make([]byte, n*es)
		idx := make([]int, len(t.shape))
		for i := range n {
			src := t.offset
			for d, k := range idx {
				src += int64(k) * t.stride[d]
			}
			copy(raw[i*es:(i+1)*es], t.st.data[src*int64(es):(src+1)*int64(es)])
			for d := len(idx) - 1; d >= 0; d-- {
				if idx[d]++; idx[d] < t.shape[d] {
					break
				}
				idx[d] = 0
			}
		}
	}
	if !t.st.typ.f64 {
		return raw
	}
	out := make([]byte, 4*n)
	for i := range n {
		var bits uint64
		for j := 7; j >= 0; j-- {
			bits = bits<<8 | uint64(raw[8*i+j])
		}
		f := math.Float32bits(float32(math.Float64frombits(bits)))
		out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(f), byte(f>>8), byte(f>>16), byte(f>>24)
	}
	return out
}
