package tensor

import (
	"fmt"
	"strings"
)

// Shape is a tensor shape in PyTorch order (outermost first), e.g. [N,C,H,W].
type Shape []int

// NumElements returns the product of the dimensions (1 for a scalar shape).
func (s Shape) NumElements() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Equal reports whether two shapes are identical.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// Clone returns a copy of the shape.
func (s Shape) Clone() Shape { return append(Shape(nil), s...) }

// String formats the shape as [a b c].
func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Strides returns contiguous row-major strides, in elements.
func (s Shape) Strides() []int {
	st := make([]int, len(s))
	acc := 1
	for i := len(s) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= s[i]
	}
	return st
}

// Host is a contiguous float32 tensor in host memory.
type Host struct {
	Shape Shape
	Data  []float32
}

// NewHost allocates a zeroed host tensor.
func NewHost(shape ...int) *Host {
	s := Shape(shape)
	return &Host{Shape: s.Clone(), Data: make([]float32, s.NumElements())}
}
