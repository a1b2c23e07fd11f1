// ggml_dequant writes the reference vectors of darkroom's GGUF
// dequantisation test (engine/weights/gguf/testdata/ggml_dequant.gguf.gz):
// blocks of every supported ggml type and the float32 values ggml's own
// dequantize_row_* functions (ggml-quants.c) produce from them.
//
// This file is darkroom's; ggml's sources are not part of the repository.
// Build it against a checkout of github.com/ggml-org/ggml given on the
// command line:
//
//	GGML=/path/to/ggml
//	gcc -O2 -ffp-contract=off -std=gnu11 -I$GGML/include -I$GGML/src tools/reference/ggml_dequant/main.c $GGML/src/ggml-quants.c -lm -o /tmp/ggml_dequant
//	/tmp/ggml_dequant /tmp/ggml_dequant.gguf
//	gzip -9n < /tmp/ggml_dequant.gguf > engine/weights/gguf/testdata/ggml_dequant.gguf.gz
//
// -ffp-contract=off keeps the compiler from fusing ggml's multiply-adds
// (as a -march=native build on an FMA machine may): the reference is the
// C semantics of ggml-quants.c, every operation rounded to float32.
//
// For each quantised type T the file holds "T.q" (the blocks, stored as a
// GGUF tensor of type T) and "T.want" (F32, ggml's dequantisation); for
// Q8_0 also "q8_0.src", the rows quantize_row_q8_0_ref quantised into the
// first blocks (darkroom's Q8_0 quantiser is tested against them). The
// blocks are of two kinds: rows quantised by ggml's quantize_row_T_ref
// from hard data (zeros, huge and tiny magnitudes, all-negative rows, a
// single outlier, random normals of several scales), then blocks of
// random bytes (any scale bits, NaN and infinite halves included). For F16
// "T.q" holds all 65536 bit patterns, for BF16 every 16th with its low four
// bits cycling through all sixteen values, and "T.want" ggml's GGML_FP16_TO_FP32 / GGML_BF16_TO_FP32.
#define GGML_COMMON_DECL_C
#include "ggml-common.h"
#include "ggml-impl.h"
#include "ggml-quants.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Stubs for the few ggml.c symbols ggml-quants.c links against; the
// reference quantisers and dequantisers used here call none of them.
void ggml_abort(const char *file, int line, const char *fmt, ...) {
	fprintf(stderr, "ggml_abort at %s:%d (%s)\n", file, line, fmt);
	abort();
}
size_t ggml_row_size(enum ggml_type type, int64_t ne) { (void)type; (void)ne; abort(); }
const char *ggml_type_name(enum ggml_type type) { (void)type; return "?"; }
size_t ggml_type_size(enum ggml_type type) { (void)type; abort(); }

// xorshift64* and Box-Muller: deterministic inputs.
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
	rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}
