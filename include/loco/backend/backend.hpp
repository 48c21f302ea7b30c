// The one seam between device-free code (model, optimizers, compression, outer sync) and the
// hardware. CpuBackend (fp32, OpenBLAS + OpenMP) is the reference; CudaBackend (bf16
// activations, fp32 master weights and optimizer state) must match it within tolerance.
//
// Conventions shared by every implementation:
//  - N = B*T rows; C = d_model; shapes are written row-major, e.g. (B,T,C).
//  - Weights are laid out as Hugging Face does: (out_features, in_features).
//  - "act" buffers (activations, compute copy of weights) have activation_dtype();
//    master weights, gradients, optimizer state, rstd/lse statistics and losses are F32;
//    token ids are I32.
//  - Parameter gradients always accumulate (+=): the caller zeroes them once per step, so
//    gradient accumulation over micro-batches is free.
//  - Activation gradients overwrite their output unless the comment says "+=".
//
// Every op is a public non-virtual method (src/backend/backend.cpp) that checks its
// arguments once for all backends (dtypes, sizes, dimensions, memory space; a wrong Buf is a
// loco::Error naming the backend, the op and the argument, never an out-of-bounds access),
// runs the optional timing hook, and calls the protected do_* implementation. An
// implementation checks only what it alone can: the values of host-visible index tables on
// the CPU, its kernels' limits on CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loco/core/buffer.hpp"

namespace loco {

namespace ops {
struct PackOptions;  // loco/ops/compress_pack.hpp
}

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;        // "cpu" or "cuda"
  virtual DType activation_dtype() const = 0;  // F32 on the CPU, BF16 on CUDA

  // ------------------------------------------------------------------ memory
  virtual Buf alloc(size_t numel, DType dtype) = 0;  // zero-initialised
  virtual void release(Buf& buf) = 0;
  void zero(Buf buf);
  void upload(Buf dst, const void* host_src);  // host data of dst.dtype
  void download(void* host_dst, Buf src);      // to host, src.dtype kept
  void copy(Buf dst, Buf src);                 // same numel; converts F32 <-> BF16
  virtual void synchronize() {}
  // Host memory for staging transfers between this backend and a host transport (MPI):
  // page-locked on CUDA (cudaMallocHost: fast, DMA-able copies), plain aligned memory on the
  // CPU. The Buf's space is Host; zero-initialised. Release with release_host.
  virtual Buf alloc_host(size_t numel, DType dtype);
  virtual void release_host(Buf& buf);
  // High-water mark of the memory this backend allocated (buffers, scratch, library
  // workspaces), in bytes; 0 when the backend does not track it (the CPU: see peak RSS).
  virtual size_t peak_memory_bytes() const { return 0; }

