// Pseudo-gradient compression (docs/algorithms.md §4, §5): chunk geometry, selectors, quantisers,
// the exact error-feedback identity, the packed wire format (round trips, Rice vs fixed vs the
// information limit, corrupt payloads), aggregation. Expected values are computed here
// independently of the library (reference sorts, hand examples).
//
// Benchmark (hidden, not run by ctest): test_compress "[.bench]" — see scripts/bench-compress.sh.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "loco/compress/compress.hpp"
#include "loco/compress/wire.hpp"
#include "loco/core/hash.hpp"
#include "loco/core/rng.hpp"
#include "loco/ops/bf16.hpp"
#include "support/catch.hpp"

using namespace loco;
using namespace loco::compress;

namespace {

TensorShape mat(const char* name, int64_t r, int64_t c) { return {name, 0, r, c, true}; }
TensorShape vec(const char* name, int64_t n) { return {name, 0, 1, n, false}; }

// Offsets are assigned in order.
std::vector<TensorShape> laid_out(std::vector<TensorShape> t) {
  size_t off = 0;
  for (auto& s : t) {
    s.offset = off;
    off += s.numel();
  }
  return t;
}

// Awkward shapes: dims not multiples of 64, a prime-ish one, 1-D with a short tail, tensors
// smaller than a chunk, 1×1.
std::vector<TensorShape> awkward_shapes() {
  return laid_out({mat("emb", 130, 96), vec("norm", 200), mat("square", 64, 64), mat("odd", 97, 70),
                   mat("one", 1, 1), vec("short", 5), mat("small", 3, 5), mat("wide", 64, 192)});
}

Settings make_settings(Selector s, Quantizer q, int topk = 64,
                       IndexCoding coding = IndexCoding::Auto) {
  Settings st;
  st.selector = s;
  st.quantizer = q;
  st.topk = topk;
  st.index_coding = coding;
  return st;
}

// Gaussian data with a per-tensor scale, some exact ties, zeros and negative zeros.
std::vector<float> test_data(const Plan& plan, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(plan.total);
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const double scale = std::pow(10.0, double(int(t % 5)) - 3.0);
    const TensorShape& s = plan.tensors[t];
    for (size_t i = 0; i < s.numel(); ++i) {
      double v = rng.normal() * scale;
      const uint64_t u = rng.below(50);
      if (u == 0) v = 0.0;
      if (u == 1) v = -0.0;
      if (u == 2) v = std::round(v / scale) * scale;  // ties
      x[s.offset + i] = float(v);
    }
  }
  return x;
}

// Reference top-k of one chunk: sort (|x| desc by bits, offset asc), take k, sort offsets.
std::vector<uint32_t> ref_topk(const ChunkGeom& g, const float* x, uint32_t k) {
  std::vector<uint32_t> p(g.size());
  std::iota(p.begin(), p.end(), 0u);
  auto mag = [&](uint32_t o) { return std::bit_cast<uint32_t>(x[g.flat(o)]) & 0x7fffffffu; };
  std::stable_sort(p.begin(), p.end(), [&](uint32_t a, uint32_t b) { return mag(a) > mag(b); });
  p.resize(k);
  std::sort(p.begin(), p.end());
  return p;
}

// Dense D: the quantiser's values at the selected indices, 0 elsewhere (from the pipeline's
// own Selection / Quantized, not from the decoder).
std::vector<float> dense_from(const Plan& plan, const Selection& sel, const Quantized& q) {
  std::vector<float> d(plan.total, 0.0f);
  for (size_t c = 0; c < plan.chunks.size(); ++c)
    for (uint64_t i = sel.start[c]; i < sel.start[c + 1]; ++i)
      d[plan.chunks[c].flat(sel.offset[i])] = q.value[i];
  return d;
}

bool same_bits(float a, float b) {
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

void fix_checksum(std::vector<uint8_t>& p) {
  const uint64_t seed = hash_bytes(p.data(), 40);
  const uint64_t h = hash_bytes(p.data() + kWireHeaderBytes, p.size() - kWireHeaderBytes, seed);
  std::memcpy(p.data() + 40, &h, 8);
}

std::string decode_error(const Plan& plan, const std::vector<uint8_t>& p,
                         bool verify_checksum = true) {
  std::vector<float> out(plan.total);
  DecodeOptions opt;
  opt.verify_checksum = verify_checksum;
  try {
    decode_dense(plan, p.data(), p.size(), out.data(), opt);
  } catch (const loco::Error& e) {
    return e.what();
  }
  return "";
}

const Selector kSelectors[] = {Selector::None, Selector::ChunkedTopK, Selector::GlobalTopK,
                               Selector::RandomK};
const Quantizer kQuantizers[] = {Quantizer::F32, Quantizer::BF16, Quantizer::Q8, Quantizer::Q4,
                                 Quantizer::Q2};

}  // namespace

// ------------------------------------------------------------------ chunk geometry

TEST_CASE("chunk geometry: 64x64 tiles, largest divisors, 1-D chunks of 64", "[compress]") {
  CHECK(largest_divisor_at_most(4096, 64) == 64);
  CHECK(largest_divisor_at_most(96, 64) == 48);
  CHECK(largest_divisor_at_most(130, 64) == 26);
  CHECK(largest_divisor_at_most(97, 64) == 1);
  CHECK(largest_divisor_at_most(3, 64) == 3);
  CHECK(largest_divisor_at_most(11008, 64) == 64);
  CHECK(largest_divisor_at_most(50257, 64) == 29);

  // k(C) = clamp(round(64·C/4096), 1, C)
  CHECK(chunk_k(4096, 64, 64) == 64);
  CHECK(chunk_k(4096, 128, 64) == 128);
  CHECK(chunk_k(64, 64, 64) == 1);
  CHECK(chunk_k(64, 128, 64) == 2);
  CHECK(chunk_k(1248, 64, 64) == 20);  // 19.5 rounds up
  CHECK(chunk_k(8, 64, 64) == 1);      // at least one
  CHECK(chunk_k(1, 64, 64) == 1);
  CHECK(chunk_k(64, 4096, 64) == 64);  // 100 %

  const Plan plan =
      make_plan(awkward_shapes(), make_settings(Selector::ChunkedTopK, Quantizer::Q2));
  // Tiles per tensor.
  auto chunks_of = [&](size_t t) {
    return std::vector<ChunkGeom>(plan.chunks.begin() + plan.first_chunk[t],
                                  plan.chunks.begin() + plan.first_chunk[t + 1]);
  };
  const auto emb = chunks_of(0);  // 130×96: tiles 26×48, 5×2 of them, k = 20
  REQUIRE(emb.size() == 10);
  for (const auto& g : emb) CHECK((g.h == 26 && g.w == 48 && g.k == 20));
  const auto norm = chunks_of(1);  // 200 = 64+64+64+8
  REQUIRE(norm.size() == 4);
  CHECK((norm[0].size() == 64 && norm[0].k == 1 && norm[3].size() == 8 && norm[3].k == 1));
  const auto sq = chunks_of(2);
  REQUIRE(sq.size() == 1);
  CHECK((sq[0].size() == 4096 && sq[0].k == 64));
  const auto odd = chunks_of(3);  // 97×70: tiles 1×35
  CHECK(odd.size() == 97 * 2);
  CHECK((odd[0].h == 1 && odd[0].w == 35 && odd[0].k == 1));
  const auto one = chunks_of(4);
  CHECK((one.size() == 1 && one[0].size() == 1 && one[0].k == 1));
  const auto wide = chunks_of(7);
  CHECK(wide.size() == 3);

  // The chunks tile the buffer: every element exactly once.
  std::vector<int> seen(plan.total, 0);
  for (const auto& g : plan.chunks)
    for (uint32_t p = 0; p < g.size(); ++p) ++seen[g.flat(p)];
  CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
  // Tile (1, 1) of emb starts at row 26, column 48.
  CHECK(emb[3].base == 26 * 96 + 48);
}

