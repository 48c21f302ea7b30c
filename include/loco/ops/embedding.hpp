// Token embedding: each output row is a copy of one row of the table.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace loco::ops {

// out(N,C) = wte[tokens[n]], wte: (V,C). Token ids must already be in [0, V).
template <typename Real>
void embedding_forward(Real* out, const int32_t* tokens, const Real* wte, int N, int C) {
#pragma omp parallel for if (static_cast <size_t>(N) * C > (size_t{1} << 15))
  for (int n = 0; n < N; ++n) {
    const Real* table_row = wte + static_cast<size_t>(tokens[n]) * C;
    std::copy(table_row, table_row + C, out + static_cast<size_t>(n) * C);
  }
}

// dwte(V,C) += dout(N,C) scattered by token. Rows that share a token write the same table
// row, so threads split the channels instead of the rows: no races, and the summation order
// (row 0, 1, 2, ...) is fixed, which keeps the result deterministic.
template <typename Real>
void embedding_backward(Real* dwte, const Real* dout, const int32_t* tokens, int N, int C) {
  constexpr int kChannelBlock = 64;
  const int num_blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for if (num_blocks > 1 && static_cast <size_t>(N) * C > (size_t{1} << 15))
  for (int block = 0; block < num_blocks; ++block) {
    const int c_begin = block * kChannelBlock;
    const int c_end = std::min(C, c_begin + kChannelBlock);
    for (int n = 0; n < N; ++n) {
      Real* dtable_row = dwte + static_cast<size_t>(tokens[n]) * C;
      const Real* dout_row = dout + static_cast<size_t>(n) * C;
      for (int c = c_begin; c < c_end; ++c) dtable_row[c] += dout_row[c];
    }
  }
}

}  // namespace loco::ops
