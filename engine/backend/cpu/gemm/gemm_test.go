package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// gemmShape is one product to test.
type gemmShape struct{ m, n, k int }

// gemmShapes covers sizes below, at and above every blocking factor: tile
// edges (mr, nr up to 32), panel depths (kc = 256) and task chunks.
func gemmShapes(short bool) []gemmShape {
	if short {
		return []gemmShape{
			{1, 1, 1}, {7, 7, 7}, {17, 17, 17}, {33, 33, 33}, {65, 65, 65},
			{1, 33, 17}, {33, 1, 7}, {7, 65, 1}, {13, 40, 33}, {65, 17, 7},
			{24, 48, 20}, {50, 16, 9},
			{20, 300, 16}, // several tasks along n
		}
	}
	shapes := []gemmShape{
		{1, 1, 1}, {7, 7, 7}, {17, 17, 17}, {33, 33, 33}, {65, 65, 65},
		{129, 129, 129}, {257, 257, 257},
		{1, 257, 33}, {257, 1, 65}, {7, 129, 17}, {129, 7, 257},
		{65, 33, 1}, {33, 65, 129}, {17, 257, 7}, {257, 17, 129},
		{64, 40, 300}, {64, 300, 40}, {300, 20, 520}, {20, 300, 520},
		{200, 700, 33}, {700, 200, 65}, {100, 1000, 5}, {1000, 100, 3},
		// Last strips exactly half as wide as the AVX-512 kernel's.
		{100, 48, 70}, {20, 48, 50}, {30, 80, 90}, {37, 16, 41},
	}
	return shapes
}

// matrixWithPad returns a rows×cols matrix stored with row stride ld, its
// padding filled with NaN so that any read of it poisons the result.
func matrixWithPad(rng *rand.Rand, rows, cols, ld int) []float32 {
	s := make([]float32, max(0, (rows-1)*ld+cols)+3) // slack after the end too
	for i := range s {
		s[i] = float32(math.NaN())
	}
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			s[r*ld+c] = rng.Float32()*2 - 1
		}
	}
	return s
}

// refGemm computes the product in float64, and for each element the sum of
// magnitudes |alpha|·Σ|a·b| + |beta·c| that bounds its rounding error.
func refGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) (want, scale []float64) {
	want = make([]float64, m*n)
	scale = make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, sa float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
				sa += math.Abs(float64(av) * float64(bv))
			}
			v := float64(alpha) * s
			sc := math.Abs(float64(alpha)) * sa
			if beta != 0 {
				v += float64(beta) * float64(c[i*ldc+j])
				sc += math.Abs(float64(beta) * float64(c[i*ldc+j]))
			}
			want[i*n+j], scale[i*n+j] = v, sc
		}
	}
	return want, scale
}

// gemmTol is the allowed error relative to the element's sum of magnitudes.
const gemmTol = 2e-6

// gemmImpl is one way to run a product under test.
type gemmImpl struct {
	name string
	run  func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

// gemmImpls returns the public entry point plus each kernel forced through
// the packed path with one and three workers.
func gemmImpls() []gemmImpl {
	impls := []gemmImpl{{"Sgemm", Sgemm}}
	for _, kern := range availableKernels() {
		for _, workers := range []int{1, 3} {
			impls = append(impls, gemmImpl{
				name: fmt.Sprintf("%s/w%d", kern.name, workers),
				run: func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
					checkGemm(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
					if m == 0 || n == 0 || k == 0 || alpha == 0 {
						sgemm(kern, workers, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
						return
					}
					gemmPacked(kern, workers, m, n, k, alpha, matrix{a, lda, transA}, matrix{b, ldb, transB}, beta, c, ldc)
				},
			})
		}
	}
	impls = append(impls, gemmImpl{"small", func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
		smallGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	}})
	return impls
}

func TestSgemm(t *testing.T) {
	short := testing.Short() || raceEnabled
	scalars := []struct{ alpha, beta float32 }{
		{1, 0}, {0.5, 0}, {1.5, -0.75}, {-1, 1},
	}
	impls := gemmImpls()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range gemmShapes(short) {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			transA, transB := tr[0], tr[1]
			ar, ac := sh.m, sh.k
			if transA {
				ar, ac = sh.k, sh.m
			}
			br, bc := sh.k, sh.n
			if transB {
				br, bc = sh.n, sh.k
			}
			// Strided views: every leading dimension exceeds its minimum.
			lda, ldb, ldc := ac+3, bc+5, sh.n+2
			a := matrixWithPad(rng, ar, ac, lda)
			b := matrixWithPad(rng, br, bc, ldb)
			c0 := matrixWithPad(rng, sh.m, sh.n, ldc)
			a0, b0 := slices.Clone(a), slices.Clone(b)
			for si, sc := range scalars {
				cin := slices.Clone(c0)
				if sc.beta == 0 {
					// C must not be read: NaN in it must not survive.
					for i := 0; i < sh.m; i++ {
						for j := 0; j < sh.n; j++ {
							cin[i*ldc+j] = float32(math.NaN())
						}
					}
				}
				want, scale := refGemm(transA, transB, sh.m, sh.n, sh.k, sc.alpha, a, lda, b, ldb, sc.beta, cin, ldc)
				for _, impl := range impls {
					if impl.name == "small" && sh.m*sh.n*sh.k > 40000 {
						continue
					}
					name := fmt.Sprintf("%dx%dx%d/tA=%v/tB=%v/s%d/%s", sh.m, sh.n, sh.k, transA, transB, si, impl.name)
					c := slices.Clone(cin)
					impl.run(transA, transB, sh.m, sh.n, sh.k, sc.alpha, a, lda, b, ldb, sc.beta, c, ldc)
					if err := checkResult(c, cin, want, scale, sh.m, sh.n, ldc); err != nil {
						t.Errorf("%s: %v", name, err)
					}
					if !sameBits(a, a0) || !sameBits(b, b0) {
						t.Fatalf("%s: inputs A or B were modified", name)
					}
				}
			}
		}
	}
}

