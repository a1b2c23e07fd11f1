package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
)

// MissingTensorsError lists every tensor a model asked for that was absent or
// had the wrong shape.
type MissingTensorsError struct {
	// Problems are one line each: `missing "x"` or `"x": shape [1 2], want [2 1]`.
	Problems []string
}

// Error summarises the problems (the first few, and a count).
func (e *MissingTensorsError) Error() string {
	const show = 4
	msg := strings.Join(e.Problems[:min(show, len(e.Problems))], "; ")
	if len(e.Problems) > show {
		msg += fmt.Sprintf("; and %d more", len(e.Problems)-show)
	}
	noun := "problems"
	if len(e.Problems) == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("%d tensor %s: %s", len(e.Problems), noun, msg)
}

type builderState struct {
	src      Source
	dev      backend.Device
	used     map[string]bool
	problems []string
	// random, when set, makes the builder synthesise every tensor instead of
	// reading src (benchmarks and tests of full-size architectures).
	random *rand.Rand
	// pool holds unit normals that large synthesised tensors are filled
	// from (drawing each of a 12-billion-parameter model's values would
	// take minutes).
	pool []float32
	// keepQuantized makes LinearWeight keep GGUF block-quantised weights
	// quantised on devices that can (KeepQuantized).
	keepQuantized bool
}

// poolSize is the number of unit normals large random tensors are drawn
// from; tensors up to this size get fresh draws.
const poolSize = 1 << 22

// Builder uploads a model's tensors from a Source to a Device under a name
// prefix. It never fails midway: it gathers every missing or misshaped tensor
// into one error (Err) and records which tensors were used (Unused).
type Builder struct {
	st     *builderState
	prefix string
}

// NewBuilder returns a Builder reading src and uploading to dev.
func NewBuilder(src Source, dev backend.Device) *Builder {
	return &Builder{st: &builderState{src: src, dev: dev, used: map[string]bool{}}}
}

// NewRandomBuilder returns a Builder that synthesises every requested tensor
// with seeded random values instead of reading a file: matrices and kernels
// are N(0, 1/fan_in) so activations keep their scale through deep stacks,
// 1-D tensors (norm scales, biases) are 1 + N(0, 0.01) for names ending in
// "weight" and N(0, 0.01) otherwise. For timing and finiteness checks of
// full-size architectures without their checkpoints.
func NewRandomBuilder(dev backend.Device, seed uint64) *Builder {
	return &Builder{st: &builderState{dev: dev, used: map[string]bool{}, random: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}}
}

func (st *builderState) synthesise(name string, shape []int) *backend.Tensor {
	n := tensor.Shape(shape).NumElements()
	v := make([]float32, n)
	if len(shape) == 1 {
		base := float32(0)
		if strings.HasSuffix(name, "weight") {
			base = 1
		}
		for i := range v {
			v[i] = base + 0.01*float32(st.random.NormFloat64())
		}
	} else {
		fanIn := n / shape[0]
		scale := 1 / math.Sqrt(float64(max(fanIn, 1)))
		if n <= poolSize {
			for i := range v {
				v[i] = float32(st.random.NormFloat64() * scale)
			}
		} else {
			st.fillFromPool(v, float32(scale))
		}
	}
	return st.dev.Upload(v, shape...)
}

// fillFromPool fills v with scale·pool[(off + i·stride) mod poolSize] for a
// random offset and odd stride per tensor: normal values in an order no
// matmul structure lines up with.
func (st *builderState) fillFromPool(v []float32, scale float32) {
	if st.pool == nil {
		st.pool = make([]float32, poolSize)
		for i := range st.pool {
			st.pool[i] = float32(st.random.NormFloat64())
		}
	}
	off, stride := st.random.IntN(poolSize), 2*st.random.IntN(poolSize/2)+1
	for i := range v {
		v[i] = scale * st.pool[(off+i*stride)&(poolSize-1)]
	}
}

// Sub returns a Builder whose names are prefixed by name + ".".
// An empty name is b itself (a component stored without a prefix, such
// as BFL's bare transformer names).
func (b *Builder) Sub(name string) *Builder {
	if name == "" {
		return b
	}
	return &Builder{st: b.st, prefix: b.prefix + name + "."}
}

// Subf is Sub with a formatted name.
func (b *Builder) Subf(format string, args ...any) *Builder {
	return b.Sub(fmt.Sprintf(format, args...))
}

// Prefix returns the builder's full name prefix.
func (b *Builder) Prefix() string { return b.prefix }

// Has reports whether the tensor exists.
func (b *Builder) Has(name string) bool {
	if b.st.random != nil {
		return false
	}
	_, ok := b.st.src.Info(b.prefix + name)
	return ok
}

// Shape returns a tensor's stored shape.
func (b *Builder) Shape(name string) (tensor.Shape, bool) {
	if b.st.random != nil {
		return nil, false
	}
	info, ok := b.st.src.Info(b.prefix + name)
	return info.Shape, ok
}

