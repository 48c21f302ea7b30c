// The public ops of Backend: one check of every op's arguments for all backends, the timing
// hook, then the backend's do_* implementation (loco/backend/backend.hpp).
#include "loco/backend/backend.hpp"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#include "loco/core/error.hpp"
#include "loco/ops/chunk_topk.hpp"
#include "loco/ops/compress_pack.hpp"
#include "loco/ops/compress_quantize.hpp"
#include "loco/ops/step_stats.hpp"

namespace loco {

namespace {

size_t elements(int a, int b) { return static_cast<size_t>(a) * static_cast<size_t>(b); }
size_t elements(int a, int b, int c, int d) { return elements(a, b) * elements(c, d); }

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The checks of one op's arguments: a failure is a loco::Error "<backend> backend: <op>:
// <what>", so a shape or dtype mix-up in model code names the op and the argument instead of
// corrupting memory.
class OpCheck {
 public:
  OpCheck(const Backend& backend, const char* op) : backend_(backend), op_(op) {}

  void require(bool condition, const std::string& what) const {
    if (!condition) throw Error(backend_.name() + " backend: " + op_ + ": " + what);
  }
  void dims(std::initializer_list<int> dims) const {
    for (int d : dims) require(d >= 0, "negative dimension " + std::to_string(d));
  }
  // In this backend's memory (checked only when the buffer holds bytes).
  void space(Buf buf, const char* arg) const {
    const MemSpace want = backend_.memory_space();
    require(buf.bytes() == 0 || buf.space == want,
            std::string(arg) + " is in " + mem_space_name(buf.space) + " memory; the " +
                upper(backend_.name()) + " backend works on " + mem_space_name(want) + " buffers");
  }
  void act(Buf buf, size_t needed, const char* arg) const {
    check(buf, backend_.activation_dtype(), needed, arg);
  }
  void f32(Buf buf, size_t needed, const char* arg) const { check(buf, DType::F32, needed, arg); }
  void i32(Buf buf, size_t needed, const char* arg) const { check(buf, DType::I32, needed, arg); }
  // A table of whole rows of `ints` I32 words.
  void rows(Buf buf, size_t ints, const char* arg) const {
    i32(buf, buf.numel, arg);
    require(buf.numel % ints == 0, std::string(arg) + " has " + std::to_string(buf.numel) +
                                       " ints, not a multiple of " + std::to_string(ints));
  }
  void same_numel(Buf a, const char* a_name, Buf b, const char* b_name) const {
    require(a.numel == b.numel, std::string(a_name) + " has " + std::to_string(a.numel) +
                                    " elements but " + b_name + " has " + std::to_string(b.numel));
  }

 private:
  void check(Buf buf, DType dtype, size_t needed, const char* arg) const {
    require(buf.dtype == dtype,
            std::string(arg) + " is " + dtype_name(buf.dtype) + ", expected " + dtype_name(dtype));
    require(buf.numel >= needed, std::string(arg) + " has " + std::to_string(buf.numel) +
                                     " elements, needs " + std::to_string(needed));
    require(needed == 0 || buf.data != nullptr, std::string(arg) + " is not allocated");
    if (needed > 0) space(buf, arg);
  }

