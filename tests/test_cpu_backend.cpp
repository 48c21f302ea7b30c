// CpuBackend (float, through the Backend interface) against the double instantiation of the
// loco/ops templates on the same inputs, plus the memory, conversion and vector ops that
// only exist on the backend.
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/cpu_backend.hpp"
#include "loco/core/error.hpp"
#include "loco/ops/attention.hpp"
#include "loco/ops/cross_entropy.hpp"
#include "loco/ops/embedding.hpp"
#include "loco/ops/matmul.hpp"
#include "loco/ops/rmsnorm.hpp"
#include "loco/ops/step_stats.hpp"
#include "loco/ops/swiglu.hpp"
#include "loco/optim/optimizer.hpp"
#include "support/catch.hpp"
#include "support/fingerprint_checks.hpp"
#include "support/numeric.hpp"

using loco::Buf;
using loco::DType;
namespace ops = loco::ops;
using Catch::Matchers::WithinRel;  // portable to Catch2 v2.13 and v3 (Catch::Approx is not)

namespace {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
constexpr double kFloatTolerance = 1e-5;  // float backend vs double reference

// A backend buffer that releases itself.
class HostBuf {
 public:
  HostBuf(loco::Backend& backend, size_t numel, DType dtype)
      : backend_(backend), buf_(backend.alloc(numel, dtype)) {}
  HostBuf(loco::Backend& backend, const Floats& values)
      : HostBuf(backend, values.size(), DType::F32) {
    backend_.upload(buf_, values.data());
  }
  HostBuf(loco::Backend& backend, const std::vector<int32_t>& values)
      : HostBuf(backend, values.size(), DType::I32) {
    backend_.upload(buf_, values.data());
  }
  HostBuf(const HostBuf&) = delete;
  HostBuf& operator=(const HostBuf&) = delete;
  ~HostBuf() { backend_.release(buf_); }

  operator Buf() const { return buf_; }
  Floats floats() const {
    Floats values(buf_.numel);
    backend_.download(values.data(), buf_);
    return values;
  }

