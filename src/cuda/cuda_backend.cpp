// CudaBackend: host side. Argument checks, memory, cuBLASLt GEMMs, kernel launches (through
// the C launchers of kernels/loco_kernels.cuh). Compiled only when LOCO_HAVE_CUDA.
#include "loco/backend/cuda_backend.hpp"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

#include "loco/core/error.hpp"
#include "loco/ops/compress_pack.hpp"
#include "loco_kernels.cuh"

namespace loco {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt workspace (Hopper: 32 MiB)

std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

void cuda_check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  throw Error(std::string("cuda backend: ") + call + " failed: " + cuda_error_text(e) + " (" +
              file + ":" + std::to_string(line) + ")");
}

void lt_check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string("cuda backend: ") + call + " failed: " + cublasLtGetStatusName(s) + ": " +
              cublasLtGetStatusString(s) + " (" + file + ":" + std::to_string(line) + ")");
}

#define LOCO_CUDA(call) cuda_check((call), #call, __FILE__, __LINE__)
#define LOCO_LT(call) lt_check((call), #call, __FILE__, __LINE__)

size_t elements(int a, int b) { return static_cast<size_t>(a) * static_cast<size_t>(b); }
size_t elements(int a, int b, int c, int d) { return elements(a, b) * elements(c, d); }

// Largest power of two (<= 256) that divides the address: cuBLASLt's alignment preference.
int alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int a = 1;
  while (a < 256 && v % (2 * static_cast<uintptr_t>(a)) == 0) a *= 2;
  return a;
}

__nv_bfloat16* bf16(Buf buf) { return static_cast<__nv_bfloat16*>(buf.data); }
float* f32(Buf buf) { return static_cast<float*>(buf.data); }
int32_t* i32(Buf buf) { return static_cast<int32_t*>(buf.data); }

// One op's launches and the limits only the kernels have (Backend's public op has checked
// dtypes, sizes and memory spaces: src/backend/backend.cpp).
class Args {
 public:
  explicit Args(const char* op) : op_(op) {}

  void require(bool condition, const std::string& what) const {
    if (!condition) throw Error(std::string("cuda backend: ") + op_ + ": " + what);
  }
  void launched(cudaError_t e) const {
    if (e == cudaSuccess) return;
    cudaGetLastError();
    throw Error(std::string("cuda backend: ") + op_ +
                ": kernel launch failed: " + cuda_error_text(e));
  }
  const char* op() const { return op_; }

 private:
  const char* op_;
};

}  // namespace

// ---------------------------------------------------------------------------- device query

int cuda_device_count(std::string* why_not) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why_not != nullptr) *why_not = "cudaGetDeviceCount: " + cuda_error_text(e);
    return 0;
  }
  if (count <= 0 && why_not != nullptr) *why_not = "cudaGetDeviceCount: no CUDA device found";
  return count > 0 ? count : 0;
}

bool cuda_device_usable(std::string* why_not, int device) {
  auto fail = [&](const std::string& why) {
    if (why_not != nullptr) *why_not = why;
    return false;
  };
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fail("cudaGetDeviceCount: " + cuda_error_text(e));
  }
  if (count <= 0) return fail("cudaGetDeviceCount: no CUDA device found");
  if (device < 0 || device >= count)
    return fail("CUDA device " + std::to_string(device) + " does not exist (" +
                std::to_string(count) + " device(s) visible)");
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = device;
  e = cudaSetDevice(device);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fail("cudaSetDevice(" + std::to_string(device) + "): " + cuda_error_text(e));
  }
  cudaDeviceProp prop{};
  e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) {
    cudaGetLastError();
    cudaSetDevice(previous);
    return fail("cudaGetDeviceProperties: " + cuda_error_text(e));
  }
  const std::string arch = "sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
  if (prop.major < 8) {
    cudaSetDevice(previous);
    return fail("CUDA device " + std::to_string(device) + " (" + prop.name + ", " + arch +
                ") has no bf16 support (needs sm_80 or newer)");
  }
  e = loco_kernels_probe();
  cudaSetDevice(previous);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fail("this binary has no kernels for CUDA device " + std::to_string(device) + " (" +
                prop.name + ", " + arch + "): " + cuda_error_text(e) +
                "; rebuild with -DCMAKE_CUDA_ARCHITECTURES=" + std::to_string(prop.major) +
                std::to_string(prop.minor));
  }
  return true;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

// ---------------------------------------------------------------------------- lifetime

struct CudaBackend::GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // cuBLASLt's A (our B, see gemm_rowmajor)
  cublasLtMatrixLayout_t b = nullptr;  // cuBLASLt's B (our A)
  cublasLtMatrixLayout_t c = nullptr;  // C and D
  cublasLtMatmulAlgo_t algo{};
  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