func squeeze(s tensor.Shape) tensor.Shape {
	out := tensor.Shape{}
	for _, d := range s {
		if d != 1 {
			out = append(out, d)
		}
	}
	return out
}

// Tensor uploads the named tensor, checking its shape. A stored shape that
// differs only by size-1 dimensions (a [C,C,1,1] conv weight used as a [C,C]
// linear weight) is accepted and viewed with the requested shape. On a
// problem it records it and returns nil.
func (b *Builder) Tensor(name string, shape ...int) *backend.Tensor {
	full := b.prefix + name
	if b.st.random != nil {
		b.st.used[full] = true
		return b.st.synthesise(full, shape)
	}
	info, ok := b.st.src.Info(full)
	if !ok {
		b.st.problems = append(b.st.problems, fmt.Sprintf("missing %q", full))
		return nil
	}
	b.st.used[full] = true
	want := tensor.Shape(shape)
	if !info.Shape.Equal(want) && !squeeze(info.Shape).Equal(squeeze(want)) {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: shape %v, want %v", full, info.Shape, want))
		return nil
	}
	raw, dt, err := b.st.read(full, info)
	if err != nil {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
		return nil
	}
	t, err := b.st.dev.UploadRaw(raw, dt, shape...)
	if err != nil {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
		return nil
	}
	return t
}

// KeepQuantized makes LinearWeight keep a weight that a GGUF file stores
// block-quantised (Q8_0, Q4_K, ...) as stored on a device that can
// dequantise inside its matmul (backend.QuantizedUploader: the CPU
// backend), instead of dequantising it to float32 at load. Off by default:
// a weight kept quantised may only be used by Linear and LinearAdd, so a
// loader turns it on only where every LinearWeight goes there.
func (b *Builder) KeepQuantized(on bool) { b.st.keepQuantized = on }

// LinearWeight is Tensor for a linear layer's weight [out, in]. With
// KeepQuantized on, a device that can keep it quantised and a GGUF tensor
// stored block-quantised in rows of in elements, the weight is uploaded
// as its blocks (backend.QuantizedUploader), to be dequantised inside the
// matmul; otherwise it is Tensor(name, out, in).
func (b *Builder) LinearWeight(name string, out, in int) *backend.Tensor {
	if b.st.keepQuantized && b.st.random == nil {
		up, okDev := b.st.dev.(backend.QuantizedUploader)
		full := b.prefix + name
		if info, ok := b.st.src.Info(full); okDev && ok && info.Shape.Equal(tensor.Shape{out, in}) {
			if q, ok := quantizedBlocks(b.st.src, full); ok && q.Type.CanDequantize() && q.RowLen == int64(in) {
				typ := q.Type
				t, err := up.UploadQuantized(backend.QuantizedWeight{
					Type: typ.String(), Blocks: q.Blocks, RowBytes: in / typ.BlockSize() * typ.TypeSize(),
					Dequantize: func(src []byte, dst []float32) error { return gguf.Dequantize(typ, src, dst) },
				}, out, in)
				b.st.used[full] = true
				if err != nil {
					b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
					return nil
				}
				return t
			}
		}
	}
	return b.Tensor(name, out, in)
}

// Optional uploads the tensor when present and returns nil otherwise.
func (b *Builder) Optional(name string, shape ...int) *backend.Tensor {
	if !b.Has(name) {
		return nil
	}
	return b.Tensor(name, shape...)
}

// Err returns a *MissingTensorsError when any tensor was missing or misshaped.
func (b *Builder) Err() error {
	if len(b.st.problems) == 0 {
		return nil
	}
	return &MissingTensorsError{Problems: slices.Clone(b.st.problems)}
}

// Unused returns the names under prefix that no Tensor call used, sorted.
func (b *Builder) Unused(prefix string) []string {
	var out []string
	if b.st.src == nil {
		return nil
	}
	for _, n := range b.st.src.Names() {
		if strings.HasPrefix(n, prefix) && !b.st.used[n] && !isScaledFP8Marker(n) {
			out = append(out, n)
		}
	}
	return out
}

// isScaledFP8Marker reports whether name is the "scaled_fp8" tensor ComfyUI
// writes at the root of a scaled fp8 model (its dtype names the weights'
// fp8 format): metadata, not a weight.
func isScaledFP8Marker(name string) bool {
	return name == "scaled_fp8" || strings.HasSuffix(name, ".scaled_fp8")
}