 private:
  loco::Backend& backend_;
  Buf buf_;
};

using Random = loco::testing::Random<float>;
using loco::testing::max_relative_error;

Doubles widen(const Floats& v) { return Doubles(v.begin(), v.end()); }

#define CHECK_MATCHES_REFERENCE(actual, expected)                     \
  do {                                                                \
    const double rel_err = max_relative_error(actual, expected);      \
    INFO(#actual " vs double reference: relative error " << rel_err); \
    CHECK(rel_err <= kFloatTolerance);                                \
  } while (0)

// Awkward but model-like sizes: N = 18 rows, GQA with groups of 2, odd vocabulary.
constexpr int B = 2, T = 9, C = 24, NH = 4, NKV = 2, HD = 6, V = 37, F = 40;
constexpr int N = B * T;

}  // namespace

// ------------------------------------------------------------------------------- model ops

TEST_CASE("cpu backend: embedding matches the double reference", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(1);
  const Floats wte = rng.uniform(size_t(V) * C), dout = rng.uniform(size_t(N) * C),
               dwte_initial = rng.uniform(size_t(V) * C);
  const std::vector<int32_t> tokens = rng.ids(N, V);
  HostBuf wte_b(backend, wte), tokens_b(backend, tokens), out_b(backend, size_t(N) * C, DType::F32),
      dout_b(backend, dout), dwte_b(backend, dwte_initial);
  backend.embedding_forward(out_b, tokens_b, wte_b, N, C);
  backend.embedding_backward(dwte_b, dout_b, tokens_b, N, C);

  Doubles out(size_t(N) * C), dwte = widen(dwte_initial);
  ops::embedding_forward(out.data(), tokens.data(), widen(wte).data(), N, C);
  ops::embedding_backward(dwte.data(), widen(dout).data(), tokens.data(), N, C);
  CHECK_MATCHES_REFERENCE(out_b.floats(), out);
  CHECK_MATCHES_REFERENCE(dwte_b.floats(), dwte);
}

TEST_CASE("cpu backend: rmsnorm matches the double reference", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(2);
  const float eps = 1e-5f;
  const Floats in = rng.uniform(size_t(N) * C, -2, 2), weight = rng.uniform(C, 0.5f, 1.5f),
               dout = rng.uniform(size_t(N) * C), din_initial = rng.uniform(size_t(N) * C),
               dweight_initial = rng.uniform(C);
  HostBuf in_b(backend, in), weight_b(backend, weight), dout_b(backend, dout),
      out_b(backend, size_t(N) * C, DType::F32), rstd_b(backend, N, DType::F32),
      din_b(backend, din_initial), dweight_b(backend, dweight_initial);
  backend.rmsnorm_forward(out_b, rstd_b, in_b, weight_b, N, C, eps);
  backend.rmsnorm_backward(din_b, dweight_b, dout_b, in_b, weight_b, rstd_b, N, C);

  Doubles out(size_t(N) * C), rstd(N), din = widen(din_initial), dweight = widen(dweight_initial);
  const Doubles in_d = widen(in), weight_d = widen(weight);
  ops::rmsnorm_forward(out.data(), rstd.data(), in_d.data(), weight_d.data(), N, C, eps);
  ops::rmsnorm_backward(din.data(), dweight.data(), widen(dout).data(), in_d.data(),
                        weight_d.data(), rstd.data(), N, C);
  CHECK_MATCHES_REFERENCE(out_b.floats(), out);
  CHECK_MATCHES_REFERENCE(rstd_b.floats(), rstd);
  CHECK_MATCHES_REFERENCE(din_b.floats(), din);
  CHECK_MATCHES_REFERENCE(dweight_b.floats(), dweight);
}

TEST_CASE("cpu backend: matmul matches the double reference", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(3);
  const int IC = C, OC = F;
  const bool accumulate_din = GENERATE(false, true);
  CAPTURE(accumulate_din);
  const Floats in = rng.uniform(size_t(N) * IC), weight = rng.uniform(size_t(OC) * IC),
               dout = rng.uniform(size_t(N) * OC), din_initial = rng.uniform(size_t(N) * IC),
               dweight_initial = rng.uniform(size_t(OC) * IC);
  HostBuf in_b(backend, in), weight_b(backend, weight), dout_b(backend, dout),
      out_b(backend, size_t(N) * OC, DType::F32), din_b(backend, din_initial),
      dweight_b(backend, dweight_initial);
  backend.matmul_forward(out_b, in_b, weight_b, N, IC, OC);
  backend.matmul_backward(din_b, dweight_b, dout_b, in_b, weight_b, N, IC, OC, accumulate_din);

  Doubles out(size_t(N) * OC), din = widen(din_initial), dweight = widen(dweight_initial);
  const Doubles in_d = widen(in), weight_d = widen(weight);
  ops::matmul_forward(out.data(), in_d.data(), weight_d.data(), N, IC, OC);
  ops::matmul_backward(din.data(), dweight.data(), widen(dout).data(), in_d.data(), weight_d.data(),
                       N, IC, OC, accumulate_din);
  CHECK_MATCHES_REFERENCE(out_b.floats(), out);
  CHECK_MATCHES_REFERENCE(din_b.floats(), din);
  CHECK_MATCHES_REFERENCE(dweight_b.floats(), dweight);
}

namespace {
// The header's formula evaluated directly in double (angle = direction * t * theta^(-2i/hd)),
// independent of the op's cos/sin tables, so the precision of those tables is under test too.
Doubles rope_direct(const Floats& x, int T, int H, int hd, double theta, int direction) {
  Doubles out(x.size());
  const int half = hd / 2;
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < half; ++i) {
        const size_t base = (size_t(t) * H + h) * hd;
        const double angle = direction * t * std::pow(theta, -2.0 * i / hd);
        out[base + i] = x[base + i] * std::cos(angle) - x[base + i + half] * std::sin(angle);
        out[base + i + half] = x[base + i + half] * std::cos(angle) + x[base + i] * std::sin(angle);
      }
  return out;
}
}  // namespace

