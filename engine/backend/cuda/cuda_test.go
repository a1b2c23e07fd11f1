package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/backendtest"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
)

// sharedDevice opens GPU 0 once for the whole test binary.
var sharedDevice = sync.OnceValues(func() (*Device, error) { return Open(Options{}) })

// gpu returns the shared device or skips the test when there is none.
func gpu(t *testing.T) *Device {
	t.Helper()
	d, err := sharedDevice()
	if errors.Is(err, ErrNoDevice) {
		t.Skipf("skipping: no NVIDIA GPU/driver on this machine (%v)", err)
	}
	if err != nil {
		t.Fatalf("open GPU: %v", err)
	}
	return d
}

// TestConformance runs the backend suite in fp32 parity mode (TF32 off).
func TestConformance(t *testing.T) {
	d := gpu(t)
	backendtest.Run(t, func() backend.Device { return d }, 1e-4)
	if err := d.Sync(context.Background()); err != nil {
		t.Fatalf("sync after the suite: %v", err)
	}
}

// TestConformanceFallbacks runs the suite with every convolution on im2col
// + cuBLAS and the biases as separate kernels (the default measures cuDNN
// against im2col per shape and may never pick im2col for the suite's
// shapes, and fuses biases with cuBLASLt).
func TestConformanceFallbacks(t *testing.T) {
	gpu(t) // skips without a GPU
	d, err := Open(Options{Conv: ConvIm2col, NoFusedGemm: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	backendtest.Run(t, func() backend.Device { return d }, 1e-4)
	if err := d.Sync(context.Background()); err != nil {
		t.Fatalf("sync after the suite: %v", err)
	}
}

func TestBucketSize(t *testing.T) {
	for _, c := range []struct{ in, want uint64 }{
		{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {2048, 2048}, {2049, 2560},
		{4 << 20, 4 << 20}, {4<<20 + 1, 5 << 20}, {7<<20 + 1, 8 << 20}, {100 << 20, 112 << 20},
	} {
		t.Run(fmt.Sprint(c.in), func(t *testing.T) {
			got := bucketSize(c.in)
			if got != c.want {
				t.Errorf("bucketSize(%d) = %d, want %d", c.in, got, c.want)
			}
			if got < c.in || (c.in > 2048 && float64(got) > 1.25*float64(c.in)+1) {
				t.Errorf("bucketSize(%d) = %d wastes more than a quarter", c.in, got)
			}
		})
	}
}

func TestSearchDirs(t *testing.T) {
	env := map[string]string{
		"CUDA_PATH":       "/opt/cuda",
		"LD_LIBRARY_PATH": "/a/lib::/b/lib",
		"VIRTUAL_ENV":     "/venv",
		"HOME":            "/home/u",
	}
	glob := func(pat string) ([]string, error) {
		if pat == "/venv/lib/python3*/site-packages/nvidia/cublas/lib" {
			return []string{"/venv/lib/python3.12/site-packages/nvidia/cublas/lib"}, nil
		}
		return nil, nil
	}
	dirs := searchDirs(func(k string) string { return env[k] }, glob)
	for _, want := range []string{"/opt/cuda/lib64", "/a/lib", "/b/lib", "/usr/local/cuda/lib64", "/venv/lib/python3.12/site-packages/nvidia/cublas/lib"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("search dirs %v lack %s", dirs, want)
		}
	}
	if slices.Contains(dirs, "") {
		t.Errorf("search dirs contain an empty entry: %q", dirs)
	}
	if i, j := slices.Index(dirs, "/opt/cuda/lib64"), slices.Index(dirs, "/a/lib"); i > j {
		t.Errorf("CUDA_PATH (%d) should come before LD_LIBRARY_PATH (%d)", i, j)
	}
}

func TestOpenLibraryReportsWhatWasTried(t *testing.T) {
	dir := t.TempDir()
	bogus := filepath.Join(dir, "libdarkroom-missing.so.7")
	if err := os.WriteFile(bogus, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := openLibrary([]string{"libdarkroom-missing.so.7"}, []string{dir})
	if !errors.Is(err, errLibraryNotFound) {
		t.Fatalf("err = %v, want errLibraryNotFound", err)
	}
	if !strings.Contains(err.Error(), bogus) {
		t.Errorf("error %q does not name the file it tried", err)
	}
}

func TestDimsWords(t *testing.T) {
	x := dims{rank: 3}
	x.shape = [maxDims]int32{2, 3, 4}
	x.sa = [maxDims]int32{12, 4, 1}
	x.sb = [maxDims]int32{0, 1, 0}
	w := x.words()
	if len(w) != 10 {
		t.Fatalf("%d words, want 10 (19 int32s)", len(w))
	}
	get := func(i int) int32 { return int32(uint32(w[i/2] >> (32 * (i % 2)))) }
	want := []int32{3, 2, 3, 4, 0, 0, 0, 12, 4, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	for i, v := range want {
		if get(i) != v {
			t.Errorf("int32 %d = %d, want %d", i, get(i), v)
		}
	}
}

func TestOutOfMemoryMessage(t *testing.T) {
	err := error(&OutOfMemoryError{Requested: 3 << 30, Free: 512 << 20, Total: 80 << 30, InUse: 70 << 30})
	if !errors.Is(err, ErrOutOfMemory) {
		t.Errorf("errors.Is(%v, ErrOutOfMemory) = false", err)
	}
	want := "cuda: out of memory: requested 3.00 GiB, 512.0 MiB free of 80.00 GiB (darkroom tensors hold 70.00 GiB)"
	if err.Error() != want {
		t.Errorf("message\n%s\nwant\n%s", err, want)
	}
}

func TestVersionString(t *testing.T) {
	for v, want := range map[int]string{12000: "12.0", 12040: "12.4", 13000: "13.0", 12090: "12.9"} {
		if got := versionString(v); got != want {
			t.Errorf("versionString(%d) = %q, want %q", v, got, want)
		}
	}
}

// TestTimestepTableMatchesCPU checks the host-side table against the CPU
// backend bit for bit (no GPU needed).
func TestTimestepTableMatchesCPU(t *testing.T) {
	ts := []float32{0, 1, 999, 523.25}
	for _, p := range []backend.TimestepParams{
		{Dim: 320, FlipSinToCos: true, MaxPeriod: 10000, Scale: 1},
		{Dim: 256, FlipSinToCos: false, DownscaleFreqShift: 1, MaxPeriod: 10000, Scale: 1000},
	} {
		c := cpu.New()
		dst := c.Alloc(len(ts), p.Dim)
		c.TimestepEmbedding(dst, ts, p)
		if got := backend.TimestepTable(ts, p); !slices.Equal(got, cpu.Data(dst)) {
			t.Errorf("%+v: table differs from the CPU backend", p)
		}
	}
}

func TestOpenWithoutDriver(t *testing.T) {
	if _, err := driverOnce(); err == nil {
		t.Skip("a driver is present")
	}
	_, err := Open(Options{})
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Open without a driver: %v, want ErrNoDevice", err)
	}
	if _, err := Stats(); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Stats without a driver: %v, want ErrNoDevice", err)
	}
}

// --- GPU-only tests below ---

func randVec(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// relErr is ‖got−want‖/‖want‖ and the largest |got−want|/(1+|want|).
func relErr(got, want []float32) (rel, worst float64) {
	var num, den float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		if math.IsNaN(d) {
			return math.Inf(1), math.Inf(1)
		}
		num += d * d
		den += float64(want[i]) * float64(want[i])
		worst = max(worst, math.Abs(d)/(1+math.Abs(float64(want[i]))))
	}
	return math.Sqrt(num / max(den, 1e-30)), worst
}

// TestLargeOpsMatchCPU compares SD-sized ops with the CPU backend: the
// attention variants (head dims 40, 64, 128, 200 — 200 needs more than
// 48 KiB of shared memory), chunked im2col, GroupNorm+SiLU over 40960
// elements per group.
func TestLargeOpsMatchCPU(t *testing.T) {
	g := gpu(t)
	c := cpu.New()
	rng := rand.New(rand.NewPCG(7, 7))
	both := func(shape ...int) (*backend.Tensor, *backend.Tensor) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		v := randVec(rng, n)
		return g.Upload(v, shape...), c.Upload(v, shape...)
	}
	compare := func(t *testing.T, gt, ct *backend.Tensor, tol float64) {
		t.Helper()
		got, err := g.Download(gt)
		if err != nil {
			t.Fatal(err)
		}
		rel, worst := relErr(got, cpu.Data(ct))
		t.Logf("rel err %.2e, max scaled err %.2e", rel, worst)
		if !(worst <= tol) {
			t.Errorf("max scaled error %.3g > %g", worst, tol)
		}
		g.Free(gt)
	}
	for _, s := range []struct{ b, n, heads, dh int }{{2, 1024, 8, 40}, {1, 512, 4, 64}, {1, 300, 2, 128}, {1, 257, 2, 200}} {
		t.Run(fmt.Sprintf("attention_%dx%d_h%d_d%d", s.b, s.n, s.heads, s.dh), func(t *testing.T) {
			hd := s.heads * s.dh
			qg, qc := both(s.b, s.n, hd)
			kg, kc := both(s.b, s.n, hd)
			vg, vc := both(s.b, s.n, hd)
			p := backend.AttentionParams{Heads: s.heads, Scale: float32(1 / math.Sqrt(float64(s.dh)))}
			og, oc := g.Alloc(s.b, s.n, hd), c.Alloc(s.b, s.n, hd)
			g.Attention(og, qg, kg, vg, p)
			c.Attention(oc, qc, kc, vc, p)
			compare(t, og, oc, 1e-4)
			for _, x := range []*backend.Tensor{qg, kg, vg} {
				g.Free(x)
			}
		})
	}
	t.Run("conv3x3_chunked_im2col", func(t *testing.T) {
		xg, xc := both(2, 64, 24, 20)
		wg, wc := both(96, 64, 3, 3)
		bg, bc := both(96)
		p := backend.Conv2DSame(1, 1)
		og, oc := g.Alloc(2, 96, 24, 20), c.Alloc(2, 96, 24, 20)
		saved := g.im2colLimit
		g.im2colLimit = 64 * 9 * 100 // 100 output positions per chunk: 5 chunks per image
		g.Conv2D(og, xg, wg, bg, p)
		g.im2colLimit = saved
		c.Conv2D(oc, xc, wc, bc, p)
		compare(t, og, oc, 1e-4)
	})
	t.Run("groupnorm_split_128x256x256", func(t *testing.T) {
		// 32 groups of 262,144 elements: the split statistics path.
		if s := groupNormSplits(32, 4*256*256); s < 2 {
			t.Fatalf("split %d, want the split path", s)
		}
		xg, xc := both(1, 128, 256, 256)
		gg, gc := both(128)
		bg, bc := both(128)
		og, oc := g.Alloc(1, 128, 256, 256), c.Alloc(1, 128, 256, 256)
		g.GroupNorm(og, xg, gg, bg, 32, 1e-6, true)
		c.GroupNorm(oc, xc, gc, bc, 32, 1e-6, true)
		compare(t, og, oc, 1e-4)
	})
	t.Run("groupnorm_silu_320x32x32", func(t *testing.T) {
		xg, xc := both(2, 320, 32, 32)
		gg, gc := both(320)
		bg, bc := both(320)
		og, oc := g.Alloc(2, 320, 32, 32), c.Alloc(2, 320, 32, 32)
		g.GroupNorm(og, xg, gg, bg, 32, 1e-5, true)
		c.GroupNorm(oc, xc, gc, bc, 32, 1e-5, true)
		compare(t, og, oc, 1e-4)
	})
}

func TestGroupNormSplits(t *testing.T) {
	for _, c := range []struct{ groups, length, want int }{
		{64, 10 * 4096, 5},      // SD UNet at 64x64: chunks of 8192
		{32, 4 * 512 * 512, 16}, // SD VAE at 1024²
		{32, 4096, 1},           // small groups: one block each
		{512, 1 << 20, 1},       // enough groups
		{2, 8192 * 3, 3},        // chunks of at least 8192
	} {
		if got := groupNormSplits(c.groups, c.length); got != c.want {
			t.Errorf("groupNormSplits(%d, %d) = %d, want %d", c.groups, c.length, got, c.want)
		}
	}
}

func TestAllocatorReuses(t *testing.T) {
	g := gpu(t)
	x := g.Alloc(1000, 1000)
	g.Free(x)
	_, _, before := g.MemoryStats()
	for range 10 {
		y := g.Alloc(999, 1001) // same size class
		g.Free(y)
	}
	if _, _, after := g.MemoryStats(); after != before {
		t.Errorf("steady state made %d cuMemAlloc calls", after-before)
	}
}

// TestDroppedTensorsDoNotExhaustMemory allocates far more than the card
// holds, 1 GiB at a time, never calling Free: the garbage collector must
// hand the blocks back (background GC, then reclaim on out-of-memory).
func TestDroppedTensorsDoNotExhaustMemory(t *testing.T) {
	g := gpu(t)
	const n = 1 << 28 // 1 GiB of float32
	total := g.Info().MemoryTotal
	iters := int(2*total/(4*n)) + 1
	for i := range iters {
		x := g.Alloc(n)
		g.Affine(x, x, 0, float32(i)) // touch it
	}
	if err := g.Sync(context.Background()); err != nil {
		t.Fatalf("after %d GiB allocated without Free: %v", iters, err)
	}
	inUse, cached, allocs := g.MemoryStats()
	t.Logf("%d × 1 GiB dropped: %s in use, %s cached, %d cuMemAlloc calls", iters, formatBytes(inUse), formatBytes(cached), allocs)
}

func TestOutOfMemoryIsReported(t *testing.T) {
	d, err := Open(Options{})
	if errors.Is(err, ErrNoDevice) {
		t.Skipf("skipping: no NVIDIA GPU/driver (%v)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var got error
	d.run(func() { _, got = d.poolGet(1<<50, true) })
	var oom *OutOfMemoryError
	if !errors.As(got, &oom) || oom.Requested != 1<<50 || oom.Total == 0 {
		t.Fatalf("poolGet(1 PiB) = %v, want an OutOfMemoryError naming the request and the card's memory", got)
	}
	t.Logf("%v", got)
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestProbeAndStats(t *testing.T) {
	gpu(t)
	info, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	if len(info.GPUs) == 0 || info.GPUs[0].MemoryTotal == 0 || info.CUBLASVersion == "" {
		t.Errorf("probe: %+v", info)
	}
	t.Logf("driver %s, CUDA %s, cuBLAS %s (%s)", info.DriverVersion, info.CUDAVersion, info.CUBLASVersion, info.CUBLASPath)
	st, err := Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != len(info.GPUs) || st[0].MemoryTotal == 0 || st[0].MemoryUsed == 0 {
		t.Errorf("stats: %+v", st)
	}
	t.Logf("stats: %+v", st)
}

// TestTiming prints op timings at SD1.5 sizes (batch 2, 64×64 latent) when
// DARKROOM_CUDA_TIMING=1. Each number is the median of 20 runs after 3
// warm-ups, timed by the host clock around a Sync.
func TestTiming(t *testing.T) {
	if os.Getenv("DARKROOM_CUDA_TIMING") != "1" {
		t.Skip("set DARKROOM_CUDA_TIMING=1 to time ops")
	}
	g := gpu(t)
	rng := rand.New(rand.NewPCG(3, 3))
	up := func(shape ...int) *backend.Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return g.Upload(randVec(rng, n), shape...)
	}
	type row struct {
		name  string
		ms    float64
		flops float64
		bytes float64
	}
	var rows []row
	timeIt := func(name string, flops, bytes float64, f func()) {
		ctx := context.Background()
		for range 3 {
			f()
		}
		if err := g.Sync(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var ms []float64
		for range 20 {
			start := time.Now()
			f()
			if err := g.Sync(ctx); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		}
		sort.Float64s(ms)
		rows = append(rows, row{name, ms[len(ms)/2], flops, bytes})
	}
	// SGEMM 4096³.
	a, b, c := up(4096, 4096), up(4096, 4096), up(4096, 4096)
	timeIt("sgemm 4096^3 (fp32, no TF32)", 2*4096*4096*4096, 3*4096*4096*4, func() { g.MatMul(c, a, b, false) })
	// Self-attention of SD1.5's first block: 4096 tokens, 8 heads of 40.
	q, k, v, o := up(2, 4096, 320), up(2, 4096, 320), up(2, 4096, 320), up(2, 4096, 320)
	p := backend.AttentionParams{Heads: 8, Scale: float32(1 / math.Sqrt(40))}
	timeIt("attention 2x4096x4096 h8 d40", 4*2*8*4096*4096*40, 4*4*2*4096*320, func() { g.Attention(o, q, k, v, p) })
	// Cross-attention: 77 keys of 768 projected to 320.
	kc, vc := up(2, 77, 320), up(2, 77, 320)
	timeIt("cross-attention 2x4096x77 h8 d40", 4*2*8*4096*77*40, 4*2*2*4096*320, func() { g.Attention(o, q, kc, vc, p) })
	// ResNet conv 3×3 320→320 at 64×64.
	x, w, bias, y := up(2, 320, 64, 64), up(320, 320, 3, 3), up(320), up(2, 320, 64, 64)
	timeIt("conv3x3 2x320x64x64 -> 320", 2*2*320*64*64*320*9, 4*(2*2*320*64*64+320*320*9), func() { g.Conv2D(y, x, w, bias, backend.Conv2DSame(1, 1)) })
	gm, bt := up(320), up(320)
	timeIt("groupnorm+silu 2x320x64x64", 0, 4*2*2*320*64*64, func() { g.GroupNorm(y, x, gm, bt, 32, 1e-5, true) })
	timeIt("add (broadcast bias) 2x320x64x64", 0, 4*2*2*320*64*64, func() { g.Binary(backend.Add, y, x, bias.Reshape(1, 320, 1, 1)) })
	lx, lw, lb, ly := up(2*4096, 320), up(1280, 320), up(1280), up(2*4096, 1280)
	timeIt("linear 8192x320 -> 1280", 2*8192*320*1280, 4*(8192*320+1280*320+8192*1280), func() { g.Linear(ly, lx, lw, lb) })

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-36s %10s %10s %10s\n", "op ("+g.Name()+")", "ms", "TFLOP/s", "GB/s")
	for _, r := range rows {
		tf, gb := "-", "-"
		if r.flops > 0 {
			tf = fmt.Sprintf("%.2f", r.flops/r.ms/1e9)
		}
		if r.bytes > 0 {
			gb = fmt.Sprintf("%.0f", r.bytes/r.ms/1e6)
		}
		fmt.Fprintf(&sb, "%-36s %10.3f %10s %10s\n", r.name, r.ms, tf, gb)
	}
	t.Log(sb.String())
}