CudaBackend::CudaBackend(int device) : device_(device) {
  std::string why_not;
  if (!cuda_device_usable(&why_not, device)) throw Error("cuda backend: " + why_not);
  auto cleanup = [this] {
    // Partial construction: free what exists; errors are ignored (we are already failing).
    if (host_pinned_ != nullptr) cudaFreeHost(host_pinned_);
    if (result_dev_ != nullptr) cudaFree(result_dev_);
    if (status_dev_ != nullptr) cudaFree(status_dev_);
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (lt_ != nullptr) cublasLtDestroy(lt_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    cudaGetLastError();
  };
  try {
    activate();
    cudaStream_t stream = nullptr;
    LOCO_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_ = stream;
    cublasLtHandle_t lt = nullptr;
    LOCO_LT(cublasLtCreate(&lt));
    lt_ = lt;
    workspace_bytes_ = kWorkspaceBytes;
    count_allocation(ptrdiff_t(kWorkspaceBytes));
    LOCO_CUDA(cudaMalloc(&workspace_, workspace_bytes_));
    LOCO_CUDA(cudaMalloc(reinterpret_cast<void**>(&status_dev_), sizeof(int)));
    LOCO_CUDA(cudaMalloc(&result_dev_, 16));
    LOCO_CUDA(cudaMallocHost(&host_pinned_, 16));
    LOCO_CUDA(cudaMemsetAsync(status_dev_, 0, sizeof(int), stream_));
    LOCO_CUDA(cudaStreamSynchronize(stream_));
  } catch (...) {
    cleanup();
    throw;
  }
}

CudaBackend::~CudaBackend() {
  // Never throws: errors at teardown are ignored.
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  plans_.clear();
  if (adam_table_.data != nullptr) cudaFree(adam_table_.data);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (status_dev_ != nullptr) cudaFree(status_dev_);
  if (result_dev_ != nullptr) cudaFree(result_dev_);
  if (host_pinned_ != nullptr) cudaFreeHost(host_pinned_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  cudaGetLastError();
}

void CudaBackend::activate() const { LOCO_CUDA(cudaSetDevice(device_)); }

void CudaBackend::not_while_capturing(const char* op) const {
  if (capturing_)
    throw Error(std::string("cuda backend: ") + op +
                " synchronises with the host, allocates or frees, and cannot be part of a "
                "captured graph (run the work once eagerly before capturing it)");
}

void* CudaBackend::scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  not_while_capturing("growing the scratch memory");
  ++scratch_generation_;  // graphs captured with the old block cannot run any more
  // Work queued on the stream may still read the old block: wait before freeing it.
  LOCO_CUDA(cudaStreamSynchronize(stream_));
  if (scratch_ != nullptr) LOCO_CUDA(cudaFree(scratch_));
  count_allocation(-ptrdiff_t(scratch_bytes_));
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  const size_t grown = bytes + bytes / 2;
  LOCO_CUDA(cudaMalloc(&scratch_, grown));
  scratch_bytes_ = grown;
  count_allocation(ptrdiff_t(grown));
  return scratch_;
}

void CudaBackend::check_status() {
  // Pinned bytes [8, 12) hold the status; [0, 8) the small result of the calling op.
  char* pinned_status = static_cast<char*>(host_pinned_) + 8;
  LOCO_CUDA(
      cudaMemcpyAsync(pinned_status, status_dev_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  LOCO_CUDA(cudaStreamSynchronize(stream_));
  int status = 0;
  std::memcpy(&status, pinned_status, sizeof(int));
  if (status == 0) return;
  LOCO_CUDA(cudaMemsetAsync(status_dev_, 0, sizeof(int), stream_));
  std::string what;
  if (status & LOCO_STATUS_BAD_TOKEN)
    what += "embedding_forward/backward met a token id outside [0, V) (rows zeroed/skipped)";
  if (status & LOCO_STATUS_BAD_TARGET) {
    if (!what.empty()) what += "; ";
    what += "cross_entropy met a target outside [0, V) (its loss is NaN)";
  }
  throw Error("cuda backend: " + what);
}

// ---------------------------------------------------------------------------- memory

Buf CudaBackend::alloc(size_t numel, DType dtype) {
  Buf buf{nullptr, dtype, numel, MemSpace::Device};
  if (numel == 0) return buf;
  not_while_capturing("alloc");
  activate();
  const cudaError_t e = cudaMalloc(&buf.data, buf.bytes());
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaGetLastError();
    throw Error("cuda backend: cudaMalloc of " + std::to_string(buf.bytes()) + " bytes (" +
                std::to_string(numel) + " " + dtype_name(dtype) + ") on device " +
                std::to_string(device_) + " failed: " + cuda_error_text(e) + " (" +
                std::to_string(free_bytes >> 20) + " MiB free of " +
                std::to_string(total_bytes >> 20) + " MiB)");
  }
  count_allocation(ptrdiff_t(buf.bytes()));
  LOCO_CUDA(cudaMemsetAsync(buf.data, 0, buf.bytes(), stream_));
  LOCO_CUDA(cudaStreamSynchronize(stream_));  // zeroed for every stream, not only ours
  return buf;
}

void CudaBackend::release(Buf& buf) {
  not_while_capturing("release");
  if (buf.data != nullptr) {
    activate();
    LOCO_CUDA(cudaStreamSynchronize(stream_));
    LOCO_CUDA(cudaFree(buf.data));
    count_allocation(-ptrdiff_t(buf.bytes()));
  }
  buf = Buf{};
}

Buf CudaBackend::alloc_host(size_t numel, DType dtype) {
  Buf buf{nullptr, dtype, numel, MemSpace::Host};
  if (numel == 0) return buf;
  not_while_capturing("alloc_host");
  activate();
  const cudaError_t e = cudaMallocHost(&buf.data, buf.bytes());
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda backend: cudaMallocHost of " + std::to_string(buf.bytes()) +
                " bytes (page-locked staging memory) failed: " + cuda_error_text(e));
  }
  std::memset(buf.data, 0, buf.bytes());
  return buf;
}