TEST_CASE("cpu backend: rope matches the direct formula at long context, in place", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(4);
  // Llama-2 frequencies over a long context: pair 1 turns at 10000^(-1/32) = 0.75 rad per
  // position, so its angle reaches ~2250 rad, where float spacing is 1.2e-4: an angle
  // computed in float would miss the 1e-5 tolerance.
  const int long_T = 3000, H = 1, hd = 64;
  const float theta = 10000.0f;
  const Floats x = rng.uniform(size_t(long_T) * H * hd), dout = rng.uniform(x.size());
  HostBuf x_b(backend, x), dout_b(backend, dout);
  backend.rope_forward(x_b, x_b, 1, long_T, H, hd, theta);  // aliased, as the model uses it
  backend.rope_backward(dout_b, dout_b, 1, long_T, H, hd, theta);
  CHECK_MATCHES_REFERENCE(x_b.floats(), rope_direct(x, long_T, H, hd, theta, +1));
  CHECK_MATCHES_REFERENCE(dout_b.floats(), rope_direct(dout, long_T, H, hd, theta, -1));
}

TEST_CASE("cpu backend: attention matches the double reference", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(5);
  const size_t q_numel = size_t(N) * NH * HD, kv_numel = size_t(N) * NKV * HD;
  const Floats q = rng.uniform(q_numel, -2, 2), k = rng.uniform(kv_numel, -2, 2),
               v = rng.uniform(kv_numel), dout = rng.uniform(q_numel);
  HostBuf q_b(backend, q), k_b(backend, k), v_b(backend, v), dout_b(backend, dout),
      out_b(backend, q_numel, DType::F32), lse_b(backend, size_t(B) * NH * T, DType::F32),
      dq_b(backend, q_numel, DType::F32), dk_b(backend, kv_numel, DType::F32),
      dv_b(backend, kv_numel, DType::F32);
  backend.attention_forward(out_b, lse_b, q_b, k_b, v_b, B, T, NH, NKV, HD);
  backend.attention_backward(dq_b, dk_b, dv_b, dout_b, q_b, k_b, v_b, out_b, lse_b, B, T, NH, NKV,
                             HD);

  const Doubles q_d = widen(q), k_d = widen(k), v_d = widen(v);
  Doubles out(q_numel), lse(size_t(B) * NH * T), dq(q_numel), dk(kv_numel), dv(kv_numel);
  ops::attention_forward(out.data(), lse.data(), q_d.data(), k_d.data(), v_d.data(), B, T, NH, NKV,
                         HD);
  ops::attention_backward(dq.data(), dk.data(), dv.data(), widen(dout).data(), q_d.data(),
                          k_d.data(), v_d.data(), out.data(), lse.data(), B, T, NH, NKV, HD);
  CHECK_MATCHES_REFERENCE(out_b.floats(), out);
  CHECK_MATCHES_REFERENCE(lse_b.floats(), lse);
  CHECK_MATCHES_REFERENCE(dq_b.floats(), dq);
  CHECK_MATCHES_REFERENCE(dk_b.floats(), dk);
  CHECK_MATCHES_REFERENCE(dv_b.floats(), dv);
}

TEST_CASE("cpu backend: swiglu and add match the double reference", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(6);
  const size_t n = size_t(N) * F;
  const Floats gate = rng.uniform(n, -5, 5), up = rng.uniform(n, -2, 2), dout = rng.uniform(n);
  HostBuf gate_b(backend, gate), up_b(backend, up), dout_b(backend, dout),
      out_b(backend, n, DType::F32), dgate_b(backend, n, DType::F32), dup_b(backend, n, DType::F32);
  backend.swiglu_forward(out_b, gate_b, up_b, n);
  backend.swiglu_backward(dgate_b, dup_b, dout_b, gate_b, up_b, n);

  const Doubles gate_d = widen(gate), up_d = widen(up);
  Doubles out(n), dgate(n), dup(n);
  ops::swiglu_forward(out.data(), gate_d.data(), up_d.data(), n);
  ops::swiglu_backward(dgate.data(), dup.data(), widen(dout).data(), gate_d.data(), up_d.data(), n);
  CHECK_MATCHES_REFERENCE(out_b.floats(), out);
  CHECK_MATCHES_REFERENCE(dgate_b.floats(), dgate);
  CHECK_MATCHES_REFERENCE(dup_b.floats(), dup);

  backend.add(gate_b, gate_b, up_b, n);  // out aliases a
  Doubles sum(n);
  for (size_t i = 0; i < n; ++i) sum[i] = gate_d[i] + up_d[i];
  CHECK_MATCHES_REFERENCE(gate_b.floats(), sum);
}

