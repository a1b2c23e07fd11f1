#include "textflag.h"

// callCTrampoline is a C function (System V AMD64 ABI) of two arguments,
// fn (RDI) and args (RSI, a *[24]uintptr): it calls fn(args[0], ...,
// args[23]) with the first six in registers and the rest on the stack, and
// returns fn's RAX. purego calls it on the system stack like any C function.
// It was written for cublasGemmEx's 19 arguments on the belief that purego
// passes at most 15; purego v0.11 passes up to 32, so RegisterFunc could
// call cuBLAS directly (and give arm64 fp16 too). The GPU tests ran through
// this trampoline, which stays until that switch is checked on a GPU.
TEXT callCTrampoline<>(SB), NOSPLIT|NOFRAME, $0
	MOVQ DI, AX
	MOVQ SI, R11
	// On entry SP is 8 mod 16; 152 bytes hold the 18 stack arguments and
	// leave SP 16-byte aligned at the CALL, as the ABI requires.
	SUBQ $152, SP
	MOVQ 48(R11), R10
	MOVQ R10, 0(SP)
	MOVQ 56(R11), R10
	MOVQ R10, 8(SP)
	MOVQ 64(R11), R10
	MOVQ R10, 16(SP)
	MOVQ 72(R11), R10
	MOVQ R10, 24(SP)
	MOVQ 80(R11), R10
	MOVQ R10, 32(SP)
	MOVQ 88(R11), R10
	MOVQ R10, 40(SP)
	MOVQ 96(R11), R10
	MOVQ R10, 48(SP)
	MOVQ 104(R11), R10
	MOVQ R10, 56(SP)
	MOVQ 112(R11), R10
	MOVQ R10, 64(SP)
	MOVQ 120(R11), R10
	MOVQ R10, 72(SP)
	MOVQ 128(R11), R10
	MOVQ R10, 80(SP)
	MOVQ 136(R11), R10
	MOVQ R10, 88(SP)
	MOVQ 144(R11), R10
	MOVQ R10, 96(SP)
	MOVQ 152(R11), R10
	MOVQ R10, 104(SP)
	MOVQ 160(R11), R10
	MOVQ R10, 112(SP)
	MOVQ 168(R11), R10
	MOVQ R10, 120(SP)
	MOVQ 176(R11), R10
	MOVQ R10, 128(SP)
	MOVQ 184(R11), R10
	MOVQ R10, 136(SP)
	MOVQ 0(R11), DI
	MOVQ 8(R11), SI
	MOVQ 16(R11), DX
	MOVQ 24(R11), CX
	MOVQ 32(R11), R8
	MOVQ 40(R11), R9
	CALL AX
	ADDQ $152, SP
	RET

// func callCTrampolineAddr() uintptr
TEXT ·callCTrampolineAddr(SB), NOSPLIT, $0-8
	LEAQ callCTrampoline<>(SB), AX
	MOVQ AX, ret+0(FP)
	RET
