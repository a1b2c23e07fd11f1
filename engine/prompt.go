package engine

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
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

// EncodePrompt runs the text encoder. Prompts longer than 75 tokens are
// split into chunks of 75 (each wrapped in start/end tokens and padded to
// 77), encoded separately and concatenated, as ComfyUI does; clipSkip
// selects the layer (1 = last).
func (m *Model) EncodePrompt(ctx context.Context, text string, clipSkip int) (*Conditioning, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.encodePrompt(ctx, text, clipSkip)
}

func (m *Model) encodePrompt(ctx context.Context, text string, clipSkip int) (*Conditioning, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	chunks := m.tok.Chunks77(text)
	out, err := m.text.Forward(m.dev, chunks, clipSkip)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	// [chunks, 77, D] -> [1, 77·chunks, D]: chunks are consecutive in memory.
	width := out.Shape[2]
	return &Conditioning{
		Prompt: text,
		Tokens: len(m.tok.Encode(text)) - 2,
		Chunks: len(chunks),
		t:      out.Reshape(1, len(chunks)*out.Shape[1], width),
	}, nil
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
