package sampling

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSamplers measures the sampler arithmetic per step (the denoiser
// is a cheap closed form), for SD1 latents of 512x512 and 1024x1024 images.
func BenchmarkSamplers(b *testing.B) {
	d := DefaultDiscrete()
	for _, n := range []int{4 * 64 * 64, 4 * 128 * 128} {
		x := normals(1, n)
		for _, name := range []string{"euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc"} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				sig, err := SamplerSigmas(name, "karras", d, 10)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(4 * n * (len(sig) - 1)))
				for b.Loop() {
					if _, err := Sample(context.Background(), name, gaussDenoiser(nil), x, sig, pcgNoise(1), nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
