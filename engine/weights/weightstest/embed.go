// Package weightstest holds test helpers that build weight files from
// fixtures (test-only: imported by _test.go files alone).
package weightstest

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// ExpandEmbedding writes dst: every tensor of the safetensors file encoder
// as stored, plus name, a [vocab, width] float32 token table that is zero
// but for the rows of the fixture embed ("ids" [n], "rows" [n, width]).
// The LLM fixtures keep only the rows their prompts use: a real-size
// vocabulary table would be tens of megabytes.
func ExpandEmbedding(encoder, embed, name string, vocab int, dst string) error {
	f, err := safetensors.Open(encoder)
	if err != nil {
		return err
	}
	defer f.Close()
	out := map[string]safetensors.Tensor{}
	for _, n := range f.Names() {
		raw, err := f.Raw(n)
		if err != nil {
			return err
		}
		info, _ := f.Info(n)
		out[n] = safetensors.Tensor{DType: info.DType, Shape: info.Shape, Data: raw}
	}
	e, err := safetensors.Open(embed)
	if err != nil {
		return err
	}
	defer e.Close()
	ids, err := e.Float32("ids")
	if err != nil {
		return err
	}
	rows, err := e.Float32("rows")
	if err != nil {
		return err
	}
	if len(ids) == 0 || len(rows)%len(ids) != 0 {
		return fmt.Errorf("%s: %d ids for %d row values", embed, len(ids), len(rows))
	}
	width := len(rows) / len(ids)
	table := make([]byte, 4*vocab*width)
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return fmt.Errorf("%s: id %g outside a vocabulary of %d", embed, id, vocab)
		}
		for j, v := range rows[i*width : (i+1)*width] {
			binary.LittleEndian.PutUint32(table[4*(int(id)*width+j):], math.Float32bits(v))
		}
	}
	out[name] = safetensors.Tensor{DType: tensor.F32, Shape: tensor.Shape{vocab, width}, Data: table}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return safetensors.Write(dst, out, nil)
}