TEST_CASE("chunked top-k keeps the k largest |e| of every chunk, ties to the lower offset",
          "[compress]") {
  for (int topk : {64, 128, 1, 4096}) {
    INFO("topk " << topk);
    const Plan plan =
        make_plan(awkward_shapes(), make_settings(Selector::ChunkedTopK, Quantizer::F32, topk));
    const std::vector<float> x = test_data(plan, 11 + topk);
    Selection sel;
    select(plan, x.data(), 0, sel);
    size_t bad = 0, bad_k = 0;
    for (size_t c = 0; c < plan.chunks.size(); ++c) {
      const ChunkGeom& g = plan.chunks[c];
      const uint32_t n = uint32_t(sel.start[c + 1] - sel.start[c]);
      if (n != g.k) ++bad_k;
      const std::vector<uint32_t> want = ref_topk(g, x.data(), g.k);
      if (!std::equal(want.begin(), want.end(), sel.offset.begin() + sel.start[c])) ++bad;
    }
    CHECK(bad_k == 0);
    CHECK(bad == 0);
  }
}

TEST_CASE("chunked top-k when a strided sample misleads the threshold search", "[compress]") {
  // Every 8th element large, the rest tiny, plus heavy ties: the sampled lower bound leaves
  // fewer than k candidates and the search falls back to the whole chunk.
  const Plan plan = make_plan(laid_out({mat("m", 64, 64), mat("t", 64, 64)}),
                              make_settings(Selector::ChunkedTopK, Quantizer::F32, 64));
  std::vector<float> x(plan.total);
  for (size_t i = 0; i < 4096; ++i) x[i] = i % 8 == 0 ? 100.0f + float(i) : 1e-3f * float(i % 7);
  for (size_t i = 4096; i < 8192; ++i) x[i] = (i % 3 == 0) ? -1.0f : 1.0f;  // ties only
  Selection sel;
  select(plan, x.data(), 0, sel);
  for (size_t c = 0; c < plan.chunks.size(); ++c) {
    const auto want = ref_topk(plan.chunks[c], x.data(), 64);
    CHECK(std::equal(want.begin(), want.end(), sel.offset.begin() + sel.start[c]));
  }
}

TEST_CASE("density is k/C per chunk: 1.5625 % at k = 64 on 64x64 tiles, the 1-D rule",
          "[compress]") {
  const Plan plan = make_plan(laid_out({mat("a", 128, 256), vec("n", 256)}),
                              make_settings(Selector::ChunkedTopK, Quantizer::Q2, 64));
  const std::vector<float> x = test_data(plan, 5);
  Selection sel;
  select(plan, x.data(), 0, sel);
  // 8 tiles × 64 + 4 1-D chunks × 1
  CHECK(sel.kept() == 8 * 64 + 4);
  CHECK(double(8 * 64) / (128 * 256) == 0.015625);
  const Plan p128 =
      make_plan(plan.tensors, make_settings(Selector::ChunkedTopK, Quantizer::Q2, 128));
  select(p128, x.data(), 0, sel);
  CHECK(sel.kept() == 8 * 128 + 4 * 2);
}

TEST_CASE("global top-k keeps the largest |e| of the whole buffer, same budget", "[compress]") {
  const Plan plan =
      make_plan(awkward_shapes(), make_settings(Selector::GlobalTopK, Quantizer::F32));
  const std::vector<float> x = test_data(plan, 3);
  Selection sel;
  select(plan, x.data(), 0, sel);
  CHECK(sel.kept() == plan.k_start.back());
  // Reference: sort all flat indices by (|x| desc, index asc).
  std::vector<uint32_t> idx(plan.total);
  std::iota(idx.begin(), idx.end(), 0u);
  auto mag = [&](uint32_t i) { return std::bit_cast<uint32_t>(x[i]) & 0x7fffffffu; };
  std::stable_sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return mag(a) > mag(b); });
  std::set<size_t> want(idx.begin(), idx.begin() + long(sel.kept()));
  std::set<size_t> got;
  for (size_t c = 0; c < plan.chunks.size(); ++c) {
    for (uint64_t i = sel.start[c]; i < sel.start[c + 1]; ++i) {
      got.insert(plan.chunks[c].flat(sel.offset[i]));
      if (i > sel.start[c]) CHECK(sel.offset[i] > sel.offset[i - 1]);
    }
  }
  CHECK(got == want);
}

TEST_CASE("random-k: the same on every rank for a seed and step, different across steps",
          "[compress]") {
  Settings st = make_settings(Selector::RandomK, Quantizer::Q2);
  st.seed = 42;
  const Plan plan = make_plan(awkward_shapes(), st);
  // Two "ranks" with different data and their own compressors.
  Compressor a(plan), b(plan);
  const std::vector<float> xa = test_data(plan, 1), xb = test_data(plan, 2);
  a.compress(xa.data(), 7);
  b.compress(xb.data(), 7);
  CHECK(a.selection().offset == b.selection().offset);
  CHECK(a.selection().start == b.selection().start);
  CHECK(a.selection().kept() == plan.k_start.back());
  for (size_t c = 0; c < plan.chunks.size(); ++c)
    for (uint64_t i = a.selection().start[c] + 1; i < a.selection().start[c + 1]; ++i)
      CHECK(a.selection().offset[i] > a.selection().offset[i - 1]);
  const std::vector<uint32_t> step7 = a.selection().offset;
  a.compress(xa.data(), 8);
  CHECK(a.selection().offset != step7);
  st.seed = 43;
  Compressor c(make_plan(awkward_shapes(), st));
  c.compress(xa.data(), 7);
  CHECK(c.selection().offset != step7);
  // Roughly uniform: over many steps every offset of the 4096-chunk gets picked about
  // 64/4096 of the time.
  const size_t sq = plan.first_chunk[2];
  std::vector<int> hits(4096, 0);
  for (uint64_t step = 0; step < 512; ++step) {
    std::vector<uint32_t> o(64);
    std::vector<uint8_t> mark(4096, 0);
    random_k_offsets(random_key(42, step), sq, 4096, 64, o.data(), mark.data());
    for (uint32_t v : o) ++hits[v];
  }
  const auto [lo, hi] = std::minmax_element(hits.begin(), hits.end());
  CHECK(*lo >= 0);
  CHECK(*hi <= 24);  // mean 8
  CHECK(std::accumulate(hits.begin(), hits.end(), 0) == 512 * 64);
}

// ------------------------------------------------------------------ quantisers

TEST_CASE("2-bit quantiser: hand example of levels and table", "[compress]") {
  // One 1-D tensor of 8 values, selector none: μ = 0, σ = 5, step = 6σ/4 = 7.5;
  // z = v/7.5 + 2: -10 → 0.67 → level 0; 0 → 2; 10 → 3.33 → 3; level 1 is empty.
  const Plan plan =
      make_plan(laid_out({vec("v", 8)}), make_settings(Selector::None, Quantizer::Q2));
  const std::vector<float> x = {-10, 0, 0, 0, 0, 0, 0, 10};
  Selection sel;
  Quantized q;
  select(plan, x.data(), 0, sel);
  quantize(plan, x.data(), sel, q);
  REQUIRE(q.table_kind[0] == TableKind::Means);
  REQUIRE(q.table.size() == 4);
  CHECK(q.table[0] == -10.0f);
  CHECK(q.table[1] == -3.75f);  // empty: the bin centre μ + (1 + 0.5 − 2)·7.5
  CHECK(q.table[2] == 0.0f);
  CHECK(q.table[3] == 10.0f);
  CHECK(q.code == std::vector<uint32_t>{0, 2, 2, 2, 2, 2, 2, 3});
  CHECK(q.value == x);

  // v = {-2, -1, 1, 2}: μ = 0, σ = √2.5, step = 6σ/4 ≈ 2.37; levels 1, 1, 2, 2; the table
  // holds the level means -1.5 and 1.5.
  const Plan p4 = make_plan(laid_out({vec("v", 4)}), make_settings(Selector::None, Quantizer::Q2));
  const std::vector<float> y = {-2, -1, 1, 2};
  select(p4, y.data(), 0, sel);
  quantize(p4, y.data(), sel, q);
  CHECK(q.code == std::vector<uint32_t>{1, 1, 2, 2});
  CHECK(q.value == std::vector<float>{-1.5f, -1.5f, 1.5f, 1.5f});
  const double step = 6.0 * std::sqrt(2.5) / 4.0;
  CHECK(q.table[0] == float(-1.5 * step));
  CHECK(q.table[3] == float(1.5 * step));

  // Constant values (σ = 0): everything in level L/2, reconstructed exactly.
  const std::vector<float> z = {0.25f, 0.25f, 0.25f, 0.25f};
  select(p4, z.data(), 0, sel);
  quantize(p4, z.data(), sel, q);
  CHECK(q.code == std::vector<uint32_t>{2, 2, 2, 2});
  CHECK(q.value == z);

  // Beyond ±3σ clamps to the outer levels.
  CHECK(quant_level(100.0, 0.0, 1.0, 4) == 3);
  CHECK(quant_level(-100.0, 0.0, 1.0, 4) == 0);
  CHECK(quant_level(NAN, 0.0, 1.0, 4) == 0);
}

TEST_CASE("8-bit on a small tensor sends shift and step (uniform table)", "[compress]") {
  const Plan plan =
      make_plan(laid_out({vec("v", 100)}), make_settings(Selector::None, Quantizer::Q8));
  std::vector<float> x(100);
  for (int i = 0; i < 100; ++i) x[size_t(i)] = float(i) * 0.01f - 0.3f;
  Selection sel;
  Quantized q;
  select(plan, x.data(), 0, sel);
  quantize(plan, x.data(), sel, q);
  REQUIRE(q.table_kind[0] == TableKind::Uniform);  // 100 < 16·256
  REQUIRE(q.table.size() == 2);
  std::vector<float> table(256);
  uniform_table(q.table[0], q.table[1], 256, table.data());
  double mu = 0, ss = 0;
  for (float v : x) mu += v;
  mu /= 100;
  for (float v : x) ss += (v - mu) * (v - mu);
  const double step = 6.0 * std::sqrt(ss / 100) / 256;
  CHECK(q.table[0] == float(mu));
  CHECK(q.table[1] == float(step));
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    bad += q.code[i] != uint32_t(quant_level(x[i], mu, step, 256));
    bad += q.value[i] != table[q.code[i]];
    bad += !(std::abs(q.value[i] - x[i]) <= step);  // within one level
  }
  CHECK(bad == 0);
}

TEST_CASE("quantiser sums run in segments of 1024 kept values, then over segments", "[compress]") {
  // One tensor of 2500 values (segments of 1024, 1024, 452). 2^60 first, then ones: summed
  // straight through, every 1 after 2^60 is lost to rounding; blocked, the second and third
  // segments' ones survive as their own partial sums.
  std::vector<float> x(2500, 1.0f);
  x[0] = 0x1p60f;
  x[2000] = -3.0f;
  auto blocked = [&](auto term) {
    double total = 0.0;
    for (size_t s = 0; s < x.size(); s += 1024) {
      double part = 0.0;
      for (size_t i = s; i < std::min(x.size(), s + 1024); ++i) part += term(double(x[i]));
      total += part;
    }
    return total;
  };
  double straight = 0.0;
  for (float v : x) straight += v;
  const double sum = blocked([](double v) { return v; });
  REQUIRE(sum != straight);  // the data tells the two orders apart
  const double mu = sum / 2500.0;
  const double ss = blocked([mu](double v) { return (v - mu) * (v - mu); });
  const double step = 6.0 * std::sqrt(ss / 2500.0) / 256.0;
  const ops::QuantStats st = ops::quant_stats(x.data(), x.size(), 256);
  CHECK(st.mu == mu);
  CHECK(st.step == step);

  // The same rule through the quantiser: 8-bit on 2500 values sends shift and step.
  const Plan plan =
      make_plan(laid_out({vec("v", 2500)}), make_settings(Selector::None, Quantizer::Q8));
  Selection sel;
  Quantized q;
  select(plan, x.data(), 0, sel);
  quantize(plan, x.data(), sel, q);
  REQUIRE(q.table_kind[0] == TableKind::Uniform);
  CHECK(q.table[0] == float(mu));
  CHECK(q.table[1] == float(step));

  // 2-bit level means: each level's sum blocked the same way (x[0] alone in level 3).
  const Plan p2 =
      make_plan(laid_out({vec("v", 2500)}), make_settings(Selector::None, Quantizer::Q2));
  select(p2, x.data(), 0, sel);
  quantize(p2, x.data(), sel, q);
  REQUIRE(q.table_kind[0] == TableKind::Means);
  for (int level = 0; level < 4; ++level) {
    double lsum = 0.0;
    uint64_t n = 0;
    for (size_t s = 0; s < x.size(); s += 1024) {
      double part = 0.0;
      for (size_t i = s; i < std::min(x.size(), s + 1024); ++i)
        if (q.code[i] == uint32_t(level)) part += x[i], ++n;
      lsum += part;
    }
    if (n > 0) CHECK(q.table[size_t(level)] == float(lsum / double(n)));
  }
  CHECK(q.code[0] == 3);
}

// ------------------------------------------------------------------ error feedback

TEST_CASE("error feedback: e_new + D == beta * e_old + delta, exactly, every combination",
          "[compress]") {
  uint64_t inexact_total = 0, kept_total = 0;
  for (Selector s : kSelectors) {
    for (Quantizer qz : kQuantizers) {
      for (float beta : {0.95f, 0.0f, 1.0f}) {
        INFO(selector_name(s) << " / " << quantizer_name(qz) << " beta " << beta);
        Settings st = make_settings(s, qz);
        st.error_feedback = true;
        st.beta = beta;
        st.seed = 9;
        const Plan plan = make_plan(awkward_shapes(), st);
        Compressor comp(plan);
        std::vector<float> e_old(plan.total, 0.0f);
        size_t unselected_bad = 0, exact_class_bad = 0, bound_bad = 0, inexact = 0, kept = 0;
        for (uint64_t step = 0; step < 3; ++step) {
          const std::vector<float> delta = test_data(plan, 100 + step);
          const std::vector<uint8_t>& payload = comp.compress(delta.data(), step);
          // D as a receiver reconstructs it.
          std::vector<float> D(plan.total);
          decode_dense(plan, payload.data(), payload.size(), D.data());
          const std::vector<float> dense = dense_from(plan, comp.selection(), comp.quantized());
          std::vector<bool> is_kept(plan.total, false);
          for (size_t c = 0; c < plan.chunks.size(); ++c)
            for (uint64_t i = comp.selection().start[c]; i < comp.selection().start[c + 1]; ++i)
              is_kept[plan.chunks[c].flat(comp.selection().offset[i])] = true;
          const std::vector<float>& e_new = comp.error();
          size_t decoded_bad = 0;
          for (size_t i = 0; i < plan.total; ++i) decoded_bad += !same_bits(D[i], dense[i]);
          REQUIRE(decoded_bad == 0);
          for (size_t i = 0; i < plan.total; ++i) {
            const float decayed = beta * e_old[i];
            const float t = decayed + delta[i];
            if (!is_kept[i]) {
              if (!(D[i] == 0.0f && e_new[i] == t && e_new[i] + D[i] == t)) ++unselected_bad;
              continue;
            }
            ++kept;
            const double exact_sum = double(e_new[i]) + double(D[i]);  // exact in double here
            const bool exact = exact_sum == double(t);
            const bool sterbenz =
                (D[i] / 2 <= t && t <= 2 * D[i]) || (2 * D[i] <= t && t <= D[i] / 2);
            const bool must_be_exact =
                qz == Quantizer::F32 || qz == Quantizer::BF16 || sterbenz || D[i] == t;
            if (must_be_exact && !(exact && e_new[i] + D[i] == t)) ++exact_class_bad;
            if (!exact) {
              ++inexact;
              if (std::abs(exact_sum - double(t)) > std::ldexp(std::abs(double(e_new[i])), -24))
                ++bound_bad;
            }
          }
          e_old = e_new;
        }
        CHECK(unselected_bad == 0);
        CHECK(exact_class_bad == 0);
        CHECK(bound_bad == 0);
        if (qz == Quantizer::F32 || qz == Quantizer::BF16) CHECK(inexact == 0);
        inexact_total += inexact;
        kept_total += kept;
      }
    }
  }
  // For the record: how often the b-bit subtraction is not exact on this data.
  WARN("EF: " << inexact_total << " of " << kept_total
              << " kept elements (all combinations) off by <= half an ulp of e_new");
}

TEST_CASE("without error feedback nothing is kept and D = Q(S(delta))", "[compress]") {
  const Plan plan =
      make_plan(awkward_shapes(), make_settings(Selector::ChunkedTopK, Quantizer::F32));
  Compressor comp(plan);
  const std::vector<float> delta = test_data(plan, 1);
  const auto& payload = comp.compress(delta.data(), 0);
  CHECK(comp.error().empty());
  std::vector<float> D(plan.total);
  decode_dense(plan, payload.data(), payload.size(), D.data());
  size_t bad = 0;
  for (size_t c = 0; c < plan.chunks.size(); ++c) {
    const auto want = ref_topk(plan.chunks[c], delta.data(), plan.chunks[c].k);
    std::vector<bool> k(plan.chunks[c].size(), false);
    for (uint32_t o : want) k[o] = true;
    for (uint32_t p = 0; p < plan.chunks[c].size(); ++p) {
      const size_t f = plan.chunks[c].flat(p);
      if (!same_bits(D[f], k[p] ? delta[f] : 0.0f)) ++bad;
    }
  }
  CHECK(bad == 0);
}

// ------------------------------------------------------------------ wire format

TEST_CASE("encode -> decode is exact for every selector, quantiser and index coding",
          "[compress][wire]") {
  for (Selector s : kSelectors) {
    for (Quantizer qz : kQuantizers) {
      for (IndexCoding ic :
           {IndexCoding::Auto, IndexCoding::Fixed, IndexCoding::Rice, IndexCoding::Bitmap}) {
        for (int topk : {64, 700}) {
          INFO(selector_name(s) << " / " << quantizer_name(qz) << " / " << index_coding_name(ic)
                                << " topk " << topk);
          Settings st = make_settings(s, qz, topk, ic);
          st.seed = 5;
          const Plan plan = make_plan(awkward_shapes(), st);
          Compressor comp(plan);
          const std::vector<float> x = test_data(plan, 77);
          const auto& payload = comp.compress(x.data(), 3);
          CHECK(payload.size() == comp.stats().bytes);
          CHECK(comp.stats().bytes == comp.stats().header_bytes + comp.stats().table_bytes +
                                          comp.stats().index_bytes + comp.stats().value_bytes);
          const std::vector<float> want = dense_from(plan, comp.selection(), comp.quantized());
          std::vector<float> got(plan.total, 123.0f);
          decode_dense(plan, payload.data(), payload.size(), got.data());
          size_t bad = 0;
          for (size_t i = 0; i < plan.total; ++i) bad += !same_bits(got[i], want[i]);
          CHECK(bad == 0);
          // The sparse view: indices and values in order.
          size_t n = 0;
          decode(plan, payload.data(), payload.size(), [&](size_t, float) { ++n; });
          CHECK(n == comp.selection().kept());
          // D is the quantiser of the kept x.
          size_t qbad = 0;
          for (size_t c = 0; c < plan.chunks.size(); ++c)
            for (uint64_t i = comp.selection().start[c]; i < comp.selection().start[c + 1]; ++i) {
              const float v = x[plan.chunks[c].flat(comp.selection().offset[i])];
              const float d = comp.quantized().value[i];
              if (qz == Quantizer::F32) qbad += !same_bits(d, v);
              if (qz == Quantizer::BF16)
                qbad += !same_bits(d, ops::bf16_bits_to_float(ops::float_to_bf16_bits(v)));
            }
          CHECK(qbad == 0);
        }
      }
    }
  }
}

TEST_CASE("decode rejects a payload of another plan, selector or quantiser", "[compress][wire]") {
  const Plan plan =
      make_plan(awkward_shapes(), make_settings(Selector::ChunkedTopK, Quantizer::Q2));
  Compressor comp(plan);
  const std::vector<float> x = test_data(plan, 1);
  const std::vector<uint8_t> p = comp.compress(x.data(), 0);
  const Plan other_topk =
      make_plan(awkward_shapes(), make_settings(Selector::ChunkedTopK, Quantizer::Q2, 128));
  CHECK_THAT(decode_error(other_topk, p), LOCO_CONTAINS("fingerprint"));
  auto shapes = awkward_shapes();
  shapes[0].rows = 65;
  shapes = laid_out(shapes);
  const Plan other_shape = make_plan(shapes, make_settings(Selector::ChunkedTopK, Quantizer::Q2));
  CHECK_THAT(decode_error(other_shape, p), LOCO_CONTAINS("fingerprint"));
  const Plan other_q =
      make_plan(awkward_shapes(), make_settings(Selector::ChunkedTopK, Quantizer::Q4));
  CHECK_THAT(decode_error(other_q, p), LOCO_CONTAINS("expects chunked_topk / 4bit"));
}

TEST_CASE("corrupt payloads are rejected with a message, never read out of bounds",
          "[compress][wire]") {
  struct Case {
    Selector s;
    Quantizer q;
    IndexCoding ic;
  };
  const Case cases[] = {{Selector::ChunkedTopK, Quantizer::Q2, IndexCoding::Rice},
                        {Selector::ChunkedTopK, Quantizer::Q8, IndexCoding::Fixed},
                        {Selector::GlobalTopK, Quantizer::BF16, IndexCoding::Auto},
                        {Selector::ChunkedTopK, Quantizer::F32, IndexCoding::Bitmap},
                        {Selector::RandomK, Quantizer::Q4, IndexCoding::Auto},
                        {Selector::None, Quantizer::Q2, IndexCoding::Auto}};
  for (const Case& cs : cases) {
    INFO(selector_name(cs.s) << " / " << quantizer_name(cs.q) << " / " << index_coding_name(cs.ic));
    Settings st = make_settings(cs.s, cs.q, 64, cs.ic);
    // Small model: every byte gets truncated at.
    const Plan plan = make_plan(laid_out({mat("m", 64, 128), vec("n", 70), mat("s", 3, 5)}), st);
    Compressor comp(plan);
    const std::vector<float> x = test_data(plan, 21);
    const std::vector<uint8_t> good = comp.compress(x.data(), 1);
    REQUIRE(decode_error(plan, good).empty());

    // Truncation at every byte, with and without the checksum.
    size_t accepted = 0;
    for (size_t n = 0; n < good.size(); ++n) {
      std::vector<uint8_t> cut(good.begin(), good.begin() + long(n));
      if (decode_error(plan, cut).empty()) ++accepted;
      if (n >= kWireHeaderBytes) {
        uint64_t total = n;  // a header that agrees with the truncated size
        std::memcpy(cut.data() + 16, &total, 8);
        fix_checksum(cut);
        if (decode_error(plan, cut).empty()) ++accepted;
      }
    }
    CHECK(accepted == 0);

    // Bit flips: with the checksum every one is caught; without it, the structural checks
    // either reject the payload or it decodes into bounds (ASan/UBSan builds check the rest).
    Rng rng(uint64_t(cs.s) * 31 + uint64_t(cs.q));
    size_t missed = 0, structural = 0;
    for (int trial = 0; trial < 3000; ++trial) {
      std::vector<uint8_t> bad = good;
      const size_t bit = size_t(rng.below(bad.size() * 8));
      bad[bit / 8] ^= uint8_t(1u << (bit % 8));
      if (decode_error(plan, bad).empty()) ++missed;
      fix_checksum(bad);
      if (!decode_error(plan, bad, false).empty()) ++structural;
    }
    CHECK(missed == 0);
    CHECK(structural > 0);

    // Appended bytes.
    std::vector<uint8_t> longer = good;
    longer.push_back(0);
    CHECK_THAT(decode_error(plan, longer), LOCO_CONTAINS("arrived"));
    uint64_t total = longer.size();
    std::memcpy(longer.data() + 16, &total, 8);
    fix_checksum(longer);
    CHECK_THAT(decode_error(plan, longer), LOCO_CONTAINS("unexpected bytes after the last tensor"));
  }

  // Targeted lies (checksum fixed up so that the structural checks are reached).
  const Plan plan =
      make_plan(laid_out({mat("m", 64, 128), vec("n", 70)}),
                make_settings(Selector::GlobalTopK, Quantizer::Q2, 64, IndexCoding::Fixed));
  Compressor comp(plan);
  const std::vector<float> x = test_data(plan, 8);
  const std::vector<uint8_t> good = comp.compress(x.data(), 0);
  auto lie = [&](size_t at, const void* v, size_t n) {
    std::vector<uint8_t> p = good;
    std::memcpy(p.data() + at, v, n);
    fix_checksum(p);
    return decode_error(plan, p);
  };
  const uint8_t bad_magic[4] = {'L', 'C', 'S', 'X'};
  CHECK_THAT(lie(0, bad_magic, 4), LOCO_CONTAINS("bad magic"));
  const uint16_t v2 = 2;
  CHECK_THAT(lie(4, &v2, 2), LOCO_CONTAINS("unsupported version 2"));
  const uint16_t h = 40;
  CHECK_THAT(lie(6, &h, 2), LOCO_CONTAINS("header size 40"));
  const uint8_t sel9 = 9;
  CHECK_THAT(lie(8, &sel9, 1), LOCO_CONTAINS("unknown selector"));
  const uint16_t flags = 4;
  CHECK_THAT(lie(10, &flags, 2), LOCO_CONTAINS("flags"));
  const uint32_t tensors = 3;
  CHECK_THAT(lie(12, &tensors, 4), LOCO_CONTAINS("tensor count 3"));
  const uint64_t huge = uint64_t(1) << 62;
  CHECK_THAT(lie(16, &huge, 8), LOCO_CONTAINS("truncated"));
  const uint64_t key = 5;
  CHECK_THAT(lie(32, &key, 8), LOCO_CONTAINS("random-k key"));
  {
    std::vector<uint8_t> p = good;
    p[40] ^= 1;
    CHECK_THAT(decode_error(plan, p), LOCO_CONTAINS("checksum"));
  }
  // Tensor 0 header at byte 48: kept, coding, rice parameter, table kind, reserved, index bytes.
  const uint32_t kept_big = 64 * 128 + 1;
  CHECK_THAT(lie(48, &kept_big, 4), LOCO_CONTAINS("kept 8193 > elements 8192"));
  uint32_t kept0;
  std::memcpy(&kept0, good.data() + 48, 4);
  const uint32_t kept_more = kept0 + 1;
  CHECK_THAT(lie(48, &kept_more, 4), LOCO_CONTAINS("counts add up to"));
  const uint8_t coding0 = 0, coding9 = 9, param3 = 3, tkind0 = 0, tkind7 = 7, reserved = 1;
  CHECK_THAT(lie(52, &coding0, 1), LOCO_CONTAINS("does not fit selector"));
  CHECK_THAT(lie(52, &coding9, 1), LOCO_CONTAINS("unknown index coding"));
  CHECK_THAT(lie(53, &param3, 1), LOCO_CONTAINS("rice parameter"));
  CHECK_THAT(lie(54, &tkind0, 1), LOCO_CONTAINS("table kind"));
  CHECK_THAT(lie(54, &tkind7, 1), LOCO_CONTAINS("table kind"));
  CHECK_THAT(lie(55, &reserved, 1), LOCO_CONTAINS("reserved"));
  uint32_t ib;
  std::memcpy(&ib, good.data() + 56, 4);
  for (uint32_t wrong : {ib + 1, ib - 1, ib + 100000, 0u, 0xffffffffu}) {
    INFO("index bytes " << wrong << " instead of " << ib);
    CHECK_FALSE(lie(56, &wrong, 4).empty());
  }
  const float nan = NAN;
  CHECK_THAT(lie(60, &nan, 4), LOCO_CONTAINS("not finite"));
  // Counts (13 bits each for 4096-element chunks) come first in the index stream: claim
  // 4096 for chunk 0 (a full chunk would need 4096 values).
  {
    std::vector<uint8_t> p = good;
    const size_t stream = 60 + 16;  // after the 4-level table
    p[stream] = 0x00;
    p[stream + 1] = uint8_t((p[stream + 1] & 0xe0) | 0x10);  // bit 12 set: 4096
    fix_checksum(p);
    CHECK_THAT(decode_error(plan, p), LOCO_CONTAINS("count"));
  }
  // Fixed offsets: make the first offset of the first chunk larger than the second one.
  {
    std::vector<uint8_t> p = good;
    const size_t stream = 60 + 16;
    // 2 chunks × 13-bit counts = 26 bits, then 12-bit offsets: set bits 26..37 to all ones.
    for (int b = 26; b < 38; ++b) p[stream + size_t(b / 8)] |= uint8_t(1u << (b % 8));
    fix_checksum(p);
    CHECK_THAT(decode_error(plan, p), LOCO_CONTAINS("not ascending"));
  }
}

// Hidden, for sanitizer builds: many random mutations past the checksum; anything but a clean
// decode or a loco::Error (another exception, a crash, an ASan/UBSan report) fails.
TEST_CASE("fuzz the decoder with mutated payloads", "[.fuzz]") {
  const Selector sels[] = {Selector::ChunkedTopK, Selector::GlobalTopK, Selector::RandomK,
                           Selector::None};
  const IndexCoding codings[] = {IndexCoding::Rice, IndexCoding::Fixed, IndexCoding::Bitmap};
  Rng rng(2024);
  size_t decoded = 0, rejected = 0;
  for (Selector s : sels) {
    for (Quantizer q : kQuantizers) {
      for (IndexCoding ic : codings) {
        Settings st = make_settings(s, q, 200, ic);
        const Plan plan = make_plan(laid_out({mat("m", 64, 96), vec("n", 70), mat("s", 3, 5)}), st);
        Compressor comp(plan);
        const std::vector<float> x = test_data(plan, 5);
        const std::vector<uint8_t> good = comp.compress(x.data(), 1);
        std::vector<float> out(plan.total);
        DecodeOptions opt;
        opt.verify_checksum = false;
        for (int trial = 0; trial < 2000; ++trial) {
          std::vector<uint8_t> p = good;
          const int kind = int(rng.below(3));
          const int edits = 1 + int(rng.below(4));
          for (int e = 0; e < edits; ++e) {
            const size_t at = size_t(rng.below(p.size()));
            if (kind == 0)
              p[at] ^= uint8_t(1u << rng.below(8));
            else if (kind == 1)
              p[at] = uint8_t(rng.below(256));
            else
              p.resize(at);
            if (p.empty()) break;
          }
          try {
            decode_dense(plan, p.data(), p.size(), out.data(), opt);
            ++decoded;
          } catch (const loco::Error&) {
            ++rejected;
          }
        }
      }
    }
  }
  WARN("fuzz: " << decoded << " mutated payloads decoded cleanly, " << rejected << " rejected");
  CHECK(rejected > 0);
}

TEST_CASE("Rice offsets: unary runs and offsets are bounded", "[compress][wire]") {
  // One 64×64 tile, k = 64, Rice with one parameter for the tensor.
  const Plan plan =
      make_plan(laid_out({mat("m", 64, 64)}),
                make_settings(Selector::ChunkedTopK, Quantizer::Q2, 64, IndexCoding::Rice));
  Compressor comp(plan);
  std::vector<float> x = test_data(plan, 4);
  const std::vector<uint8_t> good = comp.compress(x.data(), 0);
  REQUIRE((good[52] == uint8_t(WireIndexCoding::RiceTensor) ||
           good[52] == uint8_t(WireIndexCoding::RiceChunk)));
  // An index stream of all ones: the first unary run exceeds (C-1) >> p.
  std::vector<uint8_t> p = good;
  uint32_t ib;
  std::memcpy(&ib, p.data() + 56, 4);
  const size_t stream = 60 + 16;
  for (size_t i = 0; i < ib; ++i) p[stream + i] = 0xff;
  fix_checksum(p);
  const std::string err = decode_error(plan, p);
  CHECK_THAT(err, LOCO_CONTAINS("Rice quotient exceeds") || LOCO_CONTAINS("rice parameter"));
  // All zeros: 64 gaps of 0 (offsets 0..63) leave the stream unconsumed.
  for (size_t i = 0; i < ib; ++i) p[stream + i] = 0x00;
  fix_checksum(p);
  CHECK_FALSE(decode_error(plan, p).empty());
}

// ------------------------------------------------------------------ aggregation

TEST_CASE("aggregation: mean over the selecting workers vs the sum divided by K", "[compress]") {
  // One 1-D tensor of 64 (one chunk), topk 128 → k = 2 per worker, values sent as f32.
  Settings st = make_settings(Selector::ChunkedTopK, Quantizer::F32, 128);
  const Plan plan = make_plan(laid_out({vec("v", 64)}), st);
  std::vector<float> a(64, 0.01f), b(64, 0.01f);
  a[0] = 4.0f, a[1] = 2.0f;   // worker 0 keeps 0, 1
  b[1] = 6.0f, b[2] = -8.0f;  // worker 1 keeps 1, 2
  Compressor ca(plan), cb(plan);
  const std::vector<uint8_t> pa = ca.compress(a.data(), 0), pb = cb.compress(b.data(), 0);
  std::vector<float> out(64);
  Aggregator sel(plan, Aggregation::MeanSelected);
  sel.add(pa.data(), pa.size());
  sel.add(pb.data(), pb.size());
  sel.finish(out.data(), 2);
  CHECK(out[0] == 4.0f);   // only worker 0
  CHECK(out[1] == 4.0f);   // (2 + 6) / 2
  CHECK(out[2] == -8.0f);  // only worker 1
  CHECK(std::count(out.begin(), out.end(), 0.0f) == 61);
  Aggregator all(plan, Aggregation::MeanAll);
  all.add(pa.data(), pa.size());
  all.add(pb.data(), pb.size());
  all.finish(out.data(), 2);
  CHECK(out[0] == 2.0f);
  CHECK(out[1] == 4.0f);
  CHECK(out[2] == -4.0f);
  // reset() starts over.
  all.reset();
  all.add(pa.data(), pa.size());
  all.finish(out.data(), 1);
  CHECK(out[0] == 4.0f);
  // A corrupt payload is rejected by add().
  std::vector<uint8_t> bad = pa;
  bad.back() ^= 1;
  CHECK_THROWS_AS(all.add(bad.data(), bad.size()), loco::Error);
}

// ------------------------------------------------------------------ index cost

TEST_CASE("index bits: Rice vs 12-bit vs the information limit log2(binom(4096,k))/k",
          "[compress][wire]") {
  CHECK(index_entropy_bits(4096, 64) == Catch::Approx(7.4).margin(0.1));
  CHECK(index_entropy_bits(4096, 128) == Catch::Approx(6.4).margin(0.1));
  for (int topk : {64, 128}) {
    INFO("k = " << topk);
    // 16 tiles of 64×64, iid Gaussian values: uniformly random positions.
    const Plan plan = make_plan(laid_out({mat("m", 256, 256)}),
                                make_settings(Selector::ChunkedTopK, Quantizer::Q2, topk));
    Rng rng(99);
    std::vector<float> x(plan.total);
    for (float& v : x) v = float(rng.normal());
    Selection sel;
    select(plan, x.data(), 0, sel);
    const IndexCost ic = index_cost(plan, sel, 0);
    const double kept = double(sel.kept());
    const double fixed = ic.fixed / kept, rice_c = ic.rice_chunk / kept,
                 rice_t = ic.rice_tensor / kept, bitmap = ic.bitmap / kept;
    const double limit = index_entropy_bits(4096, uint32_t(topk));
    WARN("k=" << topk << ": fixed " << fixed << ", rice/chunk " << rice_c << ", rice/tensor "
              << rice_t << " (p=" << ic.rice_tensor_param << "), bitmap " << bitmap << ", limit "
              << limit << " bits per index");
    CHECK(fixed == 12.0);
    CHECK(bitmap == 4096.0 / topk);
    CHECK(rice_t >= limit);
    CHECK(rice_c >= limit);
    CHECK(std::min(rice_t, rice_c) <= limit + 0.5);
    CHECK(std::min(rice_t, rice_c) <= 8.0);
    // auto picks the smallest: the payload's index stream is the Rice one (+ padding).
    Quantized q;
    quantize(plan, x.data(), sel, q);
    EncodeStats es;
    encode(plan, sel, q, 0, &es);
    CHECK(es.index_bytes == (std::min(ic.rice_tensor, ic.rice_chunk) + 7) / 8);
    const double bits = 8.0 * double(es.bytes) / kept;
    WARN("k=" << topk << ": 2-bit payload " << bits << " bits per kept element (naive 14, limit "
              << 2 + limit << ")");
    CHECK(bits < 2 + limit + 1.0);
  }
}

// ------------------------------------------------------------------ config