  // ------------------------------------------------------------------ model ops (act dtype)
  // out(N,C) = wte[tokens[n]]          wte: (V,C) act,  tokens: (N) I32
  void embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C);
  // dwte(V,C) F32 += scatter of dout(N,C) by token
  void embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C);

  // out(N,C) = in * rstd * weight, rstd(N) F32 = 1/sqrt(mean(in^2) + eps)
  void rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C, float eps);
  // din(N,C) += ..., dweight(C) F32 += ...  (din accumulates: it is the residual stream)
  void rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd, int N, int C);

  // The residual add fused with the RMSNorm after it (loco/ops/add_rmsnorm.hpp): sum(N,C) =
  // a + b (stored in the act dtype), then out, rstd = rmsnorm_forward(sum): exactly add()
  // followed by rmsnorm_forward() on the stored sum. sum may alias a or b. Its backward is
  // rmsnorm_backward, whose din += already is the add's backward.
  void add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight, int N, int C,
                           float eps);

  // out(N,OC) = in(N,IC) · weight(OC,IC)ᵀ
  void matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC);
  // din(N,IC) = dout · weight (or += when accumulate_din), dweight(OC,IC) F32 += doutᵀ · in
  void matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N, int IC, int OC,
                       bool accumulate_din);

  // Rotary embedding, Hugging Face rotate-half convention, positions 0..T-1:
  // for i < hd/2, f = theta^(-2i/hd), a = t*f:
  //   out[i] = x[i]*cos(a) - x[i+hd/2]*sin(a);  out[i+hd/2] = x[i+hd/2]*cos(a) + x[i]*sin(a)
  // x, out: (B,T,H,hd). out may alias x.
  void rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta);
  // The inverse rotation applied to the gradient. dx may alias dout.
  void rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta);

  // Causal grouped-query attention, scale 1/sqrt(hd); query head h reads kv head
  // h / (NH/NKV). q,out: (B,T,NH,hd); k,v: (B,T,NKV,hd); lse(B,NH,T) F32 = log-sum-exp of
  // each row's scaled scores (all backward needs besides q,k,v,out).
  void attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH, int NKV,
                         int hd);
  // dq (B,T,NH,hd), dk, dv (B,T,NKV,hd) overwritten.
  void attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v, Buf out, Buf lse,
                          int B, int T, int NH, int NKV, int hd);

  // out(N,F) = silu(gate) * up
  void swiglu_forward(Buf out, Buf gate, Buf up, size_t n);
  // dgate, dup (N,F) overwritten
  void swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n);

  // out = a + b (elementwise, act dtype); out may alias a or b.
  void add(Buf out, Buf a, Buf b, size_t n);

  // Softmax cross-entropy over logits(N,V). losses(N) F32 = -log softmax[target].
  // When compute_grad, logits is overwritten with dlogits = (softmax - onehot) * grad_scale.
  // targets(N) I32.
  void cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V, float grad_scale,
                     bool compute_grad);

  // ------------------------------------------------------------------ F32 vector ops
  // (optimizers, gradient clipping, outer sync: all on master/state buffers)
  double sum_squares(Buf x);                   // Σ x² in double, returned to the host
  void scale(Buf x, float s);                  // x *= s
  void axpby(Buf y, float a, Buf x, float b);  // y = a*x + b*y
  bool all_finite(Buf x);
  // A 64-bit fingerprint of the buffer's bytes, returned to the host without copying the
  // buffer there: equal contents give equal values on one backend (ranks compare θ with it
  // after every outer sync); values are not comparable across backends. CPU: hash_bytes
  // (loco/core/hash.hpp); CUDA: Σ over 8-byte words of mix(word, index) mod 2^64 (order-free, so
  // the parallel sum is deterministic), kernels/fingerprint.cu.
  uint64_t fingerprint(Buf x);

  // Decoupled-weight-decay Adam on one tensor (F32 param, grad, m, v):
  //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²
  //   p -= lr * ( (m/bc1) / (sqrt(v/bc2) + eps) + wd * p )
  // where g = grad * grad_scale, bc1 = 1 - b1^t, bc2 = 1 - b2^t.
  void adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1, float beta2,
                    float eps, float weight_decay, float bc1, float bc2, float grad_scale);

  // One tensor of a multi-tensor AdamW launch: elements [offset, offset + numel) of the flat
  // buffers, with its own weight decay.
  struct AdamTensor {
    size_t offset = 0, numel = 0;
    float weight_decay = 0.0f;
    bool operator==(const AdamTensor&) const = default;
  };
  // Words of adamw_multi's `hyper` buffer, in this order: lr, beta1, beta2, eps, bc1, bc2,
  // grad_scale, 0.
  static constexpr int kAdamHyperFloats = 8;
  // adamw_update on every tensor of `tensors` in one launch, with the scalars read from
  // backend memory (so a captured step reads each step's values): hyper (F32,
  // kAdamHyperFloats). With `stats` (I32, loco/ops/step_stats.hpp) the gradient is scaled
  // by its clip scale instead of hyper's grad_scale, and nothing changes when it flags a
  // non-finite gradient. Bit for bit the same as adamw_update tensor by tensor.
  void adamw_multi(Buf param, Buf grad, Buf m, Buf v, const std::vector<AdamTensor>& tensors,
                   Buf hyper, Buf stats);
  // Training-step statistics kept in backend memory (loco/ops/step_stats.hpp; stats: I32).
  // stats.loss += Σ losses / losses.numel (losses F32, one micro-batch's token losses).
  void accumulate_loss(Buf stats, Buf losses);
  // Σ g² over grads (the sum_squares reduction) into stats, then the clip scale for
  // max_norm (<= 0: no clipping) and the non-finite flag.
  void clip_grad_norm(Buf stats, Buf grads, double max_norm);

  // Row-major F32 GEMM: C(M,N) = alpha · op(A) · op(B) + beta · C, op = transpose when set.
  // A is (M,K) or (K,M) when trans_a; B is (K,N) or (N,K) when trans_b. gemm_batched with one
  // matrix; Muon's unbatched Newton–Schulz (a test reference) uses it.
  void gemm_f32(bool trans_a, bool trans_b, int M, int N, int K, float alpha, Buf A, Buf B,
                float beta, Buf C);

  // Strided-batched row-major GEMM with fp32 accumulation, for batch matrices of one shape
  // (Muon's batched Newton–Schulz): for b < batch, with X_b = X.buf from element b·X.stride,
  //   D_b(M,N) = alpha · op(A_b) · op(B_b) + beta · C_b
  // A and B: both F32 (no TF32) or both BF16; C and D: one dtype, F32 or BF16, the same
  // stride; D may be C (in place) but must not overlap A or B. The CPU backend takes F32 only.
  struct Strided {
    Buf buf;
    size_t stride = 0;  // elements between consecutive matrices
  };
  void gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch, float alpha,
                    Strided A, Strided B, float beta, Strided C, Strided D);
  // Muon's momentum for one matrix, F32 (one pass instead of axpby, copy, axpby):
  //   m ← β·m + s·g;  u ← s·g + β·m (Nesterov, with the new m) or u ← m.
  void muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale, bool nesterov);
  // x holds `batch` matrices of `each` F32 elements back to back: each one is divided by
  // (its Frobenius norm + eps), the norm summed in double.
  void frobenius_normalize(Buf x, size_t each, int batch, float eps);

  // ------------------------------------------------------------------ compression primitives
  // What loco/compress/device_compressor.hpp runs where the pseudo-gradient lives; the CPU
  // reference and the exact rules are in loco/ops/chunk_topk.hpp. Results are bitwise the
  // same on every backend. Flat indices and offsets are I32 Bufs holding uint32 bits, so
  // these address buffers of up to 2^32 − 1 elements. All F32 except where noted.
  //
  // e = fl(fl(beta·e) + delta): error feedback's t, two roundings, never fused.
  void ef_accumulate(Buf e, Buf delta, float beta);
  // For every chunk of `chunks` (I32, ops::kChunkRowInts per chunk, ops::pack_chunk_row): the
  // chunk's k largest |x| (IEEE-bit order, NaN above ∞, ties to the lower offset), their
  // in-chunk offsets ascending at offsets[kept_start, kept_start + k) and their flat indices
  // at the same places of `flat`. max_chunk = the largest h·w in the table.
  void chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk);
  // values[i] = x[flat[i]] for i < values.numel
  void gather(Buf values, Buf x, Buf flat);
  // x[flat[i]] = x[flat[i]] − values[i]; the indices are distinct.
  void scatter_subtract(Buf x, Buf flat, Buf values);
  // sum[flat[i]] += values[i] and, when count (I32) is not empty, count[flat[i]] += 1; the
  // indices are distinct, so each element's sum is formed in call order.
  void scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values);
  // out = sum / count (0 where count is 0); with an empty count, out = sum / divisor.
  void divide(Buf out, Buf sum, Buf count, float divisor);
  // The quantiser, on the gathered kept values (loco/ops/compress_quantize.hpp has the rules
  // and the CPU reference). value_bits 32 / 16: codes (I32) = the f32 / bf16 bits of values
  // (16: values ← the bf16 value). 8 / 4 / 2: for each tensor of `tensors` (I32,
  // ops::kQuantTensorInts per tensor; its segments in `segments`, ops::kQuantSegmentInts
  // each) the statistics, codes = levels, its table at its slot of `tables` (F32), and
  // values ← D, what every receiver decodes. codes.numel >= values.numel = kept elements.
  void quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                       int value_bits);
  // The tensor sections of a compressed payload (loco/ops/compress_pack.hpp; wire format in
  // loco/compress/wire.hpp) from the kept in-chunk `offsets`, the `codes` and `tables` of
  // quantize_values, and the I32 tables `tensors` / `chunks` (ops::kPackTensorInts /
  // kPackChunkInts per row). payload (I32 words holding the bytes) is written from byte
  // opt.first_byte on and must hold ops::pack_bound bytes; layout (I32, tensors + 2) = each
  // tensor's index stream bytes, then the payload's total bytes (u64, low word first).
  void pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables, Buf tensors,
                     Buf chunks, const ops::PackOptions& opt);

  // ------------------------------------------------------------------ graphs
  // Work recorded once and replayed (CUDA graphs). capture() records what `work` enqueues
  // instead of running it and returns the recording, or nullptr when this backend has no
  // graphs (the CPU): the caller then simply runs the work each time. The recorded work must
  // not synchronise with the host, allocate or free (the CUDA backend throws loco::Error
  // naming the op), and every buffer it touches must outlive the graph.
  class Graph {
   public:
    virtual ~Graph() = default;
    // Runs the recorded work (enqueued like any op). False, and nothing runs, when the
    // backend's scratch memory was reallocated since the capture: capture again.
    virtual bool launch() = 0;
  };
  virtual std::unique_ptr<Graph> capture(const std::function<void()>& work) {
    (void)work;
    return nullptr;
  }

  // Where this backend's buffers live (Host for the CPU, Device for CUDA): every op refuses a
  // buffer from the other space instead of dereferencing it.
  virtual MemSpace memory_space() const = 0;

  // ------------------------------------------------------------------ timing hook
  // With a timer set, every op called from outside the backend is timed (the ops it runs
  // itself count as its time): the backend is synchronised before and after it, so the
  // figures mean something on an asynchronous device too (loco bench --profile). Matmuls are
  // keyed by shape, e.g. "matmul_forward 768->2304", so a table says which projection costs
  // what. Not while a graph is being captured (capture forbids synchronisation).
  class OpTimer {
   public:
    virtual ~OpTimer() = default;
    virtual void record(const std::string& op, double wall_seconds, double cpu_seconds) = 0;
  };
  void set_op_timer(OpTimer* timer) { timer_ = timer; }

 protected:
  // The implementations, called after the checks (see the public ops above).
  virtual void do_zero(Buf buf) = 0;
  virtual void do_upload(Buf dst, const void* host_src) = 0;
  virtual void do_download(void* host_dst, Buf src) = 0;
  virtual void do_copy(Buf dst, Buf src) = 0;
  virtual void do_embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C) = 0;
  virtual void do_embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C) = 0;
  virtual void do_rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C,
                                  float eps) = 0;
  virtual void do_rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd,
                                   int N, int C) = 0;
  virtual void do_add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight, int N,
                                      int C, float eps) = 0;
  virtual void do_matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC) = 0;
  virtual void do_matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N, int IC,
                                  int OC, bool accumulate_din) = 0;
  virtual void do_rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta) = 0;
  virtual void do_rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta) = 0;
  virtual void do_attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH,
                                    int NKV, int hd) = 0;
  virtual void do_attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v, Buf out,
                                     Buf lse, int B, int T, int NH, int NKV, int hd) = 0;
  virtual void do_swiglu_forward(Buf out, Buf gate, Buf up, size_t n) = 0;
  virtual void do_swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n) = 0;
  virtual void do_add(Buf out, Buf a, Buf b, size_t n) = 0;
  virtual void do_cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V, float grad_scale,
                                bool compute_grad) = 0;
  virtual double do_sum_squares(Buf x) = 0;
  virtual void do_scale(Buf x, float s) = 0;
  virtual void do_axpby(Buf y, float a, Buf x, float b) = 0;
  virtual bool do_all_finite(Buf x) = 0;
  virtual uint64_t do_fingerprint(Buf x) = 0;
  virtual void do_adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1,
                               float beta2, float eps, float weight_decay, float bc1, float bc2,
                               float grad_scale) = 0;
  virtual void do_adamw_multi(Buf param, Buf grad, Buf m, Buf v,
                              const std::vector<AdamTensor>& tensors, Buf hyper, Buf stats) = 0;
  virtual void do_accumulate_loss(Buf stats, Buf losses) = 0;
  virtual void do_clip_grad_norm(Buf stats, Buf grads, double max_norm) = 0;
  virtual void do_gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch,
                               float alpha, Strided A, Strided B, float beta, Strided C,
                               Strided D) = 0;
  virtual void do_muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale,
                                bool nesterov) = 0;
  virtual void do_frobenius_normalize(Buf x, size_t each, int batch, float eps) = 0;
  virtual void do_ef_accumulate(Buf e, Buf delta, float beta) = 0;
  virtual void do_chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk) = 0;
  virtual void do_gather(Buf values, Buf x, Buf flat) = 0;
  virtual void do_scatter_subtract(Buf x, Buf flat, Buf values) = 0;
  virtual void do_scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values) = 0;
  virtual void do_divide(Buf out, Buf sum, Buf count, float divisor) = 0;
  virtual void do_quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                                  int value_bits) = 0;
  virtual void do_pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables,
                                Buf tensors, Buf chunks, const ops::PackOptions& opt) = 0;

 private:
  template <typename Work>
  auto timed(const char* op, Work&& work) -> decltype(work());
  template <typename Work>
  auto timed_as(const std::string& key, Work&& work) -> decltype(work());

  OpTimer* timer_ = nullptr;
  int depth_ = 0;  // > 0 inside a timed op
};

// "cpu", "cuda" or "auto" (CUDA when a device is usable, else the CPU). A request for
// "cuda" without a usable device throws loco::Error with the CUDA error's name and text.
std::unique_ptr<Backend> make_backend(const std::string& name);

// True when this binary was built with the CUDA backend and a device is usable.
bool cuda_available(std::string* why_not = nullptr);

}  // namespace loco