TEST_CASE("cpu backend: cross_entropy matches the double reference", "[cpu][ops]") {
  loco::CpuBackend backend;
  Random rng(7);
  const float grad_scale = 1.0f / N;
  const Floats logits = rng.uniform(size_t(N) * V, -4, 4);
  const std::vector<int32_t> targets = rng.ids(N, V);
  HostBuf logits_b(backend, logits), targets_b(backend, targets), losses_b(backend, N, DType::F32);
  backend.cross_entropy(losses_b, logits_b, targets_b, N, V, grad_scale, true);

  Doubles dlogits = widen(logits), losses(N);
  ops::cross_entropy(losses.data(), dlogits.data(), targets.data(), N, V, grad_scale, true);
  CHECK_MATCHES_REFERENCE(losses_b.floats(), losses);
  CHECK_MATCHES_REFERENCE(logits_b.floats(), dlogits);
}

TEST_CASE("cpu backend: ops reject buffers of the wrong size, dtype or ids", "[cpu][ops]") {
  loco::CpuBackend backend;
  HostBuf in(backend, 6, DType::F32), weight(backend, 6, DType::F32),
      small_out(backend, 3, DType::F32), out(backend, 4, DType::F32),
      bf16_out(backend, 4, DType::BF16), logits(backend, 6, DType::F32),
      losses(backend, 2, DType::F32), targets(backend, std::vector<int32_t>{1, 3});
  // in (2,3) · weight (2,3)ᵀ -> out (2,2): 4 elements needed.
  CHECK_THROWS_WITH(backend.matmul_forward(small_out, in, weight, 2, 3, 2),
                    LOCO_CONTAINS("matmul_forward") && LOCO_CONTAINS("out has 3 elements"));
  CHECK_THROWS_WITH(backend.matmul_forward(bf16_out, in, weight, 2, 3, 2),
                    LOCO_CONTAINS("out is bf16"));
  CHECK_THROWS_WITH(backend.cross_entropy(losses, logits, targets, 2, 3, 1.0f, true),
                    LOCO_CONTAINS("targets[1] = 3"));
  // Sizes are checked before the ids (Backend's public op, then the CPU's value check).
  CHECK_THROWS_WITH(backend.embedding_forward(out, targets, weight, 2, 2),
                    LOCO_CONTAINS("tokens[1] = 3 is outside [0, 3)"));
  CHECK_THROWS_AS(backend.attention_forward(in, in, in, in, in, 1, 1, 3, 2, 1), loco::Error);
  CHECK_THROWS_AS(backend.rope_forward(in, in, 1, 1, 2, 3, 10000.0f), loco::Error);  // odd hd
}

// ------------------------------------------------------------------------------- memory

TEST_CASE("cpu backend: alloc is zeroed and 64-byte aligned", "[cpu][memory]") {
  loco::CpuBackend backend;
  for (DType dtype : {DType::F32, DType::BF16, DType::I32}) {
    for (size_t numel : {size_t{1}, size_t{3}, size_t{1000}}) {
      Buf buf = backend.alloc(numel, dtype);
      CHECK(buf.numel == numel);
      CHECK(buf.dtype == dtype);
      CHECK(reinterpret_cast<uintptr_t>(buf.data) % 64 == 0);
      const auto* bytes = static_cast<const unsigned char*>(buf.data);
      bool all_zero = true;
      for (size_t i = 0; i < buf.bytes(); ++i) all_zero = all_zero && bytes[i] == 0;
      CHECK(all_zero);
      backend.release(buf);
      CHECK(buf.data == nullptr);
    }
  }
  Buf empty = backend.alloc(0, DType::F32);
  CHECK(empty.empty());
  backend.release(empty);
}

TEST_CASE("cpu backend: upload, download, zero and same-dtype copy round-trip", "[cpu][memory]") {
  loco::CpuBackend backend;
  const Floats values = {1.5f, -2.25f, 3.0f, 1e-30f};
  HostBuf a(backend, values), b(backend, values.size(), DType::F32);
  backend.copy(b, a);
  CHECK(b.floats() == values);
  backend.zero(a);
  CHECK(a.floats() == Floats(values.size(), 0.0f));
  HostBuf wrong_size(backend, 3, DType::F32);
  CHECK_THROWS_WITH(backend.copy(wrong_size, b), LOCO_CONTAINS("copy"));
  HostBuf ids(backend, values.size(), DType::I32);
  CHECK_THROWS_WITH(backend.copy(ids, b), LOCO_CONTAINS("cannot convert f32 to i32"));
}