void CudaBackend::release_host(Buf& buf) {
  not_while_capturing("release_host");
  if (buf.data != nullptr) cudaFreeHost(buf.data);
  buf = Buf{};
}

void CudaBackend::do_zero(Buf buf) {
  if (buf.bytes() == 0) return;
  activate();
  LOCO_CUDA(cudaMemsetAsync(buf.data, 0, buf.bytes(), stream_));
}

void CudaBackend::do_upload(Buf dst, const void* host_src) {
  not_while_capturing("upload");
  if (dst.bytes() == 0) return;
  activate();
  LOCO_CUDA(cudaMemcpyAsync(dst.data, host_src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
  LOCO_CUDA(cudaStreamSynchronize(stream_));  // host_src may be reused as soon as we return
}

void CudaBackend::do_download(void* host_dst, Buf src) {
  not_while_capturing("download");
  activate();
  if (src.bytes() > 0)
    LOCO_CUDA(cudaMemcpyAsync(host_dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
  check_status();  // synchronises
}

void CudaBackend::do_copy(Buf dst, Buf src) {
  const Args args("copy");
  if (dst.numel == 0) return;
  activate();
  if (dst.dtype == src.dtype) {
    LOCO_CUDA(cudaMemcpyAsync(dst.data, src.data, dst.bytes(), cudaMemcpyDeviceToDevice, stream_));
  } else if (dst.dtype == DType::BF16 && src.dtype == DType::F32) {
    args.launched(loco_f32_to_bf16(static_cast<__nv_bfloat16*>(dst.data),
                                   static_cast<const float*>(src.data), dst.numel, stream_));
  } else {  // F32 from BF16: the public op refused every other pair
    args.launched(loco_bf16_to_f32(static_cast<float*>(dst.data),
                                   static_cast<const __nv_bfloat16*>(src.data), dst.numel,
                                   stream_));
  }
}

void CudaBackend::synchronize() {
  not_while_capturing("synchronize");
  activate();
  check_status();
}

// ---------------------------------------------------------------------------- GEMM

// Row-major C(M,N) = alpha·op(A)·op(B) + beta·C. cuBLASLt is column-major: a row-major (r,c)
// matrix is the column-major (c,r) matrix with the same leading dimension, so we compute
//   Cᵀ (N×M, ld N) = op(B)ᵀ · op(A)ᵀ
// with cuBLASLt's A := our B and cuBLASLt's B := our A:
//   our B (K,N) row-major [!trans_b] = column-major (N,K) ld N, used as is    -> op N
//   our B (N,K) row-major [ trans_b] = column-major (K,N) ld K, transposed    -> op T
//   our A (M,K) row-major [!trans_a] = column-major (K,M) ld K, used as is    -> op N
//   our A (K,M) row-major [ trans_a] = column-major (M,K) ld M, transposed    -> op T
// Compute type fp32 (CUBLAS_COMPUTE_32F: no TF32), scale type fp32. D (the output) has C's
// layout and may be C. Batches: every layout gets BATCH_COUNT and STRIDED_BATCH_OFFSET.
void CudaBackend::gemm_rowmajor_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch,
                                        float alpha, const void* A, int64_t stride_a, int a_type,
                                        const void* B, int64_t stride_b, int b_type, float beta,
                                        const void* C_in, void* D, int64_t stride_c, int c_type,
                                        const char* op) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  void* C = D;  // what the empty-product path below writes
  const int align_cd = std::min(alignment_of(C_in), alignment_of(D));
  const size_t c_elems = elements(M, N);
  if (K <= 0) {  // empty product: C = beta·C (beta == 0 overwrites, clearing NaN)
    if (batch != 1 || C_in != D) {
      Args(op).require(false, "an empty product (K = 0) needs batch 1 and C = D");
    }
    if (beta == 0.f) {
      const size_t esize = c_type == CUDA_R_32F ? 4 : 2;
      LOCO_CUDA(cudaMemsetAsync(C, 0, c_elems * esize, stream_));
    } else if (beta != 1.f) {
      Args args(op);
      args.require(c_type == CUDA_R_32F, "K = 0 with beta != 0, 1 needs an f32 output");
      args.launched(loco_scale_f32(static_cast<float*>(C), beta, c_elems, stream_));
    }
    return;
  }
  const GemmKey key{
      trans_a,         trans_b,         M,        N,     K,        a_type,   b_type,  c_type,
      alignment_of(A), alignment_of(B), align_cd, batch, stride_a, stride_b, stride_c};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    auto plan = std::make_unique<GemmPlan>();
    const auto at = static_cast<cudaDataType_t>(a_type);
    const auto bt = static_cast<cudaDataType_t>(b_type);
    const auto ct = static_cast<cudaDataType_t>(c_type);
    // cuBLASLt A = our B
    const uint64_t la_rows = trans_b ? K : N, la_cols = trans_b ? N : K;
    LOCO_LT(
        cublasLtMatrixLayoutCreate(&plan->a, bt, la_rows, la_cols, static_cast<int64_t>(la_rows)));
    // cuBLASLt B = our A
    const uint64_t lb_rows = trans_a ? M : K, lb_cols = trans_a ? K : M;
    LOCO_LT(
        cublasLtMatrixLayoutCreate(&plan->b, at, lb_rows, lb_cols, static_cast<int64_t>(lb_rows)));
    LOCO_LT(cublasLtMatrixLayoutCreate(&plan->c, ct, static_cast<uint64_t>(N),
                                       static_cast<uint64_t>(M), static_cast<int64_t>(N)));
    if (batch > 1) {
      const int32_t count = batch;
      // cuBLASLt A = our B, cuBLASLt B = our A.
      const std::pair<cublasLtMatrixLayout_t, int64_t> strided[] = {
          {plan->a, stride_b}, {plan->b, stride_a}, {plan->c, stride_c}};
      for (const auto& [layout, stride] : strided) {
        LOCO_LT(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                 sizeof(count)));
        LOCO_LT(cublasLtMatrixLayoutSetAttribute(
            layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
      }
    }
    LOCO_LT(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    LOCO_LT(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                           sizeof(op_a)));
    LOCO_LT(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                           sizeof(op_b)));

    cublasLtMatmulPreference_t pref = nullptr;
    LOCO_LT(cublasLtMatmulPreferenceCreate(&pref));
    struct PrefGuard {
      cublasLtMatmulPreference_t p;
      ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
    } pref_guard{pref};
    const uint64_t ws = workspace_bytes_;
    LOCO_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &ws, sizeof(ws)));
    const uint32_t align_lt_a = static_cast<uint32_t>(alignment_of(B));
    const uint32_t align_lt_b = static_cast<uint32_t>(alignment_of(A));
    const uint32_t align_c = static_cast<uint32_t>(align_cd);
    LOCO_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                 &align_lt_a, sizeof(align_lt_a)));
    LOCO_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                 &align_lt_b, sizeof(align_lt_b)));
    LOCO_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                 &align_c, sizeof(align_c)));
    LOCO_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                 &align_c, sizeof(align_c)));

    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
        lt_, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &found);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
      throw Error(std::string("cuda backend: ") + op +
                  ": cuBLASLt found no algorithm for row-major C(" + std::to_string(M) + "," +
                  std::to_string(N) + ") = op(A)·op(B), K = " + std::to_string(K) +
                  ", trans_a = " + std::to_string(trans_a) +
                  ", trans_b = " + std::to_string(trans_b) + " (types " + std::to_string(a_type) +
                  "/" + std::to_string(b_type) + "/" + std::to_string(c_type) +
                  "): " + cublasLtGetStatusName(hs != CUBLAS_STATUS_SUCCESS ? hs : result.state));
    }
    plan->algo = result.algo;
    it = plans_.emplace(key, std::move(plan)).first;
  }
  const GemmPlan& plan = *it->second;
  // C and D share one layout (same shape, type and stride); they may be one buffer.
  LOCO_LT(cublasLtMatmul(lt_, plan.desc, &alpha, B, plan.a, A, plan.b, &beta, C_in, plan.c, D,
                         plan.c, &plan.algo, workspace_, workspace_bytes_, stream_));
}

