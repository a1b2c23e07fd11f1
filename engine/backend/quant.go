package backend

// QuantizedWeight is a linear layer's weight [out, in] kept as stored in a
// block-quantised file (a GGUF Q8_0 or Q4_K tensor): the rows' blocks one
// row after the other, and the function that dequantises whole rows. The
// backend needs no knowledge of the format.
type QuantizedWeight struct {
	// Type names the format for messages ("Q4_K").
	Type string
	// Blocks holds out rows of RowBytes bytes each; it may alias a
	// read-only file mapping, which must outlive the tensor.
	Blocks   []byte
	RowBytes int
	// Dequantize converts whole rows of blocks (a multiple of RowBytes
	// bytes) to float32 (in values per row), exactly as a load-time
	// dequantisation would.
	Dequantize func(src []byte, dst []float32) error
}

// QuantizedUploader is implemented by devices that can keep a linear
// layer's weight block-quantised and dequantise it inside Linear (and
// LinearAdd): the CPU backend, tile by tile. A tensor it returns may only
// be passed as Linear's or LinearAdd's w; every other op refuses it.
type QuantizedUploader interface {
	// UploadQuantized wraps q as a weight tensor of shape [out, in].
	UploadQuantized(q QuantizedWeight, out, in int) (*Tensor, error)
}