TEST_CASE("cpu backend: F32 -> BF16 rounds to nearest even, BF16 -> F32 is exact", "[cpu][bf16]") {
  struct Case {
    uint32_t f32_bits;
    uint16_t bf16_bits;
    const char* why;
  };
  const std::vector<Case> cases = {
      {0x3F800000u, 0x3F80, "1.0 is exact"},
      {0x3F808000u, 0x3F80, "tie, kept half even: round down"},
      {0x3F818000u, 0x3F82, "tie, kept half odd: round up to even"},
      {0x3F808001u, 0x3F81, "just above the tie: round up"},
      {0x3F807FFFu, 0x3F80, "just below the tie: round down"},
      {0xBF808001u, 0xBF81, "negative: rounds the magnitude"},
      {0x3F7FFFFFu, 0x3F80, "carry into the exponent: 0.99999994 -> 1.0"},
      {0x7F7FFFFFu, 0x7F80, "FLT_MAX is beyond the largest bf16: +Inf"},
      {0x7F800000u, 0x7F80, "+Inf"},
      {0xFF800000u, 0xFF80, "-Inf"},
      {0x7FC00000u, 0x7FC0, "quiet NaN"},
      {0x7F800001u, 0x7FC0, "NaN whose payload sits in the dropped bits stays NaN"},
      {0x80000000u, 0x8000, "-0 keeps its sign"},
      {0x00000001u, 0x0000, "smallest denormal rounds to +0"},
  };
  loco::CpuBackend backend;
  Floats input;
  for (const Case& c : cases) input.push_back(std::bit_cast<float>(c.f32_bits));
  HostBuf f32(backend, input), bf16(backend, input.size(), DType::BF16),
      back(backend, input.size(), DType::F32);
  backend.copy(bf16, f32);
  backend.copy(back, bf16);

  std::vector<uint16_t> bf16_bits(input.size());
  backend.download(bf16_bits.data(), bf16);
  const Floats round_trip = back.floats();
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].why);
    CHECK(bf16_bits[i] == cases[i].bf16_bits);
    CHECK(std::bit_cast<uint32_t>(round_trip[i]) == uint32_t{cases[i].bf16_bits} << 16);
  }
}

// ------------------------------------------------------------------------------- vector ops

TEST_CASE("cpu backend: sum_squares accumulates in double", "[cpu][vector]") {
  loco::CpuBackend backend;
  // 2^20 + 3 copies of 0.1f: a float accumulator would be off by ~1e-3 relative here.
  const size_t n = (size_t{1} << 20) + 3;
  HostBuf x(backend, Floats(n, 0.1f));
  const double square = double(0.1f) * double(0.1f);
  const double total = backend.sum_squares(x);
  CHECK_THAT(total, WithinRel(double(n) * square, 1e-9));

  // The chunked reduction gives the same bits whatever the thread count.
  Random rng(8);
  HostBuf noisy(backend, rng.uniform(300001, -3, 3));
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one_thread = backend.sum_squares(noisy);
  omp_set_num_threads(3);
  const double three_threads = backend.sum_squares(noisy);
  omp_set_num_threads(threads);
  CHECK(one_thread == three_threads);
  double expected = 0;
  for (float v : noisy.floats()) expected += double(v) * v;
  CHECK_THAT(one_thread, WithinRel(expected, 1e-12));
}

TEST_CASE("cpu backend: scale and axpby", "[cpu][vector]") {
  loco::CpuBackend backend;
  HostBuf x(backend, Floats{1.0f, -2.0f, 0.5f}), y(backend, Floats{4.0f, 8.0f, -1.0f});
  backend.axpby(y, 2.0f, x, 0.5f);  // y = 2x + 0.5y
  CHECK(y.floats() == Floats{4.0f, 0.0f, 0.5f});
  backend.scale(x, -3.0f);
  CHECK(x.floats() == Floats{-3.0f, 6.0f, -1.5f});
  HostBuf shorter(backend, Floats{1.0f});
  CHECK_THROWS_AS(backend.axpby(y, 1.0f, shorter, 1.0f), loco::Error);
}

