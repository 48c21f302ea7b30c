// The fp32 reference backend: host memory, OpenBLAS GEMMs, OpenMP loops. Each op forwards to
// the float instantiation of the templates in loco/ops/; Backend's public ops have checked
// dtypes and sizes, and the CPU checks the index values it reads (token ids, flat indices,
// tables) before it uses them.
#pragma once
#include <string>

#include "loco/backend/backend.hpp"

namespace loco {

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::F32; }

  Buf alloc(size_t numel, DType dtype) override;  // zeroed, 64-byte aligned
  void release(Buf& buf) override;
  MemSpace memory_space() const override { return MemSpace::Host; }

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
};

}  // namespace loco
