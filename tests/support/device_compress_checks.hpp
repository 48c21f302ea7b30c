// Checks shared by tests/test_device_compressor.cpp (CPU backend, run by CI) and
// tests/gpu/gpu_test_compress.cpp (CUDA): the backend-driven compression pipeline against the
// host one (compress::Compressor / Aggregator), which must agree bit for bit, and the backend
// primitives against a brute-force reference written here.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/compress/compress.hpp"
#include "loco/compress/device_compressor.hpp"
#include "loco/core/rng.hpp"
#include "loco/ops/chunk_topk.hpp"
#include "support/catch.hpp"
#include "support/numeric.hpp"

namespace loco::testing {

using namespace loco::compress;

inline std::vector<TensorShape> laid_out(std::vector<TensorShape> t) {
  size_t off = 0;
  for (auto& s : t) {
    s.offset = off;
    off += s.numel();
  }
  return t;
}

// Dims that are not multiples of the 64-tile, 1-D tails, tiny tensors, a 256-wide matrix
// (chunk 64 → tiles of 64×64) and one whose largest divisor <= 64 is small (97 rows: 1).
inline std::vector<TensorShape> awkward_shapes() {
  return laid_out({{"emb", 0, 130, 96, true},
                   {"norm", 0, 1, 200, false},
                   {"square", 0, 64, 64, true},
                   {"odd", 0, 97, 70, true},
                   {"one", 0, 1, 1, true},
                   {"short", 0, 1, 5, false},
                   {"wide", 0, 64, 256, true},
                   {"big", 0, 128, 192, true}});
}

// Gaussian values with per-tensor scales, exact ties, ±0, and (when `specials`) ±inf and NaN.
inline std::vector<float> compress_test_data(size_t n, uint64_t seed, bool specials) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    double v = rng.normal() * std::pow(10.0, double(int(i / 997 % 4)) - 2.0);
    const uint64_t u = rng.below(64);
    if (u == 0) v = 0.0;
    if (u == 1) v = -0.0;
    if (u == 2 || u == 3) v = std::round(v * 4.0) / 4.0;  // ties
    x[i] = float(v);
    if (specials && u == 4) x[i] = (i & 1) ? INFINITY : -INFINITY;
    if (specials && u == 5 && i % 3 == 0) x[i] = std::nanf("");
  }
  return x;
}

// Brute force: sort the chunk's offsets by (|x| bits descending, offset ascending), keep k,
// sort ascending.
inline std::vector<uint32_t> reference_chunk_topk(const ops::ChunkRow& g, const float* x) {
  std::vector<uint32_t> order(g.size());
  for (uint32_t i = 0; i < g.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return ops::magnitude_bits(x[g.flat(a)]) > ops::magnitude_bits(x[g.flat(b)]);
  });
  order.resize(std::min(g.k, g.size()));
  std::sort(order.begin(), order.end());
  return order;
}