TEST_CASE("cpu backend: all_finite finds NaN and Inf anywhere", "[cpu][vector]") {
  loco::CpuBackend backend;
  const size_t n = 100003;
  Floats values(n, 1.0f);
  HostBuf clean(backend, values);
  CHECK(backend.all_finite(clean));

  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<size_t, float>> poisons = {
      {0, nan}, {n / 2, inf}, {n - 1, -inf}, {n - 1, nan}, {7, std::numeric_limits<float>::max()}};
  for (const auto& [index, poison] : poisons) {
    Floats poisoned = values;
    poisoned[index] = poison;
    HostBuf buf(backend, poisoned);
    INFO("value " << poison << " at " << index);
    CHECK(backend.all_finite(buf) == std::isfinite(poison));
  }
}

TEST_CASE("cpu backend: adamw_update matches two hand-computed steps", "[cpu][adamw]") {
  loco::CpuBackend backend;
  const float lr = 0.1f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 0.01f, grad_scale = 2.0f;
  HostBuf param(backend, Floats{1.0f, -0.5f, 0.25f}), m(backend, 3, DType::F32),
      v(backend, 3, DType::F32), grad(backend, Floats{0.5f, -0.25f, 0.0f});

  // Step 1, element 0: g = 0.5*2 = 1, m = 0.1, v = 0.001, bc1 = 0.1, bc2 = 0.001
  //   m̂ = 1, v̂ = 1, update = 1/(1+1e-8) + 0.01*1 -> p = 1 - 0.1*1.01 = 0.899
  // Element 2 has g = 0: only weight decay moves it, 0.25 * (1 - 0.1*0.01) = 0.24975.
  backend.adamw_update(param, grad, m, v, lr, beta1, beta2, eps, wd, 1 - beta1, 1 - beta2,
                       grad_scale);
  const Floats step1 = param.floats();
  CHECK_THAT(step1[0], WithinRel(0.899000001, 1e-6));
  CHECK_THAT(step1[1], WithinRel(-0.399500002, 1e-6));
  CHECK_THAT(step1[2], WithinRel(0.24975, 1e-6));
  CHECK_THAT(m.floats()[0], WithinRel(0.1, 1e-6));
  // 0.999f is 0.99899995, so 1 - beta2 = 1.0000467e-3 in float: v is 5e-5 off the decimal
  // value (the bias correction cancels it in the update).
  CHECK_THAT(v.floats()[1], WithinRel(0.00025, 1e-4));

  // Step 2, element 0: g = -0.5, m = 0.09 - 0.05 = 0.04, v = 0.000999 + 0.00025 = 0.001249,
  //   bc1 = 0.19, bc2 = 0.001999, m̂ = 0.2105263, v̂ = 0.6248124, sqrt(v̂) = 0.7904508,
  //   update = 0.2663364 + 0.01*0.899 = 0.2753264 -> p = 0.899 - 0.02753264 = 0.8714673
  backend.upload(grad, Floats{-0.25f, 0.125f, 1.0f}.data());
  backend.adamw_update(param, grad, m, v, lr, beta1, beta2, eps, wd, 1 - beta1 * beta1,
                       1 - beta2 * beta2, grad_scale);
  const Floats step2 = param.floats();
  CHECK_THAT(step2[0], WithinRel(0.87146729737, 1e-5));
  CHECK_THAT(step2[1], WithinRel(-0.372466798706, 1e-5));
  CHECK_THAT(step2[2], WithinRel(0.175086568169, 1e-5));
  CHECK_THAT(m.floats()[2], WithinRel(0.2, 1e-6));
  CHECK_THAT(v.floats()[2], WithinRel(0.004, 1e-4));
}

TEST_CASE("cpu backend: gemm_f32 handles all four transpose combinations", "[cpu][gemm]") {
  const bool trans_a = GENERATE(false, true);
  const bool trans_b = GENERATE(false, true);
  CAPTURE(trans_a, trans_b);
  const int M = 3, Nc = 4, K = 5;
  const float alpha = 0.5f, beta = -1.5f;
  loco::CpuBackend backend;
  Random rng(9);
  const Floats a = rng.uniform(size_t(M) * K), b = rng.uniform(size_t(K) * Nc),
               c_initial = rng.uniform(size_t(M) * Nc);
  HostBuf a_b(backend, a), b_b(backend, b), c_b(backend, c_initial);
  backend.gemm_f32(trans_a, trans_b, M, Nc, K, alpha, a_b, b_b, beta, c_b);

  // op(A)[i][k] and op(B)[k][j] read straight from the stored layouts.
  auto a_at = [&](int i, int k) { return double(trans_a ? a[k * M + i] : a[i * K + k]); };
  auto b_at = [&](int k, int j) { return double(trans_b ? b[j * K + k] : b[k * Nc + j]); };
  Doubles expected(size_t(M) * Nc);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < Nc; ++j) {
      double sum = 0;
      for (int k = 0; k < K; ++k) sum += a_at(i, k) * b_at(k, j);
      expected[i * Nc + j] = alpha * sum + beta * c_initial[i * Nc + j];
    }
  CHECK_MATCHES_REFERENCE(c_b.floats(), expected);
}

