// CudaBackend vs CpuBackend, op by op, on random inputs of several shapes (including shapes
// that are not multiples of any tile size). Both backends get the same values: inputs are
// rounded to bf16 first, so the comparison measures only the kernels' own error. GPU outputs
// are poisoned (NaN) before each op, which proves every element is written.
// Tolerances (‖gpu − cpu‖ / ‖cpu‖): bf16 outputs 1e-2; fp32 outputs of exact-input fp32
// kernels (vector ops, adamw, embedding backward, rmsnorm dweight) 1e-5, sum_squares 1e-6;
// fp32 statistics of bf16 kernels (rstd, lse, losses) 1e-4; matmul dweight (fp32 output of a
// tensor-core GEMM whose accumulation order differs) 1e-4.
// Without a usable CUDA device every test prints "SKIP: <reason>" and passes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/backend/cuda_backend.hpp"
#include "loco/ops/bf16.hpp"
#include "loco/ops/step_stats.hpp"
#include "loco/optim/optimizer.hpp"
#include "support/catch.hpp"

namespace {

using loco::Backend;
using loco::Buf;
using loco::DType;

constexpr double kBf16Tol = 1e-2;
constexpr double kF32Tol = 1e-5;
constexpr double kStatTol = 1e-4;

struct GpuState {
  bool ok = false;
  std::string why;
};

const GpuState& gpu_state() {
  static const GpuState state = [] {
    GpuState s;
    s.ok = loco::cuda_device_usable(&s.why);
    if (!s.ok) std::cout << "SKIP: " << s.why << std::endl;
    return s;
  }();
  return state;
}

#define LOCO_REQUIRE_GPU()               \
  do {                                   \
    if (!gpu_state().ok) {               \
      WARN("SKIP: " << gpu_state().why); \
      return;                            \
    }                                    \
  } while (0)

// One backend of each kind for the whole run (intentionally leaked: no teardown ordering
// issues with the CUDA runtime at exit).
loco::CudaBackend& gpu() {
  static auto* backend = new loco::CudaBackend(0);
  return *backend;
}
loco::CpuBackend& cpu() {
  static auto* backend = new loco::CpuBackend();
  return *backend;
}

std::mt19937& rng() {
  static std::mt19937 generator(20240607u);
  return generator;
}

float round_bf16(float x) {
  return loco::ops::bf16_bits_to_float(loco::ops::float_to_bf16_bits(x));
}

std::vector<float> randn(size_t n, float scale = 1.f, float mean = 0.f) {
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng());
  return v;
}
// Random values already representable in bf16.
std::vector<float> randn_bf16(size_t n, float scale = 1.f, float mean = 0.f) {
  auto v = randn(n, scale, mean);
  for (auto& x : v) x = round_bf16(x);
  return v;
}
std::vector<int32_t> rand_ids(size_t n, int limit) {
  std::uniform_int_distribution<int32_t> dist(0, limit - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(rng());
  return v;
}

// Allocations of one backend inside one test, released at scope exit.
class Scope {
 public:
  explicit Scope(Backend& be) : be_(be) {}
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  ~Scope() {
    for (auto& b : bufs_) {
      try {
        be_.release(b);
      } catch (...) {
      }
    }
  }

  Buf alloc(size_t n, DType t) {
    bufs_.push_back(be_.alloc(n, t));
    return bufs_.back();
  }
  // Float values stored as dtype t (bf16: round to nearest even).
  Buf make(const std::vector<float>& v, DType t) {
    Buf b = alloc(v.size(), t);
    if (v.empty()) return b;
    if (t == DType::BF16) {
      std::vector<uint16_t> bits(v.size());
      for (size_t i = 0; i < v.size(); ++i) bits[i] = loco::ops::float_to_bf16_bits(v[i]);
      be_.upload(b, bits.data());
    } else {
      REQUIRE(t == DType::F32);
      be_.upload(b, v.data());
    }
    return b;
  }
  Buf make_ids(const std::vector<int32_t>& v) {
    Buf b = alloc(v.size(), DType::I32);
    if (!v.empty()) be_.upload(b, v.data());
    return b;
  }
  // Every element NaN (bf16 0xFFFF, f32 quiet NaN).
  Buf poison(size_t n, DType t) {
    Buf b = alloc(n, t);
    if (n == 0) return b;
    if (t == DType::BF16) {
      std::vector<uint16_t> bits(n, 0xFFFF);
      be_.upload(b, bits.data());
    } else {
      std::vector<float> nan(n, std::numeric_limits<float>::quiet_NaN());
      be_.upload(b, nan.data());
    }
    return b;
  }
  std::vector<float> get(Buf b) {
    std::vector<float> out(b.numel);
    if (b.numel == 0) return out;
    if (b.dtype == DType::BF16) {
      std::vector<uint16_t> bits(b.numel);
      be_.download(bits.data(), b);
      for (size_t i = 0; i < b.numel; ++i) out[i] = loco::ops::bf16_bits_to_float(bits[i]);
    } else if (b.dtype == DType::F32) {
      be_.download(out.data(), b);
    } else {
      std::vector<int32_t> ids(b.numel);
      be_.download(ids.data(), b);
      for (size_t i = 0; i < b.numel; ++i) out[i] = static_cast<float>(ids[i]);
    }
    return out;
  }

 private:
  Backend& be_;
  std::vector<Buf> bufs_;
};

size_t count_nonfinite(const std::vector<float>& v) {
  size_t bad = 0;
  for (float x : v) bad += std::isfinite(x) ? 0 : 1;
  return bad;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  // A reference that is zero up to rounding (e.g. dq, dk at T = 1, whose true value is 0)
  // has no meaningful relative error: compare the RMS of the difference instead.
  const double n = static_cast<double>(std::max<size_t>(1, ref.size()));
  if (den < 1e-12 * n) return std::sqrt(num / n);
  return std::sqrt(num / den);
}

void expect_close(const std::string& what, const std::vector<float>& got,
                  const std::vector<float>& ref, double tol) {
  const double err = rel_err(got, ref);
  const size_t bad = count_nonfinite(got);
  INFO(what << ": relative error " << err << " (tolerance " << tol << "), " << bad
            << " non-finite of " << got.size());
  REQUIRE(got.size() == ref.size());
  CHECK(count_nonfinite(ref) == 0);
  CHECK(bad == 0);
  CHECK(err <= tol);
}

}  // namespace