// The backend's chunked_topk, gather, scatter_* and divide on random data, against the
// brute-force reference and the ops:: CPU reference. Outputs are poisoned first.
inline void check_compression_primitives(Backend& be) {
  const Plan plan =
      make_plan(awkward_shapes(), Settings{Selector::ChunkedTopK, Quantizer::F32, IndexCoding::Auto,
                                           Aggregation::MeanSelected, 64, 40});
  for (bool specials : {false, true}) {
    INFO("specials " << specials);
    const std::vector<float> x = compress_test_data(plan.total, 11 + specials, specials);
    std::vector<int32_t> table(plan.chunks.size() * ops::kChunkRowInts);
    std::vector<ops::ChunkRow> rows;
    for (size_t c = 0; c < plan.chunks.size(); ++c) {
      const ChunkGeom& g = plan.chunks[c];
      ops::ChunkRow r{g.base, uint32_t(g.stride), g.h, g.w, g.k, plan.k_start[c]};
      rows.push_back(r);
      ops::pack_chunk_row(r, table.data() + c * ops::kChunkRowInts);
    }
    const size_t kept = plan.k_start.back();
    Buf dx = be.alloc(x.size(), DType::F32), dtable = be.alloc(table.size(), DType::I32);
    Buf doff = be.alloc(kept, DType::I32), dflat = be.alloc(kept, DType::I32);
    be.upload(dx, x.data());
    be.upload(dtable, table.data());
    const std::vector<int32_t> poison(kept, -7);
    be.upload(doff, poison.data());
    be.upload(dflat, poison.data());
    be.chunked_topk(doff, dflat, dx, dtable, plan.max_chunk);
    std::vector<uint32_t> off(kept), flat(kept);
    be.download(off.data(), doff);
    be.download(flat.data(), dflat);
    size_t wrong = 0;
    for (size_t c = 0; c < rows.size(); ++c) {
      const auto want = reference_chunk_topk(rows[c], x.data());
      for (size_t i = 0; i < want.size(); ++i) {
        const size_t at = rows[c].kept_start + i;
        wrong += off[at] != want[i] || flat[at] != rows[c].flat(want[i]);
      }
    }
    CHECK(wrong == 0);

    // gather / scatter_subtract / scatter_accumulate / divide against plain loops.
    Buf dval = be.alloc(kept, DType::F32);
    be.gather(dval, dx, dflat);
    std::vector<float> val(kept);
    be.download(val.data(), dval);
    std::vector<float> want_val(kept);
    for (size_t i = 0; i < kept; ++i) want_val[i] = x[flat[i]];
    CHECK(same_bits(val, want_val));

    std::vector<float> sub(kept);
    for (size_t i = 0; i < kept; ++i) sub[i] = float(i % 7) * 0.3f - 1.0f;
    be.upload(dval, sub.data());
    be.scatter_subtract(dx, dflat, dval);
    std::vector<float> got(x.size()), want = x;
    for (size_t i = 0; i < kept; ++i) want[flat[i]] = want[flat[i]] - sub[i];
    be.download(got.data(), dx);
    CHECK(same_bits(got, want));

    Buf dsum = be.alloc(x.size(), DType::F32), dcount = be.alloc(x.size(), DType::I32);
    Buf dout = be.alloc(x.size(), DType::F32);
    std::vector<float> sum(x.size(), 0.0f);
    std::vector<int32_t> count(x.size(), 0);
    for (int round = 0; round < 3; ++round) {
      be.scatter_accumulate(dsum, dcount, dflat, dval);
      for (size_t i = 0; i < kept; ++i) {
        sum[flat[i]] += sub[i];
        count[flat[i]] += 1;
      }
    }
    std::vector<float> mean(x.size()), all(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      mean[i] = count[i] ? sum[i] / float(count[i]) : 0.0f;
      all[i] = sum[i] / 3.0f;
    }
    be.divide(dout, dsum, dcount, 1.0f);
    be.download(got.data(), dout);
    CHECK(same_bits(got, mean));
    be.divide(dout, dsum, Buf{}, 3.0f);
    be.download(got.data(), dout);
    CHECK(same_bits(got, all));

    // ef_accumulate: two roundings (an fma would differ in the last bit for many elements).
    const std::vector<float> e0 = compress_test_data(x.size(), 99, false);
    be.upload(dsum, e0.data());
    be.upload(dout, x.data());
    be.ef_accumulate(dsum, dout, 0.95f);
    be.download(got.data(), dsum);
    for (size_t i = 0; i < x.size(); ++i) {
      volatile float decayed = 0.95f * e0[i];
      want[i] = decayed + x[i];
    }
    CHECK(same_bits(got, want));
    for (Buf* b : {&dx, &dtable, &doff, &dflat, &dval, &dsum, &dcount, &dout}) be.release(*b);
  }
}

// One run of the device pipeline against the host pipeline (three syncs and the aggregates).
inline void check_pipeline_case(Backend& be, const Settings& st);

