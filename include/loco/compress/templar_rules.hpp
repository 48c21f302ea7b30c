// The compression rules of the SparseLoCo reference implementation (tplr-ai/templar,
// src/tplr/compress.py), offered as `distributed.compression.rules = "templar"` so that runs
// can reproduce its numbers. loco's own rules (compress.hpp) differ from it in three places,
// each of which changes what is sent and what is averaged:
//
//  1. k per chunk. loco scales k with the chunk's size (k(C) = round(topk·C/chunk²)), so every
//     chunk has the same density. The reference keeps an absolute k per chunk:
//        k = min(topk, C), at least 2, rounded down to even (its 12-bit index packing wants
//        pairs), and never more than C,
//     so a chunk of at most topk elements is sent whole: with topk = 64 and 64-element 1-D
//     chunks every norm gain goes dense. 1-D tensors are also cut like one side of a matrix:
//     into chunks of the largest divisor of their length that is <= chunk (loco: chunks of
//     `chunk` with a shorter last one).
//
//  2. The level rule of the b-bit quantisers (L = 2^b levels, per tensor over its kept values
//     v₁..vₙ). Everything in fp32 as the reference computes it on the GPU:
//        shift = fp32(mean(v));  c = v − shift  (fp32);
//        σ = ‖c‖ / sqrt(n − 1)   (the sample deviation; n = 1 gives 0);
//        scale = 6σ / L, replaced by 1 when it is 0 or not finite;
//        q = clamp(round_half_even(c / scale + L/2), 0, L − 1);
//        table[q] = fp32(mean of the c at level q) + shift   (an empty level: shift).
//     For 2 bits the level edges sit at c = −2.25σ, −0.75σ, +0.75σ (loco floors, with edges at
//     −1.5σ, 0, +1.5σ of the population σ). The table is always sent as L level values.
//
//  3. Aggregation: before averaging, every peer's decoded values of a tensor are scaled by
//        min(1, m / (‖v_peer‖ + 1e-8))
//     where m is the median of the peers' norms for that tensor (for an even number of
//     peers the lower of the two middle values, as torch.median returns). One outlier peer
//     cannot dominate the mean; the others are left (almost) as they are.
//
// The wire format is loco's either way (the reference ships uint8 codes and 12-bit indices);
// only the selection, the values and the aggregate follow the reference.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace loco::compress {

struct Plan;
struct QuantLayout;

// Rule 1: kept elements of a chunk of C elements.
uint32_t templar_chunk_k(uint32_t chunk_size, int topk);

// Rule 2, for one tensor's n kept values with L levels: writes the levels to `code`, the L
// table entries to `table` and the dequantised values over `v` (in place).
void templar_quantize_tensor(float* v, size_t n, int L, uint32_t* code, float* table);

// Rule 2 over a whole selection laid out by quant_layout (rules = templar: every tensor with
// kept values has L table entries at its table_begin): what quantize_gathered and the device
// compressor run, so that both send the same bytes.
void templar_quantize_gathered(const QuantLayout& layout, int L, float* values, uint32_t* codes,
                               float* tables);

// Rule 3: values[r] are the decoded values of payload r (flat[r] their flat indices, tensors
// in plan order, as decode_sparse yields them). Scales them in place.
void clip_to_median_norm(const Plan& plan, const std::vector<std::vector<uint32_t>>& flat,
                         std::vector<std::vector<float>>& values, size_t payloads);

}  // namespace loco::compress