TEST_CASE("gpu: device availability", "[gpu]") {
  if (!gpu_state().ok) {
    WARN("SKIP: " << gpu_state().why);
    SUCCEED("no usable CUDA device: GPU tests skipped");
    return;
  }
  CHECK(gpu().name() == "cuda");
  CHECK(gpu().activation_dtype() == DType::BF16);
}

TEST_CASE("gpu: copy converts f32 <-> bf16 with round-to-nearest-even", "[gpu]") {
  LOCO_REQUIRE_GPU();
  Scope g(gpu());
  std::vector<float> x = randn(10007, 3.f);
  // Special values: zeros, exact ties (even/odd kept LSB), near-overflow, tiny, infinities.
  const float specials[] = {0.f,
                            -0.f,
                            1.f,
                            1.00390625f,             // 1 + 2^-8: tie, rounds to even (1)
                            1.01171875f,             // 1 + 3·2^-8: tie, rounds up
                            3.3895313892515355e38f,  // max bf16
                            3.4028234663852886e38f,  // max float -> inf
                            1e-30f,
                            -2.5e-38f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); ++i) x[i] = specials[i];

  Buf src = g.make(x, DType::F32);
  Buf b16 = g.poison(x.size(), DType::BF16);
  gpu().copy(b16, src);
  std::vector<uint16_t> bits(x.size());
  gpu().download(bits.data(), b16);
  size_t mismatches = 0;
  for (size_t i = 0; i < x.size(); ++i)
    mismatches += bits[i] != loco::ops::float_to_bf16_bits(x[i]);
  CHECK(mismatches == 0);

  Buf back = g.poison(x.size(), DType::F32);
  gpu().copy(back, b16);
  const auto widened = g.get(back);
  size_t wrong = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float expect = loco::ops::bf16_bits_to_float(bits[i]);
    wrong += std::memcmp(&expect, &widened[i], sizeof(float)) != 0;
  }
  CHECK(wrong == 0);

  // Same-dtype copies are plain memcpys.
  Buf f2 = g.poison(x.size(), DType::F32);
  gpu().copy(f2, src);
  CHECK(std::memcmp(g.get(f2).data(), x.data(), x.size() * sizeof(float)) == 0);
  CHECK_THROWS(gpu().copy(g.alloc(3, DType::F32), g.alloc(4, DType::F32)));
}

TEST_CASE("gpu: embedding forward/backward", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (int C : {48, 100}) {
    for (int N : {1, 7, 130}) {
      const int V = 37;
      INFO("N=" << N << " C=" << C);
      Scope g(gpu()), c(cpu());
      const auto wte = randn_bf16(static_cast<size_t>(V) * C);
      const auto ids = rand_ids(N, V);  // repeats likely: exercises the scatter-add
      Buf gw = g.make(wte, DType::BF16), cw = c.make(wte, DType::F32);
      Buf gt = g.make_ids(ids), ct = c.make_ids(ids);
      Buf go = g.poison(static_cast<size_t>(N) * C, DType::BF16);
      Buf co = c.alloc(static_cast<size_t>(N) * C, DType::F32);
      gpu().embedding_forward(go, gt, gw, N, C);
      cpu().embedding_forward(co, ct, cw, N, C);
      expect_close("embedding out", g.get(go), c.get(co), 0.0);

      const auto dout = randn_bf16(static_cast<size_t>(N) * C);
      const auto dwte0 = randn(static_cast<size_t>(V) * C);  // accumulates into this
      Buf gdw = g.make(dwte0, DType::F32), cdw = c.make(dwte0, DType::F32);
      Buf gd = g.make(dout, DType::BF16), cd = c.make(dout, DType::F32);
      gpu().embedding_backward(gdw, gd, gt, N, C);
      cpu().embedding_backward(cdw, cd, ct, N, C);
      expect_close("dwte", g.get(gdw), c.get(cdw), kF32Tol);
    }
  }
}

TEST_CASE("gpu: a token id outside [0,V) is reported at the next synchronisation", "[gpu]") {
  LOCO_REQUIRE_GPU();
  Scope g(gpu());
  const int N = 4, C = 8, V = 5;
  Buf w = g.make(randn_bf16(V * C), DType::BF16);
  Buf t = g.make_ids({0, 1, 5, 2});
  Buf o = g.alloc(N * C, DType::BF16);
  gpu().embedding_forward(o, t, w, N, C);
  CHECK_THROWS_WITH(gpu().synchronize(), LOCO_CONTAINS("token id outside"));
  CHECK_NOTHROW(gpu().synchronize());  // the flag was cleared

  Buf logits = g.make(randn_bf16(N * V), DType::BF16);
  Buf losses = g.alloc(N, DType::F32);
  Buf bad_targets = g.make_ids({0, -1, 2, 3});
  gpu().cross_entropy(losses, logits, bad_targets, N, V, 1.f, false);
  CHECK_THROWS_WITH(gpu().synchronize(), LOCO_CONTAINS("target outside"));
  CHECK_NOTHROW(gpu().synchronize());
}