  const Backend& backend_;
  const char* op_;
};

void check_attention(const OpCheck& check, int B, int T, int NH, int NKV, int hd) {
  check.dims({B, T, NH, NKV, hd});
  check.require(NKV > 0 && NH % NKV == 0, "NH = " + std::to_string(NH) +
                                              " is not a multiple of NKV = " + std::to_string(NKV));
}

}  // namespace

// ---------------------------------------------------------------------------- timing hook

template <typename Work>
auto Backend::timed(const char* op, Work&& work) -> decltype(work()) {
  if (timer_ == nullptr || depth_ > 0) return work();
  return timed_as(op, std::forward<Work>(work));
}

template <typename Work>
auto Backend::timed_as(const std::string& key, Work&& work) -> decltype(work()) {
  if (timer_ == nullptr || depth_ > 0) return work();
  ++depth_;  // the ops an op calls itself are part of its time
  struct Leave {
    int& depth;
    ~Leave() { --depth; }
  } leave{depth_};
  synchronize();
  const double cpu0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  auto finish = [&] {
    synchronize();
    const auto t1 = std::chrono::steady_clock::now();
    timer_->record(key, std::chrono::duration<double>(t1 - t0).count(),
                   process_cpu_seconds() - cpu0);
  };
  if constexpr (std::is_void_v<decltype(work())>) {
    work();
    finish();
  } else {
    auto result = work();
    finish();
    return result;
  }
}

// ---------------------------------------------------------------------------- memory

void Backend::zero(Buf buf) {
  OpCheck(*this, "zero").space(buf, "buf");
  timed("zero", [&] { do_zero(buf); });
}

void Backend::upload(Buf dst, const void* host_src) {
  OpCheck(*this, "upload").space(dst, "dst");
  timed("upload", [&] { do_upload(dst, host_src); });
}

void Backend::download(void* host_dst, Buf src) {
  OpCheck(*this, "download").space(src, "src");
  timed("download", [&] { do_download(host_dst, src); });
}

void Backend::copy(Buf dst, Buf src) {
  const OpCheck check(*this, "copy");
  check.same_numel(dst, "dst", src, "src");
  if (dst.numel == 0) return;
  check.require(dst.data != nullptr && src.data != nullptr, "buffer is not allocated");
  check.space(dst, "dst");
  check.space(src, "src");
  const bool convertible = dst.dtype == src.dtype ||
                           (dst.dtype == DType::BF16 && src.dtype == DType::F32) ||
                           (dst.dtype == DType::F32 && src.dtype == DType::BF16);
  check.require(convertible, std::string("cannot convert ") + dtype_name(src.dtype) + " to " +
                                 dtype_name(dst.dtype));
  timed("copy", [&] { do_copy(dst, src); });
}

// ---------------------------------------------------------------------------- model ops

void Backend::embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C) {
  const OpCheck check(*this, "embedding_forward");
  check.dims({N, C});
  check.require(C > 0, "C must be positive");
  const int V = static_cast<int>(wte.numel / static_cast<size_t>(C));
  check.act(out, elements(N, C), "out");
  check.i32(tokens, static_cast<size_t>(N), "tokens");
  check.act(wte, elements(V, C), "wte");
  timed("embedding_forward", [&] { do_embedding_forward(out, tokens, wte, N, C); });
}

void Backend::embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C) {
  const OpCheck check(*this, "embedding_backward");
  check.dims({N, C});
  check.require(C > 0, "C must be positive");
  const int V = static_cast<int>(dwte.numel / static_cast<size_t>(C));
  check.f32(dwte, elements(V, C), "dwte");
  check.act(dout, elements(N, C), "dout");
  check.i32(tokens, static_cast<size_t>(N), "tokens");
  timed("embedding_backward", [&] { do_embedding_backward(dwte, dout, tokens, N, C); });
}

void Backend::rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C, float eps) {
  const OpCheck check(*this, "rmsnorm_forward");
  check.dims({N, C});
  check.act(out, elements(N, C), "out");
  check.f32(rstd, static_cast<size_t>(N), "rstd");
  check.act(in, elements(N, C), "in");
  check.act(weight, static_cast<size_t>(C), "weight");
  timed("rmsnorm_forward", [&] { do_rmsnorm_forward(out, rstd, in, weight, N, C, eps); });
}

void Backend::rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd, int N,
                               int C) {
  const OpCheck check(*this, "rmsnorm_backward");
  check.dims({N, C});
  check.act(din, elements(N, C), "din");
  check.f32(dweight, static_cast<size_t>(C), "dweight");
  check.act(dout, elements(N, C), "dout");
  check.act(in, elements(N, C), "in");
  check.act(weight, static_cast<size_t>(C), "weight");
  check.f32(rstd, static_cast<size_t>(N), "rstd");
  timed("rmsnorm_backward",
        [&] { do_rmsnorm_backward(din, dweight, dout, in, weight, rstd, N, C); });
}

void Backend::add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight, int N,
                                  int C, float eps) {
  const OpCheck check(*this, "add_rmsnorm_forward");
  check.dims({N, C});
  check.act(sum, elements(N, C), "sum");
  check.act(out, elements(N, C), "out");
  check.f32(rstd, static_cast<size_t>(N), "rstd");
  check.act(a, elements(N, C), "a");
  check.act(b, elements(N, C), "b");
  check.act(weight, static_cast<size_t>(C), "weight");
  timed("add_rmsnorm_forward",
        [&] { do_add_rmsnorm_forward(sum, out, rstd, a, b, weight, N, C, eps); });
}

void Backend::matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC) {
  const OpCheck check(*this, "matmul_forward");
  check.dims({N, IC, OC});
  check.act(out, elements(N, OC), "out");
  check.act(in, elements(N, IC), "in");
  check.act(weight, elements(OC, IC), "weight");
  auto work = [&] { do_matmul_forward(out, in, weight, N, IC, OC); };
  if (timer_ == nullptr) return work();  // the key is built only when someone listens
  timed_as("matmul_forward " + std::to_string(IC) + "->" + std::to_string(OC), work);
}

void Backend::matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N, int IC,
                              int OC, bool accumulate_din) {
  const OpCheck check(*this, "matmul_backward");
  check.dims({N, IC, OC});
  check.act(din, elements(N, IC), "din");
  check.f32(dweight, elements(OC, IC), "dweight");
  check.act(dout, elements(N, OC), "dout");
  check.act(in, elements(N, IC), "in");
  check.act(weight, elements(OC, IC), "weight");
  auto work = [&] {
    do_matmul_backward(din, dweight, dout, in, weight, N, IC, OC, accumulate_din);
  };
  if (timer_ == nullptr) return work();
  timed_as("matmul_backward " + std::to_string(IC) + "->" + std::to_string(OC), work);
}

void Backend::rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta) {
  const OpCheck check(*this, "rope_forward");
  check.dims({B, T, H, hd});
  check.require(hd % 2 == 0, "head dim " + std::to_string(hd) + " is odd");
  const size_t n = elements(B, T, H, hd);
  check.act(out, n, "out");
  check.act(x, n, "x");
  timed("rope_forward", [&] { do_rope_forward(out, x, B, T, H, hd, theta); });
}

void Backend::rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta) {
  const OpCheck check(*this, "rope_backward");
  check.dims({B, T, H, hd});
  check.require(hd % 2 == 0, "head dim " + std::to_string(hd) + " is odd");
  const size_t n = elements(B, T, H, hd);
  check.act(dx, n, "dx");
  check.act(dout, n, "dout");
  timed("rope_backward", [&] { do_rope_backward(dx, dout, B, T, H, hd, theta); });
}

void Backend::attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH,
                                int NKV, int hd) {
  const OpCheck check(*this, "attention_forward");
  check_attention(check, B, T, NH, NKV, hd);
  const size_t q_numel = elements(B, T, NH, hd), kv_numel = elements(B, T, NKV, hd);
  check.act(out, q_numel, "out");
  check.f32(lse, elements(B, NH, T, 1), "lse");
  check.act(q, q_numel, "q");
  check.act(k, kv_numel, "k");
  check.act(v, kv_numel, "v");
  timed("attention_forward", [&] { do_attention_forward(out, lse, q, k, v, B, T, NH, NKV, hd); });
}

void Backend::attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v, Buf out,
                                 Buf lse, int B, int T, int NH, int NKV, int hd) {
  const OpCheck check(*this, "attention_backward");
  check_attention(check, B, T, NH, NKV, hd);
  const size_t q_numel = elements(B, T, NH, hd), kv_numel = elements(B, T, NKV, hd);
  check.act(dq, q_numel, "dq");
  check.act(dk, kv_numel, "dk");
  check.act(dv, kv_numel, "dv");
  check.act(dout, q_numel, "dout");
  check.act(q, q_numel, "q");
  check.act(k, kv_numel, "k");
  check.act(v, kv_numel, "v");
  check.act(out, q_numel, "out");
  check.f32(lse, elements(B, NH, T, 1), "lse");
  timed("attention_backward",
        [&] { do_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, NH, NKV, hd); });
}

void Backend::swiglu_forward(Buf out, Buf gate, Buf up, size_t n) {
  const OpCheck check(*this, "swiglu_forward");
  check.act(out, n, "out");
  check.act(gate, n, "gate");
  check.act(up, n, "up");
  timed("swiglu_forward", [&] { do_swiglu_forward(out, gate, up, n); });
}

void Backend::swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n) {
  const OpCheck check(*this, "swiglu_backward");
  check.act(dgate, n, "dgate");
  check.act(dup, n, "dup");
  check.act(dout, n, "dout");
  check.act(gate, n, "gate");
  check.act(up, n, "up");
  timed("swiglu_backward", [&] { do_swiglu_backward(dgate, dup, dout, gate, up, n); });
}

void Backend::add(Buf out, Buf a, Buf b, size_t n) {
  const OpCheck check(*this, "add");
  check.act(out, n, "out");
  check.act(a, n, "a");
  check.act(b, n, "b");
  timed("add", [&] { do_add(out, a, b, n); });
}

void Backend::cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V, float grad_scale,
                            bool compute_grad) {
  const OpCheck check(*this, "cross_entropy");
  check.dims({N, V});
  check.require(V > 0, "V must be positive");
  check.f32(losses, static_cast<size_t>(N), "losses");
  check.act(logits, elements(N, V), "logits");
  check.i32(targets, static_cast<size_t>(N), "targets");
  timed("cross_entropy",
        [&] { do_cross_entropy(losses, logits, targets, N, V, grad_scale, compute_grad); });
}

// ---------------------------------------------------------------------------- F32 vector ops

double Backend::sum_squares(Buf x) {
  OpCheck(*this, "sum_squares").f32(x, x.numel, "x");
  return timed("sum_squares", [&] { return do_sum_squares(x); });
}

void Backend::scale(Buf x, float s) {
  OpCheck(*this, "scale").f32(x, x.numel, "x");
  timed("scale", [&] { do_scale(x, s); });
}

void Backend::axpby(Buf y, float a, Buf x, float b) {
  const OpCheck check(*this, "axpby");
  check.require(x.numel == y.numel, "x has " + std::to_string(x.numel) + " elements but y has " +
                                        std::to_string(y.numel));
  check.f32(y, y.numel, "y");
  check.f32(x, x.numel, "x");
  timed("axpby", [&] { do_axpby(y, a, x, b); });
}

bool Backend::all_finite(Buf x) {
  OpCheck(*this, "all_finite").f32(x, x.numel, "x");
  return timed("all_finite", [&] { return do_all_finite(x); });
}

uint64_t Backend::fingerprint(Buf x) {
  OpCheck(*this, "fingerprint").space(x, "x");
  return timed("fingerprint", [&] { return do_fingerprint(x); });
}

void Backend::adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1, float beta2,
                           float eps, float weight_decay, float bc1, float bc2, float grad_scale) {
  const OpCheck check(*this, "adamw_update");
  const size_t n = param.numel;
  check.require(grad.numel == n && m.numel == n && v.numel == n,
                "param, grad, m and v must have the same number of elements");
  check.f32(param, n, "param");
  check.f32(grad, n, "grad");
  check.f32(m, n, "m");
  check.f32(v, n, "v");
  timed("adamw_update", [&] {
    do_adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
  });
}

void Backend::adamw_multi(Buf param, Buf grad, Buf m, Buf v, const std::vector<AdamTensor>& tensors,
                          Buf hyper, Buf stats) {
  const OpCheck check(*this, "adamw_multi");
  const size_t n = param.numel;
  check.require(grad.numel == n && m.numel == n && v.numel == n,
                "param, grad, m and v must have the same number of elements");
  for (const AdamTensor& t : tensors)
    check.require(t.offset <= n && t.numel <= n - t.offset,
                  "a tensor reaches past the buffers (" + std::to_string(t.offset) + " + " +
                      std::to_string(t.numel) + " > " + std::to_string(n) + ")");
  check.require(tensors.size() <= 65535, "at most 65535 tensors per launch");
  check.f32(param, n, "param");
  check.f32(grad, n, "grad");
  check.f32(m, n, "m");
  check.f32(v, n, "v");
  check.f32(hyper, kAdamHyperFloats, "hyper");
  if (!stats.empty()) check.i32(stats, ops::kStepStatsWords, "stats");
  timed("adamw_multi", [&] { do_adamw_multi(param, grad, m, v, tensors, hyper, stats); });
}

void Backend::accumulate_loss(Buf stats, Buf losses) {
  const OpCheck check(*this, "accumulate_loss");
  check.i32(stats, ops::kStepStatsWords, "stats");
  check.f32(losses, losses.numel, "losses");
  timed("accumulate_loss", [&] { do_accumulate_loss(stats, losses); });
}

void Backend::clip_grad_norm(Buf stats, Buf grads, double max_norm) {
  const OpCheck check(*this, "clip_grad_norm");
  check.i32(stats, ops::kStepStatsWords, "stats");
  check.f32(grads, grads.numel, "grads");
  timed("clip_grad_norm", [&] { do_clip_grad_norm(stats, grads, max_norm); });
}

void Backend::gemm_f32(bool trans_a, bool trans_b, int M, int N, int K, float alpha, Buf A, Buf B,
                       float beta, Buf C) {
  const OpCheck check(*this, "gemm_f32");
  check.dims({M, N, K});
  check.f32(A, elements(M, K), "A");
  check.f32(B, elements(K, N), "B");
  check.f32(C, elements(M, N), "C");
  gemm_batched(trans_a, trans_b, M, N, K, 1, alpha, {A, 0}, {B, 0}, beta, {C, 0}, {C, 0});
}

void Backend::gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch, float alpha,
                           Strided A, Strided B, float beta, Strided C, Strided D) {
  const OpCheck check(*this, "gemm_batched");
  check.dims({M, N, K, batch});
  check.require(C.stride == D.stride, "C and D must have the same stride");
  check.require(A.buf.dtype == B.buf.dtype, "A and B must have one dtype");
  check.require(C.buf.dtype == D.buf.dtype, "C and D must have one dtype");
  if (batch == 0) return;
  const size_t a_each = elements(M, K), b_each = elements(K, N), c_each = elements(M, N);
  auto span = [&](const Strided& x, size_t each) { return (size_t(batch) - 1) * x.stride + each; };
  auto operand = [&](Buf buf, size_t needed, const char* arg) {
    check.require(buf.dtype == DType::F32 || buf.dtype == DType::BF16,
                  std::string(arg) + " is " + dtype_name(buf.dtype) + ", expected F32 or BF16");
    if (buf.dtype == DType::F32)
      check.f32(buf, needed, arg);
    else
      check.require(buf.numel >= needed && (needed == 0 || buf.data != nullptr),
                    std::string(arg) + " has " + std::to_string(buf.numel) + " elements, needs " +
                        std::to_string(needed));
    if (needed > 0) check.space(buf, arg);
  };
  operand(A.buf, span(A, a_each), "A");
  operand(B.buf, span(B, b_each), "B");
  operand(C.buf, span(C, c_each), "C");
  operand(D.buf, span(D, c_each), "D");
  timed("gemm_batched",
        [&] { do_gemm_batched(trans_a, trans_b, M, N, K, batch, alpha, A, B, beta, C, D); });
}

void Backend::muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale, bool nesterov) {
  const OpCheck check(*this, "muon_momentum");
  const size_t n = m.numel;
  check.require(u.numel >= n && g.numel >= n,
                "u and g must hold m's " + std::to_string(n) + " elements");
  check.f32(m, n, "m");
  check.f32(u, n, "u");
  check.f32(g, n, "g");
  timed("muon_momentum", [&] { do_muon_momentum(m, u, g, beta, grad_scale, nesterov); });
}

void Backend::frobenius_normalize(Buf x, size_t each, int batch, float eps) {
  const OpCheck check(*this, "frobenius_normalize");
  check.require(batch >= 0, "negative batch " + std::to_string(batch));
  check.f32(x, each * size_t(batch), "x");
  timed("frobenius_normalize", [&] { do_frobenius_normalize(x, each, batch, eps); });
}

// ---------------------------------------------------------------------------- compression

void Backend::ef_accumulate(Buf e, Buf delta, float beta) {
  const OpCheck check(*this, "ef_accumulate");
  check.same_numel(e, "e", delta, "delta");
  check.f32(e, e.numel, "e");
  check.f32(delta, e.numel, "delta");
  timed("ef_accumulate", [&] { do_ef_accumulate(e, delta, beta); });
}

void Backend::chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk) {
  const OpCheck check(*this, "chunked_topk");
  check.rows(chunks, ops::kChunkRowInts, "chunks");
  check.f32(x, x.numel, "x");
  check.i32(offsets, offsets.numel, "offsets");
  check.i32(flat, flat.numel, "flat");
  timed("chunked_topk", [&] { do_chunked_topk(offsets, flat, x, chunks, max_chunk); });
}

void Backend::gather(Buf values, Buf x, Buf flat) {
  const OpCheck check(*this, "gather");
  const size_t n = values.numel;
  check.i32(flat, n, "flat");
  check.f32(values, n, "values");
  check.f32(x, x.numel, "x");
  timed("gather", [&] { do_gather(values, x, flat); });
}

void Backend::scatter_subtract(Buf x, Buf flat, Buf values) {
  const OpCheck check(*this, "scatter_subtract");
  const size_t n = values.numel;
  check.i32(flat, n, "flat");
  check.f32(x, x.numel, "x");
  check.f32(values, n, "values");
  timed("scatter_subtract", [&] { do_scatter_subtract(x, flat, values); });
}

void Backend::scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values) {
  const OpCheck check(*this, "scatter_accumulate");
  const size_t n = values.numel;
  check.i32(flat, n, "flat");
  if (!count.empty()) check.i32(count, sum.numel, "count");
  check.f32(sum, sum.numel, "sum");
  check.f32(values, n, "values");
  timed("scatter_accumulate", [&] { do_scatter_accumulate(sum, count, flat, values); });
}

void Backend::divide(Buf out, Buf sum, Buf count, float divisor) {
  const OpCheck check(*this, "divide");
  const size_t n = out.numel;
  if (!count.empty()) check.i32(count, n, "count");
  check.require(!count.empty() || divisor != 0.0f, "divisor is 0 and no counts were given");
  check.f32(out, n, "out");
  check.f32(sum, n, "sum");
  timed("divide", [&] { do_divide(out, sum, count, divisor); });
}

void Backend::quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                              int value_bits) {
  const OpCheck check(*this, "quantize_values");
  check.require(
      value_bits == 32 || value_bits == 16 || value_bits == 8 || value_bits == 4 || value_bits == 2,
      "value_bits = " + std::to_string(value_bits) + " (32, 16, 8, 4 or 2)");
  const size_t n = values.numel;
  check.i32(codes, n, "codes");
  check.f32(values, n, "values");
  if (value_bits < 16) {
    check.rows(tensors, ops::kQuantTensorInts, "tensors");
    check.rows(segments, ops::kQuantSegmentInts, "segments");
    if (tables.numel > 0) check.f32(tables, tables.numel, "tables");
  }
  timed("quantize_values",
        [&] { do_quantize_values(codes, values, tables, tensors, segments, value_bits); });
}

void Backend::pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables,
                            Buf tensors, Buf chunks, const ops::PackOptions& opt) {
  const OpCheck check(*this, "pack_sections");
  check.require(
      tensors.numel % ops::kPackTensorInts == 0 && chunks.numel % ops::kPackChunkInts == 0,
      "tensors / chunks are not whole rows");
  check.i32(tensors, tensors.numel, "tensors");
  check.i32(chunks, chunks.numel, "chunks");
  check.i32(layout, tensors.numel / ops::kPackTensorInts + 2, "layout");
  check.i32(payload, payload.numel, "payload");
  check.i32(offsets, offsets.numel, "offsets");
  check.i32(codes, codes.numel, "codes");
  if (tables.numel > 0) check.f32(tables, tables.numel, "tables");
  check.require(opt.first_byte <= payload.bytes(), "first_byte is past the payload");
  timed("pack_sections",
        [&] { do_pack_sections(payload, layout, offsets, codes, tables, tensors, chunks, opt); });
}

}  // namespace loco