void CudaBackend::do_matmul_forward(Buf out, Buf in, Buf weight, int N, int IC, int OC) {
  const Args args("matmul_forward");
  auto* o = bf16(out);
  const auto* x = bf16(in);
  const auto* w = bf16(weight);
  activate();
  // out(N,OC) = in(N,IC) · weight(OC,IC)ᵀ
  gemm_rowmajor(false, true, N, OC, IC, 1.f, x, CUDA_R_16BF, w, CUDA_R_16BF, 0.f, o, CUDA_R_16BF,
                args.op());
}

void CudaBackend::do_matmul_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, int N,
                                     int IC, int OC, bool accumulate_din) {
  const Args args("matmul_backward");
  auto* di = bf16(din);
  auto* dw = f32(dweight);
  const auto* dy = bf16(dout);
  const auto* x = bf16(in);
  const auto* w = bf16(weight);
  activate();
  // din(N,IC) = dout(N,OC) · weight(OC,IC)   (+= when accumulate_din)
  gemm_rowmajor(false, false, N, IC, OC, 1.f, dy, CUDA_R_16BF, w, CUDA_R_16BF,
                accumulate_din ? 1.f : 0.f, di, CUDA_R_16BF, args.op());
  // dweight(OC,IC) f32 += dout(N,OC)ᵀ · in(N,IC)
  gemm_rowmajor(true, false, OC, IC, N, 1.f, dy, CUDA_R_16BF, x, CUDA_R_16BF, 1.f, dw, CUDA_R_32F,
                args.op());
}