TEST_CASE("gpu: rmsnorm forward/backward", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (int C : {48, 100, 1000}) {
    for (int N : {1, 7, 130, 300}) {
      INFO("N=" << N << " C=" << C);
      const float eps = 1e-5f;
      const size_t n = static_cast<size_t>(N) * C;
      Scope g(gpu()), c(cpu());
      const auto x = randn_bf16(n, 2.f);
      const auto w = randn_bf16(C, 0.1f, 1.f);
      Buf gx = g.make(x, DType::BF16), cx = c.make(x, DType::F32);
      Buf gw = g.make(w, DType::BF16), cw = c.make(w, DType::F32);
      Buf go = g.poison(n, DType::BF16), co = c.alloc(n, DType::F32);
      Buf gr = g.poison(N, DType::F32), cr = c.alloc(N, DType::F32);
      gpu().rmsnorm_forward(go, gr, gx, gw, N, C, eps);
      cpu().rmsnorm_forward(co, cr, cx, cw, N, C, eps);
      expect_close("rmsnorm out", g.get(go), c.get(co), kBf16Tol);
      const auto rstd = c.get(cr);
      expect_close("rmsnorm rstd", g.get(gr), rstd, kStatTol);

      // Backward: both get the CPU rstd; din and dweight accumulate into random values.
      const auto dout = randn_bf16(n);
      const auto din0 = randn_bf16(n);
      const auto dw0 = randn(C);
      Buf gdo = g.make(dout, DType::BF16), cdo = c.make(dout, DType::F32);
      Buf grs = g.make(rstd, DType::F32);
      Buf gdi = g.make(din0, DType::BF16), cdi = c.make(din0, DType::F32);
      Buf gdw = g.make(dw0, DType::F32), cdw = c.make(dw0, DType::F32);
      gpu().rmsnorm_backward(gdi, gdw, gdo, gx, gw, grs, N, C);
      cpu().rmsnorm_backward(cdi, cdw, cdo, cx, cw, cr, N, C);
      expect_close("rmsnorm din", g.get(gdi), c.get(cdi), kBf16Tol);
      expect_close("rmsnorm dweight", g.get(gdw), c.get(cdw), kF32Tol);
    }
  }
}

TEST_CASE("gpu: matmul forward/backward through cuBLASLt", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (int N : {1, 7, 64, 130}) {
    for (int IC : {48, 100}) {
      for (int OC : {48, 100, 256}) {
        INFO("N=" << N << " IC=" << IC << " OC=" << OC);
        Scope g(gpu()), c(cpu());
        const auto x = randn_bf16(static_cast<size_t>(N) * IC);
        const auto w = randn_bf16(static_cast<size_t>(OC) * IC, 0.2f);
        Buf gx = g.make(x, DType::BF16), cx = c.make(x, DType::F32);
        Buf gw = g.make(w, DType::BF16), cw = c.make(w, DType::F32);
        Buf go = g.poison(static_cast<size_t>(N) * OC, DType::BF16);
        Buf co = c.alloc(static_cast<size_t>(N) * OC, DType::F32);
        gpu().matmul_forward(go, gx, gw, N, IC, OC);
        cpu().matmul_forward(co, cx, cw, N, IC, OC);
        expect_close("matmul out", g.get(go), c.get(co), kBf16Tol);

        const auto dout = randn_bf16(static_cast<size_t>(N) * OC);
        Buf gdo = g.make(dout, DType::BF16), cdo = c.make(dout, DType::F32);
        for (bool accumulate : {false, true}) {
          INFO("accumulate_din=" << accumulate);
          const auto din0 = randn_bf16(static_cast<size_t>(N) * IC);
          const auto dw0 = randn(static_cast<size_t>(OC) * IC);
          Buf gdi = accumulate ? g.make(din0, DType::BF16)
                               : g.poison(static_cast<size_t>(N) * IC, DType::BF16);
          Buf cdi = c.make(din0, DType::F32);
          Buf gdw = g.make(dw0, DType::F32), cdw = c.make(dw0, DType::F32);
          gpu().matmul_backward(gdi, gdw, gdo, gx, gw, N, IC, OC, accumulate);
          cpu().matmul_backward(cdi, cdw, cdo, cx, cw, N, IC, OC, accumulate);
          expect_close("matmul din", g.get(gdi), c.get(cdi), kBf16Tol);
          expect_close("matmul dweight", g.get(gdw), c.get(cdw), kStatTol);
        }
      }
    }
  }
}

