#include "loco/backend/cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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

float* f32(Buf buf) { return static_cast<float*>(buf.data); }
int32_t* i32(Buf buf) { return static_cast<int32_t*>(buf.data); }

// What only the CPU can check: values in host memory that decide where an op reads and
// writes (token ids, flat indices, index tables). Dtypes, sizes and memory spaces were checked
// by the public op (src/backend/backend.cpp).
class ValueCheck {
 public:
  explicit ValueCheck(const char* op) : op_(op) {}

  void require(bool condition, const std::string& what) const {
    if (!condition) throw Error(std::string("cpu backend: ") + op_ + ": " + what);
  }
  // Every id in [0, limit): an out-of-range token would read or write outside a table.
  void ids_in_range(const int32_t* ids, int count, int limit, const char* arg) const {
    for (int i = 0; i < count; ++i)
      require(ids[i] >= 0 && ids[i] < limit, std::string(arg) + "[" + std::to_string(i) +
                                                 "] = " + std::to_string(ids[i]) +
                                                 " is outside [0, " + std::to_string(limit) + ")");
  }

 private:
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

void CpuBackend::do_zero(Buf buf) {
  if (buf.bytes() > 0) std::memset(buf.data, 0, buf.bytes());
}

void CpuBackend::do_upload(Buf dst, const void* host_src) {
  if (dst.bytes() > 0) std::memcpy(dst.data, host_src, dst.bytes());
}

void CpuBackend::do_download(void* host_dst, Buf src) {
  if (src.bytes() > 0) std::memcpy(host_dst, src.data, src.bytes());
}

void CpuBackend::do_copy(Buf dst, Buf src) {  // the public op checked sizes and dtypes
  if (dst.dtype == src.dtype) {
    std::memmove(dst.data, src.data, dst.bytes());
  } else if (dst.dtype == DType::BF16) {
    ops::convert_f32_to_bf16(static_cast<uint16_t*>(dst.data), static_cast<const float*>(src.data),
                             dst.numel);
  } else {
    ops::convert_bf16_to_f32(static_cast<float*>(dst.data), static_cast<const uint16_t*>(src.data),
                             dst.numel);
  }
}

// ---------------------------------------------------------------------------- model ops

void CpuBackend::do_embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C) {
  const int V = static_cast<int>(wte.numel / static_cast<size_t>(C));
  ValueCheck("embedding_forward").ids_in_range(i32(tokens), N, V, "tokens");
  ops::embedding_forward(f32(out), i32(tokens), f32(wte), N, C);
}

void CpuBackend::do_embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C) {
  const int V = static_cast<int>(dwte.numel / static_cast<size_t>(C));
  ValueCheck("embedding_backward").ids_in_range(i32(tokens), N, V, "tokens");
  ops::embedding_backward(f32(dwte), f32(dout), i32(tokens), N, C);
}

void CpuBackend::do_rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C,
                                    float eps) {
  ops::rmsnorm_forward(f32(out), f32(rstd), f32(in), f32(weight), N, C, eps);
}

void CpuBackend::do_add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight, int N,
                                        int C, float eps) {
  ops::add_rmsnorm_forward(f32(sum), f32(out), f32(rstd), f32(a), f32(b), f32(weight), N, C, eps);
}

void CpuBackend::do_rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd,
                                     int N, int C) {
  ops::rmsnorm_backward(f32(din), f32(dweight), f32(dout), f32(in), f32(weight), f32(rstd), N, C);
}

void CpuBackend::do_matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC) {
  ops::matmul_forward(f32(out), f32(in), f32(weight), N, IC, OC);
}

void CpuBackend::do_matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N,
                                    int IC, int OC, bool accumulate_din) {
  ops::matmul_backward(f32(din), f32(dweight), f32(dout), f32(in), f32(weight), N, IC, OC,
                       accumulate_din);
}

void CpuBackend::do_rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta) {
  ops::rope_forward(f32(out), f32(x), B, T, H, hd, theta);
}

