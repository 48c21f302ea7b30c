// Token embedding. wte (V,C) bf16, tokens (N) i32.
// forward:  out(N,C) bf16 = wte[tokens[n]]                 one block (256 thr) per row
// backward: dwte(V,C) f32 += dout(N,C) scattered by token  one block per row, fp32 atomics
//           (rows that share a token add in an unspecified order: not bit-deterministic).
// A token outside [0,V) sets LOCO_STATUS_BAD_TOKEN; forward writes a zero row, backward skips.
// Grid: min(N, 65535) blocks, grid-stride over rows.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

__global__ void embedding_forward_kernel(bf16* __restrict__ out, const int32_t* __restrict__ tokens,
                                         const bf16* __restrict__ wte, int N, int C, int V,
                                         int* status) {
  for (int n = blockIdx.x; n < N; n += gridDim.x) {
    const int tok = tokens[n];
    bf16* dst = out + static_cast<size_t>(n) * C;
    if (tok < 0 || tok >= V) {
      if (threadIdx.x == 0) atomicOr(status, LOCO_STATUS_BAD_TOKEN);
      for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = to_bf(0.f);
      continue;
    }
    const bf16* src = wte + static_cast<size_t>(tok) * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
  }
}

__global__ void embedding_backward_kernel(float* dwte, const bf16* __restrict__ dout,
                                          const int32_t* __restrict__ tokens, int N, int C, int V,
                                          int* status) {
  for (int n = blockIdx.x; n < N; n += gridDim.x) {
    const int tok = tokens[n];
    if (tok < 0 || tok >= V) {
      if (threadIdx.x == 0) atomicOr(status, LOCO_STATUS_BAD_TOKEN);
      continue;
    }
    float* dst = dwte + static_cast<size_t>(tok) * C;
    const bf16* src = dout + static_cast<size_t>(n) * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, to_f(src[c]));
  }
}

}  // namespace

extern "C" cudaError_t loco_embedding_forward(bf16* out, const int32_t* tokens, const bf16* wte,
                                              int N, int C, int V, int* status, cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  embedding_forward_kernel<<<grid_for(N, 1, 65535), 256, 0, s>>>(out, tokens, wte, N, C, V, status);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_embedding_backward(float* dwte, const bf16* dout, const int32_t* tokens,
                                               int N, int C, int V, int* status, cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  embedding_backward_kernel<<<grid_for(N, 1, 65535), 256, 0, s>>>(dwte, dout, tokens, N, C, V,
                                                                  status);
  return cudaGetLastError();
}