static float uniform(void) { return (float)((next() >> 11) * (1.0 / 9007199254740992.0)); }
static float normal(void) {
	float u = uniform(), v = uniform();
	if (u < 1e-30f) u = 1e-30f;
	return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

typedef void (*quant_fn)(const float *x, void *y, int64_t k);
typedef void (*dequant_fn)(const void *x, float *y, int64_t k);

struct qtype {
	const char *name;
	uint32_t ggml;  // enum ggml_type
	int block;      // elements per block
	int size;       // bytes per block
	quant_fn quant;
	dequant_fn dequant;
};

#define Q(n, T, QK, B) {#n, GGML_TYPE_##T, QK, sizeof(B), (quant_fn)quantize_row_##n##_ref, (dequant_fn)dequantize_row_##n}
static const struct qtype qtypes[] = {
	Q(q4_0, Q4_0, QK4_0, block_q4_0), Q(q4_1, Q4_1, QK4_1, block_q4_1),
	Q(q5_0, Q5_0, QK5_0, block_q5_0), Q(q5_1, Q5_1, QK5_1, block_q5_1),
	Q(q8_0, Q8_0, QK8_0, block_q8_0),
	Q(q2_K, Q2_K, QK_K, block_q2_K), Q(q3_K, Q3_K, QK_K, block_q3_K),
	Q(q4_K, Q4_K, QK_K, block_q4_K), Q(q5_K, Q5_K, QK_K, block_q5_K),
	Q(q6_K, Q6_K, QK_K, block_q6_K), Q(q8_K, Q8_K, QK_K, block_q8_K),
};
#define NTYPES (sizeof(qtypes) / sizeof(qtypes[0]))

// A tensor to write: name, ggml type, element count, data.
struct tensor {
	char name[32];
	uint32_t type;
	uint64_t n;
	void *data;
	size_t bytes;
};
static struct tensor tensors[64];
static int ntensors;

static void add(const char *name, uint32_t type, uint64_t n, void *data, size_t bytes) {
	struct tensor *t = &tensors[ntensors++];
	snprintf(t->name, sizeof t->name, "%s", name);
	t->type = type, t->n = n, t->data = data, t->bytes = bytes;
}

// fill writes one row of hard data of kind k (of nkinds) into x.
enum { NKINDS = 10 };
static void fill(float *x, int n, int k) {
	for (int i = 0; i < n; i++) {
		switch (k) {
		case 0: x[i] = 0; break;                             // all zeros
		case 1: x[i] = normal(); break;                      // unit normals
		case 2: x[i] = 1e4f * normal(); break;               // huge, scales near the half range
		case 3: x[i] = 1e-6f * normal(); break;              // tiny: subnormal half scales
		case 4: x[i] = -fabsf(normal()) - 0.1f; break;       // all negative
		case 5: x[i] = fabsf(normal()) + 0.1f; break;        // all positive
		case 6: x[i] = i == n / 3 ? 100.0f : 0.01f * normal(); break; // one outlier
		case 7: x[i] = (float)((int)(next() % 7) - 3); break; // small integers
		case 8: x[i] = 1e-30f * normal(); break;             // underflows to zero scales
		default: x[i] = 3e5f * normal(); break;              // beyond the half range: infinite scales
		}
	}
}

static void le32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void le64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void str(FILE *f, const char *s) { le64(f, strlen(s)); fwrite(s, 1, strlen(s), f); }

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: %s out.gguf\n", argv[0]);
		return 2;
	}
	for (size_t ti = 0; ti < NTYPES; ti++) {
		const struct qtype *q = &qtypes[ti];
		// Rows of quantised hard data, then random-byte blocks.
		int perRow = q->block == QK_K ? 1 : 8; // blocks per row
		int rows = NKINDS * 2, randomBlocks = q->block == QK_K ? 12 : 64;
		int nq = rows * perRow, nb = nq + randomBlocks;
		int n = nb * q->block;
		unsigned char *blocks = malloc((size_t)nb * q->size);
		float *x = malloc((size_t)perRow * q->block * sizeof(float));
		float *want = malloc((size_t)n * sizeof(float));
		// The quantiser's input, kept for Q8_0 (darkroom quantises Q8_0).
		int keepSrc = q->ggml == GGML_TYPE_Q8_0;
		float *src = keepSrc ? malloc((size_t)nq * q->block * sizeof(float)) : NULL;
		for (int r = 0; r < rows; r++) {
			fill(x, perRow * q->block, r % NKINDS);
			q->quant(x, blocks + (size_t)r * perRow * q->size, perRow * q->block);
			if (keepSrc) {
				memcpy(src + (size_t)r * perRow * q->block, x, (size_t)perRow * q->block * sizeof(float));
			}
		}
		for (size_t i = (size_t)nq * q->size; i < (size_t)nb * q->size; i++) {
			blocks[i] = (unsigned char)(next() >> 56);
		}
		q->dequant(blocks, want, n);
		char name[32];
		snprintf(name, sizeof name, "%s.q", q->name);
		add(name, q->ggml, n, blocks, (size_t)nb * q->size);
		snprintf(name, sizeof name, "%s.want", q->name);
		add(name, GGML_TYPE_F32, n, want, (size_t)n * sizeof(float));
		if (keepSrc) {
			// "T.src": the rows quantize_row_T_ref made the first blocks of.
			snprintf(name, sizeof name, "%s.src", q->name);
			add(name, GGML_TYPE_F32, (uint64_t)nq * q->block, src, (size_t)nq * q->block * sizeof(float));
		}
		free(x);
	}
	{
		uint16_t *h = malloc(65536 * 2), *b = malloc(4096 * 2);
		float *hw = malloc(65536 * 4), *bw = malloc(4096 * 4);
		for (int i = 0; i < 65536; i++) {
			h[i] = (uint16_t)i;
			hw[i] = GGML_FP16_TO_FP32((ggml_fp16_t)i);
		}
		for (int i = 0; i < 4096; i++) {
			// every 16th pattern, its low bits cycling through 0..15
			b[i] = (uint16_t)(16 * i + i % 16);
			ggml_bf16_t bf = {b[i]};
			bw[i] = GGML_BF16_TO_FP32(bf);
		}
		add("f16.q", GGML_TYPE_F16, 65536, h, 65536 * 2);
		add("f16.want", GGML_TYPE_F32, 65536, hw, 65536 * 4);
		add("bf16.q", GGML_TYPE_BF16, 4096, b, 4096 * 2);
		add("bf16.want", GGML_TYPE_F32, 4096, bw, 4096 * 4);
	}

	// GGUF v3: header, one metadata string, tensor records, data at 32.
	FILE *f = fopen(argv[1], "wb");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	fwrite("GGUF", 1, 4, f);
	le32(f, 3);
	le64(f, (uint64_t)ntensors);
	le64(f, 1);
	str(f, "general.description");
	le32(f, 8); // string
	str(f, "darkroom tools/reference/ggml_dequant: blocks and ggml's dequantize_row_* output");
	uint64_t off = 0;
	for (int i = 0; i < ntensors; i++) {
		str(f, tensors[i].name);
		le32(f, 1);
		le64(f, tensors[i].n);
		le32(f, tensors[i].type);
		le64(f, off);
		off += (tensors[i].bytes + 31) / 32 * 32;
	}
	static const char zeros[32];
	long pos = ftell(f);
	fwrite(zeros, 1, (size_t)((32 - pos % 32) % 32), f);
	for (int i = 0; i < ntensors; i++) {
		fwrite(tensors[i].data, 1, tensors[i].bytes, f);
		fwrite(zeros, 1, (32 - tensors[i].bytes % 32) % 32, f);
	}
	if (fclose(f) != 0) {
		perror(argv[1]);
		return 1;
	}
	return 0;
}
