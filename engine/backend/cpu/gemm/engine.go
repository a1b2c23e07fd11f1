package gemm

import (
	"sync"
	"sync/atomic"
)

const (
	// minFlopsPerWorker is the least work, in flops, worth a goroutine.
	minFlopsPerWorker = 1 << 21
	// tasksPerWorker is how many chunks each worker gets on average, so that
	// a worker slowed by other load does not hold up the rest.
	tasksPerWorker = 3
)

// workersFor returns how many goroutines a product of the given size should
// use, at most maxWorkers.
func workersFor(maxWorkers, m, n, k int) int {
	flops := 2 * float64(m) * float64(n) * float64(k)
	w := int(flops / minFlopsPerWorker)
	return max(1, min(w, maxWorkers))
}

// sharedBudget is the most floats packed into the buffer all workers share
// at once (16 MB): enough for the whole shared operand of most products.
const sharedBudget = 4 << 20

// gemmPacked computes C = alpha·op(A)·op(B) + beta·C with packed operands,
// for m, n, k > 0, using up to workers goroutines (the caller's included).
//
// The depth k is cut into panels of about kern.kc. The operand along the
// shorter side of C is packed once, all its panels at a time if they fit
// sharedBudget, into a buffer all workers share. The longer side is cut into
// chunks; each task takes one chunk, and for each depth panel packs its part
// of the other operand privately and runs the macro-kernel, so its block of C
// stays in cache across panels. No element is packed twice.
func gemmPacked(kern *kernel, workers, m, n, k int, alpha float32, a aSource, b bSource, beta float32, c []float32, ldc int) {
	mr, nr := kern.mr, kern.nr
	kcMax := ceilDiv(k, ceilDiv(k, kern.kc)) // equal panels, none tiny
	splitN := n >= m

	var chunk, tasks, sharedWidth int
	if splitN {
		chunk = min(roundUp(n, nr), kern.nc)
		if workers > 1 {
			chunk = clamp(roundUp(ceilDiv(n, workers*tasksPerWorker), nr), 4*nr, kern.nc)
		}
		tasks = ceilDiv(n, chunk)
		sharedWidth = roundUp(m, mr)
	} else {
		chunk = min(roundUp(m, mr), kern.mc)
		if workers > 1 {
			chunk = clamp(roundUp(ceilDiv(m, workers*tasksPerWorker), mr), 2*mr, kern.mc)
		}
		tasks = ceilDiv(m, chunk)
		sharedWidth = roundUp(n, nr)
	}
	workers = max(1, min(workers, tasks))
	// Depth panels packed per round of the shared buffer.
	perRound := clamp(sharedBudget/(sharedWidth*kcMax), 1, ceilDiv(k, kcMax))

	shared := getBuf(sharedWidth * min(k, perRound*kcMax))
	defer putBuf(shared)
	privLen := roundUp(chunk, max(mr, nr))*kcMax + mr*nr
	priv := make([]*[]float32, workers)
	for w := range priv {
		priv[w] = getBuf(privLen)
	}
	defer func() {
		for _, p := range priv {
			putBuf(p)
		}
	}()

	for k0 := 0; k0 < k; k0 += perRound * kcMax {
		k1 := min(k, k0+perRound*kcMax)
		sh := *shared
		// Pack the shared operand for depths [k0,k1): the panel at depth pc
		// starts at sh[(pc-k0)·sharedWidth].
		if splitN {
			panels := ceilDiv(m, mr)
			groups := min(panels, workers*4)
			parallelFor(workers, groups, func(_, g int) {
				i0, i1 := g*panels/groups*mr, min((g+1)*panels/groups*mr, m)
				for pc := k0; pc < k1; pc += kcMax {
					kc := min(kcMax, k1-pc)
					a.packA(sh[(pc-k0)*sharedWidth+i0*kc:], i0, i1-i0, pc, kc, mr)
				}
			})
		} else {
			strips := ceilDiv(n, nr)
			groups := min(strips, workers*4)
			parallelFor(workers, groups, func(_, g int) {
				j0, j1 := g*strips/groups*nr, min((g+1)*strips/groups*nr, n)
				for pc := k0; pc < k1; pc += kcMax {
					kc := min(kcMax, k1-pc)
					b.packB(sh[(pc-k0)*sharedWidth+j0*kc:], pc, kc, j0, j1-j0, nr)
				}
			})
		}
		parallelFor(workers, tasks, func(w, t int) {
			buf := *priv[w]
			tmp := buf[privLen-mr*nr:]
			for pc := k0; pc < k1; pc += kcMax {
				kc := min(kcMax, k1-pc)
				bt := beta
				if pc > 0 {
					bt = 1
				}
				panel := sh[(pc-k0)*sharedWidth:]
				if splitN {
					j0 := t * chunk
					nc := min(chunk, n-j0)
					bp := buf[:roundUp(nc, nr)*kc]
					b.packB(bp, pc, kc, j0, nc, nr)
					for ic := 0; ic < m; ic += kern.mc {
						mc := min(kern.mc, m-ic)
						macroKernel(kern, mc, nc, kc, alpha, panel[ic*kc:], bp, bt, c[ic*ldc+j0:], ldc, tmp)
					}
				} else {
					i0 := t * chunk
					mc := min(chunk, m-i0)
					if am, ok := a.(matrix); ok && !am.trans && kern.direct != nil && n <= directMaxN {
						macroKernelDirect(kern, mc, n, kc, alpha, am.data[i0*am.ld+pc:], am.ld, panel, bt, c[i0*ldc:], ldc, buf[:mr*kc], tmp)
						continue
					}
					ap := buf[:roundUp(mc, mr)*kc]
					a.packA(ap, i0, mc, pc, kc, mr)
					macroKernel(kern, mc, n, kc, alpha, ap, panel, bt, c[i0*ldc:], ldc, tmp)
				}
			}
		})
	}
}

