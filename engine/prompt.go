package engine

import (
	"context"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/family"
)

// Tokenize returns the first text encoder's token ids of text with start
// and end tokens, untruncated.
func (m *Model) Tokenize(text string) []int { return m.c.Text.Tokenize(text) }

// Conditioning is an encoded prompt on the model's device: the text
// encoders' context [1, T, width] and, for families that have them, a
// pooled vector, an attention mask and family-specific extras.
type Conditioning struct {
	Prompt string
	// Tokens is the number of prompt tokens (without start/end tokens).
	Tokens int
	// Chunks is the number of windows the prompt was split into.
	Chunks int
	c      *family.Cond
}

// Tensor returns the context [1, T, width] (T = 77·Chunks for CLIP).
func (c *Conditioning) Tensor() *backend.Tensor { return c.c.Context }

// Values downloads the context to the host.
func (c *Conditioning) Values(dev backend.Device) ([]float32, error) {
	return dev.Download(c.c.Context)
}

// EncodePrompt runs the family's text conditioner the way ComfyUI does it
// for that family (for CLIP: "(text:1.3)" and "(text)" weights, 75-token
// windows); clipSkip selects the CLIP layer (1 = last).
func (m *Model) EncodePrompt(ctx context.Context, text string, clipSkip int) (*Conditioning, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.encodePrompt(ctx, text, family.PromptOptions{ClipSkip: clipSkip})
}

// PromptOptions are the settings of prompt encoding (clip skip, the
// convention whose prompt handling is reproduced).
type PromptOptions = family.PromptOptions

// EncodePromptWith is EncodePrompt with every option, as Generate encodes:
// under ConventionDiffusers* the prompt is encoded as a diffusers pipeline
// does (no weighting syntax, one window).
func (m *Model) EncodePromptWith(ctx context.Context, text string, opt PromptOptions) (*Conditioning, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.encodePrompt(ctx, text, opt)
}

func (m *Model) encodePrompt(ctx context.Context, text string, opt family.PromptOptions) (*Conditioning, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := m.c.Text.Encode(ctx, text, opt)
	if err != nil {
		return nil, err
	}
	return &Conditioning{Prompt: text, Tokens: c.Tokens, Chunks: c.Chunks, c: c}, nil
}