TEST_CASE("gpu: gemm_f32 (all transposes, fp32 accuracy)", "[gpu]") {
  LOCO_REQUIRE_GPU();
  struct Shape {
    int M, N, K;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{7, 33, 100}, Shape{64, 48, 130}, Shape{130, 100, 7},
                        Shape{5, 9, 0}}) {
    for (int trans = 0; trans < 4; ++trans) {
      const bool ta = trans & 1, tb = trans & 2;
      for (float beta : {0.f, 0.3f}) {
        INFO("M=" << s.M << " N=" << s.N << " K=" << s.K << " ta=" << ta << " tb=" << tb
                  << " beta=" << beta);
        Scope g(gpu()), c(cpu());
        const auto a = randn(static_cast<size_t>(s.M) * s.K);
        const auto b = randn(static_cast<size_t>(s.K) * s.N);
        const auto c0 = randn(static_cast<size_t>(s.M) * s.N);
        Buf ga = g.make(a, DType::F32), ca = c.make(a, DType::F32);
        Buf gb = g.make(b, DType::F32), cb = c.make(b, DType::F32);
        // beta = 0 must overwrite: poison C on the GPU side.
        Buf gc = beta == 0.f ? g.poison(c0.size(), DType::F32) : g.make(c0, DType::F32);
        Buf cc = c.make(c0, DType::F32);
        gpu().gemm_f32(ta, tb, s.M, s.N, s.K, 0.7f, ga, gb, beta, gc);
        cpu().gemm_f32(ta, tb, s.M, s.N, s.K, 0.7f, ca, cb, beta, cc);
        expect_close("gemm_f32 C", g.get(gc), c.get(cc), kF32Tol);
      }
    }
  }
}

TEST_CASE("gpu: rope forward/backward (also in place)", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (int hd : {16, 32, 64, 128}) {
    for (int T : {1, 7, 130}) {
      for (float theta : {10000.f, 500000.f}) {
        const int B = 2, H = 3;
        INFO("T=" << T << " hd=" << hd << " theta=" << theta);
        const size_t n = static_cast<size_t>(B) * T * H * hd;
        Scope g(gpu()), c(cpu());
        const auto x = randn_bf16(n);
        Buf gx = g.make(x, DType::BF16), cx = c.make(x, DType::F32);
        Buf go = g.poison(n, DType::BF16), co = c.alloc(n, DType::F32);
        gpu().rope_forward(go, gx, B, T, H, hd, theta);
        cpu().rope_forward(co, cx, B, T, H, hd, theta);
        expect_close("rope out", g.get(go), c.get(co), kBf16Tol);
        gpu().rope_forward(gx, gx, B, T, H, hd, theta);  // out aliases x
        expect_close("rope out (in place)", g.get(gx), c.get(co), kBf16Tol);

        const auto dout = randn_bf16(n);
        Buf gd = g.make(dout, DType::BF16), cd = c.make(dout, DType::F32);
        Buf gdx = g.poison(n, DType::BF16), cdx = c.alloc(n, DType::F32);
        gpu().rope_backward(gdx, gd, B, T, H, hd, theta);
        cpu().rope_backward(cdx, cd, B, T, H, hd, theta);
        expect_close("rope dx", g.get(gdx), c.get(cdx), kBf16Tol);
        gpu().rope_backward(gd, gd, B, T, H, hd, theta);  // dx aliases dout
        expect_close("rope dx (in place)", g.get(gd), c.get(cdx), kBf16Tol);
      }
    }
  }
}

TEST_CASE("gpu: attention forward/backward (causal GQA)", "[gpu]") {
  LOCO_REQUIRE_GPU();
  struct Heads {
    int NH, NKV;
  };
  for (int hd : {16, 32, 48, 64, 128}) {
    for (int T : {1, 7, 64, 130}) {
      for (const Heads heads : {Heads{2, 2}, Heads{4, 2}, Heads{8, 2}}) {
        const int B = 2, NH = heads.NH, NKV = heads.NKV;
        // Larger inputs sharpen the softmax (exercises the running-max rescaling).
        for (float input_scale : {1.f, 3.f}) {
          INFO("T=" << T << " hd=" << hd << " NH=" << NH << " NKV=" << NKV
                    << " input scale=" << input_scale);
          const size_t nq = static_cast<size_t>(B) * T * NH * hd;
          const size_t nkv = static_cast<size_t>(B) * T * NKV * hd;
          const size_t nl = static_cast<size_t>(B) * NH * T;
          Scope g(gpu()), c(cpu());
          const auto q = randn_bf16(nq, input_scale);
          const auto k = randn_bf16(nkv, input_scale);
          const auto v = randn_bf16(nkv);
          Buf gq = g.make(q, DType::BF16), cq = c.make(q, DType::F32);
          Buf gk = g.make(k, DType::BF16), ck = c.make(k, DType::F32);
          Buf gv = g.make(v, DType::BF16), cv = c.make(v, DType::F32);
          Buf go = g.poison(nq, DType::BF16), co = c.alloc(nq, DType::F32);
          Buf gl = g.poison(nl, DType::F32), cl = c.alloc(nl, DType::F32);
          gpu().attention_forward(go, gl, gq, gk, gv, B, T, NH, NKV, hd);
          cpu().attention_forward(co, cl, cq, ck, cv, B, T, NH, NKV, hd);
          const auto out = g.get(go);
          const auto lse = g.get(gl);
          expect_close("attention out", out, c.get(co), kBf16Tol);
          expect_close("attention lse", lse, c.get(cl), kStatTol);

          // Backward: both sides get the GPU's out and lse, so only the backward differs.
          const auto dout = randn_bf16(nq);
          Buf gdo = g.make(dout, DType::BF16), cdo = c.make(dout, DType::F32);
          Buf cout2 = c.make(out, DType::F32), clse2 = c.make(lse, DType::F32);
          Buf gdq = g.poison(nq, DType::BF16), cdq = c.alloc(nq, DType::F32);
          Buf gdk = g.poison(nkv, DType::BF16), cdk = c.alloc(nkv, DType::F32);
          Buf gdv = g.poison(nkv, DType::BF16), cdv = c.alloc(nkv, DType::F32);
          gpu().attention_backward(gdq, gdk, gdv, gdo, gq, gk, gv, go, gl, B, T, NH, NKV, hd);
          cpu().attention_backward(cdq, cdk, cdv, cdo, cq, ck, cv, cout2, clse2, B, T, NH, NKV, hd);
          expect_close("attention dq", g.get(gdq), c.get(cdq), kBf16Tol);
          expect_close("attention dk", g.get(gdk), c.get(cdk), kBf16Tol);
          expect_close("attention dv", g.get(gdv), c.get(cdv), kBf16Tol);
        }
      }
    }
  }
}