void CpuBackend::do_rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta) {
  ops::rope_backward(f32(dx), f32(dout), B, T, H, hd, theta);
}

void CpuBackend::do_attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH,
                                      int NKV, int hd) {
  ops::attention_forward(f32(out), f32(lse), f32(q), f32(k), f32(v), B, T, NH, NKV, hd);
}

void CpuBackend::do_attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v,
                                       Buf out, Buf lse, int B, int T, int NH, int NKV, int hd) {
  ops::attention_backward(f32(dq), f32(dk), f32(dv), f32(dout), f32(q), f32(k), f32(v), f32(out),
                          f32(lse), B, T, NH, NKV, hd);
}

void CpuBackend::do_swiglu_forward(Buf out, Buf gate, Buf up, size_t n) {
  ops::swiglu_forward(f32(out), f32(gate), f32(up), n);
}

void CpuBackend::do_swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n) {
  ops::swiglu_backward(f32(dgate), f32(dup), f32(dout), f32(gate), f32(up), n);
}

void CpuBackend::do_add(Buf out, Buf a, Buf b, size_t n) { ops::add(f32(out), f32(a), f32(b), n); }

void CpuBackend::do_cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V,
                                  float grad_scale, bool compute_grad) {
  ValueCheck("cross_entropy").ids_in_range(i32(targets), N, V, "targets");
  ops::cross_entropy(f32(losses), f32(logits), i32(targets), N, V, grad_scale, compute_grad);
}

// ---------------------------------------------------------------------------- F32 vector ops

double CpuBackend::do_sum_squares(Buf x) { return ops::sum_squares(f32(x), x.numel); }

void CpuBackend::do_scale(Buf x, float s) { ops::scale(f32(x), s, x.numel); }

void CpuBackend::do_axpby(Buf y, float a, Buf x, float b) {
  ops::axpby(f32(y), a, f32(x), b, y.numel);
}

bool CpuBackend::do_all_finite(Buf x) { return ops::all_finite(f32(x), x.numel); }

uint64_t CpuBackend::do_fingerprint(Buf x) {
  static const char nothing = 0;
  return hash_bytes(x.bytes() == 0 ? &nothing : x.data, x.bytes());
}

void CpuBackend::do_adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1,
                                 float beta2, float eps, float weight_decay, float bc1, float bc2,
                                 float grad_scale) {
  const ops::AdamWHyperparams hp{lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale};
  ops::adamw_update(f32(param), f32(grad), f32(m), f32(v), param.numel, hp);
}

void CpuBackend::do_adamw_multi(Buf param, Buf grad, Buf m, Buf v,
                                const std::vector<AdamTensor>& tensors, Buf hyper, Buf stats) {
  const float* h = f32(hyper);
  float scale = h[6];
  if (!stats.empty()) {
    const ops::StepStats st = ops::read_step_stats(i32(stats));
    if (st.non_finite) return;  // the step is skipped
    scale = st.clip_scale;
  }
  float *p = f32(param), *g = f32(grad), *pm = f32(m), *pv = f32(v);
  for (const AdamTensor& t : tensors) {
    const ops::AdamWHyperparams hp{h[0], h[1], h[2], h[3], t.weight_decay, h[4], h[5], scale};
    ops::adamw_update(p + t.offset, g + t.offset, pm + t.offset, pv + t.offset, t.numel, hp);
  }
}

void CpuBackend::do_accumulate_loss(Buf stats, Buf losses) {
  ops::accumulate_loss(i32(stats), f32(losses), losses.numel);
}

void CpuBackend::do_clip_grad_norm(Buf stats, Buf grads, double max_norm) {
  int32_t* st = i32(stats);
  const double ss = ops::sum_squares(f32(grads), grads.numel);
  std::memcpy(st + 2, &ss, sizeof ss);
  ops::finish_grad_norm(st, max_norm);
}

