/* Expert GEMMs of cpu_grouped in GCC vector extensions: one source for AVX2 + FMA, AVX-512 (quantized
 * weights) and portable C (SSE2 on x86-64, NEON on aarch64), with the structure of moe_gemm.c: rows
 * sorted by expert, one call per projection over every expert, silu fused into GEMM1's epilogue, the
 * weighted top-k sum in GEMM2's epilogue, one parallel region for a whole gated-silu layer.
 *
 * The vector width VL follows the flags the file is compiled with (16 floats with -mavx512f, 8 with
 * -mavx/-mavx2, 4 otherwise); the arithmetic is fp32 FMA whatever the weight format.
 *
 * Weights are panels of NB = 64 outputs per expert, one k step of a panel being 64 consecutive
 * elements (so the layouts are those of native.pack for bf16 and fp32):
 *   FMT_F32  float  [K][64]            FMT_BF16 uint32 [K/2][64] (a bf16 pair (k even, k odd) per word)
 *   FMT_I8   int8   [K][64]            FMT_E4M3 uint8  [K][64]   (fp8 e4m3fn codes)
 *   FMT_U4   uint8  [K/2][64] (two unsigned 4-bit codes, k even in the low nibble)
 *   FMT_E2M1 uint8  [K/2][64] (two e2m1 codes, k even in the low nibble)
 * Quantized formats carry scales float [G][64] per panel (G = ceil(K / group)) and either zero points
 * float [G][64] or a constant offset: weight = (value(code) - zero) * scale.
 *
 * Per (expert, panel) task, rows go in chunks of CH whose fp32 sums stay in a buffer; K goes in blocks of
 * KB: each block of the panel is widened once into a 64 x KB fp32 buffer (in L1) and every row tile of the
 * chunk runs over it (fp32 panels are read in place). So weights are dequantized per panel block inside
 * the GEMM loop, never per expert into a full-size copy. Micro-tile: up to MR rows x 2 vectors.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
#define NB 64
#define MR 6
#define CW (2 * VL)
#define KB 64
#define CH 48
#define BF16_MR 5
#define DIRECT_ROWS 2 /* up to this many rows per expert, weights are widened in registers (direct_row) */
#define PANEL_COST 8.0
#include "moe_common.h"

enum { FMT_F32 = 0, FMT_BF16 = 1, FMT_I8 = 2, FMT_E4M3 = 3, FMT_U4 = 4, FMT_E2M1 = 5 };

typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
typedef uint32_t vu __attribute__((vector_size(4 * VL)));
typedef int8_t vb __attribute__((vector_size(VL)));
typedef uint8_t vub __attribute__((vector_size(VL)));
typedef uint16_t bf16;

/* One projection's weights for every local expert (see the layouts above). */
typedef struct {
  int format;
  int group;          /* k steps per scale row (quantized formats) */
  int groups;         /* G */
  float offset;       /* subtracted from each code value when zero is NULL */
  const void* codes;  /* [E][N/64] panels */
  const float* scale; /* [E][N/64][G][64], NULL for FMT_F32 / FMT_BF16 */
  const float* zero;  /* [E][N/64][G][64] or NULL */
} weights_t;

