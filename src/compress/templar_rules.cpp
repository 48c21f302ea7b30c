// The reference implementation's compression rules (loco/compress/templar_rules.hpp).
#include "loco/compress/templar_rules.hpp"

#include <algorithm>
#include <cmath>

#include "loco/compress/compress.hpp"
#include "loco/core/error.hpp"

namespace loco::compress {

uint32_t templar_chunk_k(uint32_t C, int topk) {
  LOCO_CHECK(C >= 1 && topk >= 1, "templar_chunk_k needs a chunk and topk >= 1");
  uint32_t k = std::min<uint32_t>(uint32_t(topk), C);
  k = std::max<uint32_t>(k, 2);
  k -= k % 2;
  return std::min(k, C);  // a 1-element chunk: the reference would fail; keep the element
}

void templar_quantize_tensor(float* v, size_t n, int L, uint32_t* code, float* table) {
  if (n == 0) return;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += v[i];
  const float shift = static_cast<float>(sum / double(n));
  std::vector<float> centered(n);
  double squares = 0.0;
  for (size_t i = 0; i < n; ++i) {
    centered[i] = v[i] - shift;
    squares += double(centered[i]) * double(centered[i]);
  }
  const double sigma = n > 1 ? std::sqrt(squares / double(n - 1)) : 0.0;
  float scale = static_cast<float>(6.0 * sigma / double(L));
  if (!(scale != 0.0f) || !std::isfinite(scale)) scale = 1.0f;
  const float middle = static_cast<float>(L / 2);
  std::vector<double> level_sum(size_t(L), 0.0);
  std::vector<uint64_t> level_count(size_t(L), 0);
  for (size_t i = 0; i < n; ++i) {
    const float z = std::nearbyint(centered[i] / scale + middle);  // ties to even
    const int q = !(z >= 0.0f) ? 0 : z >= float(L - 1) ? L - 1 : int(z);
    code[i] = uint32_t(q);
    level_sum[size_t(q)] += centered[i];
    ++level_count[size_t(q)];
  }
  for (int q = 0; q < L; ++q) {
    const float level_mean = level_count[size_t(q)]
                                 ? static_cast<float>(level_sum[size_t(q)] / level_count[size_t(q)])
                                 : 0.0f;
    table[q] = level_mean + shift;
  }
  for (size_t i = 0; i < n; ++i) v[i] = table[code[i]];
}

void templar_quantize_gathered(const QuantLayout& layout, int L, float* values, uint32_t* codes,
                               float* tables) {
  const size_t nt = layout.tensors.size();
#pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
  for (size_t t = 0; t < nt; ++t) {
    const ops::QuantTensor& q = layout.tensors[t];
    if (q.kept == 0) continue;
    templar_quantize_tensor(values + q.kept_begin, q.kept, L, codes + q.kept_begin,
                            tables + q.table_begin);
  }
}

void clip_to_median_norm(const Plan& plan, const std::vector<std::vector<uint32_t>>& flat,
                         std::vector<std::vector<float>>& values, size_t payloads) {
  LOCO_CHECK(flat.size() >= payloads && values.size() >= payloads, "one list per payload");
  if (payloads == 0) return;
  const size_t nt = plan.tensors.size();
  // Where each tensor's values start in each payload: decode_sparse yields tensors in plan
  // order, so a tensor's run ends at the first index past its range.
  std::vector<std::vector<size_t>> start(payloads, std::vector<size_t>(nt + 1, 0));
  for (size_t r = 0; r < payloads; ++r) {
    LOCO_CHECK(flat[r].size() == values[r].size(), "one value per index");
    size_t i = 0;
    for (size_t t = 0; t < nt; ++t) {
      start[r][t] = i;
      const size_t end = plan.tensors[t].offset + plan.tensors[t].numel();
      while (i < flat[r].size() && flat[r][i] < end) ++i;
    }
    start[r][nt] = i;
    LOCO_CHECK(i == flat[r].size(), "decoded indices in plan order");
  }
  std::vector<float> norms(payloads), sorted(payloads);
  for (size_t t = 0; t < nt; ++t) {
    for (size_t r = 0; r < payloads; ++r) {
      double squares = 0.0;
      for (size_t i = start[r][t]; i < start[r][t + 1]; ++i)
        squares += double(values[r][i]) * double(values[r][i]);
      norms[r] = static_cast<float>(std::sqrt(squares));
    }
    sorted = norms;
    const size_t lower_middle = (payloads - 1) / 2;
    std::nth_element(sorted.begin(), sorted.begin() + lower_middle, sorted.end());
    const float median = sorted[lower_middle];
    for (size_t r = 0; r < payloads; ++r) {
      const float factor = std::min(median / (norms[r] + 1e-8f), 1.0f);
      for (size_t i = start[r][t]; i < start[r][t + 1]; ++i) values[r][i] *= factor;
    }
  }
}

}  // namespace loco::compress
