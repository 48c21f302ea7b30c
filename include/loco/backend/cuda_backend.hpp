// The CUDA backend: bf16 activations (and compute copies of weights), fp32 master weights,
// gradients, optimizer state and statistics; cuBLASLt GEMMs with fp32 accumulation and the
// hand-written kernels of kernels/*.cu.
//
// This header needs no CUDA headers (host code that only selects a backend can include it);
// the CUDA handles are held as opaque pointers. It is only *defined* when the build has
// LOCO_HAVE_CUDA (src/cuda/ is compiled only then).
//
// Semantics: exactly those of loco::Backend (backend.hpp), checked against CpuBackend by
// tests/gpu/gpu_test_kernels.cpp. All work is enqueued on one stream owned by the object;
// methods that hand data to the host (download, sum_squares, all_finite, synchronize)
// wait for it. Errors (CUDA, cuBLASLt, bad arguments, and token/target ids outside [0,V)
// found by the kernels, reported at the next synchronising call) throw loco::Error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "loco/backend/backend.hpp"

struct CUstream_st;      // cudaStream_t = CUstream_st*
struct cublasLtContext;  // cublasLtHandle_t = cublasLtContext*

namespace loco {

// True when a CUDA device with index `device` exists and can run this binary's kernels.
// Otherwise false, and *why_not (when given) says why, e.g.
// "cudaGetDeviceCount: cudaErrorInsufficientDriver: CUDA driver version is insufficient for
// CUDA runtime version".
bool cuda_device_usable(std::string* why_not = nullptr, int device = 0);

// The number of CUDA devices this process sees (0 when none, with *why_not saying why).
int cuda_device_count(std::string* why_not = nullptr);

// A CudaBackend on `device`; throws loco::Error with cuda_device_usable's reason when the
// device is not usable. The runtime (loco/runtime/runtime.hpp) picks the device of each rank.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

class CudaBackend final : public Backend {
 public:
  // `device`: CUDA device index; multi-rank runs pass the node-local rank (one rank, one
  // GPU). The constructor makes it the calling thread's current device, and every method
  // re-selects it, so the object may be used from any host thread (one at a time).
  explicit CudaBackend(int device = 0);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::BF16; }

  int device() const { return device_; }
  // The stream every op runs on (for NCCL later): a cudaStream_t.
  CUstream_st* stream() const { return stream_; }

  Buf alloc(size_t numel, DType dtype) override;
  void release(Buf& buf) override;
  void synchronize() override;
  Buf alloc_host(size_t numel, DType dtype) override;  // cudaMallocHost
  void release_host(Buf& buf) override;
  size_t peak_memory_bytes() const override { return peak_bytes_; }
  MemSpace memory_space() const override { return MemSpace::Device; }
  // CUDA graph capture of `work` on this backend's stream (cudaStreamCaptureModeThreadLocal).
  // Ops that synchronise, allocate or free throw loco::Error while it records.
  std::unique_ptr<Graph> capture(const std::function<void()>& work) override;