// Split uploads the named tensor of shape [parts·shape[0], shape[1:]...] as
// parts tensors of shape, cut along the first dimension (a fused q/k/v
// projection, such as OpenCLIP's in_proj_weight). The parts are contiguous
// in the stored tensor, so they are cut from its bytes before upload.
func (b *Builder) Split(name string, parts int, shape ...int) []*backend.Tensor {
	full := b.prefix + name
	out := make([]*backend.Tensor, parts)
	if b.st.random != nil {
		b.st.used[full] = true
		for i := range out {
			out[i] = b.st.synthesise(full, shape)
		}
		return out
	}
	want := tensor.Shape(append([]int{parts * shape[0]}, shape[1:]...))
	info, ok := b.st.src.Info(full)
	if !ok {
		b.st.problems = append(b.st.problems, fmt.Sprintf("missing %q", full))
		return out
	}
	b.st.used[full] = true
	if !info.Shape.Equal(want) {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: shape %v, want %v", full, info.Shape, want))
		return out
	}
	raw, dt, err := b.st.read(full, info)
	if err != nil {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
		return out
	}
	size := len(raw) / parts
	for i := range out {
		var part []byte
		if raw != nil {
			part = raw[i*size : (i+1)*size]
		}
		t, err := b.st.dev.UploadRaw(part, dt, shape...)
		if err != nil {
			b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
			return out
		}
		out[i] = t
	}
	return out
}

// read returns a tensor's stored bytes and type. A weight quantised as
// ComfyUI's scaled fp8 files store it — an fp8 "X.weight" beside a scalar
// "X.scale_weight" — comes back dequantised to float32, weight·scale, as
// ComfyUI's scaled_fp8 ops compute it; the scale (and the "X.scale_input"
// its fp8 matmul path would use) count as used.
func (st *builderState) read(full string, info TensorInfo) ([]byte, tensor.DType, error) {
	raw, err := st.src.Raw(full)
	if err != nil {
		return nil, 0, err
	}
	base, ok := strings.CutSuffix(full, ".weight")
	if !ok {
		return raw, info.DType, nil
	}
	si, ok := st.src.Info(base + ".scale_weight")
	if !ok {
		return raw, info.DType, nil
	}
	st.used[base+".scale_weight"] = true
	if _, ok := st.src.Info(base + ".scale_input"); ok {
		st.used[base+".scale_input"] = true
	}
	if si.Shape.NumElements() != 1 {
		return nil, 0, fmt.Errorf("scale_weight has shape %v, want a scalar (ComfyUI's scaled fp8)", si.Shape)
	}
	if raw == nil { // a key list: shapes only
		return nil, tensor.F32, nil
	}
	scale, err := st.src.Float32(base + ".scale_weight")
	if err != nil {
		return nil, 0, err
	}
	w := make([]float32, info.Shape.NumElements())
	if err := tensor.ToFloat32(info.DType, raw, w); err != nil {
		return nil, 0, err
	}
	out := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v*scale[0]))
	}
	return out, tensor.F32, nil
}

// Claim marks a tensor the model does not read (transformers'
// position_ids, OpenCLIP's logit_scale) as used, when present, so that it
// does not count among Unused; it uploads nothing.
func (b *Builder) Claim(name string) {
	if b.Has(name) {
		b.st.used[b.prefix+name] = true
	}
}

// Select uploads one index along axis of the named tensor, stored with
// shape: the result has shape with that axis removed. It is cut from the
// stored bytes before upload, so only the selected part reaches the
// device (the last temporal slice of a causal 3-D convolution kernel,
// which is all that touches a single frame).
func (b *Builder) Select(name string, axis, index int, shape ...int) *backend.Tensor {
	full := b.prefix + name
	if axis < 0 || axis >= len(shape) || index < 0 || index >= shape[axis] {
		panic(fmt.Sprintf("weights: select index %d of axis %d of %v", index, axis, shape))
	}
	out := slices.Delete(slices.Clone(shape), axis, axis+1)
	if b.st.random != nil {
		b.st.used[full] = true
		return b.st.synthesise(full, out)
	}
	info, ok := b.st.src.Info(full)
	if !ok {
		b.st.problems = append(b.st.problems, fmt.Sprintf("missing %q", full))
		return nil
	}
	b.st.used[full] = true
	if !info.Shape.Equal(tensor.Shape(shape)) {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: shape %v, want %v", full, info.Shape, tensor.Shape(shape)))
		return nil
	}
	raw, dt, err := b.st.read(full, info)
	if err != nil {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
		return nil
	}
	var part []byte
	if raw != nil { // nil: a key list, shapes only
		es := dt.Size()
		if es == 0 || len(raw) != es*info.Shape.NumElements() {
			b.st.problems = append(b.st.problems, fmt.Sprintf("%q: cannot select from %v data", full, dt))
			return nil
		}
		outer := tensor.Shape(shape[:axis]).NumElements()
		inner := tensor.Shape(shape[axis+1:]).NumElements() * es
		part = make([]byte, 0, outer*inner)
		for o := range outer {
			at := (o*shape[axis] + index) * inner
			part = append(part, raw[at:at+inner]...)
		}
	}
	t, err := b.st.dev.UploadRaw(part, dt, out...)
	if err != nil {
		b.st.problems = append(b.st.problems, fmt.Sprintf("%q: %v", full, err))
		return nil
	}
	return t
}
