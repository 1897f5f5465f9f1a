/* Expert GEMMs of cpu_grouped on AVX-512: one call runs one projection for every expert with rows.
 *
 * Rows are (token, slot) pairs sorted by expert; spans[s] = (expert, start, end) lists each expert's
 * rows [start, end). Row r reads x[rows_in[r]] (or x[r]), so GEMM1 needs no gathered copy of x.
 *
 *   moe_gemm_*:         out[o(r), n] += scale[r] * sum_k x_r[k] W_e[n, k], o(r) = rows_out[r] or r, fp32 out
 *   moe_forward_silu_*: a whole gated-silu layer (sort, GEMM1 with act[r, i] = silu(g) * u in its epilogue,
 *                       GEMM2 with the weighted top-k sum in its epilogue, cast) in one parallel region
 *
 * Weights are packed per expert into column panels of NB = 64 outputs (four zmm of fp32 lanes):
 *   bf16: [E][N/64][K/2][64][2] (k pairs, for vdpbf16ps)     fp32: [E][N/64][K][64]
 * so one k step reads 256 contiguous bytes of a panel, and a micro-tile of up to MR rows x 64 columns
 * keeps 4 * MR accumulators in registers while each x value is broadcast. For the silu epilogue, panel b
 * holds gate rows 32b..32b+31 then up rows I+32b..I+32b+31 of W13, so one tile sees both halves.
 *
 * Work split: tasks (span, panel) in memory order, cut into one contiguous run per thread with equal
 * cost (rows plus PANEL_COST row-equivalents for streaming a panel), so each thread streams its own
 * part of the weights. With rows_out (scatter), each thread owns a contiguous range of panels for all
 * spans, so every output element has one writer (a token's slots go to distinct experts), and walks
 * them expert by expert, so it streams each expert's panels in memory order.
 * moe_gemm_* runs K in blocks of KC so a 64 x KC panel stays in L2 while an expert's rows pass over
 * it; the silu epilogue keeps all of K in registers (the activation needs the finished sums).
 */
#include <immintrin.h>

#define NB 64
#define MR 6
#define KC 2048
#define PANEL_COST 8.0
#include "moe_common.h"

typedef uint16_t bf16;

/* acc += w * broadcast(*x) as one instruction with an embedded {1to16} broadcast of the 32-bit x
 * (one bf16 pair, or one fp32). GCC hoists a broadcast used four times into a register and spends a
 * shuffle per row; folding it into each FMA measured 2-9% faster on Zen 4 (decode and prefill). */
#define FMA_BROADCAST(OP, ACC, X, W) __asm__(OP " %1%{1to16%}, %2, %0" : "+v"(ACC) : "m"(*(X)), "v"(W))

/* Accumulate rows x 64 over k in [k0, k1) from row pointers xr; `rows` is a constant after inlining. */
INLINE void dot_bf16(__m512 acc[MR][4], const bf16* const* xr, const bf16* panel, int k0, int k1, const int rows) {
  for (int k = k0; k < k1; k += 2) {
    const bf16* p = panel + (size_t)k * NB;
    __m512bh w0 = (__m512bh)_mm512_loadu_si512(p), w1 = (__m512bh)_mm512_loadu_si512(p + 32);
    __m512bh w2 = (__m512bh)_mm512_loadu_si512(p + 64), w3 = (__m512bh)_mm512_loadu_si512(p + 96);
#pragma GCC unroll 6
    for (int m = 0; m < rows; m++) {
      const int32_t* pair = (const int32_t*)(xr[m] + k);
      FMA_BROADCAST("vdpbf16ps", acc[m][0], pair, w0);
      FMA_BROADCAST("vdpbf16ps", acc[m][1], pair, w1);
      FMA_BROADCAST("vdpbf16ps", acc[m][2], pair, w2);
      FMA_BROADCAST("vdpbf16ps", acc[m][3], pair, w3);
    }
  }
}

