// Row-major GEMM on top of CBLAS, overloaded for float (sgemm) and double (dgemm) so the
// op templates can be instantiated in double for gradient checks.
#pragma once
#include <cblas.h>

#include <cstddef>

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
  detail::cblas_gemm(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
                     K, alpha, A, lda, B, ldb, beta, C, N);
}

}  // namespace loco::ops