// ---------------------------------------------------------------------------- model ops

void CudaBackend::do_embedding_forward(Buf out, Buf tokens, Buf wte, int N, int C) {
  const Args args("embedding_forward");
  const int V = static_cast<int>(wte.numel / static_cast<size_t>(C));
  auto* o = bf16(out);
  const int32_t* ids = i32(tokens);
  const auto* table = bf16(wte);
  activate();
  args.launched(loco_embedding_forward(o, ids, table, N, C, V, status_dev_, stream_));
}

void CudaBackend::do_embedding_backward(Buf dwte, Buf dout, Buf tokens, int N, int C) {
  const Args args("embedding_backward");
  const int V = static_cast<int>(dwte.numel / static_cast<size_t>(C));
  float* dt = f32(dwte);
  const auto* dy = bf16(dout);
  const int32_t* ids = i32(tokens);
  activate();
  args.launched(loco_embedding_backward(dt, dy, ids, N, C, V, status_dev_, stream_));
}

void CudaBackend::do_rmsnorm_forward(Buf out, Buf rstd, Buf in, Buf weight, int N, int C,
                                     float eps) {
  const Args args("rmsnorm_forward");
  auto* o = bf16(out);
  float* r = f32(rstd);
  const auto* x = bf16(in);
  const auto* w = bf16(weight);
  activate();
  args.launched(loco_rmsnorm_forward(o, r, x, w, N, C, eps, stream_));
}

void CudaBackend::do_rmsnorm_backward(Buf din, Buf dweight, Buf dout, Buf in, Buf weight, Buf rstd,
                                      int N, int C) {
  const Args args("rmsnorm_backward");
  auto* dx = bf16(din);
  float* dw = f32(dweight);
  const auto* dy = bf16(dout);
  const auto* x = bf16(in);
  const auto* w = bf16(weight);
  const float* r = f32(rstd);
  if (N == 0 || C == 0) return;
  activate();
  auto* partial = static_cast<float*>(scratch(loco_rmsnorm_backward_scratch(N, C) * sizeof(float)));
  args.launched(loco_rmsnorm_backward(dx, dw, dy, x, w, r, N, C, partial, stream_));
}

void CudaBackend::do_add_rmsnorm_forward(Buf sum, Buf out, Buf rstd, Buf a, Buf b, Buf weight,
                                         int N, int C, float eps) {
  const Args args("add_rmsnorm_forward");
  auto* s = bf16(sum);
  auto* o = bf16(out);
  float* r = f32(rstd);
  const auto* x = bf16(a);
  const auto* y = bf16(b);
  const auto* w = bf16(weight);
  activate();
  args.launched(loco_add_rmsnorm_forward(s, o, r, x, y, w, N, C, eps, stream_));
}

void CudaBackend::do_rope_forward(Buf out, Buf x, int B, int T, int H, int hd, float theta) {
  const Args args("rope_forward");
  auto* o = bf16(out);
  const auto* xi = bf16(x);
  activate();
  args.launched(loco_rope(o, xi, B, T, H, hd, theta, +1, stream_));
}

void CudaBackend::do_rope_backward(Buf dx, Buf dout, int B, int T, int H, int hd, float theta) {
  const Args args("rope_backward");
  auto* o = bf16(dx);
  const auto* g = bf16(dout);
  activate();
  args.launched(loco_rope(o, g, B, T, H, hd, theta, -1, stream_));
}

namespace {
// The attention kernels' limits (the public op checked the shapes).
void check_attention_shape(const Args& args, int B, int NH, int hd) {
  args.require(loco_attention_supported(hd) != 0,
               "head dim " + std::to_string(hd) +
                   " is not supported by the CUDA kernels (multiples of 4 up to 128)");
  args.require(B <= 65535 && NH <= 65535, "B and NH must be at most 65535");
}
}  // namespace

void CudaBackend::do_attention_forward(Buf out, Buf lse, Buf q, Buf k, Buf v, int B, int T, int NH,
                                       int NKV, int hd) {
  const Args args("attention_forward");
  check_attention_shape(args, B, NH, hd);
  auto* o = bf16(out);
  float* l = f32(lse);
  const auto* qp = bf16(q);
  const auto* kp = bf16(k);
  const auto* vp = bf16(v);
  activate();
  args.launched(loco_attention_forward(o, l, qp, kp, vp, B, T, NH, NKV, hd, stream_));
}