INLINE void dot_f32(__m512 acc[MR][4], const float* const* xr, const float* panel, int k0, int k1, const int rows) {
  for (int k = k0; k < k1; k++) {
    const float* p = panel + (size_t)k * NB;
    __m512 w0 = _mm512_loadu_ps(p), w1 = _mm512_loadu_ps(p + 16);
    __m512 w2 = _mm512_loadu_ps(p + 32), w3 = _mm512_loadu_ps(p + 48);
#pragma GCC unroll 6
    for (int m = 0; m < rows; m++) {
      const float* xk = xr[m] + k;
      FMA_BROADCAST("vfmadd231ps", acc[m][0], xk, w0);
      FMA_BROADCAST("vfmadd231ps", acc[m][1], xk, w1);
      FMA_BROADCAST("vfmadd231ps", acc[m][2], xk, w2);
      FMA_BROADCAST("vfmadd231ps", acc[m][3], xk, w3);
    }
  }
}

/* e^x to about 1 ulp: x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial, scaled by 2^n. */
INLINE __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

/* silu(g) * u = g * u / (1 + e^-g) */
INLINE __m512 silu_mul(__m512 g, __m512 u) {
  __m512 denominator = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g)));
  return _mm512_div_ps(_mm512_mul_ps(g, u), denominator);
}

INLINE void store_act(bf16* a, __m512 lo, __m512 hi) {
  _mm256_storeu_si256((__m256i*)a, (__m256i)_mm512_cvtneps_pbh(lo));
  _mm256_storeu_si256((__m256i*)(a + 16), (__m256i)_mm512_cvtneps_pbh(hi));
}

INLINE void store_act_f32(float* a, __m512 lo, __m512 hi) {
  _mm512_storeu_ps(a, lo);
  _mm512_storeu_ps(a + 16, hi);
}

/* out[o(r)] += scale[r] * acc for the tile's rows. */
INLINE void add_tile(__m512 acc[MR][4], const int rows, float* out, long ldo, const int64_t* o, const float* scale) {
#pragma GCC unroll 6
  for (int m = 0; m < rows; m++) {
    float* d = out + o[m] * ldo;
    __m512 s = _mm512_set1_ps(scale ? scale[m] : 1.0f);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) _mm512_storeu_ps(d + 16 * j, _mm512_fmadd_ps(acc[m][j], s, _mm512_loadu_ps(d + 16 * j)));
  }
}

