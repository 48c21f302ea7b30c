// The compression pipeline run where the pseudo-gradient lives (GPU memory on CUDA, host
// memory on the CPU backend), through the backend's compression primitives: error feedback
// over every element, chunked top-k, gather, the quantiser (statistics, tables, codes, D),
// the EF update and the bit packing of the payload's sections all run on the backend. Only
// the packed payload crosses to the host (plus one word per tensor: the index stream sizes),
// where its 48-byte header and checksum are written (compress::seal_payload).
//
// Results are bitwise the host pipeline's (Compressor / Aggregator): the same payload bytes,
// the same error-feedback state, the same aggregate, on every backend
// (tests/test_device_compressor.cpp on the CPU, tests/gpu/gpu_test_compress.cpp on CUDA).
// The quantiser's sums follow one blocked order that the host pipeline uses too
// (loco/ops/compress_quantize.hpp); the packer is a second implementation of the wire format
// (loco/ops/compress_pack.hpp) held to the host encoder's bytes by those tests.
//
// Where each selector runs: chunked_topk on the backend; none and random_k need no data (the
// offsets come from the plan or the key: computed on the host and uploaded); global_topk
// downloads the buffer and selects on the host (a whole-buffer threshold; no device kernel
// yet), then quantises and packs on the backend like the others.
// Buffers are limited to 2^32 − 1 elements (flat indices are uint32).
#pragma once
#include <cstdint>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/owned_buf.hpp"
#include "loco/compress/compress.hpp"
#include "loco/compress/wire.hpp"

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
  // Wall time of the last compress() by phase, for `loco bench --compression`. Filled only
  // with phase timing on: the backend is then synchronised at every phase boundary (which
  // costs a little), otherwise the phases overlap and only the whole call means something.
  struct Timings {
    double select_s = 0;     // EF accumulate + selection (+ offsets from the host)
    double gather_s = 0;     // kept values gathered
    double quantize_s = 0;   // statistics, tables, codes, D
    double ef_update_s = 0;  // e ← t − D at the kept elements
    double pack_s = 0;       // sections packed, downloaded, header and checksum on the host
  };
  void set_phase_timing(bool on) { phase_timing_ = on; }
  const Timings& timings() const { return timings_; }

  bool has_error_feedback() const { return !error_.empty(); }
  Buf error() const { return error_; }  // the accumulator, backend memory (empty without EF)
  std::vector<float> download_error() const;
  // Restores the accumulator (a checkpoint resume); the size must be plan().total.
  void set_error(const std::vector<float>& e);
  double error_norm() const;  // ‖e‖, 0 without error feedback

 private:
  void select_on_host(const float* x_host, uint64_t key);
  void upload_flat_indices();
  // Builds the quantiser's and packer's layouts for these per-chunk starts and uploads them
  // (once for the selectors whose counts are fixed; every call for global_topk).
  void set_layouts(const std::vector<uint64_t>& chunk_start);
  Buf grown(OwnedBuf& buf, size_t numel, DType dtype);  // buf, reallocated when too small

  Plan plan_;
  Backend& backend_;
  bool phase_timing_ = false;
  // Backend memory: EF accumulator, chunk table (chunked_topk), kept offsets / flat indices /
  // values / codes, quantiser tables, the layout tables, the packed payload and its sizes.
  OwnedBuf error_, chunk_table_, offsets_, flat_, values_, codes_, tables_;
  OwnedBuf quant_tensors_, quant_segments_, pack_tensors_, pack_chunks_, payload_dev_, layout_dev_;
  struct Views {  // the current rows of the layout tables above
    Buf quant_tensors, quant_segments, pack_tensors, pack_chunks;
  } views_;
  QuantLayout quant_;
  PackLayout pack_;
  size_t kept_ = 0;  // kept elements of the current layout
  Selection sel_;    // host selections (none, random_k, global_topk)
  std::vector<uint8_t> payload_;
  std::vector<uint32_t> layout_host_;
  EncodeStats stats_;
  Timings timings_;
  std::vector<uint32_t> host_flat_;
  std::vector<float> host_dense_;  // global_topk only
  // rules = templar with a b-bit quantiser: the kept values, codes and tables on the host.
  std::vector<float> host_values_, host_tables_;
  std::vector<uint32_t> host_codes_;
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

  OwnedBuf sum_, count_, flat_, values_;
  std::vector<std::vector<uint32_t>> host_flat_;  // one per payload being added
  std::vector<std::vector<float>> host_values_;
  int added_ = 0;
  size_t pending_ = 0;  // rules = templar: payloads decoded, waiting for finish() to clip them
};

}  // namespace loco::compress
