// Package demo embeds darkroom-digits, a tiny text-to-image model in the exact
// Stable Diffusion 1.x architecture (CLIP text encoder, UNet with
// cross-attention, KL autoencoder), so that a fresh install can make a real
// image with no download:
//
//	darkroom gen -p "a handwritten digit 7" -o seven.png
//
// It was trained by tools/train_demo on the handwritten digits that
// scikit-learn ships (UCI Optical Recognition of Handwritten Digits, CC BY
// 4.0; see NOTICE.md) and draws 32×32 dark digits on white paper. Prompts
// such as "a handwritten digit seven", "the number 7", "digit 7", "7" or
// "seven" select the digit.
//
// The checkpoint is an ordinary single-file SD1 safetensors file in the LDM
// layout, all F16; the engine reads it like any other checkpoint.
package demo

import (
	"fmt"
	"os"

	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Name is the model's name, as shown in listings and PNG metadata.
const Name = "darkroom-digits"

// FileName is the checkpoint's file name.
const FileName = Name + ".safetensors"

// Attribution credits the training data; show it wherever the model is
// described.
const Attribution = "darkroom-digits was trained on the UCI Optical Recognition of Handwritten Digits " +
	"data set (E. Alpaydin, C. Kaynak, 1998; as shipped by scikit-learn), licensed CC BY 4.0."

// Recommended settings for generating with the demo model. The model was
// trained on 32×32 images (8×8 latents: its autoencoder has three levels, a
// factor of 4); other sizes work but draw nothing better. CFG between 2 and 7
// gives the prompted digit; 1 (no guidance) is sometimes wrong.
const (
	Width     = 32
	Height    = 32
	Steps     = 20
	CFG       = 5.0
	Sampler   = "euler"
	Scheduler = "normal"
	// ViewScale is the nearest-neighbour upscale that makes a 32×32 digit
	// comfortable to look at (256×256).
	ViewScale = 8
)

// Size is the checkpoint's size in bytes.
func Size() int { return len(checkpoint) }

// Bytes returns a fresh copy of the single-file checkpoint.
func Bytes() []byte { return []byte(checkpoint) }

// Open parses the embedded checkpoint.
func Open() (*safetensors.File, error) {
	f, err := safetensors.FromBytes(Bytes())
	if err != nil {
		return nil, fmt.Errorf("demo model: %w", err)
	}
	return f, nil
}

// WriteFile writes the checkpoint to path (for loaders that read files).
func WriteFile(path string) error {
	if err := os.WriteFile(path, []byte(checkpoint), 0o644); err != nil {
		return fmt.Errorf("write demo model: %w", err)
	}
	return nil
}