INLINE void zero_tile(__m512 acc[MR][4], const int rows) {
#pragma GCC unroll 6
  for (int m = 0; m < rows; m++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();
}

/* Dispatch a tile of `n` (1..MR) rows to a body compiled for that constant. */
#define FOR_TILE_ROWS(n, BODY, ...)     \
  switch (n) {                          \
    case 1: BODY(1, __VA_ARGS__); break;  \
    case 2: BODY(2, __VA_ARGS__); break;  \
    case 3: BODY(3, __VA_ARGS__); break;  \
    case 4: BODY(4, __VA_ARGS__); break;  \
    case 5: BODY(5, __VA_ARGS__); break;  \
    default: BODY(6, __VA_ARGS__); break; \
  }

/* Row pointers and output rows of the tile starting at sorted row r. */
#define TILE_SETUP(T)                                                         \
  const T* xr[MR];                                                            \
  int64_t o[MR];                                                              \
  int n_rows = end - r < MR ? end - r : MR;                                   \
  for (int m = 0; m < n_rows; m++) {                                          \
    xr[m] = x + (rows_in ? rows_in[r + m] : r + m) * ldx;                     \
    o[m] = rows_out ? rows_out[r + m] : r + m;                                \
  }

/* Rows [start, end) of one expert against one panel: += into fp32 out. */
#define DEFINE_PANEL(NAME, T, DOT)                                                                         \
  static void NAME(const T* x, long ldx, const int64_t* rows_in, const T* panel, int K, int start, int end, \
                   float* out, long ldo, const int64_t* rows_out, const float* scale) {                    \
    for (int k0 = 0; k0 < K; k0 += KC) {                                                                   \
      int k1 = k0 + KC < K ? k0 + KC : K;                                                                  \
      for (int r = start; r < end; r += MR) {                                                              \
        TILE_SETUP(T)                                                                                      \
        const float* sc = scale ? scale + r : NULL;                                                        \
        __m512 acc[MR][4];                                                                                 \
        _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")        \
        FOR_TILE_ROWS(n_rows, BODY_ADD, DOT)                                                                  \
        _Pragma("GCC diagnostic pop")                                                                      \
      }                                                                                                    \
    }                                                                                                      \
  }
#define BODY_ADD(R, DOT) \
  zero_tile(acc, R); DOT(acc, xr, panel, k0, k1, R); add_tile(acc, R, out, ldo, o, sc)

/* Rows [start, end) of one expert against one gate/up panel: silu(g) * u into act[:, 32b : 32b + 32]. */
#define DEFINE_PANEL_SILU(NAME, T, DOT, STORE)                                                             \
  static void NAME(const T* x, long ldx, const int64_t* rows_in, const T* panel, int K, int start, int end, \
                   T* act, long lda) {                                                                     \
    const int64_t* rows_out = NULL;                                                                        \
    for (int r = start; r < end; r += MR) {                                                                \
      TILE_SETUP(T)                                                                                        \
      __m512 acc[MR][4];                                                                                   \
      FOR_TILE_ROWS(n_rows, BODY_SILU, DOT, STORE)                                                                    \
    }                                                                                                      \
  }
#define BODY_SILU(R, DOT, STORE)                                                                    \
  zero_tile(acc, R);                                                                          \
  DOT(acc, xr, panel, 0, K, R);                                                               \
  for (int m = 0; m < R; m++)                                                                 \
    STORE(act + o[m] * lda, silu_mul(acc[m][0], acc[m][2]), silu_mul(acc[m][1], acc[m][3]))

#define PANEL_AT(s, b) (w + spans[3 * (s)] * expert_stride + (size_t)(b) * panel_stride)

#define DEFINE_GEMM(NAME, T, PANEL)                                                                           \
  void NAME(const T* x, long ldx, const int64_t* rows_in, const T* w, int N, int K, const int64_t* spans,      \
            int nspans, float* out, long ldo, const int64_t* rows_out, const float* scale, int nthreads) {     \
    int panels = N / NB;                                                                                      \
    size_t expert_stride = (size_t)N * K, panel_stride = (size_t)NB * K;                                      \
    if (rows_out) {                                                                                           \
      _Pragma("omp parallel num_threads(nthreads)")                                                           \
      {                                                                                                       \
        int parts = omp_get_num_threads(), part = omp_get_thread_num();                                       \
        int first = panels * part / parts, last = panels * (part + 1) / parts;                                \
        for (int s = 0; s < nspans; s++)                                                                      \
          for (int b = first; b < last; b++)                                                                  \
            PANEL(x, ldx, rows_in, PANEL_AT(s, b), K, ARGS_SPAN(s), out + b * NB, ldo, rows_out, scale);      \
      }                                                                                                       \
    } else {                                                                                                  \
      _Pragma("omp parallel num_threads(nthreads)")                                                           \
      FOR_MY_TASKS(PANEL(x, ldx, rows_in, PANEL_AT(s, b), K, ARGS_SPAN(s), out + b * NB, ldo, NULL, scale))   \
    }                                                                                                         \
  }

DEFINE_PANEL(panel_bf16, bf16, dot_bf16)
DEFINE_PANEL(panel_f32, float, dot_f32)
DEFINE_PANEL_SILU(panel_silu_bf16, bf16, dot_bf16, store_act)
DEFINE_PANEL_SILU(panel_silu_f32, float, dot_f32, store_act_f32)
DEFINE_GEMM(moe_gemm_bf16, bf16, panel_bf16)
DEFINE_GEMM(moe_gemm_f32, float, panel_f32)

INLINE void to_out_bf16(const float* src, bf16* dst) {
  _mm256_storeu_si256((__m256i*)dst, (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src)));
}
INLINE void to_out_f32(const float* src, float* dst) { (void)src; (void)dst; /* the sums are the output */ }

/* The whole forward of a gated-silu layer without biases in one parallel region:
 *   sort the pairs (one thread), GEMM1 with the silu epilogue into act [R, I] (tasks as moe_gemm_silu),
 *   barrier, then each thread owns a range of output panels: zeroes its columns of sums [T, H] (fp32),
 *   adds GEMM2 rows scaled by their router weight (unless weighted == 0: applied on the input), and
 *   writes its columns of out [T, H] in the layer dtype (for fp32, sums is out).
 * iwork: int64 [n_local + pairs + 3 n_local]; weight: float [pairs]; act: [pairs, I].
 * Returns the number of experts with rows, or -1 if an id is out of range (nothing written to out). */
#define DEFINE_FORWARD(NAME, T, PANEL_SILU, PANEL, TO_OUT)                                                     \
  long NAME(const T* x, long tokens, int H, int I, const void* ids, int ids_are_64, const float* topk_weights,  \
            int top_k, const int64_t* expert_map, long map_size, int n_local, const T* w13, const T* w2,       \
            int weighted, int64_t* iwork, float* weight, T* act, float* sums, T* out, int nthreads) {          \
    long pairs = tokens * top_k, rows = 0;                                                                     \
    int64_t* token = iwork + n_local;                                                                          \
    int64_t* spans = token + pairs;                                                                            \
    long found = moe_sort_rows(ids, ids_are_64, topk_weights, pairs, top_k, expert_map, map_size, n_local,     \
                               iwork, token, weight, spans, &rows);                                            \
    if (found < 0) return -1;                                                                                  \
    int nspans = (int)found;                                                                                   \
    const float* scale = weighted ? weight : NULL;                                                             \
    _Pragma("omp parallel num_threads(nthreads)")                                                              \
    {                                                                                                          \
      {                                                                                                        \
        int panels = 2 * I / NB;                                                                               \
        const T* w = w13;                                                                                      \
        size_t expert_stride = (size_t)2 * I * H, panel_stride = (size_t)NB * H;                               \
        long ldx = H;                                                                                          \
        FOR_MY_TASKS(PANEL_SILU(x, ldx, token, PANEL_AT(s, b), H, ARGS_SPAN(s), act + b * (NB / 2), I))        \
      }                                                                                                        \
      int panels = H / NB, parts = omp_get_num_threads(), part = omp_get_thread_num();                         \
      int first = panels * part / parts, last = panels * (part + 1) / parts;                                   \
      for (long t = 0; t < tokens; t++)                                                                        \
        for (int c = first * NB; c < last * NB; c += 16) _mm512_storeu_ps(sums + t * H + c, _mm512_setzero_ps()); \
      _Pragma("omp barrier")                                                                                   \
      const T* w = w2;                                                                                         \
      size_t expert_stride = (size_t)H * I, panel_stride = (size_t)NB * I;                                     \
      for (int s = 0; s < nspans; s++)                                                                         \
        for (int b = first; b < last; b++)                                                                     \
          PANEL(act, I, NULL, PANEL_AT(s, b), I, ARGS_SPAN(s), sums + b * NB, H, token, scale);                \
      if ((void*)sums != (void*)out)                                                                           \
        for (long t = 0; t < tokens; t++)                                                                      \
          for (int c = first * NB; c < last * NB; c += 16) TO_OUT(sums + t * H + c, out + t * H + c);          \
    }                                                                                                          \
    return nspans;                                                                                             \
  }

DEFINE_FORWARD(moe_forward_silu_bf16, bf16, panel_silu_bf16, panel_bf16, to_out_bf16)
DEFINE_FORWARD(moe_forward_silu_f32, float, panel_silu_f32, panel_f32, to_out_f32)