// ------------------------------------------------------------------------------- factory

TEST_CASE("make_backend: cpu, auto and unknown names", "[cpu][factory]") {
  const std::unique_ptr<loco::Backend> cpu = loco::make_backend("cpu");
  REQUIRE(cpu != nullptr);
  CHECK(cpu->name() == "cpu");
  CHECK(cpu->activation_dtype() == DType::F32);

  CHECK_THROWS_AS(loco::make_backend("nope"), loco::Error);
  CHECK_THROWS_WITH(loco::make_backend("nope"),
                    LOCO_CONTAINS("\"nope\"") && LOCO_CONTAINS("cpu") && LOCO_CONTAINS("auto"));

#ifndef LOCO_HAVE_CUDA
  CHECK(loco::make_backend("auto")->name() == "cpu");
  CHECK_THROWS_WITH(loco::make_backend("cuda"), LOCO_CONTAINS("has no CUDA backend"));
  std::string why_not;
  CHECK_FALSE(loco::cuda_available(&why_not));
  CHECK_THAT(why_not, LOCO_CONTAINS("no CUDA backend"));
#endif
}

TEST_CASE("cpu backend: fingerprint is content-only and sees every bit", "[cpu]") {
  loco::CpuBackend be;
  loco::testing::check_fingerprint(be);
}

TEST_CASE("cpu backend: add_rmsnorm_forward is add then rmsnorm_forward, bit for bit",
          "[cpu][rmsnorm]") {
  loco::CpuBackend backend;
  std::mt19937 gen(31);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int N = 37, C = 70;  // odd sizes: no row is a whole vector
  auto fill = [&](size_t n) {
    Floats v(n);
    for (auto& x : v) x = dist(gen);
    return v;
  };
  const Floats a = fill(size_t(N) * C), b = fill(size_t(N) * C), w = fill(size_t(C));
  HostBuf ha(backend, a), hb(backend, b), hw(backend, w);
  HostBuf sum(backend, size_t(N) * C, DType::F32), out(backend, size_t(N) * C, DType::F32),
      rstd(backend, size_t(N), DType::F32);
  backend.add_rmsnorm_forward(sum, out, rstd, ha, hb, hw, N, C, 1e-5f);
  HostBuf want_sum(backend, size_t(N) * C, DType::F32),
      want_out(backend, size_t(N) * C, DType::F32), want_rstd(backend, size_t(N), DType::F32);
  backend.add(want_sum, ha, hb, size_t(N) * C);
  backend.rmsnorm_forward(want_out, want_rstd, want_sum, hw, N, C, 1e-5f);
  CHECK(sum.floats() == want_sum.floats());
  CHECK(out.floats() == want_out.floats());
  CHECK(rstd.floats() == want_rstd.floats());
  // In place: the sum written over a.
  backend.add_rmsnorm_forward(ha, out, rstd, ha, hb, hw, N, C, 1e-5f);
  CHECK(ha.floats() == want_sum.floats());
  CHECK(out.floats() == want_out.floats());
}

