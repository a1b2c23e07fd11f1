package cuda

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// storedBytes returns n elements of dtype dt: random bit patterns (NaNs,
// infinities and subnormals among them), so that every conversion path
// and its special cases are crossed.
func storedBytes(dt tensor.DType, n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	raw := make([]byte, n*dt.Size())
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	return raw
}

// viaFloat32 is the upload path UploadRaw had before converting in one
// pass: widen to float32, then narrow as Upload does (hostBytes).
func viaFloat32(t *testing.T, d *Device, dt tensor.DType, raw []byte) []byte {
	t.Helper()
	wide := make([]float32, len(raw)/dt.Size())
	if err := tensor.ToFloat32(dt, raw, wide); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(d.hostBytes(wide))
}

// TestFakeUploadRawConverts checks, for each device precision and stored
// dtype, that the device memory UploadRaw writes is bit for bit what the
// float32 round trip wrote (and the raw bytes when the dtypes agree), for
// a tensor spanning several conversion chunks.
func TestFakeUploadRawConverts(t *testing.T) {
	n := 5 * (uploadChunkBytes/10 + 2469) // F16 device: 2 chunks; F32 device: 3
	for _, prec := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		d, f := newFakeDeviceIn(t, 256<<20, prec)
		for i, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.F8E4M3, tensor.F8E5M2} {
			t.Run(fmt.Sprintf("%v_on_%v", dt, prec), func(t *testing.T) {
				raw := storedBytes(dt, n, uint64(i))
				x, err := d.UploadRaw(raw, dt, 5, n/5)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Free(x)
				got := f.at(d.ptr(x), uint64(n)*d.es)
				want := raw
				if dt != prec {
					want = viaFloat32(t, d, dt, raw)
				}
				if !bytes.Equal(got, want) {
					for j := 0; j < len(got); j += int(d.es) {
						if !bytes.Equal(got[j:j+int(d.es)], want[j:j+int(d.es)]) {
							t.Fatalf("element %d: device holds %x, want %x", j/int(d.es), got[j:j+int(d.es)], want[j:j+int(d.es)])
						}
					}
				}
			})
		}
	}
}

func TestFakeUploadRawErrors(t *testing.T) {
	d, _ := newFakeDeviceIn(t, 1<<20, tensor.F16)
	for _, c := range []struct {
		name string
		raw  []byte
		dt   tensor.DType
		want string
	}{
		{"short", make([]byte, 3), tensor.F16, "cuda: upload 3 bytes of F16 into shape [2]"},
		{"short converted", make([]byte, 7), tensor.F32, "cuda: upload 7 bytes of F32 into shape [2]"},
		{"invalid dtype", make([]byte, 2), tensor.Invalid, "cuda: upload 2 bytes of invalid into shape [2]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.UploadRaw(c.raw, c.dt, 2)
			if err == nil || err.Error() != c.want {
				t.Errorf("error = %v, want %q", err, c.want)
			}
		})
	}
	// Integer storage converts like the float32 path (U8 pixels, I32 ids).
	x, err := d.UploadRaw([]byte{0, 1, 255}, tensor.U8, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.Download(x); err != nil || fmt.Sprint(got) != "[0 1 255]" {
		t.Errorf("U8 upload = %v, %v", got, err)
	}
}

// TestConvertChunks checks the chunking UploadRaw relies on: chunks are
// contiguous, never larger than the buffer, cover every element once and
// concatenate to the one-shot conversion; emit can stop the loop.
func TestConvertChunks(t *testing.T) {
	for _, c := range []struct {
		dst, src tensor.DType
		n, buf   int
	}{
		{tensor.F16, tensor.F32, 1, 2},
		{tensor.F16, tensor.F32, 10, 6},    // 3 elements a chunk, last one short
		{tensor.BF16, tensor.F8E4M3, 9, 6}, // exact multiple
		{tensor.F32, tensor.BF16, 7, 9},    // buffer not a multiple of 4 bytes
		{tensor.F16, tensor.BF16, 1000, 64},
		{tensor.F16, tensor.F8E5M2, 0, 8},
	} {
		t.Run(fmt.Sprintf("%v_to_%v_n%d_buf%d", c.src, c.dst, c.n, c.buf), func(t *testing.T) {
			raw := storedBytes(c.src, c.n, 3)
			want := make([]byte, c.n*c.dst.Size())
			if err := tensor.Convert(c.dst, want, c.src, raw); err != nil {
				t.Fatal(err)
			}
			var got []byte
			chunks := 0
			err := convertChunks(c.dst, c.src, raw, make([]byte, c.buf), func(off int, chunk []byte) bool {
				if off != len(got) {
					t.Errorf("chunk %d at offset %d, want %d", chunks, off, len(got))
				}
				if len(chunk) > c.buf || len(chunk)%c.dst.Size() != 0 || len(chunk) == 0 {
					t.Errorf("chunk %d has %d bytes (buffer %d)", chunks, len(chunk), c.buf)
				}
				got = append(got, chunk...)
				chunks++
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("chunked conversion differs from the one-shot one")
			}
			per := c.buf / c.dst.Size()
			if wantChunks := (c.n + per - 1) / per; chunks != wantChunks {
				t.Errorf("%d chunks, want %d", chunks, wantChunks)
			}
		})
	}
	t.Run("stop", func(t *testing.T) {
		calls := 0
		err := convertChunks(tensor.F16, tensor.F32, make([]byte, 40), make([]byte, 4), func(int, []byte) bool {
			calls++
			return false
		})
		if err != nil || calls != 1 {
			t.Errorf("emit called %d times (err %v), want once", calls, err)
		}
	})
	t.Run("tiny buffer", func(t *testing.T) {
		err := convertChunks(tensor.F32, tensor.F16, make([]byte, 4), make([]byte, 3), func(int, []byte) bool { return true })
		if err == nil || !strings.Contains(err.Error(), "holds no element") {
			t.Errorf("error = %v", err)
		}
	})
}

// BenchmarkUploadRawConvert measures the host side of uploading a 64 MiB
// BF16 weight to an F16 fake device (conversion and the copies into the
// staging buffer): UploadRaw's one pass, and the float32 round trip it
// replaced (ToFloat32, then Upload).
func BenchmarkUploadRawConvert(b *testing.B) {
	d, _ := newFakeDeviceIn(b, 1<<30, tensor.F16)
	const n = 32 << 20
	raw := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(raw[2*i:], tensor.F32ToBF16(float32(math.Sin(float64(i)))))
	}
	b.Run("one-pass", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			x, err := d.UploadRaw(raw, tensor.BF16, n)
			if err != nil {
				b.Fatal(err)
			}
			d.Free(x)
		}
	})
	b.Run("via-f32", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			wide := make([]float32, n)
			if err := tensor.ToFloat32(tensor.BF16, raw, wide); err != nil {
				b.Fatal(err)
			}
			d.Free(d.Upload(wide, n))
		}
	})
}
