/* Runs moe_vec_gemm of moe_gemm_vec.c on inputs read from a file, for testing a build for another
 * architecture (aarch64 under qemu-user) against this machine's. Input, all little-endian:
 *   int32 format, group, groups, has_zero, N, K, rows, experts, nspans; float32 offset;
 *   int64 spans[nspans][3]; float32 x[rows][K]; uint8 codes[codes_bytes]; float32 scale[...];
 *   float32 zero[...] (if has_zero); codes_bytes and scale sizes follow from the header.
 * Output: float32 out[rows][N] (out = x W^T for every span, added to zeros). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
  int format, group, groups;
  float offset;
  const void *codes;
  const float *scale, *zero;
} weights_t;

void moe_vec_gemm(const float* x, long ldx, const int64_t* rows_in, const weights_t* W, int N, int K,
                  const int64_t* spans, int nspans, float* out, long ldo, const int64_t* rows_out,
                  const float* scale, int nthreads);

static void* take(FILE* f, size_t bytes) {
  void* p = calloc(1, bytes ? bytes : 1);
  if (!p || fread(p, 1, bytes, f) != bytes) { fprintf(stderr, "short input\n"); exit(2); }
  return p;
}

int main(int argc, char** argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s IN OUT\n", argv[0]); return 2; }
  FILE* f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  int32_t* h = take(f, 9 * sizeof(int32_t));
  float* offset = take(f, sizeof(float));
  int format = h[0], group = h[1], groups = h[2], has_zero = h[3], N = h[4], K = h[5], rows = h[6], E = h[7],
      nspans = h[8];
  size_t per_k = format == 0 ? 4 * 64 : format == 1 ? 2 * 64 : (format == 4 || format == 5) ? 32 : 64;
  size_t panels = (size_t)E * (N / 64);
  int64_t* spans = take(f, sizeof(int64_t) * 3 * nspans);
  float* x = take(f, sizeof(float) * rows * K);
  void* codes = take(f, panels * per_k * K);
  size_t nscale = format > 1 ? panels * groups * 64 : 0;
  float* scale = take(f, sizeof(float) * nscale);
  float* zero = has_zero ? take(f, sizeof(float) * nscale) : NULL;
  fclose(f);
  weights_t W = {format, group, groups, *offset, codes, nscale ? scale : NULL, zero};
  float* out = calloc((size_t)rows * N, sizeof(float));
  moe_vec_gemm(x, K, NULL, &W, N, K, spans, nspans, out, N, NULL, NULL, 1);
  FILE* o = fopen(argv[2], "wb");
  if (!o || fwrite(out, sizeof(float), (size_t)rows * N, o) != (size_t)rows * N) { perror(argv[2]); return 2; }
  fclose(o);
  return 0;
}