void CpuBackend::do_gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch,
                                 float alpha, Strided A, Strided B, float beta, Strided C,
                                 Strided D) {
  for (const Strided* x : {&A, &B, &C, &D})
    ValueCheck("gemm_batched")
        .require(x->buf.dtype == DType::F32, "the CPU backend multiplies F32 matrices only");
  const size_t c_each = size_t(M) * size_t(N);
  const float *pa = f32(A.buf), *pb = f32(B.buf), *pc = f32(C.buf);
  float* pd = f32(D.buf);
  for (int b = 0; b < batch; ++b) {
    float* d = pd + size_t(b) * D.stride;
    const float* c = pc + size_t(b) * C.stride;
    if (d != c && beta != 0.0f) std::memcpy(d, c, c_each * sizeof(float));
    ops::gemm(trans_a, trans_b, M, N, K, alpha, pa + size_t(b) * A.stride,
              pb + size_t(b) * B.stride, beta, d);
  }
}

// The same three passes Muon made before this op existed (bit for bit the CPU reference).
void CpuBackend::do_muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale,
                                  bool nesterov) {
  const size_t n = m.numel;
  float *pm = f32(m), *pu = f32(u);
  const float* pg = f32(g);
  ops::axpby(pm, grad_scale, pg, beta, n);  // m = s·g + β·m
  std::memcpy(pu, pm, n * sizeof(float));
  if (nesterov) ops::axpby(pu, grad_scale, pg, beta, n);  // u = s·g + β·m
}

void CpuBackend::do_frobenius_normalize(Buf x, size_t each, int batch, float eps) {
  float* px = f32(x);
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
void indices_below(const ValueCheck& check, const uint32_t* flat, size_t n, size_t limit) {
  for (size_t i = 0; i < n; ++i)
    if (flat[i] >= limit)  // the message only when needed: this loop runs over every index
      check.require(false, "flat[" + std::to_string(i) + "] = " + std::to_string(flat[i]) +
                               " is outside [0, " + std::to_string(limit) + ")");
}

}  // namespace

void CpuBackend::do_ef_accumulate(Buf e, Buf delta, float beta) {
  ops::ef_accumulate(f32(e), f32(delta), beta, e.numel);
}

void CpuBackend::do_chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk) {
  const ValueCheck check("chunked_topk");
  const int32_t* table = i32(chunks);
  const float* px = f32(x);
  const size_t num_chunks = chunks.numel / ops::kChunkRowInts;
  // Validate every row before touching memory: the table decides where we read and write.
  for (size_t c = 0; c < num_chunks; ++c) {
    const ops::ChunkRow g = ops::unpack_chunk_row(table + c * ops::kChunkRowInts);
    auto where = [c] { return "chunk " + std::to_string(c) + ": "; };  // built on failure only
    if (!(g.h >= 1 && g.w >= 1 && g.w <= g.stride && g.size() <= max_chunk))
      check.require(false,
                    where() + "bad shape " + std::to_string(g.h) + "x" + std::to_string(g.w));
    if (g.flat(g.size() - 1) >= x.numel) check.require(false, where() + "reaches past x");
    const uint64_t kept = std::min<uint64_t>(g.k, g.size());
    if (g.kept_start + kept > offsets.numel || g.kept_start + kept > flat.numel)
      check.require(false, where() + "output range past offsets/flat");
  }
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

void CpuBackend::do_gather(Buf values, Buf x, Buf flat) {
  const size_t n = values.numel;
  const uint32_t* idx = as_indices(i32(flat));
  indices_below(ValueCheck("gather"), idx, n, x.numel);
  ops::gather(f32(values), f32(x), idx, n);
}

void CpuBackend::do_scatter_subtract(Buf x, Buf flat, Buf values) {
  const size_t n = values.numel;
  const uint32_t* idx = as_indices(i32(flat));
  indices_below(ValueCheck("scatter_subtract"), idx, n, x.numel);
  ops::scatter_subtract(f32(x), idx, f32(values), n);
}

void CpuBackend::do_scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values) {
  const size_t n = values.numel;
  const uint32_t* idx = as_indices(i32(flat));
  indices_below(ValueCheck("scatter_accumulate"), idx, n, sum.numel);
  ops::scatter_accumulate(f32(sum), count.empty() ? nullptr : i32(count), idx, f32(values), n);
}

