#include "loco/backend/cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "loco/core/hash.hpp"
#include "loco/ops/adamw.hpp"
#include "loco/ops/add_rmsnorm.hpp"
#include "loco/ops/attention.hpp"
#include "loco/ops/bf16.hpp"
#include "loco/ops/chunk_topk.hpp"
#include "loco/ops/compress_pack.hpp"
#include "loco/ops/compress_quantize.hpp"
#include "loco/ops/cross_entropy.hpp"
#include "loco/ops/embedding.hpp"
#include "loco/ops/gemm.hpp"
#include "loco/ops/matmul.hpp"
#include "loco/ops/rmsnorm.hpp"
#include "loco/ops/rope.hpp"
#include "loco/ops/step_stats.hpp"
#include "loco/ops/swiglu.hpp"
#include "loco/ops/vector_ops.hpp"

namespace loco {

namespace {

constexpr size_t kAlignment = 64;  // one cache line; also enough for AVX-512 loads

size_t elements(int a, int b) { return static_cast<size_t>(a) * static_cast<size_t>(b); }
size_t elements(int a, int b, int c, int d) { return elements(a, b) * elements(c, d); }

// Validates the Bufs handed to one op, so that a shape or dtype mix-up in model code fails
// with a message naming the op and the argument instead of corrupting memory.
class OpArgs {
 public:
  explicit OpArgs(const char* op) : op_(op) {}

  void require(bool condition, const std::string& what) const {
    if (!condition) throw Error(std::string("cpu backend: ") + op_ + ": " + what);
  }
  // Host memory only: a device buffer's pointer must never be dereferenced here.
  void host(Buf buf, const char* arg) const {
    require(buf.bytes() == 0 || buf.space == MemSpace::Host,
            std::string(arg) + " is in device memory; the CPU backend works on host buffers");
  }
  void non_negative(std::initializer_list<int> dims) const {
    for (int d : dims) require(d >= 0, "negative dimension " + std::to_string(d));
  }
  float* f32(Buf buf, size_t needed, const char* arg) const {
    check(buf, DType::F32, needed, arg);
    return static_cast<float*>(buf.data);
  }
  const int32_t* i32(Buf buf, size_t needed, const char* arg) const {
    check(buf, DType::I32, needed, arg);
    return static_cast<const int32_t*>(buf.data);
  }
  // Every id in [0, limit): an out-of-range token would read or write outside a table.
  void ids_in_range(const int32_t* ids, int count, int limit, const char* arg) const {
    for (int i = 0; i < count; ++i)
      require(ids[i] >= 0 && ids[i] < limit, std::string(arg) + "[" + std::to_string(i) +
                                                 "] = " + std::to_string(ids[i]) +
                                                 " is outside [0, " + std::to_string(limit) + ")");
  }

 private:
  void check(Buf buf, DType dtype, size_t needed, const char* arg) const {
    require(buf.dtype == dtype,
            std::string(arg) + " is " + dtype_name(buf.dtype) + ", expected " + dtype_name(dtype));
    require(buf.numel >= needed, std::string(arg) + " has " + std::to_string(buf.numel) +
                                     " elements, needs " + std::to_string(needed));
    require(needed == 0 || buf.data != nullptr, std::string(arg) + " is not allocated");
    require(needed == 0 || buf.space == MemSpace::Host,
            std::string(arg) + " is in device memory; the CPU backend works on host buffers");
  }

