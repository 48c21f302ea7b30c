// Host-memory stand-ins for the cudart and cuBLASLt calls src/cuda/cuda_backend.cpp makes, for
// the emulator (scripts/emu-check.sh): "device" memory is host memory (cudaMalloc fills it
// with 0xAB), copies are memmove, streams are synchronous. cublasLtMatmul is a column-major
// reference GEMM (double accumulation, output rounded to the output type, strided batches)
// that checks the layouts, transposes and batch attributes are consistent.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

// Stream capture (CUDA graphs): what the enqueueing calls record while a capture is open.
namespace emu {
extern std::vector<std::function<void()>>* g_capture;  // emu_runtime.cpp
}
namespace {
using Recording = std::vector<std::function<void()>>;
Recording* g_open = nullptr;  // the capture being recorded
bool g_invalid = false;       // something a capture may not do happened
// A call a capture may not contain: it fails and so will the capture (cudaStreamEndCapture).
cudaError_t refuse_in_capture(const char* what) {
  if (g_open == nullptr) return cudaSuccess;
  std::fprintf(stderr, "MOCK: %s during stream capture\n", what);
  g_invalid = true;
  return cudaErrorStreamCaptureUnsupported;
}
}  // namespace

extern "C" {
// LOCO_EMU_DEVICES=N: the emulated machine has N GPUs (default 1), so multi-rank runs can
// place one rank per "GPU" (the NCCL stand-in refuses two ranks of a communicator on one).
static int emu_devices() { const char* v = std::getenv("LOCO_EMU_DEVICES"); return v && *v ? std::atoi(v) : 1; }
static int g_device = 0;
cudaError_t cudaGetDeviceCount(int* c) { *c = emu_devices(); return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { if (d < 0 || d >= emu_devices()) return cudaErrorInvalidDevice; g_device = d; return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = g_device; return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { *e = reinterpret_cast<cudaEvent_t>(new int(0)); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<int*>(e); return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) { std::memset(p, 0, sizeof *p); std::strcpy(p->name, "EMU"); p->major = 9; p->minor = 0; return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = reinterpret_cast<cudaStream_t>(0x1234); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return refuse_in_capture("cudaStreamSynchronize"); }
cudaError_t cudaMalloc(void** p, size_t n) {
  if (cudaError_t e = refuse_in_capture("cudaMalloc")) return e;
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256); std::memset(*p, 0xAB, n); return cudaSuccess; }
cudaError_t cudaFree(void* p) {
  if (cudaError_t e = refuse_in_capture("cudaFree")) return e;
  std::free(p); return cudaSuccess; }
cudaError_t cudaMallocHost(void** p, size_t n) { *p = std::malloc(n); return cudaSuccess; }
cudaError_t cudaFreeHost(void* p) { std::free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  if (g_open != nullptr) { g_open->push_back([=] { std::memmove(d, s, n); }); return cudaSuccess; }
  std::memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (g_open != nullptr) return cudaErrorIllegalState;
  g_open = new Recording;
  g_invalid = false;
  emu::g_capture = g_open;
  return cudaSuccess; }
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  if (g_open == nullptr) return cudaErrorIllegalState;
  Recording* r = g_open;
  g_open = nullptr;
  emu::g_capture = nullptr;
  if (g_invalid) { delete r; *graph = nullptr; return cudaErrorStreamCaptureInvalidated; }
  *graph = reinterpret_cast<cudaGraph_t>(r);
  return cudaSuccess; }
cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  *status = g_open != nullptr ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess; }
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = reinterpret_cast<cudaGraphExec_t>(new Recording(*reinterpret_cast<Recording*>(graph)));
  return cudaSuccess; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  if (g_open != nullptr) return cudaErrorStreamCaptureUnsupported;
  for (auto& op : *reinterpret_cast<Recording*>(exec)) op();
  return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { delete reinterpret_cast<Recording*>(exec); return cudaSuccess; }
cudaError_t cudaGraphDestroy(cudaGraph_t graph) { delete reinterpret_cast<Recording*>(graph); return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) { *f = 1 << 30; *t = 1 << 30; return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }

struct Layout { cudaDataType_t t; uint64_t rows, cols; int64_t ld; int32_t batch = 1; int64_t stride = 0; };
struct Desc { cublasComputeType_t c; cudaDataType_t s; cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N; };
static int g_matmuls = 0;
cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) { *h = reinterpret_cast<cublasLtHandle_t>(0x42); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasLtGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_EMU"; }
const char* cublasLtGetStatusString(cublasStatus_t) { return "emulated"; }
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType t, uint64_t r, uint64_t c, int64_t ld) {
  if (ld < (int64_t)r) { std::fprintf(stderr, "MOCK: ld < rows\n"); return CUBLAS_STATUS_INVALID_VALUE; }
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{t, r, c, ld}); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a, const void* v, size_t n) {
  auto* L = reinterpret_cast<Layout*>(l);
  if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && n == 4) { std::memcpy(&L->batch, v, 4); return CUBLAS_STATUS_SUCCESS; }
  if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && n == 8) { std::memcpy(&L->stride, v, 8); return CUBLAS_STATUS_SUCCESS; }
  std::fprintf(stderr, "MOCK: bad layout attribute\n"); return CUBLAS_STATUS_INVALID_VALUE; }
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete reinterpret_cast<Layout*>(l); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t c, cudaDataType_t s) {
  if (c != CUBLAS_COMPUTE_32F || s != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc{c, s}); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete reinterpret_cast<Desc*>(d); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* v, size_t n) {
  auto* desc = reinterpret_cast<Desc*>(d);
  if (n != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
  if (a == CUBLASLT_MATMUL_DESC_TRANSA) std::memcpy(&desc->ta, v, n);
  else if (a == CUBLASLT_MATMUL_DESC_TRANSB) std::memcpy(&desc->tb, v, n);
  else return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) { *p = reinterpret_cast<cublasLtMatmulPreference_t>(new int(0)); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete reinterpret_cast<int*>(p); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t a, const void* v, size_t n) {
  if (a != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) { uint32_t al; std::memcpy(&al, v, 4); if (n != 4 || al == 0 || (al & (al - 1))) return CUBLAS_STATUS_INVALID_VALUE; }
  return CUBLAS_STATUS_SUCCESS; }
static bool dims(const Desc* d, const Layout* a, const Layout* b, const Layout* c, uint64_t& m, uint64_t& n, uint64_t& k) {
  m = d->ta == CUBLAS_OP_N ? a->rows : a->cols; k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
  const uint64_t kb = d->tb == CUBLAS_OP_N ? b->rows : b->cols; n = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
  return kb == k && c->rows == m && c->cols == n;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int req, cublasLtMatmulHeuristicResult_t* r, int* found) {
  uint64_t m, n, k;
  if (req < 1 || !dims(reinterpret_cast<Desc*>(d), reinterpret_cast<Layout*>(a), reinterpret_cast<Layout*>(b), reinterpret_cast<Layout*>(c), m, n, k)) { std::fprintf(stderr, "MOCK: inconsistent GEMM dims\n"); *found = 0; return CUBLAS_STATUS_INVALID_VALUE; }
  std::memset(r, 0, sizeof *r); r->state = CUBLAS_STATUS_SUCCESS; *found = 1; return CUBLAS_STATUS_SUCCESS; }
static double get(const void* p, cudaDataType_t t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]); }
static void put(void* p, cudaDataType_t t, size_t i, double v) {
  if (t == CUDA_R_32F) static_cast<float*>(p)[i] = static_cast<float>(v);
  else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); }
static cublasStatus_t matmul_now(cublasLtMatmulDesc_t dd, const void* alpha, const void* A, cublasLtMatrixLayout_t la, const void* B, cublasLtMatrixLayout_t lb, const void* beta, const void* C, cublasLtMatrixLayout_t lc, void* D, cublasLtMatrixLayout_t ld);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t dd, const void* alpha, const void* A, cublasLtMatrixLayout_t la, const void* B, cublasLtMatrixLayout_t lb, const void* beta, const void* C, cublasLtMatrixLayout_t lc, void* D, cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) {
  if (g_open == nullptr) return matmul_now(dd, alpha, A, la, B, lb, beta, C, lc, D, ld);
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);  // host scalars: read now
  g_open->push_back([=] { matmul_now(dd, &al, A, la, B, lb, &be, C, lc, D, ld); });
  return CUBLAS_STATUS_SUCCESS; }
static cublasStatus_t matmul_now(cublasLtMatmulDesc_t dd, const void* alpha, const void* A, cublasLtMatrixLayout_t la, const void* B, cublasLtMatrixLayout_t lb, const void* beta, const void* C, cublasLtMatrixLayout_t lc, void* D, cublasLtMatrixLayout_t ld) {
  auto* d = reinterpret_cast<Desc*>(dd); auto* a = reinterpret_cast<Layout*>(la); auto* b = reinterpret_cast<Layout*>(lb);
  auto* c = reinterpret_cast<Layout*>(lc); auto* o = reinterpret_cast<Layout*>(ld);
  uint64_t m, n, k; if (!dims(d, a, b, c, m, n, k) || o->rows != m || o->cols != n) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  if (a->batch != b->batch || a->batch != c->batch || a->batch != o->batch) { std::fprintf(stderr, "MOCK: batch mismatch\n"); return CUBLAS_STATUS_INVALID_VALUE; }
  const int nb = a->batch;
  for (int bi = 0; bi < nb; ++bi) {
  auto esz = [](cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; };
  const void* A0 = static_cast<const char*>(A) + bi * a->stride * esz(a->t);
  const void* B0 = static_cast<const char*>(B) + bi * b->stride * esz(b->t);
  const void* C0 = static_cast<const char*>(C) + bi * c->stride * esz(c->t);
  void* D0 = static_cast<char*>(D) + bi * o->stride * esz(o->t);
  std::vector<double> out(m * n);
  for (uint64_t j = 0; j < n; ++j) for (uint64_t i = 0; i < m; ++i) {
    double s = 0;
    for (uint64_t p = 0; p < k; ++p) {
      const size_t ia = d->ta == CUBLAS_OP_N ? i + p * a->ld : p + i * a->ld;
      const size_t ib = d->tb == CUBLAS_OP_N ? p + j * b->ld : j + p * b->ld;
      s += get(A0, a->t, ia) * get(B0, b->t, ib);
    }
    out[i + j * m] = al * s + (be != 0.f ? be * get(C0, c->t, i + j * c->ld) : 0.0);
  }
  for (uint64_t j = 0; j < n; ++j) for (uint64_t i = 0; i < m; ++i) put(D0, o->t, i + j * o->ld, out[i + j * m]);
  }
  ++g_matmuls; return CUBLAS_STATUS_SUCCESS; }
}
