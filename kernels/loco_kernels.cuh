// C-style launchers for the CUDA backend's kernels (kernels/*.cu, one op per file).
//
// This header is included by host C++ (src/cuda/cuda_backend.cpp, compiled by g++), so it
// holds declarations only: no __global__ code, no device intrinsics. Every launcher enqueues
// its kernel(s) on `stream` and returns cudaGetLastError() (launch-configuration errors); the
// host checks the result and throws loco::Error. Launchers never synchronize.
//
// Conventions (see include/loco/backend/backend.hpp for the op semantics):
//  - bf16 = __nv_bfloat16 (activations), fp32 math inside every kernel.
//  - Row-major shapes in the comments, N = B*T rows.
//  - `status` points at one device int; a kernel that meets bad input (a token id outside
//    [0,V)) ORs a LOCO_STATUS_* bit into it and keeps going with a harmless value; the host
//    reads it at its next synchronisation point and throws.
//  - Pointers are NOT __restrict__ where backend.hpp allows aliasing (add, rope, swiglu
//    backward, cross_entropy in place).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#define LOCO_STATUS_BAD_TOKEN 1   // embedding: token id outside [0, V)
#define LOCO_STATUS_BAD_TARGET 2  // cross_entropy: target outside [0, V)

extern "C" {

// ------------------------------------------------------------------ conversion / elementwise
// dst[i] = bf16_rn(src[i])   (round to nearest even, __float2bfloat16_rn)
cudaError_t loco_f32_to_bf16(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t s);
// dst[i] = float(src[i])
cudaError_t loco_bf16_to_f32(float* dst, const __nv_bfloat16* src, size_t n, cudaStream_t s);
// out = a + b (bf16, fp32 add then round); out may alias a or b.
cudaError_t loco_add_bf16(__nv_bfloat16* out, const __nv_bfloat16* a, const __nv_bfloat16* b,
                          size_t n, cudaStream_t s);

// ------------------------------------------------------------------ embedding
// out(N,C) = wte(V,C)[tokens(N)]
cudaError_t loco_embedding_forward(__nv_bfloat16* out, const int32_t* tokens,
                                   const __nv_bfloat16* wte, int N, int C, int V, int* status,
                                   cudaStream_t s);
// dwte(V,C) f32 += scatter of dout(N,C) by token (fp32 atomics: order not deterministic)
cudaError_t loco_embedding_backward(float* dwte, const __nv_bfloat16* dout, const int32_t* tokens,
                                    int N, int C, int V, int* status, cudaStream_t s);

// ------------------------------------------------------------------ rmsnorm
// out(N,C) = in * rstd * weight(C);  rstd(N) f32
cudaError_t loco_rmsnorm_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* in,
                                 const __nv_bfloat16* weight, int N, int C, float eps,
                                 cudaStream_t s);
// f32 scratch elements loco_rmsnorm_backward needs for (N, C).
size_t loco_rmsnorm_backward_scratch(int N, int C);
// din(N,C) += ..., dweight(C) f32 += ... (deterministic: per-block partials, then a fixed-order
// column sum). scratch: loco_rmsnorm_backward_scratch(N, C) floats.
cudaError_t loco_rmsnorm_backward(__nv_bfloat16* din, float* dweight, const __nv_bfloat16* dout,
                                  const __nv_bfloat16* in, const __nv_bfloat16* weight,
                                  const float* rstd, int N, int C, float* scratch, cudaStream_t s);

// sum(N,C) = a + b (bf16), out(N,C) = sum * rstd * weight, rstd(N) f32: add then
// rmsnorm_forward in one pass. sum may alias a or b.
cudaError_t loco_add_rmsnorm_forward(__nv_bfloat16* sum, __nv_bfloat16* out, float* rstd,
                                     const __nv_bfloat16* a, const __nv_bfloat16* b,
                                     const __nv_bfloat16* weight, int N, int C, float eps,
                                     cudaStream_t s);

// ------------------------------------------------------------------ rope
// x, out (B,T,H,hd); rotate-half; direction +1 forward, -1 backward (inverse rotation).
// Angles in double precision (as the CPU reference). out may alias x.
cudaError_t loco_rope(__nv_bfloat16* out, const __nv_bfloat16* x, int B, int T, int H, int hd,
                      float theta, int direction, cudaStream_t s);

// ------------------------------------------------------------------ attention
// Supported head dims: multiples of 4 in [4, 128].
int loco_attention_supported(int hd);
// q,out (B,T,NH,hd); k,v (B,T,NKV,hd); lse (B,NH,T) f32 natural log.
cudaError_t loco_attention_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                                   const __nv_bfloat16* k, const __nv_bfloat16* v, int B, int T,
                                   int NH, int NKV, int hd, cudaStream_t s);
