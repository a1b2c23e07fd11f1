package t5

import (
	"context"
	"errors"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
)

// PromptEncoder is a T5 tokenizer and encoder turning prompts into the
// token states a diffusion transformer attends to, as the two peers do
// for Flux and SD3:
//
//   - diffusers (Literal): the text as it is, truncated and padded to
//     max_sequence_length tokens (T5TokenizerFast with
//     padding="max_length", truncation=True), encoded without an
//     attention mask;
//   - ComfyUI: "(text:1.2)" weights parsed (tokenizer.ParseWeights), each
//     weighted segment tokenized on its own, </s> appended, padded with
//     <pad> to at least MinLength tokens and never truncated, encoded
//     without a mask; a weight w ≠ 1 moves a token's state away from the
//     empty prompt's (z − z₀)·w + z₀, z₀ being the encoding of </s> and
//     padding of the same length.
//
// Every family with a T5 encoder uses it.
type PromptEncoder struct {
	Tok   *tokenizer.T5
	Model *Encoder
}

// PromptOptions select how a prompt is tokenized.
type PromptOptions struct {
	// Literal selects diffusers' handling (no weighting syntax, truncated
	// and padded to MaxLength) instead of ComfyUI's.
	Literal bool
	// MaxLength is the sequence length: with Literal, the length every
	// prompt is truncated and padded to (diffusers' max_sequence_length);
	// otherwise, when positive, the same truncation and padding applied to
	// ComfyUI's tokens (a user's explicit --max-sequence-length).
	MaxLength int
	// MinLength pads ComfyUI-tokenized prompts to at least this many
	// tokens (256 for Flux, 77 for SD3) when MaxLength is 0.
	MinLength int
}

// Encoded is one encoded prompt.
type Encoded struct {
	// Hidden are the token states [1, T, Width].
	Hidden *backend.Tensor
	// Tokens counts the prompt's tokens before truncation, without </s>.
	Tokens int
	// Truncated counts the prompt tokens cut off by MaxLength.
	Truncated int
}

// Encode encodes one prompt.
func (p *PromptEncoder) Encode(ctx context.Context, dev backend.Device, text string, o PromptOptions) (*Encoded, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.Tok == nil || p.Model == nil {
		return nil, errors.New("t5 prompt: no tokenizer or encoder")
	}
	ids, weights := p.tokens(text, o.Literal)
	body := len(ids) - 1 // without </s>
	enc := &Encoded{Tokens: body}
	switch {
	case o.MaxLength > 0:
		if len(ids) > o.MaxLength {
			enc.Truncated = len(ids) - o.MaxLength
			eos := ids[len(ids)-1]
			ids, weights = append(ids[:o.MaxLength-1:o.MaxLength-1], eos), append(weights[:o.MaxLength-1:o.MaxLength-1], 1)
		}
		ids, weights = p.pad(ids, weights, o.MaxLength)
	case !o.Literal:
		ids, weights = p.pad(ids, weights, o.MinLength)
	}
	out, err := p.Model.Forward(dev, [][]int{ids}, nil)
	if err != nil {
		return nil, fmt.Errorf("encode prompt (t5): %w", err)
	}
	if hasWeights(weights) {
		if out, err = p.applyWeights(dev, out, weights); err != nil {
			return nil, fmt.Errorf("encode prompt (t5): %w", err)
		}
	}
	enc.Hidden = out
	return enc, nil
}

// tokens returns the prompt's ids with </s> last and each id's weight.
func (p *PromptEncoder) tokens(text string, literal bool) (ids []int, weights []float64) {
	if literal {
		ids, _ = p.Tok.Encode(text, 0, false)
		weights = make([]float64, len(ids))
		for i := range weights {
			weights[i] = 1
		}
		return ids, weights
	}
	for _, seg := range tokenizer.ParseWeights(text) {
		s, _ := p.Tok.Encode(seg.Text, 0, false)
		s = s[:len(s)-1] // each segment's own </s> is dropped
		ids = append(ids, s...)
		for range s {
			weights = append(weights, seg.Weight)
		}
	}
	return append(ids, p.Tok.EOS()), append(weights, 1)
}

// pad pads ids with <pad> (weight 1) to n.
func (p *PromptEncoder) pad(ids []int, weights []float64, n int) ([]int, []float64) {
	for len(ids) < n {
		ids = append(ids, p.Tok.Pad())
		weights = append(weights, 1)
	}
	return ids, weights
}

func hasWeights(w []float64) bool {
	for _, v := range w {
		if v != 1 {
			return true
		}
	}
	return false
}

// applyWeights interpolates weighted tokens' states from the empty
// prompt's: </s> then <pad> to the same length.
func (p *PromptEncoder) applyWeights(dev backend.Device, out *backend.Tensor, weights []float64) (*backend.Tensor, error) {
	empty := make([]int, len(weights))
	empty[0] = p.Tok.EOS()
	for i := 1; i < len(empty); i++ {
		empty[i] = p.Tok.Pad()
	}
	e, err := p.Model.Forward(dev, [][]int{empty}, nil)
	if err != nil {
		return nil, err
	}
	defer dev.Free(e)
	z, err := dev.Download(out)
	if err != nil {
		return nil, err
	}
	ze, err := dev.Download(e)
	if err != nil {
		return nil, err
	}
	width := out.Shape[2]
	for j, w := range weights {
		if w == 1 {
			continue
		}
		zj, ej := z[j*width:(j+1)*width], ze[j*width:(j+1)*width]
		for d := range zj {
			zj[d] = (zj[d]-ej[d])*float32(w) + ej[d]
		}
	}
	dev.Free(out)
	return dev.Upload(z, out.Shape...), nil
}
