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
// layout, all F16; the engine reads it like any other checkpoint. It is
// embedded gzip-compressed (GzFileName): the rows of the CLIP token
// embedding that no training caption uses are zero, so the 10 MiB file
// compresses to about 3.5 MiB.
package demo

import (
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Name is the model's name, as shown in listings and PNG metadata.
const Name = "darkroom-digits"

// FileName is the checkpoint's file name once decompressed.
const FileName = Name + ".safetensors"

// GzFileName is the compressed checkpoint's file name in this package's
// folder (what the binary embeds).
const GzFileName = FileName + ".gz"

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
	// LatentFactor is the autoencoder's pixel-to-latent factor (three
	// levels: 4).
	LatentFactor = 4
)

// Size is the checkpoint's size in bytes, decompressed.
func Size() int {
	if len(checkpointGz) < 4 {
		return 0
	}
	// gzip's trailer ends with the uncompressed size modulo 2^32.
	return int(binary.LittleEndian.Uint32([]byte(checkpointGz[len(checkpointGz)-4:])))
}

// CompressedSize is the number of bytes the checkpoint adds to the binary.
func CompressedSize() int { return len(checkpointGz) }

// Bytes returns a fresh copy of the single-file checkpoint (decompressed
// on each call, in about 50 ms), or nil in nodemo builds.
func Bytes() []byte {
	if checkpointGz == "" {
		return nil
	}
	b, err := Decompress(strings.NewReader(checkpointGz))
	if err != nil {
		// The embedded bytes are fixed at build time and checked by the
		// tests; a failure here is a broken build.
		panic(fmt.Sprintf("demo model: %v", err))
	}
	return b
}

// Decompress reads a gzip-compressed checkpoint (the embedded one, or
// GzFileName read from disk by tests of nodemo builds).
func Decompress(r io.Reader) ([]byte, error) {
	z, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", GzFileName, err)
	}
	defer z.Close()
	b, err := io.ReadAll(z)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", GzFileName, err)
	}
	return b, nil
}

// Open parses the embedded checkpoint.
func Open() (*safetensors.File, error) {
	f, err := safetensors.FromBytes(Bytes())
	if err != nil {
		return nil, fmt.Errorf("demo model: %w", err)
	}
	return f, nil
}

// DecompressFile writes the checkpoint compressed in the file gzPath (a
// copy of GzFileName, as test binaries built with nodemo read it) to path,
// decompressed.
func DecompressFile(gzPath, path string) error {
	f, err := os.Open(gzPath)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := Decompress(f)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write demo model: %w", err)
	}
	return nil
}

// WriteFile writes the decompressed checkpoint to path (for loaders that
// read files).
func WriteFile(path string) error {
	if err := os.WriteFile(path, Bytes(), 0o644); err != nil {
		return fmt.Errorf("write demo model: %w", err)
	}
	return nil
}