// Tensor-core path (hd 64/128) at training-like shapes: full and partial 64-row tiles
// (T = 333), many blocks (B*NH*T/64 >= 1024 at T = 1024), GQA; the backward must be
// bit-identical across two runs (no atomics).
TEST_CASE("gpu: attention forward/backward at large shapes (hd 64/128)", "[gpu][attention-large]") {
  LOCO_REQUIRE_GPU();
  struct Shape {
    int B, T, NH, NKV;
  };
  for (int hd : {64, 128}) {
    for (const Shape sh : {Shape{4, 1024, 16, 4}, Shape{4, 333, 12, 12}, Shape{2, 333, 8, 2}}) {
      const int B = sh.B, T = sh.T, NH = sh.NH, NKV = sh.NKV;
      INFO("B=" << B << " T=" << T << " hd=" << hd << " NH=" << NH << " NKV=" << NKV);
      const size_t nq = static_cast<size_t>(B) * T * NH * hd;
      const size_t nkv = static_cast<size_t>(B) * T * NKV * hd;
      const size_t nl = static_cast<size_t>(B) * NH * T;
      Scope g(gpu()), c(cpu());
      const auto q = randn_bf16(nq, 2.f);
      const auto k = randn_bf16(nkv, 2.f);
      const auto v = randn_bf16(nkv);
      Buf gq = g.make(q, DType::BF16), cq = c.make(q, DType::F32);
      Buf gk = g.make(k, DType::BF16), ck = c.make(k, DType::F32);
      Buf gv = g.make(v, DType::BF16), cv = c.make(v, DType::F32);
      Buf go = g.poison(nq, DType::BF16), co = c.alloc(nq, DType::F32);
      Buf gl = g.poison(nl, DType::F32), cl = c.alloc(nl, DType::F32);
      gpu().attention_forward(go, gl, gq, gk, gv, B, T, NH, NKV, hd);
      cpu().attention_forward(co, cl, cq, ck, cv, B, T, NH, NKV, hd);
      const auto out = g.get(go);
      const auto lse = g.get(gl);
      expect_close("attention out", out, c.get(co), kBf16Tol);
      expect_close("attention lse", lse, c.get(cl), kStatTol);

      const auto dout = randn_bf16(nq);
      Buf gdo = g.make(dout, DType::BF16), cdo = c.make(dout, DType::F32);
      Buf cout2 = c.make(out, DType::F32), clse2 = c.make(lse, DType::F32);
      Buf gdq = g.poison(nq, DType::BF16), cdq = c.alloc(nq, DType::F32);
      Buf gdk = g.poison(nkv, DType::BF16), cdk = c.alloc(nkv, DType::F32);
      Buf gdv = g.poison(nkv, DType::BF16), cdv = c.alloc(nkv, DType::F32);
      gpu().attention_backward(gdq, gdk, gdv, gdo, gq, gk, gv, go, gl, B, T, NH, NKV, hd);
      cpu().attention_backward(cdq, cdk, cdv, cdo, cq, ck, cv, cout2, clse2, B, T, NH, NKV, hd);
      const auto dq1 = g.get(gdq), dk1 = g.get(gdk), dv1 = g.get(gdv);
      expect_close("attention dq", dq1, c.get(cdq), kBf16Tol);
      expect_close("attention dk", dk1, c.get(cdk), kBf16Tol);
      expect_close("attention dv", dv1, c.get(cdv), kBf16Tol);
      gpu().attention_backward(gdq, gdk, gdv, gdo, gq, gk, gv, go, gl, B, T, NH, NKV, hd);
      CHECK(g.get(gdq) == dq1);
      CHECK(g.get(gdk) == dk1);
      CHECK(g.get(gdv) == dv1);
    }
  }
}

TEST_CASE("gpu: attention rejects unsupported head dims", "[gpu]") {
  LOCO_REQUIRE_GPU();
  Scope g(gpu());
  const int B = 1, T = 4, NH = 2, NKV = 1, hd = 6;
  Buf q = g.alloc(B * T * NH * hd, DType::BF16), kv = g.alloc(B * T * NKV * hd, DType::BF16);
  Buf o = g.alloc(B * T * NH * hd, DType::BF16), l = g.alloc(B * NH * T, DType::F32);
  CHECK_THROWS_WITH(gpu().attention_forward(o, l, q, kv, kv, B, T, NH, NKV, hd),
                    LOCO_CONTAINS("head dim 6"));
}