 protected:
  void do_zero(Buf buf) override;
  void do_upload(Buf dst, const void* host_src) override;
  void do_download(void* host_dst, Buf src) override;
  void do_copy(Buf dst, Buf src) override;
  void do_embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C) override;
  void do_embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C) override;
  void do_rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C, float eps) override;
  void do_rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd, int N,
                           int C) override;
  void do_add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight, int N, int C,
                              float eps) override;
  void do_matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC) override;
  void do_matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N, int IC, int OC,
                          bool accumulate_din) override;
  void do_rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta) override;
  void do_rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta) override;
  void do_attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH, int NKV,
                            int hd) override;
  void do_attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v, Buf out,
                             Buf lse, int B, int T, int NH, int NKV, int hd) override;
  void do_swiglu_forward(Buf out, Buf gate, Buf up, size_t n) override;
  void do_swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n) override;
  void do_add(Buf out, Buf a, Buf b, size_t n) override;
  void do_cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V, float grad_scale,
                        bool compute_grad) override;

  double do_sum_squares(Buf x) override;
  void do_scale(Buf x, float s) override;
  void do_axpby(Buf y, float a, Buf x, float b) override;
  bool do_all_finite(Buf x) override;
  uint64_t do_fingerprint(Buf x) override;
  void do_adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1, float beta2,
                       float eps, float weight_decay, float bc1, float bc2,
                       float grad_scale) override;
  void do_adamw_multi(Buf param, Buf grad, Buf m, Buf v, const std::vector<AdamTensor>& tensors,
                      Buf hyper, Buf stats) override;
  void do_accumulate_loss(Buf stats, Buf losses) override;
  void do_clip_grad_norm(Buf stats, Buf grads, double max_norm) override;
  void do_gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch, float alpha,
                       Strided A, Strided B, float beta, Strided C, Strided D) override;
  void do_muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale, bool nesterov) override;
  void do_frobenius_normalize(Buf x, size_t each, int batch, float eps) override;
  void do_ef_accumulate(Buf e, Buf delta, float beta) override;
  void do_chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk) override;
  void do_gather(Buf values, Buf x, Buf flat) override;
  void do_scatter_subtract(Buf x, Buf flat, Buf values) override;
  void do_scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values) override;
  void do_divide(Buf out, Buf sum, Buf count, float divisor) override;
  void do_quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                          int value_bits) override;
  void do_pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables, Buf tensors,
                        Buf chunks, const ops::PackOptions& opt) override;

 private:
  struct GemmPlan;  // cuBLASLt descriptors + heuristic algorithm for one GEMM shape
  // (trans_a, trans_b, M, N, K, A type, B type, C type, A/B/C alignment bytes,
  //  batch, A/B/C batch strides)
  using GemmKey = std::tuple<bool, bool, int, int, int, int, int, int, int, int, int, int, int64_t,
                             int64_t, int64_t>;

  class CudaGraph;
  void activate() const;  // cudaSetDevice(device_)
  // Throws when a graph capture is recording: `op` would synchronise, allocate or free.
  void not_while_capturing(const char* op) const;
  void* scratch(size_t bytes);  // grow-only device scratch, stream-ordered
  void check_status();          // syncs; throws on kernel-reported bad ids
  // Row-major C(M,N) = alpha·op(A)·op(B) + beta·C through cuBLASLt, fp32 compute.
  // Types are cudaDataType_t values (as int, to keep CUDA headers out of this header).
  void gemm_rowmajor(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const void* A,
                     int a_type, const void* B, int b_type, float beta, void* C, int c_type,
                     const char* op) {
    gemm_rowmajor_batched(trans_a, trans_b, M, N, K, 1, alpha, A, 0, a_type, B, 0, b_type, beta, C,
                          C, 0, c_type, op);
  }
  // The strided-batched form, D_b = alpha·op(A_b)·op(B_b) + beta·C_b (D may be C).
  void gemm_rowmajor_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch,
                             float alpha, const void* A, int64_t stride_a, int a_type,
                             const void* B, int64_t stride_b, int b_type, float beta, const void* C,
                             void* D, int64_t stride_c, int c_type, const char* op);

  int device_ = 0;
  CUstream_st* stream_ = nullptr;
  cublasLtContext* lt_ = nullptr;
  void* workspace_ = nullptr;  // cuBLASLt workspace
  size_t workspace_bytes_ = 0;
  void* scratch_ = nullptr;  // attention D, rmsnorm partials, reduction partials
  size_t scratch_bytes_ = 0;
  int* status_dev_ = nullptr;    // LOCO_STATUS_* bits set by kernels
  void* result_dev_ = nullptr;   // small device results (sum_squares, all_finite)
  void* host_pinned_ = nullptr;  // pinned host mirror for small results
  std::map<GemmKey, std::unique_ptr<GemmPlan>> plans_;
  bool capturing_ = false;             // a graph capture is recording on stream_
  uint64_t scratch_generation_ = 0;    // bumped whenever scratch_ moves (graphs hold its address)
  std::vector<AdamTensor> adam_rows_;  // the tensor table last uploaded for adamw_multi
  Buf adam_table_;                     // it, in device memory: (offset, numel, wd bits) u64
  size_t allocated_bytes_ = 0;         // live buffers + scratch + workspace, and its maximum
  size_t peak_bytes_ = 0;
  void count_allocation(ptrdiff_t bytes) {
    allocated_bytes_ = size_t(ptrdiff_t(allocated_bytes_) + bytes);
    if (allocated_bytes_ > peak_bytes_) peak_bytes_ = allocated_bytes_;
  }
};

}  // namespace loco
