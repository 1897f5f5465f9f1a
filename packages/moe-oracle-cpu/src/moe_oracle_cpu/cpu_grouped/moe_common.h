/* What the native MoE kernels share across ISAs: the counting sort of routed pairs by expert and the
 * split of (span, panel) tasks over threads. Included by moe_gemm.c (AVX-512) and moe_gemm_vec.c
 * (AVX2, AVX-512 for quantized weights, portable C). Each file defines NB (outputs per panel) and
 * PANEL_COST before including it. */
#ifndef MOE_COMMON_H
#define MOE_COMMON_H
#include <omp.h>
#include <stddef.h>
#include <stdint.h>

#define INLINE static inline __attribute__((always_inline))

/* Whether task (span s, panel b) with cumulative cost `before` and cost `c` belongs to this thread. */
INLINE int mine(double before, double c, double lo, double hi) {
  double mid = before + c / 2;
  return mid >= lo && mid < hi;
}

/* Run BODY(s, b) for this thread's contiguous share of the (span, panel) tasks. */
#define FOR_MY_TASKS(BODY)                                                                            \
  {                                                                                                   \
    int parts = omp_get_num_threads(), part = omp_get_thread_num();                                   \
    double total = 0, before = 0;                                                                     \
    for (int s = 0; s < nspans; s++) total += (spans[3 * s + 2] - spans[3 * s + 1] + PANEL_COST) * panels; \
    double lo = total * part / parts, hi = total * (part + 1) / parts;                                \
    for (int s = 0; s < nspans && before < hi; s++) {                                                 \
      double c = spans[3 * s + 2] - spans[3 * s + 1] + PANEL_COST;                                    \
      for (int b = 0; b < panels; b++, before += c)                                                   \
        if (mine(before, c, lo, hi)) { BODY; }                                                        \
    }                                                                                                 \
  }

#define ARGS_SPAN(s) (int)spans[3 * (s) + 1], (int)spans[3 * (s) + 2]

/* Counting sort of the (token, slot) pairs by local expert, stable (token order within an expert).
 * ids: [pairs] int32 (ids_are_64 = 0) or int64 expert ids, global when expert_map is given (int64
 * [map_size], -1 for another rank's expert, whose pairs are dropped), else local. Writes token[r] and
 * weight[r] for the R kept pairs and spans[3 s..] = (expert, start, end) for the S experts with rows;
 * counts is scratch of n_local entries. Returns S, with R in *rows; -1 - i if pair i's id is out of range. */
long moe_sort_rows(const void* ids, int ids_are_64, const float* weights, long pairs, int top_k,
                   const int64_t* expert_map, long map_size, int n_local, int64_t* counts, int64_t* token,
                   float* weight, int64_t* spans, long* rows) {
  for (int e = 0; e < n_local; e++) counts[e] = 0;
  for (long i = 0; i < pairs; i++) {
    int64_t id = ids_are_64 ? ((const int64_t*)ids)[i] : ((const int32_t*)ids)[i];
    if (expert_map) {
      if (id < 0 || id >= map_size) return -1 - i;
      id = expert_map[id];
      if (id < 0) continue;
    }
    if (id < 0 || id >= n_local) return -1 - i;
    counts[id]++;
  }
  long n_spans = 0, start = 0;
  for (int e = 0; e < n_local; e++) {
    int64_t count = counts[e];
    if (count) {
      spans[3 * n_spans] = e;
      spans[3 * n_spans + 1] = start;
      spans[3 * n_spans + 2] = start + count;
      n_spans++;
    }
    counts[e] = start; /* now the next free row of expert e */
    start += count;
  }
  *rows = start;
  for (long i = 0; i < pairs; i++) {
    int64_t id = ids_are_64 ? ((const int64_t*)ids)[i] : ((const int32_t*)ids)[i];
    if (expert_map) id = expert_map[id];
    if (id < 0) continue;
    int64_t r = counts[id]++;
    token[r] = i / top_k;
    weight[r] = weights[i];
  }
  return n_spans;
}

#endif