TEST_CASE("gpu: swiglu forward/backward", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (size_t n : {size_t{1}, size_t{1000}, size_t{100003}}) {
    INFO("n=" << n);
    Scope g(gpu()), c(cpu());
    auto gate = randn_bf16(n, 3.f);
    if (n > 4) {  // saturated sigmoid on both sides, e^-x overflow
      gate[0] = 30.f;
      gate[1] = -30.f;
      gate[2] = -100.f;
      gate[3] = 0.f;
    }
    const auto up = randn_bf16(n);
    Buf gg = g.make(gate, DType::BF16), cg = c.make(gate, DType::F32);
    Buf gu = g.make(up, DType::BF16), cu = c.make(up, DType::F32);
    Buf go = g.poison(n, DType::BF16), co = c.alloc(n, DType::F32);
    gpu().swiglu_forward(go, gg, gu, n);
    cpu().swiglu_forward(co, cg, cu, n);
    expect_close("swiglu out", g.get(go), c.get(co), kBf16Tol);

    const auto dout = randn_bf16(n);
    Buf gd = g.make(dout, DType::BF16), cd = c.make(dout, DType::F32);
    Buf gdg = g.poison(n, DType::BF16), cdg = c.alloc(n, DType::F32);
    Buf gdu = g.poison(n, DType::BF16), cdu = c.alloc(n, DType::F32);
    gpu().swiglu_backward(gdg, gdu, gd, gg, gu, n);
    cpu().swiglu_backward(cdg, cdu, cd, cg, cu, n);
    expect_close("swiglu dgate", g.get(gdg), c.get(cdg), kBf16Tol);
    expect_close("swiglu dup", g.get(gdu), c.get(cdu), kBf16Tol);
  }
}

TEST_CASE("gpu: add (also in place)", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (size_t n : {size_t{1}, size_t{1001}, size_t{65536 * 3 + 5}}) {
    INFO("n=" << n);
    Scope g(gpu()), c(cpu());
    const auto a = randn_bf16(n), b = randn_bf16(n);
    Buf ga = g.make(a, DType::BF16), ca = c.make(a, DType::F32);
    Buf gb = g.make(b, DType::BF16), cb = c.make(b, DType::F32);
    Buf go = g.poison(n, DType::BF16), co = c.alloc(n, DType::F32);
    gpu().add(go, ga, gb, n);
    cpu().add(co, ca, cb, n);
    const auto ref = c.get(co);
    expect_close("add out", g.get(go), ref, kBf16Tol);
    gpu().add(ga, ga, gb, n);  // out aliases a
    expect_close("add out (in place)", g.get(ga), ref, kBf16Tol);
  }
}

TEST_CASE("gpu: fused cross-entropy forward/backward", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (int V : {48, 100, 1000, 32000}) {
    for (int N : {1, 7, 130}) {
      INFO("N=" << N << " V=" << V);
      const size_t n = static_cast<size_t>(N) * V;
      Scope g(gpu()), c(cpu());
      const auto logits = randn_bf16(n, 2.f);
      const auto targets = rand_ids(N, V);
      Buf gt = g.make_ids(targets), ct = c.make_ids(targets);
      const float grad_scale = 1.f / static_cast<float>(N);

      // Loss only: logits must stay untouched.
      Buf gx = g.make(logits, DType::BF16);
      Buf gl = g.poison(N, DType::F32);
      gpu().cross_entropy(gl, gx, gt, N, V, grad_scale, false);
      const auto untouched = g.get(gx);
      CHECK(std::memcmp(untouched.data(), logits.data(), n * sizeof(float)) == 0);

      Buf cx = c.make(logits, DType::F32);
      Buf cl = c.alloc(N, DType::F32);
      cpu().cross_entropy(cl, cx, ct, N, V, grad_scale, true);
      const auto closs = c.get(cl);
      expect_close("losses (no grad)", g.get(gl), closs, kStatTol);

      Buf gl2 = g.poison(N, DType::F32);
      gpu().cross_entropy(gl2, gx, gt, N, V, grad_scale, true);
      expect_close("losses", g.get(gl2), closs, kStatTol);
      expect_close("dlogits", g.get(gx), c.get(cx), kBf16Tol);
    }
  }
}

TEST_CASE("gpu: f32 vector ops", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, (size_t{1} << 20) + 3}) {
    INFO("n=" << n);
    Scope g(gpu()), c(cpu());
    const auto x = randn(n, 1.5f), y = randn(n);
    Buf gx = g.make(x, DType::F32), cx = c.make(x, DType::F32);
    Buf gy = g.make(y, DType::F32), cy = c.make(y, DType::F32);

    const double ss_gpu = gpu().sum_squares(gx);
    const double ss_cpu = cpu().sum_squares(cx);
    CHECK(std::abs(ss_gpu - ss_cpu) <= 1e-6 * std::abs(ss_cpu));
    const double ss_again = gpu().sum_squares(gx);
    CHECK(std::memcmp(&ss_gpu, &ss_again, sizeof(double)) == 0);  // deterministic

    CHECK(gpu().all_finite(gx));
    CHECK(cpu().all_finite(cx));

    gpu().scale(gx, 0.37f);
    cpu().scale(cx, 0.37f);
    expect_close("scale", g.get(gx), c.get(cx), kF32Tol);

    gpu().axpby(gy, 1.3f, gx, -0.6f);
    cpu().axpby(cy, 1.3f, cx, -0.6f);
    expect_close("axpby", g.get(gy), c.get(cy), kF32Tol);

    if (n > 0) {
      for (float bad :
           {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
            -std::numeric_limits<float>::infinity()}) {
        auto z = x;
        z[n / 2] = bad;
        Buf gz = g.make(z, DType::F32);
        CHECK_FALSE(gpu().all_finite(gz));
      }
    }
  }
}

