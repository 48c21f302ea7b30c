// Every op's backward against central finite differences, in double precision (the double
// instantiation of the loco/ops templates), plus forward checks against naive references.
// Shapes are small and deliberately awkward (odd T, GQA groups, repeated tokens) so that an
// indexing mistake cannot hide behind symmetry.
//
// Each backward is checked on the scalar objective L = Σ w ⊙ out(x) with random w: its
// gradient dL/dx is exactly the op's backward applied to dout = w.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "loco/ops/attention.hpp"
#include "loco/ops/cross_entropy.hpp"
#include "loco/ops/embedding.hpp"
#include "loco/ops/matmul.hpp"
#include "loco/ops/rmsnorm.hpp"
#include "loco/ops/rope.hpp"
#include "loco/ops/swiglu.hpp"
#include "support/catch.hpp"
#include "support/numeric.hpp"

namespace ops = loco::ops;
// Catch::Approx is not in namespace Catch on Catch2 v2; WithinRel works on v2.13 and v3.
using Catch::Matchers::WithinRel;

namespace {

using Vec = std::vector<double>;
constexpr double kGradTolerance = 1e-6;  // max |analytic - numeric| / max |numeric|
constexpr double kForwardTolerance = 1e-12;

using Random = loco::testing::Random<double>;
using loco::testing::max_relative_error;

// Called inside objectives thousands of times: a plain check, not a Catch assertion.
double dot(const Vec& a, const Vec& b) {
  if (a.size() != b.size()) throw std::logic_error("dot: size mismatch");
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// Sets the OpenMP thread count to 1 for its lifetime.
class SingleThreaded {
 public:
  SingleThreaded() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThreaded() { omp_set_num_threads(saved_); }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  int saved_;
};

// dL/dx by central differences; x is perturbed in place and restored. The step balances the
// O(h²) truncation error against the O(eps/h) rounding error of double.
// The objective runs thousands of times on tiny shapes, where an OpenMP fork/join per call
// dominates and stalls badly on a loaded machine: it runs on one thread. The analytic
// backward under test keeps the default thread count.
Vec numerical_gradient(Vec& x, const std::function<double()>& objective) {
  const SingleThreaded single_threaded;
  constexpr double h = 1e-5;
  Vec grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = objective();
    x[i] = saved - h;
    const double minus = objective();
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

Vec difference(const Vec& a, const Vec& b) {
  Vec d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

#define CHECK_GRADIENT(analytic, numeric)                                 \
  do {                                                                    \
    const double rel_err = max_relative_error(analytic, numeric);         \
    INFO(#analytic " vs finite differences: relative error " << rel_err); \
    CHECK(rel_err < kGradTolerance);                                      \
  } while (0)

#define CHECK_CLOSE(actual, expected)                              \
  do {                                                             \
    const double rel_err = max_relative_error(actual, expected);   \
    INFO(#actual " vs " #expected ": relative error " << rel_err); \
    CHECK(rel_err < kForwardTolerance);                            \
  } while (0)

}  // namespace

TEST_CASE("gradient check machinery rejects a slightly wrong gradient", "[gradcheck]") {
  Random rng(1);
  Vec x = rng.uniform(8), w = rng.uniform(8);
  auto objective = [&] {  // L = Σ w x³
    double sum = 0;
    for (size_t i = 0; i < x.size(); ++i) sum += w[i] * x[i] * x[i] * x[i];
    return sum;
  };
  Vec analytic(x.size());
  for (size_t i = 0; i < x.size(); ++i) analytic[i] = 3 * w[i] * x[i] * x[i];
  const Vec numeric = numerical_gradient(x, objective);
  CHECK(max_relative_error(analytic, numeric) < kGradTolerance);
  analytic[5] *= 1.0001;  // one element off by 1e-4: must be caught
  CHECK(max_relative_error(analytic, numeric) > kGradTolerance);
}

// ------------------------------------------------------------------------------- embedding

TEST_CASE("embedding: forward gathers rows, backward scatter-adds", "[embedding]") {
  const int N = 10, C = 6, V = 4;  // N > V: tokens repeat, so scatter collisions happen
  Random rng(2);
  Vec wte = rng.uniform(size_t(V) * C);
  const std::vector<int32_t> tokens = {3, 0, 3, 1, 1, 2, 3, 0, 3, 3};
  const Vec w = rng.uniform(size_t(N) * C);

  Vec out(size_t(N) * C);
  ops::embedding_forward(out.data(), tokens.data(), wte.data(), N, C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) CHECK(out[n * C + c] == wte[tokens[n] * C + c]);

  auto objective = [&] {
    ops::embedding_forward(out.data(), tokens.data(), wte.data(), N, C);
    return dot(w, out);
  };
  const Vec numeric = numerical_gradient(wte, objective);

  const Vec initial = rng.uniform(wte.size());  // dwte accumulates (+=)
  Vec dwte = initial;
  ops::embedding_backward(dwte.data(), w.data(), tokens.data(), N, C);
  CHECK_GRADIENT(difference(dwte, initial), numeric);
}

// ------------------------------------------------------------------------------- rmsnorm

TEST_CASE("rmsnorm: forward matches hand-computed values", "[rmsnorm]") {
  // Row 0: mean(x²) = (9 + 16)/2 = 12.5; eps 0.5 makes it 13 -> rstd = 1/sqrt(13).
  // Row 1: mean(x²) = 0, so rstd = 1/sqrt(eps) = sqrt(2) and the output is all zeros.
  const Vec in = {3.0, -4.0, 0.0, 0.0};
  const Vec weight = {2.0, 0.5};
  Vec out(4), rstd(2);
  ops::rmsnorm_forward(out.data(), rstd.data(), in.data(), weight.data(), 2, 2, 0.5);
  const double r0 = 1.0 / std::sqrt(13.0);
  CHECK_THAT(rstd[0], WithinRel(r0, 1e-15));
  CHECK_THAT(rstd[1], WithinRel(std::sqrt(2.0), 1e-15));
  CHECK_THAT(out[0], WithinRel(3.0 * r0 * 2.0, 1e-15));
  CHECK_THAT(out[1], WithinRel(-4.0 * r0 * 0.5, 1e-15));
  CHECK(out[2] == 0.0);
  CHECK(out[3] == 0.0);
}

TEST_CASE("rmsnorm: din and dweight match finite differences and accumulate", "[rmsnorm]") {
  const int N = 10, C = 6;
  const double eps = 1e-5;
  Random rng(3);
  Vec in = rng.uniform(size_t(N) * C), weight = rng.uniform(C, 0.5, 1.5);
  const Vec w = rng.uniform(size_t(N) * C);
  Vec out(size_t(N) * C), rstd(N);
  auto objective = [&] {
    ops::rmsnorm_forward(out.data(), rstd.data(), in.data(), weight.data(), N, C, eps);
    return dot(w, out);
  };
  const Vec numeric_din = numerical_gradient(in, objective);
  const Vec numeric_dweight = numerical_gradient(weight, objective);

  objective();  // leaves rstd of the unperturbed input
  const Vec initial_din = rng.uniform(in.size()), initial_dweight = rng.uniform(C);
  Vec din = initial_din, dweight = initial_dweight;
  ops::rmsnorm_backward(din.data(), dweight.data(), w.data(), in.data(), weight.data(), rstd.data(),
                        N, C);
  CHECK_GRADIENT(difference(din, initial_din), numeric_din);
  CHECK_GRADIENT(difference(dweight, initial_dweight), numeric_dweight);
}

// ------------------------------------------------------------------------------- matmul

TEST_CASE("matmul: forward matches a naive product", "[matmul]") {
  const int N = 5, IC = 3, OC = 4;
  Random rng(4);
  const Vec in = rng.uniform(size_t(N) * IC), weight = rng.uniform(size_t(OC) * IC);
  Vec out(size_t(N) * OC, std::nan(""));  // beta = 0 must overwrite even NaN
  ops::matmul_forward(out.data(), in.data(), weight.data(), N, IC, OC);
  Vec expected(out.size(), 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o)
      for (int i = 0; i < IC; ++i) expected[n * OC + o] += in[n * IC + i] * weight[o * IC + i];
  CHECK_CLOSE(out, expected);
}

TEST_CASE("matmul: din and dweight match finite differences", "[matmul]") {
  const int N = 10, IC = 6, OC = 7;
  Random rng(5);
  Vec in = rng.uniform(size_t(N) * IC), weight = rng.uniform(size_t(OC) * IC);
  const Vec w = rng.uniform(size_t(N) * OC);
  Vec out(size_t(N) * OC);
  auto objective = [&] {
    ops::matmul_forward(out.data(), in.data(), weight.data(), N, IC, OC);
    return dot(w, out);
  };
  const Vec numeric_din = numerical_gradient(in, objective);
  const Vec numeric_dweight = numerical_gradient(weight, objective);

  const Vec initial_dweight = rng.uniform(weight.size());

  SECTION("din overwritten, dweight accumulated") {
    Vec din(in.size(), std::nan("")), dweight = initial_dweight;
    ops::matmul_backward(din.data(), dweight.data(), w.data(), in.data(), weight.data(), N, IC, OC,
                         /*accumulate_din=*/false);
    CHECK_GRADIENT(din, numeric_din);
    CHECK_GRADIENT(difference(dweight, initial_dweight), numeric_dweight);
  }
  SECTION("din accumulated when asked") {
    const Vec initial_din = rng.uniform(in.size());
    Vec din = initial_din, dweight = initial_dweight;
    ops::matmul_backward(din.data(), dweight.data(), w.data(), in.data(), weight.data(), N, IC, OC,
                         /*accumulate_din=*/true);
    CHECK_GRADIENT(difference(din, initial_din), numeric_din);
    CHECK_GRADIENT(difference(dweight, initial_dweight), numeric_dweight);
  }
}

// ------------------------------------------------------------------------------- rope

namespace {
// The header's formula, element by element, with no shared tables.
Vec rope_reference(const Vec& x, int B, int T, int H, int hd, double theta) {
  Vec out(x.size());
  const int half = hd / 2;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < half; ++i) {
          const size_t base = ((size_t(b) * T + t) * H + h) * hd;
          const double a = t * std::pow(theta, -2.0 * i / hd);
          out[base + i] = x[base + i] * std::cos(a) - x[base + i + half] * std::sin(a);
          out[base + i + half] = x[base + i + half] * std::cos(a) + x[base + i] * std::sin(a);
        }
  return out;
}
}  // namespace

TEST_CASE("rope: forward matches the rotate-half formula", "[rope]") {
  const int B = 2, T = 5, H = 3, hd = 6;
  const double theta = 10000.0;
  Random rng(6);
  const Vec x = rng.uniform(size_t(B) * T * H * hd);
  Vec out(x.size());
  ops::rope_forward(out.data(), x.data(), B, T, H, hd, theta);
  CHECK_CLOSE(out, rope_reference(x, B, T, H, hd, theta));

  SECTION("hand values: t = 0 is the identity, t = 1 rotates pair 0 by one radian") {
    Vec unit(size_t(2) * hd, 0.0);  // B=1, T=2, H=1
    unit[0] = 1.0;                  // t = 0, channel 0
    unit[hd + 0] = 1.0;             // t = 1, channel 0
    Vec rotated(unit.size());
    ops::rope_forward(rotated.data(), unit.data(), 1, 2, 1, hd, theta);
    CHECK(rotated[0] == 1.0);
    CHECK(rotated[hd / 2] == 0.0);
    CHECK_THAT(rotated[hd + 0], WithinRel(std::cos(1.0), 1e-15));
    CHECK_THAT(rotated[hd + hd / 2], WithinRel(std::sin(1.0), 1e-15));
  }
  SECTION("out may alias x") {
    Vec in_place = x;
    ops::rope_forward(in_place.data(), in_place.data(), B, T, H, hd, theta);
    CHECK(in_place == out);
  }
}

TEST_CASE("rope: backward matches finite differences and may run in place", "[rope]") {
  const int B = 2, T = 5, H = 3, hd = 6;
  const double theta = 100.0;  // small theta: large angles on every pair
  Random rng(7);
  Vec x = rng.uniform(size_t(B) * T * H * hd);
  const Vec w = rng.uniform(x.size());
  Vec out(x.size());
  auto objective = [&] {
    ops::rope_forward(out.data(), x.data(), B, T, H, hd, theta);
    return dot(w, out);
  };
  const Vec numeric = numerical_gradient(x, objective);

  Vec dx(x.size(), std::nan(""));
  ops::rope_backward(dx.data(), w.data(), B, T, H, hd, theta);
  CHECK_GRADIENT(dx, numeric);

  Vec in_place = w;
  ops::rope_backward(in_place.data(), in_place.data(), B, T, H, hd, theta);
  CHECK(in_place == dx);
}

// ------------------------------------------------------------------------------- attention

namespace {

struct AttentionCase {
  int B, T, NH, NKV, hd;
  size_t q_numel() const { return size_t(B) * T * NH * hd; }
  size_t kv_numel() const { return size_t(B) * T * NKV * hd; }
};

// Explicit (T,T) score matrix per (b,h), causal mask with -inf, softmax, P·V.
void attention_reference(Vec& out, Vec& lse, const Vec& q, const Vec& k, const Vec& v,
                         const AttentionCase& s) {
  const double scale = 1.0 / std::sqrt(double(s.hd));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  out.assign(s.q_numel(), 0.0);
  lse.assign(size_t(s.B) * s.NH * s.T, 0.0);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.NH; ++h) {
      const int kvh = h / (s.NH / s.NKV);
      std::vector<Vec> scores(s.T, Vec(s.T));
      for (int t = 0; t < s.T; ++t)
        for (int j = 0; j < s.T; ++j) {
          double qk = 0;
          for (int d = 0; d < s.hd; ++d)
            qk += q[((size_t(b) * s.T + t) * s.NH + h) * s.hd + d] *
                  k[((size_t(b) * s.T + j) * s.NKV + kvh) * s.hd + d];
          scores[t][j] = j <= t ? qk * scale : neg_inf;
        }
      for (int t = 0; t < s.T; ++t) {
        double sum = 0;
        for (int j = 0; j < s.T; ++j) sum += std::exp(scores[t][j]);  // exp(-inf) = 0
        lse[(size_t(b) * s.NH + h) * s.T + t] = std::log(sum);
        for (int j = 0; j < s.T; ++j) {
          const double p = std::exp(scores[t][j]) / sum;
          for (int d = 0; d < s.hd; ++d)
            out[((size_t(b) * s.T + t) * s.NH + h) * s.hd + d] +=
                p * v[((size_t(b) * s.T + j) * s.NKV + kvh) * s.hd + d];
        }
      }
    }
}

}  // namespace

TEST_CASE("attention: forward matches an explicit masked softmax", "[attention]") {
  const AttentionCase s = GENERATE(values<AttentionCase>({
      {2, 5, 4, 2, 4},  // grouped-query, groups of 2
      {1, 7, 3, 3, 6},  // plain multi-head
      {2, 4, 4, 1, 2},  // multi-query
  }));
  CAPTURE(s.B, s.T, s.NH, s.NKV, s.hd);
  Random rng(8);
  const Vec q = rng.uniform(s.q_numel(), -2, 2), k = rng.uniform(s.kv_numel(), -2, 2),
            v = rng.uniform(s.kv_numel());
  Vec out(s.q_numel()), lse(size_t(s.B) * s.NH * s.T);
  ops::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.NH,
                         s.NKV, s.hd);
  Vec expected_out, expected_lse;
  attention_reference(expected_out, expected_lse, q, k, v, s);
  CHECK_CLOSE(out, expected_out);
  CHECK_CLOSE(lse, expected_lse);
}

TEST_CASE("attention: dq, dk, dv match finite differences", "[attention]") {
  const AttentionCase s = GENERATE(values<AttentionCase>({
      {2, 5, 4, 2, 4},  // grouped-query, groups of 2
      {1, 6, 3, 1, 4},  // multi-query, groups of 3
      {2, 3, 2, 2, 6},  // plain multi-head
  }));
  CAPTURE(s.B, s.T, s.NH, s.NKV, s.hd);
  Random rng(9);
  Vec q = rng.uniform(s.q_numel(), -2, 2), k = rng.uniform(s.kv_numel(), -2, 2),
      v = rng.uniform(s.kv_numel());
  const Vec w = rng.uniform(s.q_numel());
  Vec out(s.q_numel()), lse(size_t(s.B) * s.NH * s.T);
  auto objective = [&] {
    ops::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.NH,
                           s.NKV, s.hd);
    return dot(w, out);
  };
  const Vec numeric_dq = numerical_gradient(q, objective);
  const Vec numeric_dk = numerical_gradient(k, objective);
  const Vec numeric_dv = numerical_gradient(v, objective);

  objective();                      // out and lse of the unperturbed inputs
  const double nan = std::nan("");  // dq, dk, dv are overwritten: NaN must not survive
  Vec dq(s.q_numel(), nan), dk(s.kv_numel(), nan), dv(s.kv_numel(), nan);
  ops::attention_backward(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(),
                          out.data(), lse.data(), s.B, s.T, s.NH, s.NKV, s.hd);
  CHECK_GRADIENT(dq, numeric_dq);
  CHECK_GRADIENT(dk, numeric_dk);
  CHECK_GRADIENT(dv, numeric_dv);
}

// ------------------------------------------------------------------------------- swiglu

TEST_CASE("swiglu: forward and backward", "[swiglu]") {
  const size_t n = 30;
  Random rng(10);
  Vec gate = rng.uniform(n, -6, 6), up = rng.uniform(n, -2, 2);
  const Vec w = rng.uniform(n);
  Vec out(n);
  ops::swiglu_forward(out.data(), gate.data(), up.data(), n);
  Vec expected(n);
  for (size_t i = 0; i < n; ++i) expected[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
  CHECK_CLOSE(out, expected);

  auto objective = [&] {
    ops::swiglu_forward(out.data(), gate.data(), up.data(), n);
    return dot(w, out);
  };
  const Vec numeric_dgate = numerical_gradient(gate, objective);
  const Vec numeric_dup = numerical_gradient(up, objective);
  Vec dgate(n, std::nan("")), dup(n, std::nan(""));
  ops::swiglu_backward(dgate.data(), dup.data(), w.data(), gate.data(), up.data(), n);
  CHECK_GRADIENT(dgate, numeric_dgate);
  CHECK_GRADIENT(dup, numeric_dup);
}

TEST_CASE("swiglu: extreme gates stay finite", "[swiglu]") {
  const Vec gate = {-1000.0, 1000.0}, up = {1.0, 1.0}, dout = {1.0, 1.0};
  Vec out(2), dgate(2), dup(2);
  ops::swiglu_forward(out.data(), gate.data(), up.data(), 2);
  ops::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), 2);
  CHECK(out[0] == 0.0);
  CHECK(out[1] == 1000.0);
  CHECK(dgate[0] == 0.0);
  CHECK(dgate[1] == 1.0);
}