TEST_CASE("cpu backend: adamw_multi is adamw_update tensor by tensor; stats clip and skip",
          "[cpu][adamw]") {
  loco::CpuBackend backend;
  std::mt19937 gen(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const size_t n = 1000;
  auto fill = [&] {
    Floats v(n);
    for (auto& x : v) x = dist(gen);
    return v;
  };
  const Floats p0 = fill(), g = fill(), m0 = fill(), v0 = [&] {
    Floats v = fill();
    for (auto& x : v) x = x * x;
    return v;
  }();
  // Three tensors with their own decay; [900, 1000) belongs to none and must not move.
  const std::vector<loco::Backend::AdamTensor> tensors = {
      {0, 300, 0.1f}, {300, 1, 0.0f}, {301, 599, 0.05f}};
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, bc1 = 0.19f, bc2 = 0.0975f;
  for (float scale : {1.0f, 0.25f}) {
    INFO("grad scale " << scale);
    HostBuf p(backend, p0), pg(backend, g), m(backend, m0), v(backend, v0);
    HostBuf hyper(backend, Floats{lr, b1, b2, eps, bc1, bc2, scale, 0.0f});
    backend.adamw_multi(p, pg, m, v, tensors, hyper, Buf{});
    HostBuf wp(backend, p0), wm(backend, m0), wv(backend, v0);
    for (const auto& t : tensors)
      backend.adamw_update(Buf(wp).slice(t.offset, t.numel), Buf(pg).slice(t.offset, t.numel),
                           Buf(wm).slice(t.offset, t.numel), Buf(wv).slice(t.offset, t.numel), lr,
                           b1, b2, eps, t.weight_decay, bc1, bc2, scale);
    CHECK(p.floats() == wp.floats());
    CHECK(m.floats() == wm.floats());
    CHECK(v.floats() == wv.floats());
    CHECK(p.floats()[950] == p0[950]);

    // With step statistics: their clip scale replaces hyper's, and a non-finite flag skips.
    std::vector<int32_t> words(ops::kStepStatsWords, 0);
    std::memcpy(&words[4], &scale, 4);
    HostBuf stats(backend, words);
    HostBuf p2(backend, p0), m2(backend, m0), v2(backend, v0);
    HostBuf hyper2(backend, Floats{lr, b1, b2, eps, bc1, bc2, 7.0f, 0.0f});
    backend.adamw_multi(p2, pg, m2, v2, tensors, hyper2, stats);
    CHECK(p2.floats() == wp.floats());
    words[5] = 1;
    backend.upload(stats, words.data());
    backend.adamw_multi(p2, pg, m2, v2, tensors, hyper2, stats);
    CHECK(p2.floats() == wp.floats());  // unchanged
    CHECK(m2.floats() == wm.floats());
  }
  HostBuf p(backend, p0), hyper(backend, Floats(8, 0.0f));
  CHECK_THROWS_WITH(backend.adamw_multi(p, p, p, p, {{900, 101, 0.0f}}, hyper, Buf{}),
                    LOCO_CONTAINS("reaches past the buffers"));
}

TEST_CASE("cpu backend: step statistics — loss, gradient norm, clip scale, non-finite flag",
          "[cpu][step_stats]") {
  loco::CpuBackend backend;
  HostBuf stats(backend, std::vector<int32_t>(ops::kStepStatsWords, 0));
  HostBuf l1(backend, Floats{1.0f, 2.0f, 3.0f, 6.0f}), l2(backend, Floats{0.5f, 1.5f});
  backend.accumulate_loss(stats, l1);
  backend.accumulate_loss(stats, l2);
  auto read = [&] {
    std::vector<int32_t> w(ops::kStepStatsWords);
    backend.download(w.data(), stats);
    return ops::read_step_stats(w.data());
  };
  CHECK(read().loss_sum == 3.0 + 1.0);         // mean 3, then mean 1
  HostBuf grads(backend, Floats{3.0f, 4.0f});  // norm 5
  backend.clip_grad_norm(stats, grads, 1.0);
  CHECK(read().grad_sum_squares == 25.0);
  CHECK(read().clip_scale == 0.2f);
  CHECK_FALSE(read().non_finite);
  const loco::GradNorm gn = loco::global_grad_norm(backend, grads, 1.0);
  CHECK(read().clip_scale == gn.clip_scale);
  backend.clip_grad_norm(stats, grads, 10.0);  // below the threshold, or none
  CHECK(read().clip_scale == 1.0f);
  backend.clip_grad_norm(stats, grads, 0.0);
  CHECK(read().clip_scale == 1.0f);
  backend.upload(grads, Floats{1.0f, std::numeric_limits<float>::quiet_NaN()}.data());
  backend.clip_grad_norm(stats, grads, 1.0);
  CHECK(read().non_finite);
  CHECK(read().loss_sum == 4.0);  // untouched
}
