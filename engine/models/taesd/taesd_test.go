package taesd_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/taesd"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// The TAEF2 fixtures: real FLUX.2 tiny-autoencoder weights (F16; MIT, by
// Ollin Boer Bohan) and a float32 torch round trip of a 256×256 image.
const (
	decoderFile   = "taef2_decoder.safetensors"
	encoderFile   = "taef2_encoder.safetensors"
	roundtripFile = "taef2_roundtrip.safetensors"
	side          = 256
)

func open(t *testing.T, name string) *safetensors.File {
	t.Helper()
	src, err := safetensors.Open(testref.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestConfigFromWeights(t *testing.T) {
	for _, tc := range []struct {
		file string
		fn   func(*safetensors.File) (taesd.Config, error)
	}{
		{decoderFile, func(f *safetensors.File) (taesd.Config, error) { return taesd.DecoderConfigFromWeights(f, "") }},
		{encoderFile, func(f *safetensors.File) (taesd.Config, error) { return taesd.EncoderConfigFromWeights(f, "") }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, err := tc.fn(open(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if want := "32 latent channels, 64 hidden, mid-block GroupNorm (TAEF2)"; c.String() != want {
				t.Errorf("config %q, want %q", c, want)
			}
		})
	}
}

// TestWrongHalf checks that an encoder file is not taken for a decoder and
// the other way round.
func TestWrongHalf(t *testing.T) {
	dev := cpu.New()
	if _, err := taesd.NewDecoder(open(t, encoderFile), dev); err == nil {
		t.Error("NewDecoder accepted an encoder checkpoint")
	}
	if _, err := taesd.NewEncoder(open(t, decoderFile), dev); err == nil {
		t.Error("NewEncoder accepted a decoder checkpoint")
	}
}

// TestDecodeMatchesReference decodes the reference latent and compares with
// torch's float32 decoder output clamped to 0..1. Tolerance: relative L2
// error ≤ 1e-4.
func TestDecodeMatchesReference(t *testing.T) {
	dev := cpu.New()
	d, err := taesd.NewDecoder(open(t, decoderFile), dev)
	if err != nil {
		t.Fatal(err)
	}
	fx := testref.Tensors(t, roundtripFile)
	lat := dev.Upload(fx["latent"], 1, 32, side/8, side/8)
	start := time.Now()
	img, err := d.Decode(context.Background(), dev, lat)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dev.Download(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 3, side, side}; !equalShape(img.Shape, want) {
		t.Fatalf("image shape %v, want %v", img.Shape, want)
	}
	for i, v := range got {
		got[i] = min(max(v, 0), 1)
	}
	e := testref.RelErr(got, fx["decoded"])
	t.Logf("decode %v in %v: relative error %.3g, PSNR vs reference %.1f dB, vs input %.1f dB",
		img.Shape, time.Since(start).Round(time.Millisecond), e, testref.PSNR(got, fx["decoded"]), testref.PSNR(got, fx["input"]))
	if e > 1e-4 {
		t.Errorf("decoded relative error %.3g > 1e-4", e)
	}
	// The round trip's quality as torch measured it (taef2.json).
	var meta struct {
		PSNR float64 `json:"psnr_db"`
	}
	raw, err := os.ReadFile(testref.Path("taef2.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	if p := testref.PSNR(got, fx["input"]); math.Abs(p-meta.PSNR) > 0.01 {
		t.Errorf("round-trip PSNR %.3f dB, reference %.3f dB", p, meta.PSNR)
	}
}

// TestEncodeMatchesReference encodes the reference image and compares with
// torch's float32 encoder output. Tolerance: relative L2 error ≤ 1e-4.
func TestEncodeMatchesReference(t *testing.T) {
	dev := cpu.New()
	e, err := taesd.NewEncoder(open(t, encoderFile), dev)
	if err != nil {
		t.Fatal(err)
	}
	fx := testref.Tensors(t, roundtripFile)
	img := dev.Upload(fx["input"], 1, 3, side, side)
	lat, err := e.Encode(context.Background(), dev, img)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 32, side / 8, side / 8}; !equalShape(lat.Shape, want) {
		t.Fatalf("latent shape %v, want %v", lat.Shape, want)
	}
	got, err := dev.Download(lat)
	if err != nil {
		t.Fatal(err)
	}
	r := testref.RelErr(got, fx["latent"])
	t.Logf("encode: relative error %.3g", r)
	if r > 1e-4 {
		t.Errorf("latent relative error %.3g > 1e-4", r)
	}
}

func TestBadInput(t *testing.T) {
	dev := cpu.New()
	d, err := taesd.NewDecoder(open(t, decoderFile), dev)
	if err != nil {
		t.Fatal(err)
	}
	e, err := taesd.NewEncoder(open(t, encoderFile), dev)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"decode 4-channel latents", func() error {
			_, err := d.Decode(ctx, dev, dev.Upload(make([]float32, 4*4*4), 1, 4, 4, 4))
			return err
		}, "want [N, 32, h, w]"},
		{"encode odd size", func() error {
			_, err := e.Encode(ctx, dev, dev.Upload(make([]float32, 3*12*16), 1, 3, 12, 16))
			return err
		}, "divisible by 8"},
		{"decode cancelled", func() error {
			c, cancel := context.WithCancel(ctx)
			cancel()
			_, err := d.Decode(c, dev, dev.Upload(make([]float32, 32), 1, 32, 1, 1))
			return err
		}, "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func equalShape(got []int, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
