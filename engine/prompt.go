package engine

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
)

// Tokenize returns the CLIP token ids of text with start and end tokens,
// untruncated.
func (m *Model) Tokenize(text string) []int { return m.tok.Encode(text) }

// Conditioning is an encoded prompt: the text encoder's hidden states
// [1, 77·chunks, width] on the model's device.
type Conditioning struct {
	Prompt string
	// Tokens is the number of prompt tokens (without start/end tokens).
	Tokens int
	// Chunks is the number of 75-token chunks the prompt was split into.
	Chunks int
	t      *backend.Tensor
}

// Tensor returns the hidden states [1, 77·Chunks, width].
func (c *Conditioning) Tensor() *backend.Tensor { return c.t }

// Values downloads the hidden states to the host.
func (c *Conditioning) Values(dev backend.Device) ([]float32, error) { return dev.Download(c.t) }

// EncodePrompt runs the text encoder, the way ComfyUI does: "(text:1.3)"
// and "(text)" weights (tokenizer.ParseWeights) move weighted tokens' hidden
// states away from the empty prompt's; prompts longer than 75 tokens are
// split into windows of 75 (each wrapped in start/end tokens and padded to
// 77), encoded separately and concatenated; clipSkip selects the layer (1 =
// last).
func (m *Model) EncodePrompt(ctx context.Context, text string, clipSkip int) (*Conditioning, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.encodePrompt(ctx, text, clipSkip)
}

func (m *Model) encodePrompt(ctx context.Context, text string, clipSkip int) (*Conditioning, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	chunks, weights := m.tok.WeightedChunks(text, m.tok.EOS())
	out, err := m.text.Forward(m.dev, chunks, clipSkip)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	if hasWeights(weights) {
		if out, err = m.applyWeights(out, weights, clipSkip); err != nil {
			return nil, fmt.Errorf("encode prompt: %w", err)
		}
	}
	// [chunks, 77, D] -> [1, 77·chunks, D]: chunks are consecutive in memory.
	width := out.Shape[2]
	tokens := 0
	for _, seg := range tokenizer.ParseWeights(text) {
		tokens += len(m.tok.Encode(seg.Text)) - 2
	}
	return &Conditioning{
		Prompt: text,
		Tokens: tokens,
		Chunks: len(chunks),
		t:      out.Reshape(1, len(chunks)*out.Shape[1], width),
	}, nil
}

func hasWeights(weights [][]float64) bool {
	for _, row := range weights {
		for _, w := range row {
			if w != 1 {
				return true
			}
		}
	}
	return false
}

// applyWeights applies prompt weights the way ComfyUI does: each weighted
// token's hidden state moves away from the empty prompt's hidden state at
// the same position, z = (z − z_empty)·w + z_empty.
func (m *Model) applyWeights(out *backend.Tensor, weights [][]float64, clipSkip int) (*backend.Tensor, error) {
	empty, err := m.text.Forward(m.dev, [][]int{m.tok.Encode77("")}, clipSkip)
	if err != nil {
		return nil, err
	}
	z, err := m.dev.Download(out)
	if err != nil {
		return nil, err
	}
	ze, err := m.dev.Download(empty)
	if err != nil {
		return nil, err
	}
	n, width := out.Shape[1], out.Shape[2]
	for k, row := range weights {
		for j, w := range row {
			if w == 1 {
				continue
			}
			zk := z[(k*n+j)*width : (k*n+j+1)*width]
			e := ze[j*width : (j+1)*width]
			for d := range zk {
				zk[d] = (zk[d]-e[d])*float32(w) + e[d]
			}
		}
	}
	return m.dev.Upload(z, out.Shape...), nil
}

// repeatTo repeats a [1, T, D] context along T to length n (a multiple of
// T), as ComfyUI does when batching prompts of different chunk counts.
func repeatTo(dev backend.Device, t *backend.Tensor, n int) *backend.Tensor {
	if t.Shape[1] == n {
		return t
	}
	parts := make([]*backend.Tensor, n/t.Shape[1])
	for i := range parts {
		parts[i] = t
	}
	out := dev.Alloc(1, n, t.Shape[2])
	dev.Concat(out, 1, parts...)
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
