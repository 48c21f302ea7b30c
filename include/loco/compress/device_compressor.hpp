// The compression pipeline run where the pseudo-gradient lives (GPU memory on CUDA, host
// memory on the CPU backend), through the backend's compression primitives. The dense work
// (error feedback over every element, chunked top-k, gather, the EF update, the receive
// side's accumulation and division) stays on the backend; only the kept elements (density
// topk/chunk², 1/64 by default) cross to the host, where the O(kept) steps run: the
// quantiser's statistics and tables and the bit packing of the wire format (compress.hpp,
// wire.hpp).
//
// Results are bitwise the host pipeline's (Compressor / Aggregator): the same payload bytes,
// the same error-feedback state, the same aggregate, on every backend
// (tests/test_device_compressor.cpp on the CPU, tests/gpu/gpu_test_compress.cpp on CUDA).
//
// Where each selector runs: chunked_topk on the backend; none and random_k need no data (the
// offsets come from the plan or the key) and are computed on the host; global_topk downloads
// the buffer and selects on the host (a whole-buffer threshold; no device kernel yet).
// Buffers are limited to 2^32 − 1 elements (flat indices are uint32).
#pragma once
#include <cstdint>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/compress/compress.hpp"

namespace loco::compress {

class DeviceCompressor {
 public:
  DeviceCompressor(Plan plan, Backend& backend);
  ~DeviceCompressor();
  DeviceCompressor(const DeviceCompressor&) = delete;
  DeviceCompressor& operator=(const DeviceCompressor&) = delete;

  const Plan& plan() const { return plan_; }
  // EF → select → quantise → EF update → pack, as Compressor::compress, for an F32 `delta` of
  // plan().total elements in backend memory. The bytes stay valid until the next call.
  const std::vector<uint8_t>& compress(Buf delta, uint64_t step);
  const EncodeStats& stats() const { return stats_; }
  // Wall time of the last compress() by phase (the backend is synchronised at each phase
  // boundary by the transfers that end it), for `loco bench --compression`.
  struct Timings {
    double select_s = 0;     // EF accumulate + selection + offsets to the host
    double gather_s = 0;     // kept values gathered and downloaded
    double quantize_s = 0;   // host: statistics, tables, codes
    double ef_update_s = 0;  // D uploaded, e ← t − D at the kept elements
    double pack_s = 0;       // host: wire format
  };
  const Timings& timings() const { return timings_; }
  const Selection& selection() const { return sel_; }
  const Quantized& quantized() const { return q_; }

  bool has_error_feedback() const { return !error_.empty(); }
  Buf error() const { return error_; }  // the accumulator, backend memory (empty without EF)
  std::vector<float> download_error() const;
  // Restores the accumulator (a checkpoint resume); the size must be plan().total.
  void set_error(const std::vector<float>& e);
  double error_norm() const;  // ‖e‖, 0 without error feedback

 private:
  void select_on_host(const float* x_host, uint64_t key);
  void upload_flat_indices();

  Plan plan_;
  Backend& backend_;
  Buf error_, chunk_table_, offsets_, flat_, values_;  // backend memory
  Selection sel_;
  Quantized q_;
  std::vector<uint8_t> payload_;
  EncodeStats stats_;
  Timings timings_;
  std::vector<uint32_t> host_flat_;
  std::vector<float> host_dense_;  // global_topk only
};

// A malformed payload among several (DeviceAggregator::add_all): `index` says which.
class PayloadError : public Error {
 public:
  PayloadError(size_t index, const std::string& what) : Error(what), index(index) {}
  size_t index;
};

// Receive side: sums decoded payloads in the order they are added, then divides (the rules
// of Aggregator), in backend memory. Each payload is decoded and validated on the host into
// (flat index, value) pairs, which are uploaded and scattered (under rules = templar in
// finish(), after every payload's values are clipped to the median norm).
class DeviceAggregator {
 public:
  DeviceAggregator(const Plan& plan, Aggregation how, Backend& backend);
  ~DeviceAggregator();
  DeviceAggregator(const DeviceAggregator&) = delete;
  DeviceAggregator& operator=(const DeviceAggregator&) = delete;

  void reset();
  // loco::Error when the payload is malformed (see wire.hpp); nothing is accumulated then.
  void add(const uint8_t* payload, size_t bytes);
  // Several payloads, accumulated in the order given (the same sums as add() one by one);
  // they are decoded and validated on the host in parallel first, so a malformed one throws
  // PayloadError (which one) before anything is accumulated.
  struct Payload {
    const uint8_t* data = nullptr;
    size_t bytes = 0;
  };
  void add_all(const std::vector<Payload>& payloads);
  // out (F32, plan.total, backend memory) = the aggregate; `workers` = K (mean_all).
  void finish(Buf out, int workers);

 private:
  const Plan& plan_;
  Aggregation how_;
  Backend& backend_;
  void scatter(const std::vector<uint32_t>& flat, const std::vector<float>& values);

  Buf sum_, count_, flat_, values_;
  std::vector<std::vector<uint32_t>> host_flat_;  // one per payload being added
  std::vector<std::vector<float>> host_values_;
  int added_ = 0;
  size_t pending_ = 0;  // rules = templar: payloads decoded, waiting for finish() to clip them
};

}  // namespace loco::compress