  const char* op_;
};

}  // namespace

// ---------------------------------------------------------------------------- memory

Buf CpuBackend::alloc(size_t numel, DType dtype) {
  Buf buf{nullptr, dtype, numel};
  if (numel == 0) return buf;
  // numel * size (+ padding) must not wrap: a wrapped size would allocate a small block and
  // let the caller write far past it.
  size_t bytes = 0;
  if (__builtin_mul_overflow(numel, dtype_size(dtype), &bytes) || bytes > SIZE_MAX - kAlignment)
    throw Error("cpu backend: cannot allocate " + std::to_string(numel) + " " + dtype_name(dtype) +
                " elements: the size in bytes does not fit in 64 bits");
  // aligned_alloc wants a size that is a multiple of the alignment.
  const size_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  buf.data = std::aligned_alloc(kAlignment, padded);
  if (buf.data == nullptr)
    throw Error("cpu backend: out of host memory allocating " + std::to_string(buf.bytes()) +
                " bytes (" + std::to_string(numel) + " " + dtype_name(dtype) + ")");
  std::memset(buf.data, 0, padded);
  return buf;
}

void CpuBackend::release(Buf& buf) {
  std::free(buf.data);
  buf = Buf{};
}

void CpuBackend::zero(Buf buf) {
  OpArgs("zero").host(buf, "buf");
  if (buf.bytes() > 0) std::memset(buf.data, 0, buf.bytes());
}

void CpuBackend::upload(Buf dst, const void* host_src) {
  OpArgs("upload").host(dst, "dst");
  if (dst.bytes() > 0) std::memcpy(dst.data, host_src, dst.bytes());
}

void CpuBackend::download(void* host_dst, Buf src) {
  OpArgs("download").host(src, "src");
  if (src.bytes() > 0) std::memcpy(host_dst, src.data, src.bytes());
}

void CpuBackend::copy(Buf dst, Buf src) {
  const OpArgs args("copy");
  args.require(dst.numel == src.numel, "dst has " + std::to_string(dst.numel) +
                                           " elements but src has " + std::to_string(src.numel));
  if (dst.numel == 0) return;
  args.host(dst, "dst");
  args.host(src, "src");
  if (dst.dtype == src.dtype) {
    std::memmove(dst.data, src.data, dst.bytes());
  } else if (dst.dtype == DType::BF16 && src.dtype == DType::F32) {
    ops::convert_f32_to_bf16(static_cast<uint16_t*>(dst.data), static_cast<const float*>(src.data),
                             dst.numel);
  } else if (dst.dtype == DType::F32 && src.dtype == DType::BF16) {
    ops::convert_bf16_to_f32(static_cast<float*>(dst.data), static_cast<const uint16_t*>(src.data),
                             dst.numel);
  } else {
    args.require(false, std::string("cannot convert ") + dtype_name(src.dtype) + " to " +
                            dtype_name(dst.dtype));
  }
}

// ---------------------------------------------------------------------------- model ops

void CpuBackend::embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C) {
  const OpArgs args("embedding_forward");
  args.non_negative({N, C});
  args.require(C > 0, "C must be positive");
  const int V = static_cast<int>(wte.numel / static_cast<size_t>(C));
  const int32_t* ids = args.i32(tokens, static_cast<size_t>(N), "tokens");
  args.ids_in_range(ids, N, V, "tokens");
  ops::embedding_forward(args.f32(out, elements(N, C), "out"), ids,
                         args.f32(wte, elements(V, C), "wte"), N, C);
}

void CpuBackend::embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C) {
  const OpArgs args("embedding_backward");
  args.non_negative({N, C});
  args.require(C > 0, "C must be positive");
  const int V = static_cast<int>(dwte.numel / static_cast<size_t>(C));
  const int32_t* ids = args.i32(tokens, static_cast<size_t>(N), "tokens");
  args.ids_in_range(ids, N, V, "tokens");
  ops::embedding_backward(args.f32(dwte, elements(V, C), "dwte"),
                          args.f32(dout, elements(N, C), "dout"), ids, N, C);
}

void CpuBackend::rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C, float eps) {
  const OpArgs args("rmsnorm_forward");
  args.non_negative({N, C});
  ops::rmsnorm_forward(args.f32(out, elements(N, C), "out"), args.f32(rstd, N, "rstd"),
                       args.f32(in, elements(N, C), "in"), args.f32(weight, C, "weight"), N, C,
                       eps);
}

void CpuBackend::add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight, int N,
                                     int C, float eps) {
  const OpArgs args("add_rmsnorm_forward");
  args.non_negative({N, C});
  ops::add_rmsnorm_forward(args.f32(sum, elements(N, C), "sum"),
                           args.f32(out, elements(N, C), "out"), args.f32(rstd, N, "rstd"),
                           args.f32(a, elements(N, C), "a"), args.f32(b, elements(N, C), "b"),
                           args.f32(weight, C, "weight"), N, C, eps);
}

void CpuBackend::rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd,
                                  int N, int C) {
  const OpArgs args("rmsnorm_backward");
  args.non_negative({N, C});
  ops::rmsnorm_backward(args.f32(din, elements(N, C), "din"), args.f32(dweight, C, "dweight"),
                        args.f32(dout, elements(N, C), "dout"), args.f32(in, elements(N, C), "in"),
                        args.f32(weight, C, "weight"), args.f32(rstd, N, "rstd"), N, C);
}

void CpuBackend::matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC) {
  const OpArgs args("matmul_forward");
  args.non_negative({N, IC, OC});
  ops::matmul_forward(args.f32(out, elements(N, OC), "out"), args.f32(in, elements(N, IC), "in"),
                      args.f32(weight, elements(OC, IC), "weight"), N, IC, OC);
}

void CpuBackend::matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N, int IC,
                                 int OC, bool accumulate_din) {
  const OpArgs args("matmul_backward");
  args.non_negative({N, IC, OC});
  ops::matmul_backward(args.f32(din, elements(N, IC), "din"),
                       args.f32(dweight, elements(OC, IC), "dweight"),
                       args.f32(dout, elements(N, OC), "dout"), args.f32(in, elements(N, IC), "in"),
                       args.f32(weight, elements(OC, IC), "weight"), N, IC, OC, accumulate_din);
}

void CpuBackend::rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta) {
  const OpArgs args("rope_forward");
  args.non_negative({B, T, H, hd});
  args.require(hd % 2 == 0, "head dim " + std::to_string(hd) + " is odd");
  const size_t n = elements(B, T, H, hd);
  ops::rope_forward(args.f32(out, n, "out"), args.f32(x, n, "x"), B, T, H, hd, theta);
}

void CpuBackend::rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta) {
  const OpArgs args("rope_backward");
  args.non_negative({B, T, H, hd});
  args.require(hd % 2 == 0, "head dim " + std::to_string(hd) + " is odd");
  const size_t n = elements(B, T, H, hd);
  ops::rope_backward(args.f32(dx, n, "dx"), args.f32(dout, n, "dout"), B, T, H, hd, theta);
}

namespace {
void check_attention_heads(const OpArgs& args, int B, int T, int NH, int NKV, int hd) {
  args.non_negative({B, T, NH, NKV, hd});
  args.require(NKV > 0 && NH % NKV == 0,
               "NH = " + std::to_string(NH) + " is not a multiple of NKV = " + std::to_string(NKV));
}
}  // namespace

void CpuBackend::attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH,
                                   int NKV, int hd) {
  const OpArgs args("attention_forward");
  check_attention_heads(args, B, T, NH, NKV, hd);
  const size_t q_numel = elements(B, T, NH, hd);
  const size_t kv_numel = elements(B, T, NKV, hd);
  ops::attention_forward(args.f32(out, q_numel, "out"), args.f32(lse, elements(B, NH, T, 1), "lse"),
                         args.f32(q, q_numel, "q"), args.f32(k, kv_numel, "k"),
                         args.f32(v, kv_numel, "v"), B, T, NH, NKV, hd);
}

void CpuBackend::attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v, Buf out,
                                    Buf lse, int B, int T, int NH, int NKV, int hd) {
  const OpArgs args("attention_backward");
  check_attention_heads(args, B, T, NH, NKV, hd);
  const size_t q_numel = elements(B, T, NH, hd);
  const size_t kv_numel = elements(B, T, NKV, hd);
  ops::attention_backward(args.f32(dq, q_numel, "dq"), args.f32(dk, kv_numel, "dk"),
                          args.f32(dv, kv_numel, "dv"), args.f32(dout, q_numel, "dout"),
                          args.f32(q, q_numel, "q"), args.f32(k, kv_numel, "k"),
                          args.f32(v, kv_numel, "v"), args.f32(out, q_numel, "out"),
                          args.f32(lse, elements(B, NH, T, 1), "lse"), B, T, NH, NKV, hd);
}

void CpuBackend::swiglu_forward(Buf out, Buf gate, Buf up, size_t n) {
  const OpArgs args("swiglu_forward");
  ops::swiglu_forward(args.f32(out, n, "out"), args.f32(gate, n, "gate"), args.f32(up, n, "up"), n);
}

void CpuBackend::swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n) {
  const OpArgs args("swiglu_backward");
  ops::swiglu_backward(args.f32(dgate, n, "dgate"), args.f32(dup, n, "dup"),
                       args.f32(dout, n, "dout"), args.f32(gate, n, "gate"), args.f32(up, n, "up"),
                       n);
}

void CpuBackend::add(Buf out, Buf a, Buf b, size_t n) {
  const OpArgs args("add");
  ops::add(args.f32(out, n, "out"), args.f32(a, n, "a"), args.f32(b, n, "b"), n);
}

void CpuBackend::cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V, float grad_scale,
                               bool compute_grad) {
  const OpArgs args("cross_entropy");
  args.non_negative({N, V});
  args.require(V > 0, "V must be positive");
  const int32_t* ids = args.i32(targets, static_cast<size_t>(N), "targets");
  args.ids_in_range(ids, N, V, "targets");
  ops::cross_entropy(args.f32(losses, N, "losses"), args.f32(logits, elements(N, V), "logits"), ids,
                     N, V, grad_scale, compute_grad);
}

// ---------------------------------------------------------------------------- F32 vector ops

double CpuBackend::sum_squares(Buf x) {
  return ops::sum_squares(OpArgs("sum_squares").f32(x, x.numel, "x"), x.numel);
}

void CpuBackend::scale(Buf x, float s) {
  ops::scale(OpArgs("scale").f32(x, x.numel, "x"), s, x.numel);
}

void CpuBackend::axpby(Buf y, float a, Buf x, float b) {
  const OpArgs args("axpby");
  args.require(x.numel == y.numel, "x has " + std::to_string(x.numel) + " elements but y has " +
                                       std::to_string(y.numel));
  ops::axpby(args.f32(y, y.numel, "y"), a, args.f32(x, x.numel, "x"), b, y.numel);
}

bool CpuBackend::all_finite(Buf x) {
  return ops::all_finite(OpArgs("all_finite").f32(x, x.numel, "x"), x.numel);
}

uint64_t CpuBackend::fingerprint(Buf x) {
  static const char nothing = 0;
  return hash_bytes(x.bytes() == 0 ? &nothing : x.data, x.bytes());
}

void CpuBackend::adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1, float beta2,
                              float eps, float weight_decay, float bc1, float bc2,
                              float grad_scale) {
  const OpArgs args("adamw_update");
  const size_t n = param.numel;
  args.require(grad.numel == n && m.numel == n && v.numel == n,
               "param, grad, m and v must have the same number of elements");
  const ops::AdamWHyperparams hp{lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale};
  ops::adamw_update(args.f32(param, n, "param"), args.f32(grad, n, "grad"), args.f32(m, n, "m"),
                    args.f32(v, n, "v"), n, hp);
}

void CpuBackend::adamw_multi(Buf param, Buf grad, Buf m, Buf v,
                             const std::vector<AdamTensor>& tensors, Buf hyper, Buf stats) {
  const OpArgs args("adamw_multi");
  const size_t n = param.numel;
  args.require(grad.numel == n && m.numel == n && v.numel == n,
               "param, grad, m and v must have the same number of elements");
  for (const AdamTensor& t : tensors)
    args.require(t.offset <= n && t.numel <= n - t.offset,
                 "a tensor reaches past the buffers (" + std::to_string(t.offset) + " + " +
                     std::to_string(t.numel) + " > " + std::to_string(n) + ")");
  const float* h = args.f32(hyper, kAdamHyperFloats, "hyper");
  float scale = h[6];
  if (!stats.empty()) {
    const ops::StepStats st = ops::read_step_stats(args.i32(stats, ops::kStepStatsWords, "stats"));
    if (st.non_finite) return;  // the step is skipped
    scale = st.clip_scale;
  }
  float* p = args.f32(param, n, "param");
  const float* g = args.f32(grad, n, "grad");
  float* pm = args.f32(m, n, "m");
  float* pv = args.f32(v, n, "v");
  for (const AdamTensor& t : tensors) {
    const ops::AdamWHyperparams hp{h[0], h[1], h[2], h[3], t.weight_decay, h[4], h[5], scale};
    ops::adamw_update(p + t.offset, g + t.offset, pm + t.offset, pv + t.offset, t.numel, hp);
  }
}

void CpuBackend::accumulate_loss(Buf stats, Buf losses) {
  const OpArgs args("accumulate_loss");
  auto* st = const_cast<int32_t*>(args.i32(stats, ops::kStepStatsWords, "stats"));
  ops::accumulate_loss(st, args.f32(losses, losses.numel, "losses"), losses.numel);
}

void CpuBackend::clip_grad_norm(Buf stats, Buf grads, double max_norm) {
  const OpArgs args("clip_grad_norm");
  auto* st = const_cast<int32_t*>(args.i32(stats, ops::kStepStatsWords, "stats"));
  const double ss = ops::sum_squares(args.f32(grads, grads.numel, "grads"), grads.numel);
  std::memcpy(st + 2, &ss, sizeof ss);
  ops::finish_grad_norm(st, max_norm);
}

void CpuBackend::gemm_f32(bool trans_a, bool trans_b, int M, int N, int K, float alpha, Buf A,
                          Buf B, float beta, Buf C) {
  const OpArgs args("gemm_f32");
  args.non_negative({M, N, K});
  ops::gemm(trans_a, trans_b, M, N, K, alpha, args.f32(A, elements(M, K), "A"),
            args.f32(B, elements(K, N), "B"), beta, args.f32(C, elements(M, N), "C"));
}

void CpuBackend::gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch,
                              float alpha, Strided A, Strided B, float beta, Strided C, Strided D) {
  const OpArgs args("gemm_batched");
  args.non_negative({M, N, K, batch});
  args.require(C.stride == D.stride, "C and D must have the same stride");
  if (batch == 0) return;
  const size_t a_each = elements(M, K), b_each = elements(K, N), c_each = elements(M, N);
  auto span = [&](const Strided& x, size_t each) { return (size_t(batch) - 1) * x.stride + each; };
  const float* pa = args.f32(A.buf, span(A, a_each), "A");
  const float* pb = args.f32(B.buf, span(B, b_each), "B");
  const float* pc = args.f32(C.buf, span(C, c_each), "C");
  float* pd = args.f32(D.buf, span(D, c_each), "D");
  for (int b = 0; b < batch; ++b) {
    float* d = pd + size_t(b) * D.stride;
    const float* c = pc + size_t(b) * C.stride;
    if (d != c && beta != 0.0f) std::memcpy(d, c, c_each * sizeof(float));
    ops::gemm(trans_a, trans_b, M, N, K, alpha, pa + size_t(b) * A.stride,
              pb + size_t(b) * B.stride, beta, d);
  }
}

// The same three passes Muon made before this op existed (bit for bit the CPU reference).
void CpuBackend::muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale, bool nesterov) {
  const OpArgs args("muon_momentum");
  const size_t n = m.numel;
  args.require(u.numel >= n && g.numel >= n,
               "u and g must hold m's " + std::to_string(n) + " elements");
  float* pm = args.f32(m, n, "m");
  float* pu = args.f32(u, n, "u");
  const float* pg = args.f32(g, n, "g");
  ops::axpby(pm, grad_scale, pg, beta, n);  // m = s·g + β·m
  std::memcpy(pu, pm, n * sizeof(float));
  if (nesterov) ops::axpby(pu, grad_scale, pg, beta, n);  // u = s·g + β·m
}

void CpuBackend::frobenius_normalize(Buf x, size_t each, int batch, float eps) {
  const OpArgs args("frobenius_normalize");
  args.require(batch >= 0, "negative batch " + std::to_string(batch));
  float* px = args.f32(x, each * size_t(batch), "x");
  for (int b = 0; b < batch; ++b) {
    float* m = px + size_t(b) * each;
    const double norm = std::sqrt(ops::sum_squares(m, each));
    ops::scale(m, static_cast<float>(1.0 / (norm + double(eps))), each);
  }
}

// ---------------------------------------------------------------------------- compression

namespace {

const uint32_t* as_indices(const int32_t* p) { return reinterpret_cast<const uint32_t*>(p); }

// Every flat index below `limit`: a bad one would read or write outside the buffer.
void indices_below(const OpArgs& args, const uint32_t* flat, size_t n, size_t limit) {
  for (size_t i = 0; i < n; ++i)
    if (flat[i] >= limit)  // the message only when needed: this loop runs over every index
      args.require(false, "flat[" + std::to_string(i) + "] = " + std::to_string(flat[i]) +
                              " is outside [0, " + std::to_string(limit) + ")");
}

}  // namespace

void CpuBackend::ef_accumulate(Buf e, Buf delta, float beta) {
  const OpArgs args("ef_accumulate");
  args.require(e.numel == delta.numel, "e has " + std::to_string(e.numel) +
                                           " elements but delta has " +
                                           std::to_string(delta.numel));
  ops::ef_accumulate(args.f32(e, e.numel, "e"), args.f32(delta, e.numel, "delta"), beta, e.numel);
}

void CpuBackend::chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk) {
  const OpArgs args("chunked_topk");
  args.require(chunks.numel % ops::kChunkRowInts == 0,
               "chunks has " + std::to_string(chunks.numel) + " ints, not a multiple of " +
                   std::to_string(ops::kChunkRowInts));
  const int32_t* table = args.i32(chunks, chunks.numel, "chunks");
  const float* px = args.f32(x, x.numel, "x");
  const size_t num_chunks = chunks.numel / ops::kChunkRowInts;
  // Validate every row before touching memory: the table decides where we read and write.
  for (size_t c = 0; c < num_chunks; ++c) {
    const ops::ChunkRow g = ops::unpack_chunk_row(table + c * ops::kChunkRowInts);
    auto where = [c] { return "chunk " + std::to_string(c) + ": "; };  // built on failure only
    if (!(g.h >= 1 && g.w >= 1 && g.w <= g.stride && g.size() <= max_chunk))
      args.require(false, where() + "bad shape " + std::to_string(g.h) + "x" + std::to_string(g.w));
    if (g.flat(g.size() - 1) >= x.numel) args.require(false, where() + "reaches past x");
    const uint64_t kept = std::min<uint64_t>(g.k, g.size());
    if (g.kept_start + kept > offsets.numel || g.kept_start + kept > flat.numel)
      args.require(false, where() + "output range past offsets/flat");
  }
  args.require(offsets.dtype == DType::I32 && flat.dtype == DType::I32,
               "offsets and flat must be i32");
  auto* out_offsets = reinterpret_cast<uint32_t*>(offsets.data);
  auto* out_flat = reinterpret_cast<uint32_t*>(flat.data);
#pragma omp parallel
  {
    std::vector<uint32_t> mag(max_chunk), scratch(max_chunk);
#pragma omp for schedule(static)
    for (size_t c = 0; c < num_chunks; ++c) {
      const ops::ChunkRow g = ops::unpack_chunk_row(table + c * ops::kChunkRowInts);
      uint32_t* o = out_offsets + g.kept_start;
      ops::chunk_topk(g, px, o, mag.data(), scratch.data());
      const uint32_t kept = std::min(g.k, g.size());
      for (uint32_t i = 0; i < kept; ++i) out_flat[g.kept_start + i] = uint32_t(g.flat(o[i]));
    }
  }
}

void CpuBackend::gather(Buf values, Buf x, Buf flat) {
  const OpArgs args("gather");
  const size_t n = values.numel;
  const uint32_t* idx = as_indices(args.i32(flat, n, "flat"));
  indices_below(args, idx, n, x.numel);
  ops::gather(args.f32(values, n, "values"), args.f32(x, x.numel, "x"), idx, n);
}

void CpuBackend::scatter_subtract(Buf x, Buf flat, Buf values) {
  const OpArgs args("scatter_subtract");
  const size_t n = values.numel;
  const uint32_t* idx = as_indices(args.i32(flat, n, "flat"));
  indices_below(args, idx, n, x.numel);
  ops::scatter_subtract(args.f32(x, x.numel, "x"), idx, args.f32(values, n, "values"), n);
}

void CpuBackend::scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values) {
  const OpArgs args("scatter_accumulate");
  const size_t n = values.numel;
  const uint32_t* idx = as_indices(args.i32(flat, n, "flat"));
  indices_below(args, idx, n, sum.numel);
  int32_t* counts = nullptr;
  if (!count.empty()) counts = const_cast<int32_t*>(args.i32(count, sum.numel, "count"));
  ops::scatter_accumulate(args.f32(sum, sum.numel, "sum"), counts, idx,
                          args.f32(values, n, "values"), n);
}

void CpuBackend::divide(Buf out, Buf sum, Buf count, float divisor) {
  const OpArgs args("divide");
  const size_t n = out.numel;
  const int32_t* counts = count.empty() ? nullptr : args.i32(count, n, "count");
  args.require(counts != nullptr || divisor != 0.0f, "divisor is 0 and no counts were given");
  ops::divide(args.f32(out, n, "out"), args.f32(sum, n, "sum"), counts, divisor, n);
}

void CpuBackend::quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                                 int value_bits) {
  const OpArgs args("quantize_values");
  args.require(
      value_bits == 32 || value_bits == 16 || value_bits == 8 || value_bits == 4 || value_bits == 2,
      "value_bits = " + std::to_string(value_bits) + " (32, 16, 8, 4 or 2)");
  const size_t n = values.numel;
  auto* code = reinterpret_cast<uint32_t*>(const_cast<int32_t*>(args.i32(codes, n, "codes")));
  float* v = args.f32(values, n, "values");
  std::vector<ops::QuantTensor> rows;
  float* table = nullptr;
  if (value_bits < 16) {
    args.require(tensors.numel % ops::kQuantTensorInts == 0,
                 "tensors has " + std::to_string(tensors.numel) + " ints, not a multiple of " +
                     std::to_string(ops::kQuantTensorInts));
    const int32_t* raw = args.i32(tensors, tensors.numel, "tensors");
    table = tables.numel > 0 ? args.f32(tables, tables.numel, "tables") : nullptr;
    const size_t L = size_t{1} << value_bits;
    for (size_t t = 0; t < tensors.numel / ops::kQuantTensorInts; ++t) {
      const ops::QuantTensor q = ops::unpack_quant_tensor(raw + t * ops::kQuantTensorInts);
      const size_t entries = q.kept == 0                          ? 0
                             : q.table_kind == ops::kTableMeans   ? L
                             : q.table_kind == ops::kTableUniform ? 2
                                                                  : SIZE_MAX;
      if (uint64_t(q.kept_begin) + q.kept > n || entries == SIZE_MAX ||
          uint64_t(q.table_begin) + entries > tables.numel)
        args.require(false, "tensor " + std::to_string(t) + ": kept range or table slot out of " +
                                "range, or a bad table kind");
      rows.push_back(q);
    }
    (void)segments;  // the reference derives the segments itself (same rule)
  }
  ops::quantize_values(code, v, table, n, rows.data(), rows.size(), value_bits);
}

void CpuBackend::pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables,
                               Buf tensors, Buf chunks, const ops::PackOptions& opt) {
  const OpArgs args("pack_sections");
  args.require(tensors.numel % ops::kPackTensorInts == 0 && chunks.numel % ops::kPackChunkInts == 0,
               "tensors / chunks are not whole rows");
  const size_t nt = tensors.numel / ops::kPackTensorInts, nc = chunks.numel / ops::kPackChunkInts;
  std::vector<ops::PackTensor> trows(nt);
  std::vector<ops::PackChunk> crows(nc);
  const int32_t* traw = args.i32(tensors, tensors.numel, "tensors");
  const int32_t* craw = args.i32(chunks, chunks.numel, "chunks");
  for (size_t c = 0; c < nc; ++c) {
    crows[c] = ops::unpack_pack_chunk(craw + c * ops::kPackChunkInts);
    if (uint64_t(crows[c].kept_start) + crows[c].kept > offsets.numel ||
        crows[c].kept > crows[c].size)
      args.require(false, "chunk " + std::to_string(c) + ": kept range out of range");
  }
  for (size_t t = 0; t < nt; ++t) {
    trows[t] = ops::unpack_pack_tensor(traw + t * ops::kPackTensorInts);
    const ops::PackTensor& T = trows[t];
    if (T.chunk_begin > T.chunk_end || T.chunk_end > nc ||
        uint64_t(T.kept_begin) + T.kept > codes.numel ||
        uint64_t(T.table_begin) + T.table_entries > tables.numel)
      args.require(false, "tensor " + std::to_string(t) + ": a range out of bounds");
  }
  args.require(layout.numel >= nt + 2, "layout needs tensors + 2 words");
  const uint64_t bound = ops::pack_bound(trows.data(), nt, crows.data(), opt);
  args.require(payload.dtype == DType::I32 && payload.bytes() >= bound && opt.first_byte <= bound,
               "payload holds " + std::to_string(payload.bytes()) + " bytes, needs " +
                   std::to_string(bound));
  auto* bytes = static_cast<uint8_t*>(payload.data);
  std::memset(bytes + opt.first_byte, 0, payload.bytes() - opt.first_byte);
  ops::pack_sections(bytes, reinterpret_cast<uint32_t*>(layout.data),
                     as_indices(args.i32(offsets, offsets.numel, "offsets")),
                     as_indices(args.i32(codes, codes.numel, "codes")),
                     tables.numel > 0 ? args.f32(tables, tables.numel, "tables") : nullptr,
                     trows.data(), nt, crows.data(), opt);
}

}  // namespace loco
