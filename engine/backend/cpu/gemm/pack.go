package gemm

// aSource is the left operand of a product: something that can pack blocks of
// op(A) into the layout the micro-kernel reads.
type aSource interface {
	// packA packs rows [i0,i0+mc) and columns [p0,p0+kc) of op(A) into
	// panels of mr rows: panel q starts at dst[q·mr·kc], and within it
	// element (row r, column p) is at p·mr+r. Rows past mc are zeroed.
	packA(dst []float32, i0, mc, p0, kc, mr int)
}

// bSource is the right operand of a product.
type bSource interface {
	// packB packs rows [p0,p0+kc) and columns [j0,j0+nc) of op(B) into
	// strips of nr columns: strip q starts at dst[q·nr·kc], and within it
	// element (row p, column c) is at p·nr+c. Columns past nc are zeroed.
	packB(dst []float32, p0, kc, j0, nc, nr int)
}

// matrix is a row-major matrix operand, used as op(X) = X or Xᵀ.
type matrix struct {
	data  []float32
	ld    int
	trans bool
}

func (x matrix) packA(dst []float32, i0, mc, p0, kc, mr int) {
	for ir := 0; ir < mc; ir += mr {
		rows := min(mr, mc-ir)
		panel := dst[ir*kc : ir*kc+mr*kc]
		if x.trans {
			// op(A)[i][p] = data[p·ld+i]: each p gives rows contiguous values.
			for p := 0; p < kc; p++ {
				src := x.data[(p0+p)*x.ld+i0+ir:]
				d := panel[p*mr : p*mr+mr]
				copy(d, src[:rows])
				clear(d[rows:])
			}
			continue
		}
		interleave(panel, mr, x.data[(i0+ir)*x.ld+p0:], x.ld, rows, kc)
		if rows < mr {
			for p := 0; p < kc; p++ {
				clear(panel[p*mr+rows : p*mr+mr])
			}
		}
	}
}

func (x matrix) packB(dst []float32, p0, kc, j0, nc, nr int) {
	// Row offsets for copyRows, when B is not transposed.
	var offsBuf [maxPanelDepth]int
	var offs []int
	if !x.trans && kc <= maxPanelDepth {
		offs = offsBuf[:kc]
		for p := range offs {
			offs[p] = p * x.ld
		}
	}
	for jr := 0; jr < nc; jr += nr {
		cols := min(nr, nc-jr)
		strip := dst[jr*kc : jr*kc+nr*kc]
		if !x.trans {
			// op(B)[p][j] = data[p·ld+j]: each p gives cols contiguous values.
			if offs != nil && copyRows(strip, x.data[p0*x.ld+j0+jr:], offs, cols, nr) {
				if cols < nr {
					for p := 0; p < kc; p++ {
						clear(strip[p*nr+cols : p*nr+nr])
					}
				}
				continue
			}
			for p := 0; p < kc; p++ {
				src := x.data[(p0+p)*x.ld+j0+jr:]
				d := strip[p*nr : p*nr+nr]
				copy(d, src[:cols])
				clear(d[cols:])
			}
			continue
		}
		interleave(strip, nr, x.data[(j0+jr)*x.ld+p0:], x.ld, cols, kc)
		if cols < nr {
			for p := 0; p < kc; p++ {
				clear(strip[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// interleave transposes a rows×kc block of src (row stride ld) into dst so
// that element (r, p) lands at dst[p·w+r], for rows ≤ w. It moves bands of
// eight rows with transpose8 where the CPU allows, then four rows at a time,
// so each step stores neighbouring floats.
func interleave(dst []float32, w int, src []float32, ld, rows, kc int) {
	r := 0
	for ; r+8 <= rows && kc >= 8; r += 8 {
		done := transpose8(dst[r:], w, src[r*ld:], ld, kc)
		if done == 0 {
			break
		}
		for p := done; p < kc; p++ {
			d := dst[p*w+r : p*w+r+8 : p*w+r+8]
			for i := range d {
				d[i] = src[(r+i)*ld+p]
			}
		}
	}
	for ; r+4 <= rows; r += 4 {
		s0 := src[r*ld : r*ld+kc]
		s1 := src[(r+1)*ld : (r+1)*ld+kc]
		s2 := src[(r+2)*ld : (r+2)*ld+kc]
		s3 := src[(r+3)*ld : (r+3)*ld+kc]
		for p := range s0 {
			d := dst[p*w+r : p*w+r+4 : p*w+r+4]
			d[0], d[1], d[2], d[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
	for ; r < rows; r++ {
		s0 := src[r*ld : r*ld+kc]
		for p, v := range s0 {
			dst[p*w+r] = v
		}
	}
}
