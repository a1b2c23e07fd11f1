package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// TestCudnnPerfLayout checks cudnnFwdPerf against the C layout of
// cudnnConvolutionFwdAlgoPerf_t on 64-bit platforms: three 4-byte fields,
// padding, the size_t memory at 16, determinism and mathType at 24 and 28,
// reserved[3] at 32, 48 bytes in all.
func TestCudnnPerfLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is checked on 64-bit platforms")
	}
	var p cudnnFwdPerf
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof", unsafe.Sizeof(p), 48},
		{"algo", unsafe.Offsetof(p.algo), 0},
		{"status", unsafe.Offsetof(p.status), 4},
		{"time", unsafe.Offsetof(p.time), 8},
		{"memory", unsafe.Offsetof(p.memory), 16},
		{"determinism", unsafe.Offsetof(p.determinism), 24},
		{"mathType", unsafe.Offsetof(p.mathType), 28},
		{"reserved", unsafe.Offsetof(p.reserved), 32},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestCudnnVersionString(t *testing.T) {
	for v, want := range map[int]string{91002: "9.10.2", 90600: "9.6.0", 90100: "9.1.0", 8907: "8.9.7", 8600: "8.6.0"} {
		if got := cudnnVersionString(v); got != want {
			t.Errorf("cudnnVersionString(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestCudnnStatus(t *testing.T) {
	for st, want := range map[int32]string{
		0: "CUDNN_STATUS_SUCCESS", 1001: "CUDNN_STATUS_NOT_INITIALIZED", 1008: "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
		2000: "CUDNN_STATUS_BAD_PARAM", 3000: "CUDNN_STATUS_NOT_SUPPORTED", 3007: "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH",
		4003: "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED", 5000: "CUDNN_STATUS_EXECUTION_FAILED", 77: "CUDNN_STATUS_77",
	} {
		if got := cudnnStatusName(st); got != want {
			t.Errorf("cudnnStatusName(%d) = %q, want %q", st, got, want)
		}
	}
	var l *cudnnLib // no library: the message has no cuDNN text
	if err := l.errorf("cudnnCreate", 0); err != nil {
		t.Errorf("success gave %v", err)
	}
	want := "cuda: cudnnCreate: CUDNN_STATUS_BAD_PARAM (2000)"
	if err := l.errorf("cudnnCreate", 2000); err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

func TestCudnnTypes(t *testing.T) {
	for dt, want := range map[tensor.DType]int32{tensor.F32: 0, tensor.F16: 2, tensor.BF16: 9} {
		if got := cudnnDataType(dt); got != want {
			t.Errorf("cudnnDataType(%v) = %d, want %d", dt, got, want)
		}
	}
	for _, c := range []struct {
		dt      tensor.DType
		tf32    bool
		request int32
		accept  []int32
	}{
		// Parity mode: FMA only, so that TF32 cannot sneak in.
		{tensor.F32, false, cudnnFMAMath, []int32{cudnnFMAMath}},
		{tensor.F32, true, cudnnDefaultMath, []int32{cudnnDefaultMath, cudnnTensorOpMath, cudnnFMAMath}},
		{tensor.F16, false, cudnnTensorOpMath, []int32{cudnnDefaultMath, cudnnTensorOpMath, cudnnTensorOpMathAllowConversion, cudnnFMAMath}},
		{tensor.BF16, true, cudnnTensorOpMath, []int32{cudnnDefaultMath, cudnnTensorOpMath, cudnnTensorOpMathAllowConversion, cudnnFMAMath}},
	} {
		t.Run(fmt.Sprintf("%v_tf32=%v", c.dt, c.tf32), func(t *testing.T) {
			if got := cudnnRequestMath(c.dt, c.tf32); got != c.request {
				t.Errorf("requested math %d, want %d", got, c.request)
			}
			for m := int32(-1); m <= 4; m++ {
				if got, want := cudnnAcceptMath(c.dt, c.tf32, m), slices.Contains(c.accept, m); got != want {
					t.Errorf("accept math %d = %v, want %v", m, got, want)
				}
			}
		})
	}
}

func TestCudnnLabel(t *testing.T) {
	k := convKey{n: 2, c: 320, h: 64, w: 64, oc: 320, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1, dtype: tensor.F16}
	if got, want := cudnnLabel(k, 64, 64, "implicit_precomp_gemm"), "cudnn conv f16 n=2 c=320 64x64 oc=320 3x3 s1 p1 algo=implicit_precomp_gemm"; got != want {
		t.Errorf("label %q, want %q", got, want)
	}
	k = convKey{n: 1, c: 3, h: 7, w: 9, oc: 5, kh: 3, kw: 1, strideH: 2, strideW: 1, padH: 1, padW: 0, dtype: tensor.F32}
	if got, want := cudnnLabel(k, 4, 9, "gemm"), "cudnn conv f32 n=1 c=3 7x9 oc=5 3x1 s2x1 p1x0 algo=gemm"; got != want {
		t.Errorf("label %q, want %q", got, want)
	}
}

func TestCudnnSearchDirs(t *testing.T) {
	glob := func(pat string) ([]string, error) {
		if pat == "/venv/lib/python3*/site-packages/nvidia/cudnn/lib" {
			return []string{"/venv/lib/python3.12/site-packages/nvidia/cudnn/lib"}, nil
		}
		return nil, nil
	}
	dirs := searchDirs(func(k string) string { return map[string]string{"VIRTUAL_ENV": "/venv"}[k] }, glob)
	if !slices.Contains(dirs, "/venv/lib/python3.12/site-packages/nvidia/cudnn/lib") {
		t.Errorf("search dirs %v lack the nvidia-cudnn wheel's folder", dirs)
	}
}

// TestCudnnMissing checks the disabled path: the load error names what
// was tried, and conv declines without touching the device.
func TestCudnnMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := loadCudnn([]string{"libdarkroom-missing-cudnn.so.9"}, []string{dir})
	if !errors.Is(err, errLibraryNotFound) {
		t.Fatalf("err = %v, want errLibraryNotFound", err)
	}
	if !strings.HasPrefix(err.Error(), "cuDNN not found") || !strings.Contains(err.Error(), "libdarkroom-missing-cudnn.so.9") {
		t.Errorf("error %q does not say what is missing", err)
	}
	s := convDNN{err: err}
	if s.available() {
		t.Error("available without a handle")
	}
	if s.info() != err.Error() {
		t.Errorf("info %q, want the load error", s.info())
	}
	if s.conv(nil, 1, 3, 8, 8, 4, 3, 3, backend.Conv2DSame(1, 1), 0, 0, 0, 0) {
		t.Error("conv ran with cuDNN disabled")
	}
	var zero convDNN
	if zero.info() != "cuDNN not set up" {
		t.Errorf("zero state info %q", zero.info())
	}
	zero.teardown() // a disabled path has nothing to release
}

// TestCudnnPreloadIgnoresBrokenParts: sub-libraries that fail to load are
// skipped (cuDNN reports them when it needs them).
func TestCudnnPreloadIgnoresBrokenParts(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "libcudnn_graph.so.9"), []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	preloadCudnnParts(filepath.Join(dir, "libcudnn.so.9"))
	preloadCudnnParts("libcudnn.so.9")
}

// --- GPU-only tests below ---

// cudnnState sets up a cuDNN state of the test's own on d (a handle on
// the device's stream) and tears it down when the test ends; it skips the
// test when cuDNN is unavailable.
func cudnnState(t *testing.T, d *Device) *convDNN {
	t.Helper()
	s := &convDNN{}
	d.run(func() { s.setup(d) })
	if !s.available() {
		t.Skipf("skipping: %s", s.info())
	}
	t.Logf("%s", s.info())
	t.Cleanup(func() { d.run(s.teardown) })
	return s
}

// cudnnShapes are SD UNet and VAE convolutions and odd small ones.
var cudnnShapes = []struct {
	name              string
	n, c, h, w, oc, k int
	stride, pad       int
}{
	{"unet_3x3_320", 2, 320, 64, 64, 320, 3, 1, 1},
	{"unet_conv_in_4_320", 2, 4, 64, 64, 320, 3, 1, 1},
	{"unet_down_640_s2", 2, 640, 32, 32, 640, 3, 2, 1},
	{"unet_1x1_320_640", 2, 320, 64, 64, 640, 1, 1, 0},
	{"vae_3x3_512", 1, 512, 64, 64, 512, 3, 1, 1},
	{"odd_3x3_s2", 1, 3, 7, 9, 5, 3, 2, 1},
	{"odd_5x5", 1, 3, 7, 9, 5, 5, 1, 2},
}

// TestCudnnConvMatchesCPU runs each shape through cuDNN in every storage
// type and compares with the CPU backend on the same (rounded) inputs:
// scaled error at most 1e-4 in fp32 (FMA math, no TF32), 1e-2 in fp16 and
// 8e-2 in bf16. In fp32 every plan must use FMA math.
func TestCudnnConvMatchesCPU(t *testing.T) {
	tol := map[tensor.DType]float64{tensor.F32: 1e-4, tensor.F16: 1e-2, tensor.BF16: 8e-2}
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			d := deviceFor(t, dt)
			s := cudnnState(t, d)
			c := cpu.New()
			for _, sh := range cudnnShapes {
				t.Run(sh.name, func(t *testing.T) {
					p := backend.Conv2DSame(sh.stride, sh.pad)
					oh, ow := p.OutSize(sh.h, sh.w, sh.k, sh.k)
					rng := rand.New(rand.NewPCG(uint64(sh.c), uint64(sh.oc)))
					xv := randVec(rng, sh.n*sh.c*sh.h*sh.w)
					wv := randVec(rng, sh.oc*sh.c*sh.k*sh.k)
					scale := float32(1 / math.Sqrt(float64(sh.c*sh.k*sh.k)))
					for i := range wv {
						wv[i] *= scale
					}
					if dt != tensor.F32 {
						xv, wv = roundTo(dt, xv), roundTo(dt, wv)
					}
					xg, wg := d.Upload(xv, sh.n, sh.c, sh.h, sh.w), d.Upload(wv, sh.oc, sh.c, sh.k, sh.k)
					yg := d.Alloc(sh.n, sh.oc, oh, ow)
					defer func() {
						for _, x := range []*backend.Tensor{xg, wg, yg} {
							d.Free(x)
						}
					}()
					xp, wp, yp := d.ptr(xg), d.ptr(wg), d.ptr(yg)
					key := convKey{sh.n, sh.c, sh.h, sh.w, sh.oc, sh.k, sh.k, sh.stride, sh.stride, sh.pad, sh.pad, dt}
					// Twice: the second call reuses the plan.
					for range 2 {
						var ok bool
						d.run(func() { ok = s.conv(d, sh.n, sh.c, sh.h, sh.w, sh.oc, sh.k, sh.k, p, xp, wp, yp, 0) }, xg, wg, yg)
						if !ok {
							t.Fatalf("cuDNN declined: %s", s.plans[key].why)
						}
					}
					got, err := d.Download(yg)
					if err != nil {
						t.Fatal(err)
					}
					plan := s.plans[key]
					t.Logf("algo %s, math type %d, workspace %s", cudnnFwdAlgoNames[plan.algo], plan.mathType, formatBytes(plan.workspace))
					if dt == tensor.F32 && !d.opts.TF32 && plan.mathType != cudnnFMAMath {
						t.Errorf("fp32 parity plan uses math type %d, want FMA (%d)", plan.mathType, cudnnFMAMath)
					}
					yc := c.Alloc(sh.n, sh.oc, oh, ow)
					c.Conv2D(yc, c.Upload(xv, sh.n, sh.c, sh.h, sh.w), c.Upload(wv, sh.oc, sh.c, sh.k, sh.k), nil, p)
					rel, worst := relErr(got, cpu.Data(yc))
					t.Logf("rel err %.2e, max scaled err %.2e", rel, worst)
					if !(worst <= tol[dt]) {
						t.Errorf("max scaled error %.3g > %g", worst, tol[dt])
					}
				})
			}
			if len(s.plans) != len(cudnnShapes) {
				t.Errorf("%d plans for %d shapes", len(s.plans), len(cudnnShapes))
			}
		})
	}
}

// TestCudnnDeclinesAsymmetricPadding: the LDM VAE downsampler's (0,1,0,1)
// padding is left to im2col, and nothing is planned or queued.
func TestCudnnDeclinesAsymmetricPadding(t *testing.T) {
	d := gpu(t)
	s := cudnnState(t, d)
	x, w, y := d.Alloc(1, 3, 8, 8), d.Alloc(4, 3, 3, 3), d.Alloc(1, 4, 4, 4)
	p := backend.Conv2DParams{StrideH: 2, StrideW: 2, PadBottom: 1, PadRight: 1}
	xp, wp, yp := d.ptr(x), d.ptr(w), d.ptr(y)
	ok := true
	d.run(func() { ok = s.conv(d, 1, 3, 8, 8, 4, 3, 3, p, xp, wp, yp, 0) }, x, w, y)
	if ok {
		t.Error("cuDNN took asymmetric padding")
	}
	if len(s.plans) != 0 {
		t.Errorf("%d plans after a declined call", len(s.plans))
	}
}