// macroKernel multiplies a packed mc×kc block of A by a packed kc×nc block of
// B into C. Partial tiles at the edges go through tmp (mr·nr floats), so
// nothing outside the mc×nc block of C is touched.
func macroKernel(kern *kernel, mc, nc, kc int, alpha float32, ap, bp []float32, beta float32, c []float32, ldc int, tmp []float32) {
	mr, nr := kern.mr, kern.nr
	for jr := 0; jr < nc; jr += nr {
		cols := min(nr, nc-jr)
		bs := bp[jr*kc:]
		for ir := 0; ir < mc; ir += mr {
			rows := min(mr, mc-ir)
			as := ap[ir*kc:]
			if rows == mr && cols == nr {
				kern.micro(kc, as, bs, c[ir*ldc+jr:], ldc, alpha, beta)
				continue
			}
			micro := kern.micro
			if h := kern.half; h != nil && cols <= h.nr {
				if rows == mr && cols == h.nr {
					h.micro(kc, as, bs, c[ir*ldc+jr:], ldc, alpha, beta)
					continue
				}
				micro = h.micro
			}
			micro(kc, as, bs, tmp, nr, alpha, 0)
			mergeTile(tmp, nr, rows, cols, beta, c[ir*ldc+jr:], ldc)
		}
	}
}

// directMaxN is the widest product whose A is read unpacked: each element of
// A is then used by at most two strips of B, too few to repay packing.
const directMaxN = 64

// macroKernelDirect is macroKernel for a row-major A read in place (row i,
// column p at a[i·lda+p]) rather than packed. Rows that do not fill a tile
// are packed into ap (mr·kc floats) once.
func macroKernelDirect(kern *kernel, mc, nc, kc int, alpha float32, a []float32, lda int, bp []float32, beta float32, c []float32, ldc int, ap, tmp []float32) {
	mr, nr := kern.mr, kern.nr
	full := mc / mr * mr
	if full < mc {
		matrix{data: a, ld: lda}.packA(ap, full, mc-full, 0, kc, mr)
	}
	for jr := 0; jr < nc; jr += nr {
		cols := min(nr, nc-jr)
		bs := bp[jr*kc:]
		direct, micro, width := kern.direct, kern.micro, nr
		if h := kern.half; h != nil && cols <= h.nr {
			direct, micro, width = h.direct, h.micro, h.nr
		}
		for ir := 0; ir < full; ir += mr {
			if cols == width {
				direct(kc, a[ir*lda:], lda, bs, c[ir*ldc+jr:], ldc, alpha, beta)
				continue
			}
			direct(kc, a[ir*lda:], lda, bs, tmp, nr, alpha, 0)
			mergeTile(tmp, nr, mr, cols, beta, c[ir*ldc+jr:], ldc)
		}
		if full < mc {
			micro(kc, ap, bs, tmp, nr, alpha, 0)
			mergeTile(tmp, nr, mc-full, cols, beta, c[full*ldc+jr:], ldc)
		}
	}
}

// mergeTile stores the rows×cols corner of the tile t (row stride ldt) into
// C as t + beta·C, not reading C when beta is 0.
func mergeTile(t []float32, ldt, rows, cols int, beta float32, c []float32, ldc int) {
	for r := 0; r < rows; r++ {
		dst := c[r*ldc : r*ldc+cols]
		src := t[r*ldt : r*ldt+cols]
		if beta == 0 {
			copy(dst, src)
			continue
		}
		for j, v := range src {
			dst[j] = v + beta*dst[j]
		}
	}
}

// parallelFor runs fn(worker, task) for every task in [0, tasks) on up to
// workers goroutines, the caller's included, and returns when all are done.
// Tasks are handed out in order as workers become free. worker is in
// [0, workers) and no two concurrent calls share it.
func parallelFor(workers, tasks int, fn func(worker, task int)) {
	if workers <= 1 || tasks <= 1 {
		for t := 0; t < tasks; t++ {
			fn(0, t)
		}
		return
	}
	workers = min(workers, tasks)
	var next atomic.Int64
	run := func(w int) {
		for {
			t := int(next.Add(1) - 1)
			if t >= tasks {
				return
			}
			fn(w, t)
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(func() { run(w) })
	}
	run(0)
	wg.Wait()
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, b int) int { return ceilDiv(a, b) * b }

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }
