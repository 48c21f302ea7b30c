// compression.rules = "templar" (loco/compress/templar_rules.hpp): the SparseLoCo reference's
// k per chunk, level rule and median-norm clipping, each against hand-computed cases, and
// loco's rules unchanged next to them.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "loco/compress/compress.hpp"
#include "loco/compress/templar_rules.hpp"
#include "loco/compress/wire.hpp"
#include "loco/config/config.hpp"
#include "support/catch.hpp"

using namespace loco;
using namespace loco::compress;

namespace {

TensorShape mat(const char* name, int64_t r, int64_t c) { return {name, 0, r, c, true}; }
TensorShape vec(const char* name, int64_t n) { return {name, 0, 1, n, false}; }

std::vector<TensorShape> laid_out(std::vector<TensorShape> t) {
  size_t off = 0;
  for (auto& s : t) {
    s.offset = off;
    off += s.numel();
  }
  return t;
}

Settings settings(Rules rules, Selector sel, Quantizer q, int topk = 64) {
  Settings st;
  st.selector = sel;
  st.quantizer = q;
  st.topk = topk;
  st.rules = rules;
  return st;
}

// Quantises one 1-D tensor whole (selector none) and returns (codes, values, table).
struct QuantResult {
  std::vector<uint32_t> code;
  std::vector<float> value, table;
};
QuantResult quantize_whole(Rules rules, Quantizer qz, const std::vector<float>& x) {
  const Plan plan =
      make_plan(laid_out({vec("v", int64_t(x.size()))}), settings(rules, Selector::None, qz));
  Selection sel;
  Quantized q;
  select(plan, x.data(), 0, sel);
  quantize(plan, x.data(), sel, q);
  return {q.code, q.value, q.table};
}

// A payload that keeps every element of `x` (f32 values) on a plan where every chunk goes whole.
std::vector<uint8_t> whole_payload(const Plan& plan, const std::vector<float>& x) {
  Compressor c(plan);
  return c.compress(x.data(), 0);
}

}  // namespace

TEST_CASE("templar k: min(topk, C), at least 2, even, at most C", "[compress][templar]") {
  CHECK(templar_chunk_k(4096, 64) == 64);
  CHECK(templar_chunk_k(4096, 128) == 128);
  CHECK(templar_chunk_k(64, 64) == 64);   // a 64-element chunk goes whole (loco: 1)
  CHECK(templar_chunk_k(100, 64) == 64);  // absolute, not scaled by 100/4096
  CHECK(templar_chunk_k(63, 64) == 62);   // odd C: rounded down to even
  CHECK(templar_chunk_k(4096, 65) == 64);
  CHECK(templar_chunk_k(4096, 1) == 2);  // at least 2
  CHECK(templar_chunk_k(3, 64) == 2);
  CHECK(templar_chunk_k(2, 64) == 2);
  CHECK(templar_chunk_k(1, 64) == 1);  // never more than the chunk holds
}

TEST_CASE("templar plan: absolute k per tile, 1-D tensors in divisor chunks, dense",
          "[compress][templar]") {
  // A 128×192 matrix (tiles 64×64, 6 of them), a 128-element norm gain, a 100-element vector
  // (largest divisor <= 64: 50) and a 97×70 matrix (tiles 97 → 1 row, 70 → 35 cols: 35 elements).
  const auto shapes =
      laid_out({mat("w", 128, 192), vec("g", 128), vec("h", 100), mat("odd", 97, 70)});
  const Plan t = make_plan(shapes, settings(Rules::Templar, Selector::ChunkedTopK, Quantizer::Q2));
  const Plan l = make_plan(shapes, settings(Rules::Loco, Selector::ChunkedTopK, Quantizer::Q2));
  auto kept_in = [](const Plan& p, size_t tensor) {
    return p.k_start[p.first_chunk[tensor + 1]] - p.k_start[p.first_chunk[tensor]];
  };
  CHECK(kept_in(t, 0) == 6 * 64);  // the same for a full 64×64 tile
  CHECK(kept_in(l, 0) == 6 * 64);
  CHECK(kept_in(t, 1) == 128);  // templar: 2 chunks of 64, k = 64 each: dense
  CHECK(kept_in(l, 1) == 2);    // loco: k(64) = round(64·64/4096) = 1 per chunk
  REQUIRE(t.first_chunk[3] - t.first_chunk[2] == 2);  // 100 = 2 × 50
  CHECK(t.chunks[t.first_chunk[2]].size() == 50);
  CHECK(kept_in(t, 2) == 100);                        // 50 ≤ 64: whole
  REQUIRE(l.first_chunk[3] - l.first_chunk[2] == 2);  // loco: 64 + 36
  CHECK(l.chunks[l.first_chunk[2] + 1].size() == 36);
  // 97×70: 97 tiles of 1×35 (97 is prime): templar k = min(64, 35) → 34 (even); loco k = 1.
  CHECK(t.chunks[t.first_chunk[3]].size() == 35);
  CHECK(kept_in(t, 3) == 97 * 2 * 34);
  CHECK(kept_in(l, 3) == 97 * 2 * 1);
  CHECK(t.fingerprint != l.fingerprint);  // a peer with the other rules is refused
}

TEST_CASE("templar 2-bit: rounded levels, sample sigma, edges at -2.25, -0.75, +0.75 sigma",
          "[compress][templar]") {
  // v = {-3, -1, 0, 1, 3}: mean 0, sample σ = sqrt(20/4) = √5, scale = 6σ/4 = 1.5√5 ≈ 3.354;
  // z = v/scale + 2 = {1.106, 1.702, 2, 2.298, 2.894} → rounded {1, 2, 2, 2, 3}.
  // Level means: {-3}, {-1, 0, 1} → 0, {3}; level 0 is empty → the shift (0).
  const std::vector<float> x = {-3, -1, 0, 1, 3};
  const QuantResult t = quantize_whole(Rules::Templar, Quantizer::Q2, x);
  CHECK(t.code == std::vector<uint32_t>{1, 2, 2, 2, 3});
  CHECK(t.value == std::vector<float>{-3, 0, 0, 0, 3});
  CHECK(t.table == std::vector<float>{0, -3, 0, 3});
  // loco on the same values: population σ = 2, step 3, z = v/3 + 2 floored → {1, 1, 2, 2, 3}.
  const QuantResult l = quantize_whole(Rules::Loco, Quantizer::Q2, x);
  CHECK(l.code == std::vector<uint32_t>{1, 1, 2, 2, 3});
  CHECK(l.value == std::vector<float>{-2, -2, 0.5f, 0.5f, 3});

  // A shifted tensor: v = 10 + {-3, -1, 0, 1, 3} gives the same levels, values 10 + the above
  // (level means are of v − shift, then the shift is added back).
  std::vector<float> shifted;
  for (float v : x) shifted.push_back(10.0f + v);
  const QuantResult s = quantize_whole(Rules::Templar, Quantizer::Q2, shifted);
  CHECK(s.code == std::vector<uint32_t>{1, 2, 2, 2, 3});
  CHECK(s.value == std::vector<float>{7, 10, 10, 10, 13});
  CHECK(s.table == std::vector<float>{10, 7, 10, 13});

  // The edges. 8 values: ±4 (×2) pin σ; probes at ±0.7σ and ±0.8σ fall either side of
  // ±0.75σ. Mean 0; sample σ² = (4·16 + 2·(0.49 + 0.64)σ²)/7 → σ² = 64/(7 − 2.26) = 64/4.74.
  const double sigma = std::sqrt(64.0 / 4.74);
  const std::vector<float> e = {-4,
                                -4,
                                4,
                                4,
                                float(-0.8 * sigma),
                                float(-0.7 * sigma),
                                float(0.7 * sigma),
                                float(0.8 * sigma)};
  const QuantResult te = quantize_whole(Rules::Templar, Quantizer::Q2, e);
  // ±4 = ±1.09σ, between the edges ±0.75σ and ±2.25σ: levels 1 and 3; −0.8σ → 1, −0.7σ → 2,
  // 0.7σ → 2, 0.8σ → 3.
  CHECK(4.0 / sigma > 0.75);
  CHECK(4.0 / sigma < 2.25);
  CHECK(te.code == std::vector<uint32_t>{1, 1, 3, 3, 1, 2, 2, 3});
  // loco (population σ_p = σ·sqrt(7/8) = 3.437, step 1.5σ_p = 5.156, floor(v/step + 2)):
  // ±4 → 1.22, 2.78; −0.8σ → 1.43, −0.7σ → 1.50, 0.7σ → 2.50, 0.8σ → 2.57.
  const QuantResult le = quantize_whole(Rules::Loco, Quantizer::Q2, e);
  CHECK(le.code == std::vector<uint32_t>{1, 1, 2, 2, 1, 1, 2, 2});

  // Below −2.25σ: level 0. {−10, eight 1s}: mean −2/9, c(−10) = −9.778, c(1) = 1.222;
  // sample σ = sqrt((9.778² + 8·1.222²)/8) = 3.667, scale 5.5: z = 0.22 → 0 and 2.22 → 2.
  const std::vector<float> far = {-10, 1, 1, 1, 1, 1, 1, 1, 1};
  const QuantResult tf = quantize_whole(Rules::Templar, Quantizer::Q2, far);
  CHECK(tf.code == std::vector<uint32_t>{0, 2, 2, 2, 2, 2, 2, 2, 2});
  CHECK(tf.value[0] == Catch::Approx(-10.0f));  // (v − shift) + shift, two fp32 roundings
  CHECK(tf.value[1] == Catch::Approx(1.0f));
}

TEST_CASE("templar quantiser: one value, constant values, round half to even",
          "[compress][templar]") {
  // n = 1: the sample σ is undefined; the scale falls back to 1 and the value sits at L/2.
  const QuantResult one = quantize_whole(Rules::Templar, Quantizer::Q2, {0.375f});
  CHECK(one.code == std::vector<uint32_t>{2});
  CHECK(one.value == std::vector<float>{0.375f});
  const QuantResult flat = quantize_whole(Rules::Templar, Quantizer::Q4, {2.5f, 2.5f, 2.5f});
  CHECK(flat.code == std::vector<uint32_t>{8, 8, 8});
  CHECK(flat.value == std::vector<float>{2.5f, 2.5f, 2.5f});
  REQUIRE(flat.table.size() == 16);  // always the L level values, even for 8-bit
  const QuantResult q8 = quantize_whole(Rules::Templar, Quantizer::Q8, {1, 2, 3});
  CHECK(q8.table.size() == 256);
  // {−1, 1}: mean 0, sample σ = √2, scale = 6√2/4 = 2.1213; z = ∓0.4714 + 2 → 1.53 and 2.47
  // → 2 and 2 (both round to 2): one level, mean 0.
  const QuantResult pair = quantize_whole(Rules::Templar, Quantizer::Q2, {-1, 1});
  CHECK(pair.code == std::vector<uint32_t>{2, 2});
  CHECK(pair.value == std::vector<float>{0, 0});
}

TEST_CASE("templar aggregation: each peer clipped to the median norm, then averaged",
          "[compress][templar]") {
  // One 2-element 1-D tensor (one chunk of 2, k = 2: every element kept), f32 values.
  const Plan plan = make_plan(laid_out({vec("v", 2)}),
                              settings(Rules::Templar, Selector::ChunkedTopK, Quantizer::F32));
  REQUIRE(plan.k_start.back() == 2);
  // Norms 5, 1, 10: median 5; factors min(1, 5/(n + 1e-8)) = 1, 1, 0.5.
  const std::vector<std::vector<float>> peers = {{3, 4}, {0.6f, 0.8f}, {6, 8}};
  Aggregator agg(plan, Aggregation::MeanSelected);
  for (const auto& p : peers) {
    const auto bytes = whole_payload(plan, p);
    agg.add(bytes.data(), bytes.size());
  }
  std::vector<float> out(2);
  agg.finish(out.data(), 3);
  CHECK(out[0] == (3.0f + 0.6f + 3.0f) / 3.0f);
  CHECK(out[1] == (4.0f + 0.8f + 4.0f) / 3.0f);

  // Four peers, norms 1, 2, 3, 4: the lower middle (2) is the median; 3 and 4 are scaled to 2.
  const std::vector<std::vector<float>> four = {{1, 0}, {0, 2}, {3, 0}, {0, 4}};
  agg.reset();
  for (const auto& p : four) {
    const auto bytes = whole_payload(plan, p);
    agg.add(bytes.data(), bytes.size());
  }
  agg.finish(out.data(), 4);
  const float f3 = 2.0f / (3.0f + 1e-8f);
  CHECK(out[0] == (1.0f + 0.0f + 3.0f * f3 + 0.0f) / 4.0f);
  CHECK(out[1] == (0.0f + 2.0f + 0.0f + 4.0f * 0.5f) / 4.0f);

  // loco's rules: the plain mean of the same four.
  const Plan lplan = make_plan(laid_out({vec("v", 2)}),
                               settings(Rules::Loco, Selector::ChunkedTopK, Quantizer::F32, 4096));
  Aggregator plain(lplan, Aggregation::MeanAll);
  for (const auto& p : four) {
    const auto bytes = whole_payload(lplan, p);
    plain.add(bytes.data(), bytes.size());
  }
  plain.finish(out.data(), 4);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == 1.5f);
}

TEST_CASE("templar clipping is per tensor", "[compress][templar]") {
  const Plan plan = make_plan(laid_out({vec("a", 2), vec("b", 2)}),
                              settings(Rules::Templar, Selector::ChunkedTopK, Quantizer::F32));
  // Tensor a: norms 1, 1, 4 → median 1, the third peer scaled by 1/4. Tensor b: norms 2, 6, 6
  // → median 6, nobody scaled (up to the 1e-8: 6/(2 + 1e-8) > 1 is clamped to 1).
  const std::vector<std::vector<float>> peers = {{1, 0, 0, 2}, {0, 1, 6, 0}, {4, 0, 0, 6}};
  std::vector<std::vector<uint32_t>> flat = {{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}};
  std::vector<std::vector<float>> values = peers;
  clip_to_median_norm(plan, flat, values, 3);
  CHECK(values[0] == peers[0]);
  CHECK(values[1] == peers[1]);
  CHECK(values[2][0] == 4.0f * (1.0f / (4.0f + 1e-8f)));
  CHECK(values[2][0] == 1.0f);
  CHECK(values[2][3] == 6.0f * std::min(6.0f / (6.0f + 1e-8f), 1.0f));
}

TEST_CASE("compression.rules in the config", "[compress][templar]") {
  CompressionConfig c;
  c.selector = "chunked_topk";
  CHECK(settings_from_config(c).rules == Rules::Loco);
  c.rules = "templar";
  CHECK(settings_from_config(c).rules == Rules::Templar);
  c.rules = "deepmind";
  CHECK_THROWS_WITH(settings_from_config(c), LOCO_CONTAINS("distributed.compression.rules"));
  CHECK(std::string(rules_name(Rules::Templar)) == "templar");
}