void CudaBackend::do_attention_backward(Buf dq, Buf dk, Buf dv, Buf dout, Buf q, Buf k, Buf v,
                                        Buf out, Buf lse, int B, int T, int NH, int NKV, int hd) {
  const Args args("attention_backward");
  check_attention_shape(args, B, NH, hd);
  auto* dqp = bf16(dq);
  auto* dkp = bf16(dk);
  auto* dvp = bf16(dv);
  const auto* dy = bf16(dout);
  const auto* qp = bf16(q);
  const auto* kp = bf16(k);
  const auto* vp = bf16(v);
  const auto* o = bf16(out);
  const float* l = f32(lse);
  if (elements(B, NH, T, 1) == 0) return;
  activate();
  auto* D = static_cast<float*>(scratch(elements(B, NH, T, 1) * sizeof(float)));
  args.launched(
      loco_attention_backward_dq(dqp, D, dy, qp, kp, vp, o, l, B, T, NH, NKV, hd, stream_));
  args.launched(
      loco_attention_backward_dkdv(dkp, dvp, D, dy, qp, kp, vp, l, B, T, NH, NKV, hd, stream_));
}

void CudaBackend::do_swiglu_forward(Buf out, Buf gate, Buf up, size_t n) {
  const Args args("swiglu_forward");
  auto* o = bf16(out);
  const auto* g = bf16(gate);
  const auto* u = bf16(up);
  activate();
  args.launched(loco_swiglu_forward(o, g, u, n, stream_));
}

void CudaBackend::do_swiglu_backward(Buf dgate, Buf dup, Buf dout, Buf gate, Buf up, size_t n) {
  const Args args("swiglu_backward");
  auto* dg = bf16(dgate);
  auto* du = bf16(dup);
  const auto* dy = bf16(dout);
  const auto* g = bf16(gate);
  const auto* u = bf16(up);
  activate();
  args.launched(loco_swiglu_backward(dg, du, dy, g, u, n, stream_));
}

void CudaBackend::do_add(Buf out, Buf a, Buf b, size_t n) {
  const Args args("add");
  auto* o = bf16(out);
  const auto* x = bf16(a);
  const auto* y = bf16(b);
  activate();
  args.launched(loco_add_bf16(o, x, y, n, stream_));
}

void CudaBackend::do_cross_entropy(Buf losses, Buf logits, Buf targets, int N, int V,
                                   float grad_scale, bool compute_grad) {
  const Args args("cross_entropy");
  float* l = f32(losses);
  auto* x = bf16(logits);
  const int32_t* t = i32(targets);
  activate();
  args.launched(
      loco_cross_entropy(l, x, t, N, V, grad_scale, compute_grad ? 1 : 0, status_dev_, stream_));
}

// ---------------------------------------------------------------------------- F32 vector ops