TEST_CASE("gpu: adamw update", "[gpu]") {
  LOCO_REQUIRE_GPU();
  const size_t n = 100003;
  Scope g(gpu()), c(cpu());
  const auto p0 = randn(n, 0.05f);
  Buf gp = g.make(p0, DType::F32), cp = c.make(p0, DType::F32);
  Buf gm = g.alloc(n, DType::F32), cm = c.alloc(n, DType::F32);
  Buf gv = g.alloc(n, DType::F32), cv = c.alloc(n, DType::F32);
  const float b1 = 0.9f, b2 = 0.95f;
  for (int t = 1; t <= 3; ++t) {
    INFO("step " << t);
    const auto grad = randn(n, 0.01f);
    Buf gg = g.make(grad, DType::F32), cg = c.make(grad, DType::F32);
    const float bc1 = static_cast<float>(1 - std::pow(double(b1), t));
    const float bc2 = static_cast<float>(1 - std::pow(double(b2), t));
    gpu().adamw_update(gp, gg, gm, gv, 1e-3f, b1, b2, 1e-8f, 0.1f, bc1, bc2, 0.5f);
    cpu().adamw_update(cp, cg, cm, cv, 1e-3f, b1, b2, 1e-8f, 0.1f, bc1, bc2, 0.5f);
    expect_close("adamw param", g.get(gp), c.get(cp), kF32Tol);
    expect_close("adamw m", g.get(gm), c.get(cm), kF32Tol);
    expect_close("adamw v", g.get(gv), c.get(cv), kF32Tol);
  }
}

TEST_CASE("gpu: fused residual add + rmsnorm forward, and its backward", "[gpu]") {
  LOCO_REQUIRE_GPU();
  for (int C : {48, 100, 768}) {
    for (int N : {1, 7, 130}) {
      INFO("N=" << N << " C=" << C);
      const float eps = 1e-5f;
      const size_t n = static_cast<size_t>(N) * C;
      Scope g(gpu()), c(cpu());
      const auto a = randn_bf16(n, 2.f), b = randn_bf16(n, 0.5f);
      const auto w = randn_bf16(C, 0.1f, 1.f);
      Buf ga = g.make(a, DType::BF16), ca = c.make(a, DType::F32);
      Buf gb = g.make(b, DType::BF16), cb = c.make(b, DType::F32);
      Buf gw = g.make(w, DType::BF16), cw = c.make(w, DType::F32);
      Buf gs = g.poison(n, DType::BF16), go = g.poison(n, DType::BF16);
      Buf gr = g.poison(N, DType::F32);
      gpu().add_rmsnorm_forward(gs, go, gr, ga, gb, gw, N, C, eps);
      // The sum is stored in bf16 on the GPU: it is the CPU's f32 sum rounded, exactly, and
      // the norm is the CPU's rmsnorm of that stored sum.
      Buf cs = c.alloc(n, DType::F32), co = c.alloc(n, DType::F32), cr = c.alloc(N, DType::F32);
      cpu().add_rmsnorm_forward(cs, co, cr, ca, cb, cw, N, C, eps);
      auto stored = c.get(cs);
      for (auto& x : stored) x = round_bf16(x);
      CHECK(g.get(gs) == stored);
      Buf cst = c.make(stored, DType::F32);
      cpu().rmsnorm_forward(co, cr, cst, cw, N, C, eps);
      expect_close("add_rmsnorm out", g.get(go), c.get(co), kBf16Tol);
      expect_close("add_rmsnorm rstd", g.get(gr), c.get(cr), kStatTol);

      // The same as the GPU's own add, then its rmsnorm_forward.
      Buf gs2 = g.poison(n, DType::BF16), go2 = g.poison(n, DType::BF16);
      Buf gr2 = g.poison(N, DType::F32);
      gpu().add(gs2, ga, gb, n);
      gpu().rmsnorm_forward(go2, gr2, gs2, gw, N, C, eps);
      CHECK(g.get(gs) == g.get(gs2));
      // (1e-3: at most a rare last-bit difference where the compiler contracts differently)
      expect_close("add_rmsnorm out vs add + rmsnorm", g.get(go), g.get(go2), 1e-3);

      // In place over a (the residual stream), then the backward of the fused op: the
      // residual gradient accumulates the norm's input gradient (rmsnorm_backward).
      gpu().add_rmsnorm_forward(ga, go, gr, ga, gb, gw, N, C, eps);
      CHECK(g.get(ga) == stored);
      const auto dout = randn_bf16(n), dres = randn_bf16(n);
      Buf gdo = g.make(dout, DType::BF16), cdo = c.make(dout, DType::F32);
      Buf gdr = g.make(dres, DType::BF16), cdr = c.make(dres, DType::F32);
      Buf gdw = g.alloc(C, DType::F32), cdw = c.alloc(C, DType::F32);
      Buf grs = g.make(c.get(cr), DType::F32);
      gpu().rmsnorm_backward(gdr, gdw, gdo, gs, gw, grs, N, C);
      cpu().rmsnorm_backward(cdr, cdw, cdo, cst, cw, cr, N, C);
      expect_close("add_rmsnorm backward: residual gradient", g.get(gdr), c.get(cdr), kBf16Tol);
      expect_close("add_rmsnorm backward: dweight", g.get(gdw), c.get(cdw), kF32Tol);
    }
  }
}

