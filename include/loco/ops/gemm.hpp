// Row-major GEMM on top of CBLAS, overloaded for float (sgemm) and double (dgemm) so the
// op templates can be instantiated in double for gradient checks.
//
// Threading: OpenBLAS (the pthread build) runs single-threaded, and a large product is cut
// into a few independent pieces along M or N that the OpenMP team runs in parallel. Then
// every thread of the process belongs to one pool: the CPU backend's own ops and the GEMMs no
// longer fight over the cores (OpenBLAS's worker threads spin and yield for a while after
// each call, OpenMP's spin after each region; with both pools active, a 2-core machine ran
// four busy threads). The pieces depend only on the shape, never on the thread count, and
// each output element is computed by one BLAS call with the whole K, so results are
// deterministic. LOCO_BLAS_THREADS=1 restores OpenBLAS's own threading instead.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace loco::ops {

namespace detail {

inline void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                       const float* A, int lda, const float* B, int ldb, float beta, float* C,
                       int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, double alpha,
                       const double* A, int lda, const double* B, int ldb, double beta, double* C,
                       int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// True (after making OpenBLAS single-threaded, once) unless LOCO_BLAS_THREADS=1 asks to
// leave threading to OpenBLAS.
inline bool split_gemms() {
  static const bool split = [] {
    const char* env = std::getenv("LOCO_BLAS_THREADS");
    if (env && std::strcmp(env, "1") == 0) return false;
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(1);
#endif
    return true;
  }();
  return split;
}

// Pieces for a dimension of `dim`: 2, 4 from 1024 and 8 from 4096 (1 below 128). Each piece
// packs the other operand again (measured: ~2% of a GEMM per doubling of the pieces on the
// shapes of configs/tiny.json, up to 9% for a split of N), so they stay few and large.
inline int gemm_pieces(int dim) {
  if (dim >= 4096) return 8;
  if (dim >= 1024) return 4;
  return dim >= 128 ? 2 : 1;
}

}  // namespace detail

// C(M,N) = alpha · op(A) · op(B) + beta · C, all row-major and densely packed.
// A is (M,K), or (K,M) when trans_a; B is (K,N), or (N,K) when trans_b.
template <typename Real>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, Real alpha, const Real* A, const Real* B,
          Real beta, Real* C) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    // BLAS rejects leading dimensions of 0; the product is empty, so only beta applies.
    // beta == 0 overwrites (like BLAS) instead of multiplying, so garbage/NaN in C is cleared.
    const size_t count = static_cast<size_t>(M) * N;
    for (size_t i = 0; i < count; ++i) C[i] = beta == Real(0) ? Real(0) : beta * C[i];
    return;
  }
  const int lda = trans_a ? M : K;
  const int ldb = trans_b ? K : N;
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const double work = static_cast<double>(M) * N * K;
  const bool split = detail::split_gemms();
  if (!split || work < double(1 << 21)) {
    detail::cblas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, N);
    return;
  }
  // Cut the larger of M and N (rows of C, or columns) into pieces of `step`.
  const bool by_rows = M >= N;
  const int dim = by_rows ? M : N;
  const int pieces = detail::gemm_pieces(dim);
  const int step = (dim + pieces - 1) / pieces;
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (int p = 0; p < pieces; ++p) {
    const int begin = p * step;
    const int count = std::min(step, dim - begin);
    if (count <= 0) continue;
    if (by_rows) {
      const Real* A_p = trans_a ? A + begin : A + static_cast<size_t>(begin) * K;
      detail::cblas_gemm(ta, tb, count, N, K, alpha, A_p, lda, B, ldb, beta,
                         C + static_cast<size_t>(begin) * N, N);
    } else {
      const Real* B_p = trans_b ? B + static_cast<size_t>(begin) * K : B + begin;
      detail::cblas_gemm(ta, tb, M, count, K, alpha, A, lda, B_p, ldb, beta, C + begin, N);
    }
  }
}

}  // namespace loco::ops