INLINE vf loadv(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
INLINE void storev(float* p, vf v) { memcpy(p, &v, sizeof v); }
INLINE vf splat(float x) { return (vf){0} + x; }
INLINE vf select_v(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* Round to nearest even; NaN stays NaN. */
INLINE bf16 f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
  return (bf16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* e4m3fn codes (VL of them) -> floats, from the bit fields: normal (e > 0) 2^(e-7) (1 + m/8) as float32
 * bits, subnormal m 2^-9. The NaN code 0x7f reads as 480 (weights hold no NaN). */
INLINE vf decode_e4m3(vub c) {
  vu u = __builtin_convertvector(c, vu);
  vu sign = (u & 0x80u) << 24, e = (u >> 3) & 15u, m = u & 7u;
  vf normal = (vf)(sign | ((e + 120u) << 23) | (m << 20));
  vf sub = (vf)((vu)(__builtin_convertvector((vi)m, vf) * splat(1.0f / 512)) | sign);
  return select_v((vi)(e != 0u), normal, sub);
}

/* e2m1 codes (0..15) -> floats: e = 0: m/2, else (2 + m) 2^(e-2); bit 3 the sign. Integer arithmetic
 * (twice the magnitude), so no subnormal floats are involved. */
INLINE vf decode_e2m1(vu n) {
  vu e = (n >> 1) & 3u, m = n & 1u;
  vu normal = (vu)(e != 0u);
  vu twice = (m + (normal & 2u)) << ((e - 1u) & normal);
  vf mag = __builtin_convertvector((vi)twice, vf) * splat(0.5f);
  return (vf)((vu)mag | ((n & 8u) << 28));
}

/* Code values of VL columns at row k of a quantized panel (before zero and scale). */
INLINE vf code_values(int format, const uint8_t* codes, int k, int c) {
  if (format == FMT_I8 || format == FMT_E4M3) {
    const uint8_t* p = codes + (size_t)k * NB + c;
    if (format == FMT_I8) {
      vb b;
      memcpy(&b, p, sizeof b);
      return __builtin_convertvector(b, vf);
    }
    vub b;
    memcpy(&b, p, sizeof b);
    return decode_e4m3(b);
  }
  vub b;
  memcpy(&b, codes + (size_t)(k >> 1) * NB + c, sizeof b);
  vu n = __builtin_convertvector(b, vu);
  n = (k & 1) ? n >> 4 : n & 15u;
  return format == FMT_U4 ? __builtin_convertvector((vi)n, vf) : decode_e2m1(n);
}

/* One panel of one projection: where its codes, scales and zero points start. */
typedef struct {
  const void* codes;
  const float* scale;
  const float* zero;
} panel_t;

INLINE panel_t panel_at(const weights_t* W, size_t panel_index, int K) {
  panel_t p = {NULL, NULL, NULL};
  size_t per_k = W->format == FMT_F32 ? 4 * NB : W->format == FMT_BF16 ? 2 * NB
               : (W->format == FMT_U4 || W->format == FMT_E2M1) ? NB / 2 : NB;
  p.codes = (const uint8_t*)W->codes + panel_index * per_k * K;
  if (W->scale) p.scale = W->scale + panel_index * NB * (size_t)W->groups;
  if (W->zero) p.zero = W->zero + panel_index * NB * (size_t)W->groups;
  return p;
}

/* Weights of columns [c, c + VL) at row k of a panel, as fp32. */
INLINE vf weight_vec(const weights_t* W, panel_t p, int k, int c) {
  if (W->format == FMT_F32) return loadv((const float*)p.codes + (size_t)k * NB + c);
  if (W->format == FMT_BF16) {
    vu u;
    memcpy(&u, (const uint32_t*)p.codes + (size_t)(k >> 1) * NB + c, sizeof u);
    return (vf)((k & 1) ? u & 0xffff0000u : u << 16);
  }
  size_t g = (size_t)(k / W->group) * NB;
  vf v = code_values(W->format, (const uint8_t*)p.codes, k, c) - (p.zero ? loadv(p.zero + g + c) : splat(W->offset));
  return v * loadv(p.scale + g + c);
}

/* Rows [k0, k0 + kn) of one panel as fp32 [kn][64]: a pointer into the panel for FMT_F32, else into wb. */
static const float* widen(const weights_t* W, panel_t p, int k0, int kn, float* wb) {
  if (W->format == FMT_F32) return (const float*)p.codes + (size_t)k0 * NB;
  for (int j = 0; j < kn; j++)
    for (int c = 0; c < NB; c += VL) storev(wb + j * NB + c, weight_vec(W, p, k0 + j, c));
  return wb;
}

/* h[0..63] (+)= sum over k in [k0, k0 + kn) of x[k - k0] * W[k][0..63] for one row, weights widened in
 * registers: at one or two rows per expert (decode) writing a widened block and reading it back costs
 * more than the arithmetic. */
INLINE void direct_row(float* h, const float* x, const weights_t* W, panel_t p, int k0, int kn, int first) {
  vf acc[NB / VL];
#pragma GCC unroll 16
  for (int j = 0; j < NB / VL; j++) acc[j] = first ? splat(0) : loadv(h + j * VL);
  for (int k = 0; k < kn; k++) {
    vf xv = splat(x[k]);
#pragma GCC unroll 16
    for (int j = 0; j < NB / VL; j++) acc[j] += xv * weight_vec(W, p, k0 + k, j * VL);
  }
#pragma GCC unroll 16
  for (int j = 0; j < NB / VL; j++) storev(h + j * VL, acc[j]);
}

/* e^x to about 1 ulp: x = n ln2 + r, degree-7 Taylor polynomial, 2^n from the exponent bits. */
INLINE vf exp_v(vf x) {
  x = select_v((vi)(x < splat(-87.0f)), splat(-87.0f), x);
  x = select_v((vi)(x > splat(88.0f)), splat(88.0f), x);
  const vf magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
  vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  vf r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  vf p = splat(1.0f / 5040);
  p = p * r + splat(1.0f / 720);
  p = p * r + splat(1.0f / 120);
  p = p * r + splat(1.0f / 24);
  p = p * r + splat(1.0f / 6);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.0f);
  p = p * r + splat(1.0f);
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)bits;
}

INLINE vf silu_mul(vf g, vf u) { return g * u / (splat(1.0f) + exp_v(-g)); }

/* h[m][c0 + j VL] (+)= sum over kn steps of x_m[k] * w[k][c0 + j VL] for `rows` x `vecs` vectors
 * (constants after inlining, so the accumulators live in registers). */
INLINE void tile(float* h, const float* const* xr, const float* w, int c0, int kn, int first, const int rows,
                 const int vecs) {
  vf acc[MR][NB / VL];
#pragma GCC unroll 6
  for (int m = 0; m < rows; m++)
#pragma GCC unroll 16
    for (int j = 0; j < vecs; j++) acc[m][j] = first ? splat(0) : loadv(h + m * NB + c0 + j * VL);
  for (int k = 0; k < kn; k++) {
    const float* wk = w + k * NB + c0;
#pragma GCC unroll 6
    for (int m = 0; m < rows; m++) {
      vf xv = splat(xr[m][k]);
#pragma GCC unroll 16
      for (int j = 0; j < vecs; j++) acc[m][j] += xv * loadv(wk + j * VL);
    }
  }
#pragma GCC unroll 6
  for (int m = 0; m < rows; m++)
#pragma GCC unroll 16
    for (int j = 0; j < vecs; j++) storev(h + m * NB + c0 + j * VL, acc[m][j]);
}

/* bf16 weights straight from their pair layout: per k pair, one load of VL words per vector gives the
 * even-k and odd-k weights (shift / mask), so no widened block is written and read back. Up to BF16_MR
 * rows x 2 vectors: 2 BF16_MR accumulators, 4 weight vectors and a broadcast fit AVX2's 16 registers. */
INLINE void tile_bf16(float* h, const float* const* xr, const uint32_t* words, int c0, int kn, int first,
                      const int rows) {
  vf acc[BF16_MR][2];
#pragma GCC unroll 5
  for (int m = 0; m < rows; m++) {
    acc[m][0] = first ? splat(0) : loadv(h + m * NB + c0);
    acc[m][1] = first ? splat(0) : loadv(h + m * NB + c0 + VL);
  }
  for (int k = 0; k < kn; k += 2) {
    const uint32_t* wk = words + (size_t)(k >> 1) * NB + c0;
    vu u0, u1;
    memcpy(&u0, wk, sizeof u0);
    memcpy(&u1, wk + VL, sizeof u1);
    vf e0 = (vf)(u0 << 16), o0 = (vf)(u0 & 0xffff0000u), e1 = (vf)(u1 << 16), o1 = (vf)(u1 & 0xffff0000u);
#pragma GCC unroll 5
    for (int m = 0; m < rows; m++) {
      vf xe = splat(xr[m][k]), xo = splat(xr[m][k + 1]);
      acc[m][0] += xe * e0;
      acc[m][1] += xe * e1;
      acc[m][0] += xo * o0;
      acc[m][1] += xo * o1;
    }
  }
#pragma GCC unroll 5
  for (int m = 0; m < rows; m++) {
    storev(h + m * NB + c0, acc[m][0]);
    storev(h + m * NB + c0 + VL, acc[m][1]);
  }
}

INLINE void tile_rows_bf16(float* h, const float* const* xr, const uint32_t* words, int kn, int first, int n) {
  for (int c0 = 0; c0 < NB; c0 += CW) {
    switch (n) {
      case 1: tile_bf16(h, xr, words, c0, kn, first, 1); break;
      case 2: tile_bf16(h, xr, words, c0, kn, first, 2); break;
      case 3: tile_bf16(h, xr, words, c0, kn, first, 3); break;
      case 4: tile_bf16(h, xr, words, c0, kn, first, 4); break;
      default: tile_bf16(h, xr, words, c0, kn, first, 5); break;
    }
  }
}

/* One tile of n rows over all 64 columns: a single row takes every column at once (enough independent
 * accumulators to hide the FMA latency at decode), two rows half of them, more rows two vectors. */
INLINE void tile_rows(float* h, const float* const* xr, const float* w, int kn, int first, int n) {
  switch (n) {
    case 1: tile(h, xr, w, 0, kn, first, 1, NB / VL); return;
    case 2:
      for (int c0 = 0; c0 < NB; c0 += NB / 2) tile(h, xr, w, c0, kn, first, 2, NB / VL / 2);
      return;
    default:
      break;
  }
  for (int c0 = 0; c0 < NB; c0 += CW) {
    switch (n) {
      case 3: tile(h, xr, w, c0, kn, first, 3, 2); break;
      case 4: tile(h, xr, w, c0, kn, first, 4, 2); break;
      case 5: tile(h, xr, w, c0, kn, first, 5, 2); break;
      default: tile(h, xr, w, c0, kn, first, 6, 2); break;
    }
  }
}

/* Rows [start, end) of one expert against panel `panel_index` (= expert * panels + b): the sums over all
 * of K, then the epilogue. act == NULL: out[o(r)][0..63] += scale[r] * sums (out already offset to the
 * panel's columns). Else (gate/up panel): act[r][0..31] = silu(gate) * up (act offset to 32 b). */
static void panel_rows(const float* x, long ldx, const int64_t* rows_in, const weights_t* W,
                       size_t panel_index, int K, int start, int end, float* out, long ldo,
                       const int64_t* rows_out, const float* scale, float* act, long lda) {
  float wb[KB * NB] __attribute__((aligned(64)));
  float h[CH * NB] __attribute__((aligned(64)));
  panel_t p = panel_at(W, panel_index, K);
  for (int r0 = start; r0 < end; r0 += CH) {
    int rows = end - r0 < CH ? end - r0 : CH;
    for (int k0 = 0; k0 < K; k0 += KB) {
      int kn = K - k0 < KB ? K - k0 : KB;
      const float* xr[CH];
      for (int m = 0; m < rows; m++) xr[m] = x + (rows_in ? rows_in[r0 + m] : r0 + m) * ldx + k0;
      if (rows <= DIRECT_ROWS) {
        for (int m = 0; m < rows; m++) direct_row(h + m * NB, xr[m], W, p, k0, kn, k0 == 0);
        continue;
      }
      if (W->format == FMT_BF16) {
        const uint32_t* words = (const uint32_t*)p.codes + (size_t)(k0 >> 1) * NB;
        for (int t = 0; t < rows; t += BF16_MR)
          tile_rows_bf16(h + t * NB, xr + t, words, kn, k0 == 0, rows - t < BF16_MR ? rows - t : BF16_MR);
        continue;
      }
      const float* w = widen(W, p, k0, kn, wb);
      for (int t = 0; t < rows; t += MR) tile_rows(h + t * NB, xr + t, w, kn, k0 == 0, rows - t < MR ? rows - t : MR);
    }
    for (int m = 0; m < rows; m++) {
      const float* hm = h + m * NB;
      if (act) {
        float* a = act + (long)(r0 + m) * lda;
        for (int c = 0; c < NB / 2; c += VL) storev(a + c, silu_mul(loadv(hm + c), loadv(hm + NB / 2 + c)));
      } else {
        float* d = out + (rows_out ? rows_out[r0 + m] : r0 + m) * ldo;
        vf s = splat(scale ? scale[r0 + m] : 1.0f);
        for (int c = 0; c < NB; c += VL) storev(d + c, loadv(d + c) + s * loadv(hm + c));
      }
    }
  }
}

/* out[o(r), n] += scale[r] * sum_k x_r[k] W_e[n, k] for every row r of every span (expert, start, end);
 * x [*, K] fp32 with row stride ldx, read through rows_in when given; out fp32. With
 * rows_out (a scatter into token rows), each thread owns a range of panels, so every element has one
 * writer; otherwise the (span, panel) tasks are split by cost. */
void moe_vec_gemm(const float* x, long ldx, const int64_t* rows_in, const weights_t* W, int N, int K,
                  const int64_t* spans, int nspans, float* out, long ldo, const int64_t* rows_out,
                  const float* scale, int nthreads) {
  int panels = N / NB;
  if (rows_out) {
#pragma omp parallel num_threads(nthreads)
    {
      int parts = omp_get_num_threads(), part = omp_get_thread_num();
      int first = panels * part / parts, last = panels * (part + 1) / parts;
      for (int s = 0; s < nspans; s++)
        for (int b = first; b < last; b++)
          panel_rows(x, ldx, rows_in, W, (size_t)spans[3 * s] * panels + b, K, ARGS_SPAN(s), out + b * NB,
                     ldo, rows_out, scale, NULL, 0);
    }
  } else {
#pragma omp parallel num_threads(nthreads)
    FOR_MY_TASKS(panel_rows(x, ldx, rows_in, W, (size_t)spans[3 * s] * panels + b, K, ARGS_SPAN(s),
                            out + b * NB, ldo, NULL, scale, NULL, 0))
  }
}

/* A gated-silu layer without biases in one parallel region (as moe_forward_silu_* in moe_gemm.c):
 * sort the pairs, GEMM1 over gate/up panels with the silu epilogue into act [R, I] fp32, barrier, then
 * each thread owns a range of output panels: zeroes its columns of sums [T, H] fp32, adds GEMM2 rows
 * scaled by their router weight (unless weighted == 0), and writes its columns of out [T, H] (bf16 when
 * out_bf16, else out is sums). x [T, H] fp32 (bf16 layers convert it once, not once per panel). iwork: int64 [4 n_local + pairs]; weight: float [pairs].
 * Returns the number of experts with rows, or -1 if an id is out of range (nothing written to out). */
long moe_vec_forward_silu(const float* x, long tokens, int H, int I, const void* ids, int ids_are_64,
                          const float* topk_weights, int top_k, const int64_t* expert_map, long map_size,
                          int n_local, const weights_t* w13, const weights_t* w2, int weighted, int64_t* iwork,
                          float* weight, float* act, float* sums, void* out, int out_bf16, int nthreads) {
  long pairs = tokens * top_k, rows = 0;
  int64_t* token = iwork + n_local;
  int64_t* spans = token + pairs;
  long found = moe_sort_rows(ids, ids_are_64, topk_weights, pairs, top_k, expert_map, map_size, n_local, iwork,
                             token, weight, spans, &rows);
  if (found < 0) return -1;
  int nspans = (int)found;
  const float* scale = weighted ? weight : NULL;
#pragma omp parallel num_threads(nthreads)
  {
    {
      int panels = 2 * I / NB;
      FOR_MY_TASKS(panel_rows(x, H, token, w13, (size_t)spans[3 * s] * panels + b, H, ARGS_SPAN(s), NULL,
                              0, NULL, NULL, act + b * (NB / 2), I))
    }
    int panels = H / NB, parts = omp_get_num_threads(), part = omp_get_thread_num();
    int first = panels * part / parts, last = panels * (part + 1) / parts;
    for (long t = 0; t < tokens; t++) memset(sums + t * H + first * NB, 0, sizeof(float) * NB * (last - first));
#pragma omp barrier
    for (int s = 0; s < nspans; s++)
      for (int b = first; b < last; b++)
        panel_rows(act, I, NULL, w2, (size_t)spans[3 * s] * panels + b, I, ARGS_SPAN(s), sums + b * NB, H, token,
                   scale, NULL, 0);
    if (out_bf16)
      for (long t = 0; t < tokens; t++)
        for (int c = first * NB; c < last * NB; c++) ((bf16*)out)[t * H + c] = f32_to_bf16(sums[t * H + c]);
  }
  return nspans;
}
