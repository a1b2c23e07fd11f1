package clip

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
)

// PromptEncoder is a CLIP tokenizer and text model encoding prompts the way
// ComfyUI's sd1_clip does: "(text:1.3)" and "(text)" weights
// (tokenizer.ParseWeights) move weighted tokens' hidden states away from
// the empty prompt's; prompts longer than 75 tokens are split into windows
// of 75 (each wrapped in start/end tokens and padded to 77 with Pad),
// encoded separately and concatenated. Every family with a CLIP encoder
// uses it.
type PromptEncoder struct {
	Tok   *tokenizer.CLIP
	Model *TextModel
	// Pad is the padding token id (the end token for OpenAI CLIP-L, 0 for
	// SDXL's bigG and SD2's ViT-H, as their tokenizers pad with "!").
	Pad int
	// NoFinalNorm takes the chosen layer's hidden states without the final
	// layer norm (SDXL).
	NoFinalNorm bool
	// Pool selects a pooled output to compute beside the hidden states
	// (from the first window, as ComfyUI takes it).
	Pool Pooling
	// Embeddings, when set, resolves "embedding:NAME" in prompts to the
	// textual-inversion vectors for this encoder (Width values each);
	// nil leaves the syntax as text.
	Embeddings func(name string) ([][]float32, error)
}

// run encodes token windows with the encoder's options; extra are the
// vectors of placeholder ids.
func (p *PromptEncoder) run(dev backend.Device, ids [][]int, skip int, pool bool, extra ...[]float32) (hidden, pooled *backend.Tensor, err error) {
	o := Options{Skip: skip, NoFinalNorm: p.NoFinalNorm, EOS: p.Tok.EOS(), Extra: extra}
	if pool {
		o.Pool = p.Pool
	}
	return p.Model.Run(dev, ids, o)
}

// Encoded is one encoded prompt.
type Encoded struct {
	// Hidden is the chosen layer's hidden states [1, 77·Chunks, Width].
	Hidden *backend.Tensor
	// Pooled is the first window's pooled output [1, P] when the encoder's
	// Pool asks for one, else nil.
	Pooled *backend.Tensor
	// Tokens counts the prompt tokens (without start/end tokens).
	Tokens int
	// Chunks is the number of 77-token windows.
	Chunks int
}

// Encode encodes text; skip selects the layer (1 = last, 2 = penultimate).
func (p *PromptEncoder) Encode(ctx context.Context, dev backend.Device, text string, skip int) (*Encoded, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var extra [][]float32
	var lookup tokenizer.EmbeddingLookup
	if p.Embeddings != nil {
		lookup = func(name string) (int, error) {
			v, err := p.Embeddings(name)
			if err != nil {
				return 0, err
			}
			extra = append(extra, v...)
			return len(v), nil
		}
	}
	chunks, weights, names, err := p.Tok.WeightedChunksWith(text, p.Pad, lookup)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	out, pooled, err := p.run(dev, chunks, skip, true, extra...)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	if hasWeights(weights) {
		if out, err = p.applyWeights(dev, out, weights, skip); err != nil {
			return nil, fmt.Errorf("encode prompt: %w", err)
		}
	}
	// [chunks, 77, D] -> [1, 77·chunks, D]: chunks are consecutive in memory.
	width := out.Shape[2]
	tokens := len(extra)
	for _, seg := range tokenizer.ParseWeights(text) {
		tokens += len(p.Tok.Encode(seg.Text)) - 2
	}
	for _, n := range names {
		// "embedding:NAME" was counted as text above.
		tokens -= len(p.Tok.Encode(tokenizer.EmbeddingPrefix+n)) - 2
	}
	return &Encoded{Hidden: out.Reshape(1, len(chunks)*out.Shape[1], width), Pooled: firstRow(dev, pooled), Tokens: tokens, Chunks: len(chunks)}, nil
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
func (p *PromptEncoder) applyWeights(dev backend.Device, out *backend.Tensor, weights [][]float64, skip int) (*backend.Tensor, error) {
	empty, _, err := p.run(dev, [][]int{p.Tok.Pad(nil, tokenizer.ContextLength, p.Pad)}, skip, false)
	if err != nil {
		return nil, err
	}
	z, err := dev.Download(out)
	if err != nil {
		return nil, err
	}
	ze, err := dev.Download(empty)
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
	return dev.Upload(z, out.Shape...), nil
}

// EncodeLiteral encodes text the way a diffusers pipeline does: no
// weighting syntax (parentheses are text), one window of 77 tokens with
// the text truncated to 75 and padded with Pad (CLIPTokenizer with
// padding="max_length", truncation=True). Tokens counts the prompt's
// tokens before truncation.
func (p *PromptEncoder) EncodeLiteral(ctx context.Context, dev backend.Device, text string, skip int) (*Encoded, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	all := p.Tok.Encode(text)
	body := all[1 : len(all)-1]
	ids := p.Tok.Pad(body, tokenizer.ContextLength, p.Pad)
	out, pooled, err := p.run(dev, [][]int{ids}, skip, true)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	return &Encoded{Hidden: out, Pooled: pooled, Tokens: len(body), Chunks: 1}, nil
}

// firstRow returns row 0 of t [n, P] as [1, P] (nil for nil).
func firstRow(dev backend.Device, t *backend.Tensor) *backend.Tensor {
	if t == nil || t.Shape[0] == 1 {
		return t
	}
	r := dev.Alloc(1, t.Shape[1])
	dev.Slice(r, t, 0, 0)
	return r
}
