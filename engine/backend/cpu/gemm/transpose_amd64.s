//go:build amd64 && !purego

#include "textflag.h"

// func transpose8x8(src *float32, ld int, dst *float32, ldd int, blocks int)
//
// Transposes blocks consecutive 8×8 blocks of an 8-row band: for b < blocks
// and r, i < 8, dst[(8b+i)·ldd+r] = src[r·ld+8b+i]. Needs AVX.
TEXT ·transpose8x8(SB), NOSPLIT, $0-40
	MOVQ src+0(FP), SI
	MOVQ ld+8(FP), AX
	MOVQ dst+16(FP), DI
	MOVQ ldd+24(FP), BX
	MOVQ blocks+32(FP), CX
	SHLQ $2, AX
	SHLQ $2, BX
	LEAQ (AX)(AX*2), DX // 3·ld
	LEAQ (SI)(AX*4), R8 // row 4
	LEAQ (BX)(BX*2), R9 // 3·ldd
	TESTQ CX, CX
	JEQ done

loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(AX*1), Y1
	VMOVUPS (SI)(AX*2), Y2
	VMOVUPS (SI)(DX*1), Y3
	VMOVUPS (R8), Y4
	VMOVUPS (R8)(AX*1), Y5
	VMOVUPS (R8)(AX*2), Y6
	VMOVUPS (R8)(DX*1), Y7

	// Interleave row pairs: per 128-bit lane, (r0[0] r1[0] r0[1] r1[1]) etc.
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	// Gather four rows per column: lane 0 holds column c, lane 1 column c+4.
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	// Join rows 0-3 and 4-7 of each column.
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(BX*1)
	VMOVUPS Y10, (DI)(BX*2)
	VMOVUPS Y11, (DI)(R9*1)
	LEAQ (DI)(BX*4), R10
	VMOVUPS Y12, (R10)
	VMOVUPS Y13, (R10)(BX*1)
	VMOVUPS Y14, (R10)(BX*2)
	VMOVUPS Y15, (R10)(R9*1)

	ADDQ $32, SI
	ADDQ $32, R8
	LEAQ (R10)(BX*4), DI
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func gatherRows(dst, src *float32, offs *int, n, width, ldd int)
//
// For i < n, copies width floats (8, 16 or 32) from src[offs[i]:] to
// dst[i·ldd:]. Needs AVX.
TEXT ·gatherRows(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ offs+16(FP), BX
	MOVQ n+24(FP), CX
	MOVQ width+32(FP), DX
	MOVQ ldd+40(FP), R8
	SHLQ $2, R8
	TESTQ CX, CX
	JEQ gdone
	CMPQ DX, $32
	JEQ g32
	CMPQ DX, $16
	JEQ g16

g8:
	MOVQ (BX), AX
	VMOVUPS (SI)(AX*4), Y0
	VMOVUPS Y0, (DI)
	ADDQ $8, BX
	ADDQ R8, DI
	DECQ CX
	JNZ g8
	JMP gdone

g16:
	MOVQ (BX), AX
	VMOVUPS (SI)(AX*4), Y0
	VMOVUPS 32(SI)(AX*4), Y1
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	ADDQ $8, BX
	ADDQ R8, DI
	DECQ CX
	JNZ g16
	JMP gdone

g32:
	MOVQ (BX), AX
	VMOVUPS (SI)(AX*4), Y0
	VMOVUPS 32(SI)(AX*4), Y1
	VMOVUPS 64(SI)(AX*4), Y2
	VMOVUPS 96(SI)(AX*4), Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $8, BX
	ADDQ R8, DI
	DECQ CX
	JNZ g32

gdone:
	VZEROUPPER
	RET
