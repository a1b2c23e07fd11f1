package lora

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Spec names one LoRA file and the strengths it is applied with (ComfyUI's
// LoraLoader strength_model and strength_clip).
type Spec struct {
	// Path is the .safetensors file.
	Path string
	// Strength scales the change to the diffusion model (UNet).
	Strength float64
	// ClipStrength scales the change to the text encoders.
	ClipStrength float64
}

// patch is one adapter applied to (rows of) one tensor.
type patch struct {
	f          *file
	a          *adapter
	row0       int
	rows       int
	src0       int  // the first row of ΔW it takes
	srcRows    int  // the rows of ΔW (0: rows, or the whole tensor)
	bias       bool // the adapter's bias difference (diff_b), applied to a bias
	transposed bool // the tensor is the transpose of the layer's weight
	strength   float64
}

// patched is a Source whose targeted tensors read merged: float32, W plus
// every patch.
type patched struct {
	weights.Source
	patches map[string][]patch
	files   []*file
	// shared holds the ΔW of adapters that feed several targets (a fused
	// Flux layer crossing layouts) until each target has read its rows.
	mu     sync.Mutex
	shared map[*adapter]*sharedDelta
}

// sharedDelta is a ΔW computed once for several targets.
type sharedDelta struct {
	d    delta
	left int // targets still to read it
}

// delta returns pt's ΔW, computing an adapter that feeds several targets
// once and dropping it when the last has read it.
func (p *patched) delta(pt patch, numel int) (delta, error) {
	if pt.bias {
		// A bias difference applies at the strength alone, whatever the
		// weight's adapter (ComfyUI's "diff" patch on the bias).
		b, _, err := pt.f.tensor(pt.a, "diff_b")
		return delta{bias: b, scale: 1}, err
	}
	if pt.srcRows == 0 {
		return pt.f.compute(pt.a, numel)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.shared[pt.a]
	if s == nil {
		d, err := pt.f.compute(pt.a, numel)
		if err != nil {
			return delta{}, err
		}
		s = &sharedDelta{d: d}
		for _, ps := range p.patches {
			for _, q := range ps {
				if q.a == pt.a && q.srcRows > 0 && !q.bias {
					s.left++
				}
			}
		}
		p.shared[pt.a] = s
	}
	if s.left--; s.left <= 0 {
		delete(p.shared, pt.a)
	}
	return s.d, nil
}

// Apply opens the LoRA files of specs and returns src with them merged
// into the tensors they target, in order (several LoRAs stack). model
// names the model in messages ("SD1.x"). Every module of every file must
// target a layer of src: one that targets nothing is an error naming the
// key and the file (a LoRA for another family gets one line saying so).
// A strength of 0 leaves the tensors as stored. The returned Source owns
// src and the LoRA files: closing it closes them all.
func Apply(src weights.Source, model string, specs []Spec) (weights.Source, error) {
	if len(specs) == 0 {
		return src, nil
	}
	x := newIndex(src)
	p := &patched{Source: src, patches: map[string][]patch{}, shared: map[*adapter]*sharedDelta{}}
	fail := func(err error) (weights.Source, error) {
		for _, f := range p.files {
			f.src.Close()
		}
		return nil, err
	}
	for _, s := range specs {
		if math.IsNaN(s.Strength) || math.IsInf(s.Strength, 0) || math.IsNaN(s.ClipStrength) || math.IsInf(s.ClipStrength, 0) {
			return fail(fmt.Errorf("%s: LoRA strength %g:%g is not a finite number", s.Path, s.Strength, s.ClipStrength))
		}
		f, err := openFile(s.Path)
		if err != nil {
			return fail(err)
		}
		p.files = append(p.files, f)
		if fam, ctx := f.familyOf(); fam != "" && x.ctxWidth != 0 && ctx != 0 && ctx != x.ctxWidth {
			return fail(fmt.Errorf("%s: a LoRA for %s (its cross-attention takes %d-wide text features), not for this %s model (%d-wide)", s.Path, fam, ctx, model, x.ctxWidth))
		}
		var unmatched []string
		for _, a := range f.adapters {
			ts, ok := x.targets[a.module]
			if !ok {
				unmatched = append(unmatched, a.module)
				continue
			}
			for _, t := range ts {
				if err := x.checkShape(f, a, t); err != nil {
					return fail(err)
				}
				strength := s.Strength
				if t.clip {
					strength = s.ClipStrength
				}
				if strength == 0 {
					continue
				}
				pt := patch{f: f, a: a, row0: t.row0, rows: t.rows, src0: t.src0, srcRows: t.srcRows, transposed: t.transposed, strength: strength}
				if a.parts["diff"] != "" || a.kind != Diff {
					p.patches[t.weight] = append(p.patches[t.weight], pt)
				}
				if a.parts["diff_b"] != "" {
					if t.bias == "" {
						return fail(fmt.Errorf("%s: LoRA key %q: a bias difference for %q, which has no bias", s.Path, a.parts["diff_b"], t.weight))
					}
					pt.bias, pt.transposed = true, false
					p.patches[t.bias] = append(p.patches[t.bias], pt)
				}
			}
		}
		if len(unmatched) > 0 {
			return fail(x.unmatchedError(f, model, unmatched))
		}
	}
	return p, nil
}

// unmatchedError is the error for LoRA modules that target nothing: one
// line, naming the file, the first key and, when the names tell, the
// family the file is for.
func (x *index) unmatchedError(f *file, model string, unmatched []string) error {
	sort.Strings(unmatched)
	first := f.adapters[0].parts
	for _, a := range f.adapters {
		if a.module == unmatched[0] {
			first = a.parts
		}
	}
	var key string
	for _, role := range []string{"down", "w1a", "w1", "diff", "diff_b", "up", "alpha"} {
		if key = first[role]; key != "" {
			break
		}
	}
	what := fmt.Sprintf("LoRA key %q targets nothing in this %s model", key, model)
	if len(unmatched) > 1 {
		what = fmt.Sprintf("%d of its %d LoRA modules target nothing in this %s model, e.g. %q", len(unmatched), len(f.adapters), model, key)
	}
	hint := ""
	fam, _ := f.familyOf()
	te2 := strings.HasPrefix(unmatched[0], "lora_te2_") || strings.HasPrefix(unmatched[0], "text_encoder_2.")
	switch {
	case fam != "" && !strings.HasPrefix(model, fam):
		hint = fmt.Sprintf(" (the file looks like a LoRA for %s)", fam)
	case te2 && !containsSlot(x.encoders, "clip_g"):
		hint = " (a LoRA for SDXL's second text encoder; the model has none)"
	}
	return fmt.Errorf("%s: %s%s", f.path, what, hint)
}

func containsSlot(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

// checkShape checks, from stored shapes alone, that an adapter's ΔW has
// the target's size, so that a mismatch shows before the weights are read.
func (x *index) checkShape(f *file, a *adapter, t target) error {
	info, ok := x.src.Info(t.weight)
	if !ok {
		return fmt.Errorf("%s: LoRA module %q: target %q is missing", f.path, a.module, t.weight)
	}
	rows, numel := info.Shape[0], info.Shape.NumElements()
	if t.transposed {
		rows = info.Shape[1]
	}
	if t.rows > 0 {
		numel = numel / rows * t.rows
		rows = t.rows
	}
	if t.srcRows > 0 {
		numel = numel / rows * t.srcRows
		rows = t.srcRows
	}
	shape := func(role string) tensor.Shape {
		i, _ := f.src.Info(a.parts[role])
		return i.Shape
	}
	var out, n int
	switch {
	case a.kind == LoRA && a.parts["mid"] == "":
		up, down := shape("up"), shape("down")
		if len(up) < 2 || len(down) < 2 {
			return fmt.Errorf("%s: LoRA module %q: up %v / down %v are not matrices", f.path, a.module, up, down)
		}
		out, n = up[0], up[0]*(down.NumElements()/down[0])
	case a.kind == Diff && a.parts["diff"] != "":
		d := shape("diff")
		out, n = d[0], d.NumElements()
	default:
		return nil // checked when the weight is read
	}
	if out != rows || n != numel {
		part := ""
		if t.rows > 0 {
			part = fmt.Sprintf(" (it takes rows [%d, %d) of it: want %d×%d)", t.row0, t.row0+t.rows, rows, numel/max(rows, 1))
		}
		return fmt.Errorf("%s: LoRA module %q changes a %d×%d weight, but %q is %v%s", f.path, a.module, out, n/max(out, 1), t.weight, info.Shape, part)
	}
	return nil
}

// Info describes a tensor; a patched one reads as float32.
func (p *patched) Info(name string) (weights.TensorInfo, bool) {
	info, ok := p.Source.Info(name)
	if ok && len(p.patches[name]) > 0 {
		info.DType = tensor.F32
		info.Size = int64(4 * info.Shape.NumElements())
	}
	return info, ok
}

// Float32 returns a tensor with its patches merged.
func (p *patched) Float32(name string) ([]float32, error) {
	w, err := p.Source.Float32(name)
	if err != nil || len(p.patches[name]) == 0 {
		return w, err
	}
	info, _ := p.Source.Info(name)
	rowLen := 1
	if len(info.Shape) > 0 && info.Shape[0] > 0 {
		rowLen = info.Shape.NumElements() / info.Shape[0]
	}
	for _, pt := range p.patches[name] {
		dst := w
		if pt.rows > 0 {
			dst = w[pt.row0*rowLen : (pt.row0+pt.rows)*rowLen]
		}
		numel := len(dst)
		if pt.srcRows > 0 {
			numel = numel / pt.rows * pt.srcRows
		}
		if pt.bias {
			numel = -1
		}
		d, err := p.delta(pt, numel)
		if err != nil {
			return nil, err
		}
		src := d.w
		if pt.bias {
			src = d.bias
		}
		if pt.srcRows > 0 {
			// This target takes rows [src0, src0+rows) of ΔW.
			per := len(src) / pt.srcRows
			if len(src) != per*pt.srcRows || (pt.src0+pt.rows)*per > len(src) {
				return nil, fmt.Errorf("%s: %q: its ΔW has %d values, not %d rows", pt.f.path, pt.a.module, len(src), pt.srcRows)
			}
			src = src[pt.src0*per : (pt.src0+pt.rows)*per]
		}
		if pt.bias && len(src) != len(dst) {
			return nil, fmt.Errorf("%s: %q: bias difference has %d values, %q %d", pt.f.path, pt.a.parts["diff_b"], len(src), name, len(dst))
		}
		s := float32(pt.strength * d.scale)
		if pt.transposed && !pt.bias {
			// dst is [in, out], ΔW [out, in].
			out := info.Shape[1]
			in := len(dst) / out
			for o := range out {
				for i := range in {
					dst[i*out+o] += s * src[o*in+i]
				}
			}
			continue
		}
		for i, v := range src {
			dst[i] += s * v
		}
	}
	return w, nil
}

// Raw returns a patched tensor's float32 bytes, others as stored.
func (p *patched) Raw(name string) ([]byte, error) {
	if len(p.patches[name]) == 0 {
		return p.Source.Raw(name)
	}
	w, err := p.Float32(name)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out, nil
}

// Close closes the LoRA files and the model's source.
func (p *patched) Close() error {
	errs := []error{p.Source.Close()}
	for _, f := range p.files {
		errs = append(errs, f.src.Close())
	}
	p.files = nil
	return errors.Join(errs...)
}

// Stored returns the name a tensor has in its file (see weights.Model.StoredName).
func (p *patched) Stored(name string) (string, bool) {
	if v, ok := p.Source.(interface{ Stored(string) (string, bool) }); ok {
		return v.Stored(name)
	}
	return "", false
}

// Patched reports how many tensors of src the LoRAs change (0 when src
// is not a Source Apply returned).
func Patched(src weights.Source) int {
	if p, ok := src.(*patched); ok {
		return len(p.patches)
	}
	return 0
}