TEST_CASE("distributed.compression: defaults, settings, consistency errors", "[compress][config]") {
  using nlohmann::json;
  const Config d = config_from_json(json::object(), "x.json");
  const CompressionConfig& c = d.distributed.compression;
  CHECK_FALSE(c.error_feedback);
  CHECK(c.beta == 0.95);
  CHECK(c.selector == "none");
  CHECK(c.topk == 64);
  CHECK(c.chunk == 64);
  CHECK(c.quantizer == "none");
  CHECK(c.index_coding == "auto");
  CHECK(c.aggregation == "mean_selected");
  CHECK(c.seed == 0u);
  CHECK(c.rules == "loco");
  CHECK_FALSE(c.compressed());
  const json out = config_to_json(d);
  CHECK(out["distributed"]["compression"].size() == 10);

  json j = {{"distributed",
             {{"method", "diloco"},
              {"compression",
               {{"error_feedback", true},
                {"selector", "random_k"},
                {"quantizer", "4bit"},
                {"index_coding", "bitmap"},
                {"aggregation", "mean_all"},
                {"topk", 128},
                {"chunk", 32},
                {"beta", 0.5},
                {"seed", 18446744073709551615ull}}}}}};
  const Config cfg = config_from_json(j, "x.json");
  const Settings st = settings_from_config(cfg.distributed.compression);
  CHECK(st.selector == Selector::RandomK);
  CHECK(st.quantizer == Quantizer::Q4);
  CHECK(st.index_coding == IndexCoding::Bitmap);
  CHECK(st.aggregation == Aggregation::MeanAll);
  CHECK(st.topk == 128);
  CHECK(st.chunk == 32);
  CHECK(st.beta == 0.5f);
  CHECK(st.error_feedback);
  CHECK(st.seed == 18446744073709551615ull);

  auto error_of = [](json j) {
    try {
      config_from_json(j, "x.json");
    } catch (const loco::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  json bad = j;
  bad["distributed"]["compression"]["topk"] = 1025;  // chunk 32: 1024 per chunk
  CHECK_THAT(error_of(bad),
             LOCO_CONTAINS("distributed.compression.topk = 1025: must be <= chunk * chunk = 1024"));
  bad = j;
  bad["distributed"]["compression"]["selector"] = "topk";
  CHECK_THAT(error_of(bad), LOCO_CONTAINS("distributed.compression.selector"));
  bad = j;
  bad["distributed"]["compression"]["quantizer"] = "3bit";
  CHECK_THAT(error_of(bad), LOCO_CONTAINS("distributed.compression.quantizer"));
  bad = j;
  bad["distributed"]["compression"]["beta"] = 1.5;
  CHECK_THAT(error_of(bad), LOCO_CONTAINS("distributed.compression.beta = 1.5"));
  bad = j;
  bad["distributed"]["method"] = "ddp";
  CHECK_THAT(error_of(bad), LOCO_CONTAINS("needs method \"diloco\""));
  bad = j;
  bad["distributed"]["outer"] = {{"wire_dtype", "bf16"}};
  CHECK_THAT(error_of(bad), LOCO_CONTAINS("distributed.outer.wire_dtype = \"bf16\""));
  // Dense + bf16 all-reduce stays allowed.
  json dense = {{"distributed", {{"method", "diloco"}, {"outer", {{"wire_dtype", "bf16"}}}}}};
  CHECK(error_of(dense).empty());
}

// ------------------------------------------------------------------ benchmark (hidden)

TEST_CASE("compression throughput and bits per element", "[.bench]") {
  using Clock = std::chrono::steady_clock;
  auto secs = [](Clock::time_point a) {
    return std::chrono::duration<double>(Clock::now() - a).count();
  };
  // A 4096×4096 matrix (16.8M elements, 64 MiB of fp32) — 4096 chunks.
  const Plan shape_plan = make_plan(laid_out({mat("m", 4096, 4096)}), Settings{});
  Rng rng(1);
  std::vector<float> x(shape_plan.total);
  for (float& v : x) v = float(rng.normal());
  const double mb = double(x.size()) * 4 / 1e6;
  std::printf("\ninput: 4096x4096 fp32 (%.1f MB), iid N(0,1); best of 3 runs each\n", mb);
  std::printf("%-13s %-6s %4s %-6s %9s %9s %9s %9s %11s %11s\n", "selector", "quant", "k", "index",
              "bits/el", "value", "index", "overhead", "encode MB/s", "decode MB/s");
  struct Row {
    Selector s;
    Quantizer q;
    int k;
    IndexCoding ic;
  };
  const Row rows[] = {
      {Selector::ChunkedTopK, Quantizer::Q2, 64, IndexCoding::Auto},
      {Selector::ChunkedTopK, Quantizer::Q2, 64, IndexCoding::Fixed},
      {Selector::ChunkedTopK, Quantizer::Q2, 64, IndexCoding::Bitmap},
      {Selector::ChunkedTopK, Quantizer::Q2, 128, IndexCoding::Auto},
      {Selector::ChunkedTopK, Quantizer::Q2, 128, IndexCoding::Fixed},
      {Selector::ChunkedTopK, Quantizer::Q4, 64, IndexCoding::Auto},
      {Selector::ChunkedTopK, Quantizer::Q8, 64, IndexCoding::Auto},
      {Selector::ChunkedTopK, Quantizer::F32, 64, IndexCoding::Auto},
      {Selector::GlobalTopK, Quantizer::Q2, 64, IndexCoding::Auto},
      {Selector::RandomK, Quantizer::Q2, 64, IndexCoding::Auto},
      {Selector::None, Quantizer::Q2, 64, IndexCoding::Auto},
      {Selector::None, Quantizer::BF16, 64, IndexCoding::Auto},
  };
  for (const Row& r : rows) {
    Settings st = make_settings(r.s, r.q, r.k, r.ic);
    st.error_feedback = true;
    const Plan plan = make_plan(shape_plan.tensors, st);
    Compressor comp(plan);
    double enc = 1e30, dec = 1e30;
    std::vector<float> out(plan.total);
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      const auto& p = comp.compress(x.data(), uint64_t(rep));
      enc = std::min(enc, secs(t0));
      const auto t1 = Clock::now();
      decode_dense(plan, p.data(), p.size(), out.data());
      dec = std::min(dec, secs(t1));
    }
    const EncodeStats& es = comp.stats();
    const double kept = double(es.kept);
    std::printf("%-13s %-6s %4d %-6s %9.3f %9.3f %9.3f %9.3f %11.0f %11.0f\n", selector_name(r.s),
                quantizer_name(r.q), r.s == Selector::None ? 0 : r.k, index_coding_name(r.ic),
                8.0 * es.bytes / kept, 8.0 * es.value_bytes / kept, 8.0 * es.index_bytes / kept,
                8.0 * (es.header_bytes + es.table_bytes) / kept, mb / enc, mb / dec);
  }
  for (uint32_t k : {64u, 128u})
    std::printf(
        "information limit k=%u of 4096: %.3f index bits, %.3f with 2-bit values; naive "
        "12-bit index: 14\n",
        k, index_entropy_bits(4096, k), 2 + index_entropy_bits(4096, k));
  SUCCEED();
}