TEST_CASE("gpu: multi-tensor adamw = adamw_update tensor by tensor; stats clip and skip", "[gpu]") {
  LOCO_REQUIRE_GPU();
  const size_t n = 100003;
  // An unaligned tensor start, a one-element tensor, a gap that must not move.
  const std::vector<Backend::AdamTensor> tensors = {
      {0, 40001, 0.1f}, {40001, 1, 0.0f}, {40002, 50000, 0.05f}, {90004, 9999, 0.1f}};
  Scope g(gpu()), c(cpu());
  const auto p0 = randn(n, 0.05f);
  Buf gp = g.make(p0, DType::F32), cp = c.make(p0, DType::F32), gq = g.make(p0, DType::F32);
  Buf gm = g.alloc(n, DType::F32), cm = c.alloc(n, DType::F32), gm2 = g.alloc(n, DType::F32);
  Buf gv = g.alloc(n, DType::F32), cv = c.alloc(n, DType::F32), gv2 = g.alloc(n, DType::F32);
  const float b1 = 0.9f, b2 = 0.95f, lr = 1e-3f, eps = 1e-8f;
  for (int t = 1; t <= 3; ++t) {
    INFO("step " << t);
    const auto grad = randn(n, 0.01f);
    Buf gg = g.make(grad, DType::F32), cg = c.make(grad, DType::F32);
    const float bc1 = static_cast<float>(1 - std::pow(double(b1), t));
    const float bc2 = static_cast<float>(1 - std::pow(double(b2), t));
    const std::vector<float> h = {lr, b1, b2, eps, bc1, bc2, 0.5f, 0.f};
    Buf gh = g.make(h, DType::F32), ch = c.make(h, DType::F32);
    gpu().adamw_multi(gp, gg, gm, gv, tensors, gh, Buf{});
    cpu().adamw_multi(cp, cg, cm, cv, tensors, ch, Buf{});
    expect_close("adamw_multi param", g.get(gp), c.get(cp), kF32Tol);
    expect_close("adamw_multi m", g.get(gm), c.get(cm), kF32Tol);
    expect_close("adamw_multi v", g.get(gv), c.get(cv), kF32Tol);
    for (const auto& x : tensors)
      gpu().adamw_update(gq.slice(x.offset, x.numel), gg.slice(x.offset, x.numel),
                         gm2.slice(x.offset, x.numel), gv2.slice(x.offset, x.numel), lr, b1, b2,
                         eps, x.weight_decay, bc1, bc2, 0.5f);
    CHECK(g.get(gp) == g.get(gq));  // bit for bit the per-tensor kernel
    CHECK(g.get(gm) == g.get(gm2));
  }
  CHECK(g.get(gp)[90003] == p0[90003]);
  // Step statistics: the clip scale replaces grad_scale; the non-finite flag skips.
  std::vector<int32_t> words(8, 0);
  const float clip = 0.5f;
  std::memcpy(&words[4], &clip, 4);
  Buf gst = g.make_ids(words);
  const auto grad = randn(n, 0.01f);
  Buf gg = g.make(grad, DType::F32);
  const std::vector<float> h = {lr, b1, b2, eps, 0.5f, 0.5f, 9.0f, 0.f};
  Buf gh = g.make(h, DType::F32);
  gpu().adamw_multi(gp, gg, gm, gv, tensors, gh, gst);
  const std::vector<float> h2 = {lr, b1, b2, eps, 0.5f, 0.5f, 0.5f, 0.f};
  Buf gh2 = g.make(h2, DType::F32);
  gpu().adamw_multi(gq, gg, gm2, gv2, tensors, gh2, Buf{});
  CHECK(g.get(gp) == g.get(gq));
  words[5] = 1;
  gpu().upload(gst, words.data());
  const auto before = g.get(gp);
  gpu().adamw_multi(gp, gg, gm, gv, tensors, gh, gst);
  CHECK(g.get(gp) == before);
}

TEST_CASE("gpu: step statistics on the device", "[gpu]") {
  LOCO_REQUIRE_GPU();
  Scope g(gpu()), c(cpu());
  Buf gst = g.make_ids(std::vector<int32_t>(8, 0)), cst = c.make_ids(std::vector<int32_t>(8, 0));
  auto read = [](Backend& be, Buf b) {
    std::vector<int32_t> w(8);
    be.download(w.data(), b);
    return loco::ops::read_step_stats(w.data());
  };
  for (size_t n : {size_t(1), size_t(1000), size_t(16384)}) {
    const auto l = randn(n, 1.f, 5.f);
    Buf gl = g.make(l, DType::F32), cl = c.make(l, DType::F32);
    gpu().accumulate_loss(gst, gl);
    cpu().accumulate_loss(cst, cl);
  }
  CHECK_THAT(read(gpu(), gst).loss_sum,
             Catch::Matchers::WithinRel(read(cpu(), cst).loss_sum, 1e-12));
  for (double max_norm : {0.0, 1.0, 1e9}) {
    const auto grad = randn(300001, 0.01f);
    Buf gg = g.make(grad, DType::F32);
    gpu().clip_grad_norm(gst, gg, max_norm);
    const auto st = read(gpu(), gst);
    // Exactly what the host computes from the device's own sum of squares.
    const loco::GradNorm gn = loco::global_grad_norm(gpu(), gg, max_norm);
    CHECK(st.grad_sum_squares == gpu().sum_squares(gg));
    CHECK(std::sqrt(st.grad_sum_squares) == gn.norm);
    CHECK(st.clip_scale == gn.clip_scale);
    CHECK_FALSE(st.non_finite);
  }
  auto bad = randn(1000);
  bad[500] = std::numeric_limits<float>::infinity();
  Buf gb = g.make(bad, DType::F32);
  gpu().clip_grad_norm(gst, gb, 1.0);
  CHECK(read(gpu(), gst).non_finite);
}