void CpuBackend::do_divide(Buf out, Buf sum, Buf count, float divisor) {
  ops::divide(f32(out), f32(sum), count.empty() ? nullptr : i32(count), divisor, out.numel);
}

void CpuBackend::do_quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                                    int value_bits) {
  const size_t n = values.numel;
  auto* code = reinterpret_cast<uint32_t*>(i32(codes));
  std::vector<ops::QuantTensor> rows;
  float* table = nullptr;
  if (value_bits < 16) {
    const ValueCheck check("quantize_values");
    const int32_t* raw = i32(tensors);
    table = tables.numel > 0 ? f32(tables) : nullptr;
    const size_t L = size_t{1} << value_bits;
    for (size_t t = 0; t < tensors.numel / ops::kQuantTensorInts; ++t) {
      const ops::QuantTensor q = ops::unpack_quant_tensor(raw + t * ops::kQuantTensorInts);
      const size_t entries = q.kept == 0                          ? 0
                             : q.table_kind == ops::kTableMeans   ? L
                             : q.table_kind == ops::kTableUniform ? 2
                                                                  : SIZE_MAX;
      if (uint64_t(q.kept_begin) + q.kept > n || entries == SIZE_MAX ||
          uint64_t(q.table_begin) + entries > tables.numel)
        check.require(false, "tensor " + std::to_string(t) + ": kept range or table slot out of " +
                                 "range, or a bad table kind");
      rows.push_back(q);
    }
    (void)segments;  // the reference derives the segments itself (same rule)
  }
  ops::quantize_values(code, f32(values), table, n, rows.data(), rows.size(), value_bits);
}

void CpuBackend::do_pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables,
                                  Buf tensors, Buf chunks, const ops::PackOptions& opt) {
  const ValueCheck check("pack_sections");
  const size_t nt = tensors.numel / ops::kPackTensorInts, nc = chunks.numel / ops::kPackChunkInts;
  std::vector<ops::PackTensor> trows(nt);
  std::vector<ops::PackChunk> crows(nc);
  const int32_t* traw = i32(tensors);
  const int32_t* craw = i32(chunks);
  for (size_t c = 0; c < nc; ++c) {
    crows[c] = ops::unpack_pack_chunk(craw + c * ops::kPackChunkInts);
    if (uint64_t(crows[c].kept_start) + crows[c].kept > offsets.numel ||
        crows[c].kept > crows[c].size)
      check.require(false, "chunk " + std::to_string(c) + ": kept range out of range");
  }
  for (size_t t = 0; t < nt; ++t) {
    trows[t] = ops::unpack_pack_tensor(traw + t * ops::kPackTensorInts);
    const ops::PackTensor& T = trows[t];
    if (T.chunk_begin > T.chunk_end || T.chunk_end > nc ||
        uint64_t(T.kept_begin) + T.kept > codes.numel ||
        uint64_t(T.table_begin) + T.table_entries > tables.numel)
      check.require(false, "tensor " + std::to_string(t) + ": a range out of bounds");
  }
  const uint64_t bound = ops::pack_bound(trows.data(), nt, crows.data(), opt);
  check.require(payload.bytes() >= bound && opt.first_byte <= bound,
                "payload holds " + std::to_string(payload.bytes()) + " bytes, needs " +
                    std::to_string(bound));
  auto* bytes = static_cast<uint8_t*>(payload.data);
  std::memset(bytes + opt.first_byte, 0, payload.bytes() - opt.first_byte);
  ops::pack_sections(bytes, reinterpret_cast<uint32_t*>(layout.data), as_indices(i32(offsets)),
                     as_indices(i32(codes)), tables.numel > 0 ? f32(tables) : nullptr, trows.data(),
                     nt, crows.data(), opt);
}

}  // namespace loco