// Backward part 1: D(B,NH,T) = rowsum(dout*out) into scratch_D, then dq (B,T,NH,hd).
cudaError_t loco_attention_backward_dq(__nv_bfloat16* dq, float* scratch_D,
                                       const __nv_bfloat16* dout, const __nv_bfloat16* q,
                                       const __nv_bfloat16* k, const __nv_bfloat16* v,
                                       const __nv_bfloat16* out, const float* lse, int B, int T,
                                       int NH, int NKV, int hd, cudaStream_t s);
// Backward part 2 (after part 1, same stream): dk, dv (B,T,NKV,hd), using D from part 1.
cudaError_t loco_attention_backward_dkdv(__nv_bfloat16* dk, __nv_bfloat16* dv,
                                         const float* scratch_D, const __nv_bfloat16* dout,
                                         const __nv_bfloat16* q, const __nv_bfloat16* k,
                                         const __nv_bfloat16* v, const float* lse, int B, int T,
                                         int NH, int NKV, int hd, cudaStream_t s);

// ------------------------------------------------------------------ swiglu
// out = silu(gate) * up
cudaError_t loco_swiglu_forward(__nv_bfloat16* out, const __nv_bfloat16* gate,
                                const __nv_bfloat16* up, size_t n, cudaStream_t s);
// dgate, dup overwritten; they may alias dout.
cudaError_t loco_swiglu_backward(__nv_bfloat16* dgate, __nv_bfloat16* dup,
                                 const __nv_bfloat16* dout, const __nv_bfloat16* gate,
                                 const __nv_bfloat16* up, size_t n, cudaStream_t s);

// ------------------------------------------------------------------ cross entropy
// logits (N,V) bf16, targets (N), losses (N) f32. compute_grad: logits <- dlogits in place.
cudaError_t loco_cross_entropy(float* losses, __nv_bfloat16* logits, const int32_t* targets, int N,
                               int V, float grad_scale, int compute_grad, int* status,
                               cudaStream_t s);

// ------------------------------------------------------------------ f32 vector ops
// double scratch elements loco_sum_squares needs.
size_t loco_sum_squares_scratch(void);
// *result (device double) = Σ x² in double; deterministic two-pass reduction whose block
// count depends only on n. scratch: loco_sum_squares_scratch() doubles.
cudaError_t loco_sum_squares(double* result, const float* x, size_t n, double* scratch,
                             cudaStream_t s);
cudaError_t loco_scale_f32(float* x, float a, size_t n, cudaStream_t s);  // x *= a
// y = a*x + b*y
cudaError_t loco_axpby_f32(float* y, float a, const float* x, float b, size_t n, cudaStream_t s);
// *flag (device int) = 1 if any element is NaN/Inf, else 0 (the launcher clears it first).
cudaError_t loco_all_finite_f32(int* flag, const float* x, size_t n, cudaStream_t s);
// Muon momentum (f32, n elements): m = s*g + beta*m; u = nesterov ? s*g + beta*m : m.
cudaError_t loco_muon_momentum(float* m, float* u, const float* g, float beta, float grad_scale,
                               int nesterov, size_t n, cudaStream_t s);
// Batched Frobenius normalisation (Muon): x holds `batch` matrices of `each` f32 back to
// back; each is divided by (its norm + eps), norms summed in double in a fixed order.
// scratch: loco_frobenius_normalize_scratch(each, batch) doubles.
size_t loco_frobenius_normalize_scratch(size_t each, int batch);
cudaError_t loco_frobenius_normalize(float* x, size_t each, int batch, float eps, double* scratch,
                                     cudaStream_t s);
// *sum (device u64) = Σ_i mix(word_i, i) mod 2^64 over the 8-byte words of `bytes` bytes
// (the last partial word zero-padded), mix = splitmix64 finaliser of word ^ (i · golden);
// the launcher clears *sum first. Addition mod 2^64 is order-free: deterministic.
cudaError_t loco_fingerprint(unsigned long long* sum, const void* data, size_t bytes,
                             cudaStream_t s);
// AdamW, formula of include/loco/ops/adamw.hpp, fp32 with IEEE division and sqrt.
cudaError_t loco_adamw_f32(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                           float beta1, float beta2, float eps, float weight_decay, float bc1,
                           float bc2, float grad_scale, cudaStream_t s);

// Multi-tensor AdamW: the update above for each of num_tensors rows of `table` (u64 words:
// element offset, count, weight decay as f32 bits) in one launch; hyper (device f32: lr, b1,
// b2, eps, bc1, bc2, grad_scale); stats (device, may be NULL: include/loco/ops/step_stats.hpp)
// replaces grad_scale by its clip scale and skips everything on its non-finite flag.
// max_numel (the largest row) sizes the grid.
cudaError_t loco_adamw_multi_f32(float* param, const float* grad, float* m, float* v,
                                 const unsigned long long* table, size_t num_tensors,
                                 size_t max_numel, const float* hyper, const int32_t* stats,
                                 cudaStream_t s);