double CudaBackend::do_sum_squares(Buf x) {
  not_while_capturing("sum_squares");
  const Args args("sum_squares");
  const float* p = f32(x);
  activate();
  auto* partial = static_cast<double*>(scratch(loco_sum_squares_scratch() * sizeof(double)));
  auto* result = static_cast<double*>(result_dev_);
  args.launched(loco_sum_squares(result, p, x.numel, partial, stream_));
  LOCO_CUDA(cudaMemcpyAsync(host_pinned_, result, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  check_status();  // synchronises
  double value = 0;
  std::memcpy(&value, host_pinned_, sizeof(double));
  return value;
}

void CudaBackend::do_scale(Buf x, float s) {
  const Args args("scale");
  float* p = f32(x);
  activate();
  args.launched(loco_scale_f32(p, s, x.numel, stream_));
}

void CudaBackend::do_axpby(Buf y, float a, Buf x, float b) {
  const Args args("axpby");
  float* py = f32(y);
  const float* px = f32(x);
  activate();
  args.launched(loco_axpby_f32(py, a, px, b, y.numel, stream_));
}

bool CudaBackend::do_all_finite(Buf x) {
  not_while_capturing("all_finite");
  const Args args("all_finite");
  const float* p = f32(x);
  activate();
  auto* flag = static_cast<int*>(result_dev_);
  args.launched(loco_all_finite_f32(flag, p, x.numel, stream_));
  LOCO_CUDA(cudaMemcpyAsync(host_pinned_, flag, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  check_status();  // synchronises
  int bad = 0;
  std::memcpy(&bad, host_pinned_, sizeof(int));
  return bad == 0;
}

uint64_t CudaBackend::do_fingerprint(Buf x) {
  not_while_capturing("fingerprint");
  activate();
  auto* sum = static_cast<unsigned long long*>(result_dev_);
  Args("fingerprint").launched(loco_fingerprint(sum, x.data, x.bytes(), stream_));
  LOCO_CUDA(cudaMemcpyAsync(host_pinned_, sum, sizeof(uint64_t), cudaMemcpyDeviceToHost, stream_));
  check_status();  // synchronises
  uint64_t value = 0;
  std::memcpy(&value, host_pinned_, sizeof(uint64_t));
  return value;
}

void CudaBackend::do_adamw_update(Buf param, Buf grad, Buf m, Buf v, float lr, float beta1,
                                  float beta2, float eps, float weight_decay, float bc1, float bc2,
                                  float grad_scale) {
  const Args args("adamw_update");
  const size_t n = param.numel;
  float* p = f32(param);
  const float* g = f32(grad);
  float* pm = f32(m);
  float* pv = f32(v);
  activate();
  args.launched(loco_adamw_f32(p, g, pm, pv, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2,
                               grad_scale, stream_));
}

void CudaBackend::do_adamw_multi(Buf param, Buf grad, Buf m, Buf v,
                                 const std::vector<AdamTensor>& tensors, Buf hyper, Buf stats) {
  const Args args("adamw_multi");
  size_t max_numel = 0;
  for (const AdamTensor& t : tensors) max_numel = std::max(max_numel, t.numel);
  float* p = f32(param);
  const float* g = f32(grad);
  float* pm = f32(m);
  float* pv = f32(v);
  const float* h = f32(hyper);
  const int32_t* st = stats.empty() ? nullptr : i32(stats);
  activate();
  if (tensors != adam_rows_ || adam_table_.data == nullptr) {
    // A new tensor table (once per optimizer): to device memory, which a capture cannot do.
    not_while_capturing("adamw_multi with a new tensor table");
    std::vector<uint64_t> rows;
    for (const AdamTensor& t : tensors) {
      uint32_t wd = 0;
      std::memcpy(&wd, &t.weight_decay, 4);
      rows.insert(rows.end(), {uint64_t(t.offset), uint64_t(t.numel), uint64_t(wd)});
    }
    if (adam_table_.data != nullptr) release(adam_table_);
    adam_rows_.clear();
    if (!rows.empty()) {
      adam_table_ = alloc(rows.size() * 2, DType::I32);
      upload(adam_table_, rows.data());
    }
    adam_rows_ = tensors;
  }
  if (tensors.empty()) return;
  args.launched(loco_adamw_multi_f32(p, g, pm, pv,
                                     static_cast<const unsigned long long*>(adam_table_.data),
                                     tensors.size(), max_numel, h, st, stream_));
}

void CudaBackend::do_accumulate_loss(Buf stats, Buf losses) {
  const Args args("accumulate_loss");
  const int32_t* st = i32(stats);
  const float* l = f32(losses);
  activate();
  args.launched(loco_accumulate_loss(const_cast<int32_t*>(st), l, losses.numel, stream_));
}

void CudaBackend::do_clip_grad_norm(Buf stats, Buf grads, double max_norm) {
  const Args args("clip_grad_norm");
  const int32_t* st = i32(stats);
  const float* g = f32(grads);
  activate();
  auto* partial = static_cast<double*>(scratch(loco_sum_squares_scratch() * sizeof(double)));
  args.launched(
      loco_clip_grad_norm(const_cast<int32_t*>(st), g, grads.numel, max_norm, partial, stream_));
}

// ---------------------------------------------------------------------------- graphs

class CudaBackend::CudaGraph final : public Backend::Graph {
 public:
  CudaGraph(CudaBackend& backend, cudaGraphExec_t exec)
      : backend_(backend), exec_(exec), generation_(backend.scratch_generation_) {}
  ~CudaGraph() override {  // never throws
    cudaSetDevice(backend_.device_);
    cudaStreamSynchronize(backend_.stream_);  // it may still run
    cudaGraphExecDestroy(exec_);
    cudaGetLastError();
  }
  bool launch() override {
    if (backend_.scratch_generation_ != generation_) return false;
    backend_.not_while_capturing("launching a graph");
    backend_.activate();
    LOCO_CUDA(cudaGraphLaunch(exec_, backend_.stream_));
    return true;
  }

 private:
  CudaBackend& backend_;
  cudaGraphExec_t exec_;
  uint64_t generation_;
};

std::unique_ptr<Backend::Graph> CudaBackend::capture(const std::function<void()>& work) {
  not_while_capturing("capture");
  activate();
  LOCO_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  cudaGraph_t graph = nullptr;
  try {
    work();
  } catch (...) {
    capturing_ = false;
    if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph != nullptr)
      cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  capturing_ = false;
  const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda backend: graph capture failed: " + cuda_error_text(e) +
                " (the captured work made a call a capture may not contain)");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (ie != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda backend: cudaGraphInstantiate failed: " + cuda_error_text(ie));
  }
  return std::make_unique<CudaGraph>(*this, exec);
}

void CudaBackend::do_gemm_batched(bool trans_a, bool trans_b, int M, int N, int K, int batch,
                                  float alpha, Strided A, Strided B, float beta, Strided C,
                                  Strided D) {
  const void* a = A.buf.data;
  const void* b = B.buf.data;
  const void* c = C.buf.data;
  void* d = D.buf.data;
  const int in_type = A.buf.dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const int out_type = C.buf.dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  activate();
  gemm_rowmajor_batched(trans_a, trans_b, M, N, K, batch, alpha, a, int64_t(A.stride), in_type, b,
                        int64_t(B.stride), in_type, beta, c, d, int64_t(C.stride), out_type,
                        "gemm_batched");
}

void CudaBackend::do_muon_momentum(Buf m, Buf u, Buf g, float beta, float grad_scale,
                                   bool nesterov) {
  const Args args("muon_momentum");
  const size_t n = m.numel;
  float* pm = f32(m);
  float* pu = f32(u);
  const float* pg = f32(g);
  activate();
  args.launched(loco_muon_momentum(pm, pu, pg, beta, grad_scale, nesterov ? 1 : 0, n, stream_));
}

void CudaBackend::do_frobenius_normalize(Buf x, size_t each, int batch, float eps) {
  const Args args("frobenius_normalize");
  float* p = f32(x);
  if (batch == 0 || each == 0) return;
  activate();
  auto* partial =
      static_cast<double*>(scratch(loco_frobenius_normalize_scratch(each, batch) * sizeof(double)));
  args.launched(loco_frobenius_normalize(p, each, batch, eps, partial, stream_));
}

// ---------------------------------------------------------------------------- compression
// The flat indices and the chunk table come from loco/compress/device_compressor.cpp, which
// builds them from the plan or from a payload the decoder has validated; unlike the CPU
// backend the kernels do not re-check them (an out-of-range index is a caller bug).

namespace {
uint32_t* as_indices(Buf b) { return static_cast<uint32_t*>(b.data); }
}  // namespace

void CudaBackend::do_ef_accumulate(Buf e, Buf delta, float beta) {
  const Args args("ef_accumulate");
  float* pe = f32(e);
  const float* pd = f32(delta);
  activate();
  args.launched(loco_ef_accumulate(pe, pd, beta, e.numel, stream_));
}

void CudaBackend::do_chunked_topk(Buf offsets, Buf flat, Buf x, Buf chunks, uint32_t max_chunk) {
  const Args args("chunked_topk");
  const int32_t* table = i32(chunks);
  const float* px = f32(x);
  activate();
  args.launched(loco_chunked_topk(as_indices(offsets), as_indices(flat), px, table,
                                  chunks.numel / 8, max_chunk, stream_));
}

void CudaBackend::do_gather(Buf values, Buf x, Buf flat) {
  const Args args("gather");
  const size_t n = values.numel;
  float* pv = f32(values);
  const float* px = f32(x);
  activate();
  args.launched(loco_gather_f32(pv, px, as_indices(flat), n, stream_));
}

void CudaBackend::do_scatter_subtract(Buf x, Buf flat, Buf values) {
  const Args args("scatter_subtract");
  const size_t n = values.numel;
  float* px = f32(x);
  const float* pv = f32(values);
  activate();
  args.launched(loco_scatter_subtract_f32(px, as_indices(flat), pv, n, stream_));
}

void CudaBackend::do_scatter_accumulate(Buf sum, Buf count, Buf flat, Buf values) {
  const Args args("scatter_accumulate");
  const size_t n = values.numel;
  float* ps = f32(sum);
  int32_t* pc = nullptr;
  if (!count.empty()) pc = const_cast<int32_t*>(i32(count));
  const float* pv = f32(values);
  activate();
  args.launched(loco_scatter_accumulate_f32(ps, pc, as_indices(flat), pv, n, stream_));
}

void CudaBackend::do_divide(Buf out, Buf sum, Buf count, float divisor) {
  const Args args("divide");
  const size_t n = out.numel;
  const int32_t* pc = count.empty() ? nullptr : i32(count);
  float* po = f32(out);
  const float* ps = f32(sum);
  activate();
  args.launched(loco_divide_f32(po, ps, pc, divisor, n, stream_));
}

void CudaBackend::do_quantize_values(Buf codes, Buf values, Buf tables, Buf tensors, Buf segments,
                                     int value_bits) {
  const Args args("quantize_values");
  const size_t n = values.numel;
  auto* code = const_cast<uint32_t*>(as_indices(codes));
  float* v = f32(values);
  const int32_t* trows = nullptr;
  const int32_t* srows = nullptr;
  float* table = nullptr;
  size_t nt = 0, ns = 0;
  if (value_bits < 16) {
    nt = tensors.numel / 6;
    ns = segments.numel / 3;
    trows = i32(tensors);
    srows = i32(segments);
    if (tables.numel > 0) table = f32(tables);
  }
  activate();
  void* work = nullptr;
  const size_t bytes = loco_quantize_values_scratch(nt, ns, value_bits);
  if (bytes > 0) work = scratch(bytes);
  args.launched(
      loco_quantize_values(code, v, table, n, trows, nt, srows, ns, value_bits, work, stream_));
}

void CudaBackend::do_pack_sections(Buf payload, Buf layout, Buf offsets, Buf codes, Buf tables,
                                   Buf tensors, Buf chunks, const ops::PackOptions& opt) {
  const Args args("pack_sections");
  const size_t nt = tensors.numel / ops::kPackTensorInts, nc = chunks.numel / ops::kPackChunkInts;
  const int32_t* trows = i32(tensors);
  const int32_t* crows = i32(chunks);
  const float* table = tables.numel > 0 ? f32(tables) : nullptr;
  activate();
  void* work = scratch(loco_pack_sections_scratch(nt, nc));
  args.launched(loco_pack_sections(
      static_cast<uint32_t*>(payload.data), payload.bytes(), static_cast<uint32_t*>(layout.data),
      as_indices(offsets), as_indices(codes), table, trows, nt, crows, nc,
      opt.max_chunks_per_tensor, opt.max_value_bytes, opt.index_coding, opt.implied ? 1 : 0,
      opt.explicit_counts ? 1 : 0, opt.value_bits, opt.first_byte, work, stream_));
}

}  // namespace loco
