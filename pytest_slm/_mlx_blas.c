/* cblas_sgemm for MLX's CPU backend, forwarded to an optimized BLAS picked at run time.
 *
 * MLX's Linux wheel links netlib's reference BLAS (one thread, unblocked loops). Loaded with
 * RTLD_GLOBAL before MLX's first float32 matmul, this library's cblas_sgemm is the one MLX binds
 * to: the dynamic linker searches the global scope before MLX's own libraries. Python sets the
 * target (see pytest_slm/backends/mlx_blas.py) and reads the call count to confirm the binding.
 */

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                         int lda, const float *b, int ldb, float beta, float *c, int ldc);

static sgemm_fn target;
static long calls;

void pytest_slm_set_sgemm(sgemm_fn fn) { target = fn; }

long pytest_slm_sgemm_calls(void) { return calls; }

void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    calls++;
    target(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