// ------------------------------------------------------------------------------- cross-entropy

TEST_CASE("cross_entropy: losses match -log softmax and survive huge logits", "[xent]") {
  const int N = 4, V = 7;
  Random rng(11);
  Vec logits = rng.uniform(size_t(N) * V, -3, 3);
  const std::vector<int32_t> targets = {6, 0, 3, 3};
  Vec expected(N);
  for (int n = 0; n < N; ++n) {
    double sum = 0;
    for (int i = 0; i < V; ++i) sum += std::exp(logits[n * V + i]);
    expected[n] = -std::log(std::exp(logits[n * V + targets[n]]) / sum);
  }
  Vec losses(N);
  Vec work = logits;
  ops::cross_entropy(losses.data(), work.data(), targets.data(), N, V, 1.0, false);
  CHECK_CLOSE(losses, expected);
  CHECK(work == logits);  // no gradient requested: logits untouched

  // Softmax is shift-invariant; a naive exp(1000) would overflow to inf.
  for (double& x : work) x += 1000.0;
  ops::cross_entropy(losses.data(), work.data(), targets.data(), N, V, 1.0, true);
  for (int n = 0; n < N; ++n) CHECK_THAT(losses[n], WithinRel(expected[n], 1e-10));
  for (double g : work) CHECK(std::isfinite(g));
}

TEST_CASE("cross_entropy: dlogits match finite differences of grad_scale * sum(losses)", "[xent]") {
  const int N = 5, V = 7;
  const double grad_scale = 0.37;
  Random rng(12);
  Vec logits = rng.uniform(size_t(N) * V, -3, 3);
  const std::vector<int32_t> targets = rng.ids(N, V);
  Vec losses(N);
  auto objective = [&] {
    Vec scratch = logits;
    ops::cross_entropy(losses.data(), scratch.data(), targets.data(), N, V, 1.0, false);
    double sum = 0;
    for (double l : losses) sum += l;
    return grad_scale * sum;
  };
  const Vec numeric = numerical_gradient(logits, objective);
  objective();
  const Vec forward_losses = losses;

  Vec dlogits = logits;
  ops::cross_entropy(losses.data(), dlogits.data(), targets.data(), N, V, grad_scale, true);
  CHECK_GRADIENT(dlogits, numeric);
  CHECK(losses == forward_losses);  // losses are still written when the gradient is fused
}