// checkResult compares C with the reference and checks that nothing outside
// the m×n elements changed.
func checkResult(c, cin []float32, want, scale []float64, m, n, ldc int) error {
	worst, wi, wj := 0.0, -1, -1
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			got := float64(c[i*ldc+j])
			e := math.Abs(got-want[i*n+j]) / (scale[i*n+j] + 1e-30)
			if math.IsNaN(got) || math.IsInf(got, 0) {
				e = math.Inf(1)
			}
			if e > worst {
				worst, wi, wj = e, i, j
			}
		}
	}
	if worst > gemmTol {
		return fmt.Errorf("C[%d,%d] = %v, want %v (error %.3g of magnitude sum, tolerance %g)", wi, wj, c[wi*ldc+wj], want[wi*n+wj], worst, gemmTol)
	}
	for idx := range c {
		i, j := idx/ldc, idx%ldc
		if i < m && j < n {
			continue
		}
		if math.Float32bits(c[idx]) != math.Float32bits(cin[idx]) {
			return fmt.Errorf("element %d outside C (row %d, column %d) changed from %v to %v", idx, i, j, cin[idx], c[idx])
		}
	}
	return nil
}

func sameBits(x, y []float32) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
			return false
		}
	}
	return true
}

func TestSgemmDegenerate(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name        string
		m, n, k     int
		alpha, beta float32
		c, want     []float32
	}{
		{"k=0 beta=0 clears NaN", 2, 2, 0, 1, 0, []float32{nan, nan, nan, nan}, []float32{0, 0, 0, 0}},
		{"k=0 beta=2 scales", 2, 2, 0, 1, 2, []float32{1, 2, 3, 4}, []float32{2, 4, 6, 8}},
		{"alpha=0 beta=1 keeps", 2, 2, 3, 0, 1, []float32{1, 2, 3, 4}, []float32{1, 2, 3, 4}},
		{"alpha=0 beta=-1 negates", 1, 3, 3, 0, -1, []float32{1, 2, 3}, []float32{-1, -2, -3}},
		{"m=0 leaves C", 0, 2, 2, 1, 0, []float32{5, 6}, []float32{5, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}
			b := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}
			c := slices.Clone(tt.c)
			Sgemm(false, false, tt.m, tt.n, tt.k, tt.alpha, a, max(1, tt.k), b, tt.n, tt.beta, c, tt.n)
			if !slices.Equal(c, tt.want) {
				t.Errorf("C = %v, want %v", c, tt.want)
			}
		})
	}
}

func TestSgemmExact(t *testing.T) {
	// [1 2 3; 4 5 6] · [7 8; 9 10; 11 12] = [58 64; 139 154], exact in float32.
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{7, 8, 9, 10, 11, 12}
	for _, impl := range gemmImpls() {
		t.Run(impl.name, func(t *testing.T) {
			c := []float32{1, 1, 1, 1}
			impl.run(false, false, 2, 2, 3, 2, a, 3, b, 2, 0.5, c, 2)
			want := []float32{116.5, 128.5, 278.5, 308.5}
			if !slices.Equal(c, want) {
				t.Errorf("C = %v, want %v", c, want)
			}
		})
	}
}

func TestSgemmPanics(t *testing.T) {
	tests := []struct {
		name string
		f    func()
	}{
		{"negative m", func() { Sgemm(false, false, -1, 1, 1, 1, []float32{1}, 1, []float32{1}, 1, 0, []float32{1}, 1) }},
		{"short a", func() {
			Sgemm(false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2)
		}},
		{"short c", func() {
			Sgemm(false, false, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 4), 2, 0, make([]float32, 3), 2)
		}},
		{"small ldb", func() {
			Sgemm(false, true, 2, 3, 2, 1, make([]float32, 4), 2, make([]float32, 6), 1, 0, make([]float32, 6), 3)
		}},
		{"small ldc", func() {
			Sgemm(false, false, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 4), 2, 0, make([]float32, 4), 1)
		}},
		{"overlapping batch", func() {
			SgemmStridedBatched(false, false, 2, 2, 2, 1, make([]float32, 8), 2, 4, make([]float32, 8), 2, 4, 0, make([]float32, 8), 2, 2, 2)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.f()
		})
	}
}