// ------------------------------------------------------------------ step statistics
// (include/loco/ops/step_stats.hpp; stats: 8 device int32 words)
// stats.loss (f64) += Σ losses / n, a fixed-order reduction in double.
cudaError_t loco_accumulate_loss(int32_t* stats, const float* losses, size_t n, cudaStream_t s);
// stats Σg² (f64) = Σ grads² (loco_sum_squares), then clip scale and non-finite flag for
// max_norm. scratch: loco_sum_squares_scratch() doubles.
cudaError_t loco_clip_grad_norm(int32_t* stats, const float* grads, size_t n, double max_norm,
                                double* scratch, cudaStream_t s);

// ------------------------------------------------------------------ compression primitives
// (include/loco/ops/chunk_topk.hpp is the CPU reference; kernels/compress_*.cu are built
// without --use_fast_math and use _rn intrinsics: these results must match it bit for bit.)
// Flat indices are uint32. `chunks`: num_chunks rows of 8 int32 (ops::pack_chunk_row).
// e = fl(fl(beta*e) + delta), never fused.
cudaError_t loco_ef_accumulate(float* e, const float* delta, float beta, size_t n, cudaStream_t s);
// Per chunk: the k largest |x| (IEEE-bit order, NaN above inf, ties to the lower offset);
// offsets ascending and their flat indices at [kept_start, kept_start + k). max_chunk = the
// largest h*w in the table (sizes the shared-memory cache).
cudaError_t loco_chunked_topk(uint32_t* offsets, uint32_t* flat, const float* x,
                              const int32_t* chunks, size_t num_chunks, uint32_t max_chunk,
                              cudaStream_t s);
// values[i] = x[flat[i]]
cudaError_t loco_gather_f32(float* values, const float* x, const uint32_t* flat, size_t n,
                            cudaStream_t s);
// x[flat[i]] -= values[i]  (distinct indices)
cudaError_t loco_scatter_subtract_f32(float* x, const uint32_t* flat, const float* values, size_t n,
                                      cudaStream_t s);
// sum[flat[i]] += values[i]; count[flat[i]] += 1 when count != NULL (distinct indices)
cudaError_t loco_scatter_accumulate_f32(float* sum, int32_t* count, const uint32_t* flat,
                                        const float* values, size_t n, cudaStream_t s);
// out = sum / count (0 where count == 0), or sum / divisor when count == NULL
cudaError_t loco_divide_f32(float* out, const float* sum, const int32_t* count, float divisor,
                            size_t n, cudaStream_t s);

// The quantiser (include/loco/ops/compress_quantize.hpp): value_bits 32/16 code the bits of
// each value; 8/4/2 compute each tensor's statistics in the segment-blocked order, codes,
// tables and D (values overwritten). tensors: (num_tensors, 6) i32; segments: (num_segments,
// 3) i32. scratch: loco_quantize_values_scratch(...) bytes.
size_t loco_quantize_values_scratch(size_t num_tensors, size_t num_segments, int value_bits);
cudaError_t loco_quantize_values(uint32_t* codes, float* values, float* tables, size_t total_kept,
                                 const int32_t* tensors, size_t num_tensors,
                                 const int32_t* segments, size_t num_segments, int value_bits,
                                 void* scratch, cudaStream_t s);
// The payload packer (include/loco/ops/compress_pack.hpp): tensor sections into payload
// (payload_bytes long, zeroed from first_byte on first), layout = (index bytes per tensor,
// total bytes as u64). tensors: (num_tensors, 8) i32; chunks: (num_chunks, 4) i32;
// index_coding: 0 auto, 1 fixed, 2 rice, 3 bitmap. max_chunks_per_tensor / max_value_bytes
// size the launches. scratch: loco_pack_sections_scratch(...) bytes.
size_t loco_pack_sections_scratch(size_t num_tensors, size_t num_chunks);
cudaError_t loco_pack_sections(uint32_t* payload, size_t payload_bytes, uint32_t* layout,
                               const uint32_t* offsets, const uint32_t* codes, const float* tables,
                               const int32_t* tensors, size_t num_tensors, const int32_t* chunks,
                               size_t num_chunks, size_t max_chunks_per_tensor,
                               size_t max_value_bytes, int index_coding, int implied,
                               int explicit_counts, int value_bits, unsigned long long first_byte,
                               void* scratch, cudaStream_t s);

// Succeeds when this binary holds kernel code the current device can run (built for its
// architecture); used by cuda_device_usable().
cudaError_t loco_kernels_probe(void);

}  // extern "C"
