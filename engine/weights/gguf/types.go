package gguf

import "fmt"

// Type is a ggml tensor type, as numbered by ggml's enum ggml_type.
type Type uint32

// The ggml tensor types. Every type's block geometry is known, so that
// Open can check every tensor's size; Dequantize converts the types for
// which CanDequantize is true.
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
	MXFP4   Type = 39
	NVFP4   Type = 40
	Q1_0    Type = 41
	Q2_0    Type = 42
)

// typeInfo is each type's name, elements per block and bytes per block
// (the sizes of ggml-common.h's block structs).
var typeInfo = map[Type]struct {
	name        string
	block, size int
	dequant     bool
}{
	F32: {"F32", 1, 4, true}, F16: {"F16", 1, 2, true}, BF16: {"BF16", 1, 2, true},
	Q4_0: {"Q4_0", 32, 18, true}, Q4_1: {"Q4_1", 32, 20, true},
	Q5_0: {"Q5_0", 32, 22, true}, Q5_1: {"Q5_1", 32, 24, true},
	Q8_0: {"Q8_0", 32, 34, true}, Q8_1: {"Q8_1", 32, 36, false},
	Q2_K: {"Q2_K", 256, 84, true}, Q3_K: {"Q3_K", 256, 110, true},
	Q4_K: {"Q4_K", 256, 144, true}, Q5_K: {"Q5_K", 256, 176, true},
	Q6_K: {"Q6_K", 256, 210, true}, Q8_K: {"Q8_K", 256, 292, true},
	IQ2_XXS: {"IQ2_XXS", 256, 66, false}, IQ2_XS: {"IQ2_XS", 256, 74, false},
	IQ3_XXS: {"IQ3_XXS", 256, 98, false}, IQ1_S: {"IQ1_S", 256, 50, false},
	IQ4_NL: {"IQ4_NL", 32, 18, false}, IQ3_S: {"IQ3_S", 256, 110, false},
	IQ2_S: {"IQ2_S", 256, 82, false}, IQ4_XS: {"IQ4_XS", 256, 136, false},
	IQ1_M: {"IQ1_M", 256, 56, false},
	I8:    {"I8", 1, 1, false}, I16: {"I16", 1, 2, false}, I32: {"I32", 1, 4, false},
	I64: {"I64", 1, 8, false}, F64: {"F64", 1, 8, false},
	TQ1_0: {"TQ1_0", 256, 54, false}, TQ2_0: {"TQ2_0", 256, 66, false},
	MXFP4: {"MXFP4", 32, 17, false}, NVFP4: {"NVFP4", 64, 36, false},
	Q1_0: {"Q1_0", 128, 18, false}, Q2_0: {"Q2_0", 64, 18, false},
}

// Known reports whether t is a ggml type this package knows the block
// geometry of.
func (t Type) Known() bool {
	_, ok := typeInfo[t]
	return ok
}

// String returns ggml's name of the type ("Q4_K", "F16").
func (t Type) String() string {
	if ti, ok := typeInfo[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("ggml type %d", uint32(t))
}

// BlockSize returns the number of elements per block (1 for the plain
// types), or 0 for an unknown type.
func (t Type) BlockSize() int { return typeInfo[t].block }

// TypeSize returns the number of bytes per block, or 0 for an unknown type.
func (t Type) TypeSize() int { return typeInfo[t].size }

// Quantized reports whether t stores elements in blocks with scales
// (any type whose block holds more than one element).
func (t Type) Quantized() bool { return typeInfo[t].block > 1 }

// CanDequantize reports whether Dequantize converts t to float32.
func (t Type) CanDequantize() bool { return typeInfo[t].dequant }

// ParseType maps ggml's name of a type ("Q4_K") to the Type.
func ParseType(name string) (Type, error) {
	for t, ti := range typeInfo {
		if ti.name == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown ggml type %q", name)
}