func TestSgemmStridedBatched(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name                      string
		m, n, k, batch            int
		transA, transB, broadcast bool
	}{
		{"attention scores", 16, 24, 8, 6, false, true, false},
		{"attention values", 16, 8, 24, 6, false, false, false},
		{"shared B", 9, 13, 11, 5, true, false, true},
		{"large items", 70, 90, 80, 2, false, false, false},
		{"single", 5, 6, 7, 1, true, true, false},
		{"empty", 0, 6, 7, 3, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar, ac := tt.m, tt.k
			if tt.transA {
				ar, ac = tt.k, tt.m
			}
			br, bc := tt.k, tt.n
			if tt.transB {
				br, bc = tt.n, tt.k
			}
			lda, ldb, ldc := ac+1, bc+2, tt.n+3
			sa, sb, sc := ar*lda+4, br*ldb+1, tt.m*ldc+2
			if tt.broadcast {
				sb = 0
			}
			a := matrixWithPad(rng, 1, sa*tt.batch, sa*tt.batch)
			b := matrixWithPad(rng, 1, sb*tt.batch+br*ldb, sb*tt.batch+br*ldb)
			c := matrixWithPad(rng, 1, sc*tt.batch, sc*tt.batch)
			cin := slices.Clone(c)
			SgemmStridedBatched(tt.transA, tt.transB, tt.m, tt.n, tt.k, 0.75, a, lda, sa, b, ldb, sb, 0.5, c, ldc, sc, tt.batch)
			for i := 0; i < tt.batch; i++ {
				want := slices.Clone(cin[i*sc:])
				Sgemm(tt.transA, tt.transB, tt.m, tt.n, tt.k, 0.75, a[i*sa:], lda, b[i*sb:], ldb, 0.5, want, ldc)
				for r := 0; r < tt.m; r++ {
					for j := 0; j < tt.n; j++ {
						g, w := c[i*sc+r*ldc+j], want[r*ldc+j]
						if math.Abs(float64(g-w)) > 1e-5*(1+math.Abs(float64(w))) {
							t.Fatalf("batch %d C[%d,%d] = %v, want %v", i, r, j, g, w)
						}
					}
				}
			}
		})
	}
}

// TestSgemmConcurrent calls Sgemm from several goroutines at once, as the
// backend's attention does, and checks each result against a lone call.
func TestSgemmConcurrent(t *testing.T) {
	const m, n, k, calls = 40, 70, 90, 4
	rng := rand.New(rand.NewPCG(7, 8))
	a := randSlice(rng, calls*m*k)
	b := randSlice(rng, k*n)
	want := make([]float32, calls*m*n)
	for i := range calls {
		Sgemm(false, false, m, n, k, 1, a[i*m*k:], k, b, n, 0, want[i*m*n:], n)
	}
	got := make([]float32, calls*m*n)
	done := make(chan struct{})
	for i := range calls {
		go func() {
			defer func() { done <- struct{}{} }()
			Sgemm(false, false, m, n, k, 1, a[i*m*k:], k, b, n, 0, got[i*m*n:(i+1)*m*n], n)
		}()
	}
	for range calls {
		<-done
	}
	if !slices.Equal(got, want) {
		t.Error("concurrent results differ from sequential ones")
	}
}

// TestSgemmSteadyState checks that repeated products reuse their packing
// buffers and leave no goroutines behind.
func TestSgemmSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	const m, n, k = 300, 200, 500 // large enough to run on several workers
	rng := rand.New(rand.NewPCG(9, 9))
	a, b, c := randSlice(rng, m*k), randSlice(rng, k*n), make([]float32, m*n)
	run := func() { Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n) }
	runtime.GC() // collect the earlier tests' garbage, so no cycle empties the pools below
	run()
	goroutines := runtime.NumGoroutine()
	// A collection can still empty the pools now and then: take the best of
	// a few rounds.
	perCall := ^uint64(0)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const calls = 20
		for range calls {
			run()
		}
		runtime.ReadMemStats(&after)
		perCall = min(perCall, (after.TotalAlloc-before.TotalAlloc)/calls)
	}
	// The packed panels alone are over 600 KB; what is left is bookkeeping.
	if perCall > 16<<10 {
		t.Errorf("Sgemm allocates %d bytes per call in steady state, want ≤ 16 KB", perCall)
	}
	if got := runtime.NumGoroutine(); got > goroutines {
		t.Errorf("%d goroutines after the calls, %d before", got, goroutines)
	}
}

// KernelName names every kernel by its instruction set.
func TestKernelName(t *testing.T) {
	want := map[string]string{
		"avx512-12x32": "AVX-512 (avx512-12x32)",
		"avx2-6x16":    "AVX2+FMA (avx2-6x16)",
		"generic4x4":   "generic (pure Go, generic4x4)",
	}
	for _, k := range availableKernels() {
		if got := kernelName(k); got != want[k.name] {
			t.Errorf("%s: %q, want %q", k.name, got, want[k.name])
		}
	}
	if got := KernelName(); got != kernelName(availableKernels()[0]) {
		t.Errorf("KernelName() = %q, not the best available kernel's", got)
	}
}