// The device pipeline against the host pipeline over three syncs, every selector ×
// quantiser × rule set (loco's, templar's), with and without error feedback: identical
// payload bytes, identical EF state, and identical aggregates of the payloads of three
// "workers" (mean_selected and mean_all; under templar's rules after median-norm clipping).
// Then every index coding, and a density of 1/4 (tensors of several 1024-value segments in
// the quantiser's sums; selector none has them too).
inline void check_device_pipeline_matches_host(Backend& be) {
  const Selector selectors[] = {Selector::ChunkedTopK, Selector::RandomK, Selector::GlobalTopK,
                                Selector::None};
  const Quantizer quantizers[] = {Quantizer::F32, Quantizer::BF16, Quantizer::Q8, Quantizer::Q4,
                                  Quantizer::Q2};
  for (Rules rules : {Rules::Loco, Rules::Templar}) {
    for (Selector sel : selectors) {
      for (Quantizer qz : quantizers) {
        if (sel == Selector::None && qz == Quantizer::F32) continue;  // dense: not compressed
        for (bool ef : {false, true})
          check_pipeline_case(be, Settings{sel, qz, IndexCoding::Auto, Aggregation::MeanSelected,
                                           64, 64, ef, 0.9f, 7, rules});
      }
    }
  }
  for (IndexCoding coding : {IndexCoding::Fixed, IndexCoding::Rice, IndexCoding::Bitmap})
    for (Selector sel : {Selector::ChunkedTopK, Selector::GlobalTopK})
      check_pipeline_case(be, Settings{sel, Quantizer::Q2, coding, Aggregation::MeanSelected, 64,
                                       64, true, 0.9f, 7});
  for (Quantizer qz : {Quantizer::Q8, Quantizer::Q4, Quantizer::Q2})
    check_pipeline_case(be, Settings{Selector::ChunkedTopK, qz, IndexCoding::Auto,
                                     Aggregation::MeanSelected, 64, 1024, true, 0.9f, 7});
}

inline void check_pipeline_case(Backend& be, const Settings& st) {
  const Plan plan = make_plan(awkward_shapes(), st);
  INFO(rules_name(st.rules) << " / " << selector_name(st.selector) << " / "
                            << quantizer_name(st.quantizer) << " / ef " << st.error_feedback
                            << " / " << index_coding_name(st.index_coding) << " / topk "
                            << st.topk);
  Compressor host(plan);
  DeviceCompressor device(plan, be);
  Buf delta = be.alloc(plan.total, DType::F32);
  std::vector<std::vector<uint8_t>> payloads;
  for (uint64_t step = 0; step < 3; ++step) {
    const auto d = compress_test_data(plan.total, 1000 * step + 17, false);
    be.upload(delta, d.data());
    const std::vector<uint8_t> want = host.compress(d.data(), step);
    const std::vector<uint8_t>& got = device.compress(delta, step);
    REQUIRE(got.size() == want.size());
    CHECK(std::memcmp(got.data(), want.data(), got.size()) == 0);
    const EncodeStats &a = device.stats(), &b = host.stats();
    CHECK(a.bytes == b.bytes);
    CHECK(a.kept == b.kept);
    CHECK(a.header_bytes == b.header_bytes);
    CHECK(a.table_bytes == b.table_bytes);
    CHECK(a.index_bytes == b.index_bytes);
    CHECK(a.value_bytes == b.value_bytes);
    if (st.error_feedback) {
      CHECK(same_bits(device.download_error(), host.error()));
    }
    payloads.push_back(want);
  }
  for (Aggregation how : {Aggregation::MeanSelected, Aggregation::MeanAll}) {
    Aggregator host_agg(plan, how);
    DeviceAggregator device_agg(plan, how, be);
    device_agg.reset();
    for (const auto& p : payloads) {
      host_agg.add(p.data(), p.size());
      device_agg.add(p.data(), p.size());
    }
    std::vector<float> want(plan.total), got(plan.total);
    host_agg.finish(want.data(), int(payloads.size()));
    device_agg.finish(delta, int(payloads.size()));
    be.download(got.data(), delta);
    CHECK(same_bits(got, want));
  }
  be.release(delta);
}

}  // namespace loco::testing
