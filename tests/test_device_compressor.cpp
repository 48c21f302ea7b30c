// The backend-driven compression pipeline (loco/compress/device_compressor.hpp) on the CPU
// backend: bit for bit the host pipeline, and the backend's compression primitives against
// brute force. tests/gpu/gpu_test_compress.cpp runs the same checks on CUDA.
#include <cstring>
#include <string>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/compress/wire.hpp"
#include "support/catch.hpp"
#include "support/device_compress_checks.hpp"

using namespace loco;

TEST_CASE("CPU backend compression primitives match brute force, bit for bit", "[compress]") {
  CpuBackend cpu;
  testing::check_compression_primitives(cpu);
}

TEST_CASE("device pipeline on the CPU backend = host pipeline: payload, EF, aggregate",
          "[compress]") {
  CpuBackend cpu;
  testing::check_device_pipeline_matches_host(cpu);
}

TEST_CASE("CPU backend compression primitives reject bad indices and tables", "[compress]") {
  CpuBackend cpu;
  Buf x = cpu.alloc(10, DType::F32), v = cpu.alloc(2, DType::F32), idx = cpu.alloc(2, DType::I32);
  const int32_t bad[2] = {3, 10};
  cpu.upload(idx, bad);
  CHECK_THROWS_WITH(cpu.gather(v, x, idx), LOCO_CONTAINS("flat[1] = 10 is outside [0, 10)"));
  CHECK_THROWS_WITH(cpu.scatter_subtract(x, idx, v), LOCO_CONTAINS("scatter_subtract"));
  Buf table = cpu.alloc(ops::kChunkRowInts, DType::I32);
  int32_t row[ops::kChunkRowInts];
  ops::pack_chunk_row(ops::ChunkRow{8, 4, 2, 4, 1, 0}, row);  // rows 8..15: past x (10)
  cpu.upload(table, row);
  CHECK_THROWS_WITH(cpu.chunked_topk(idx, idx, x, table, 8), LOCO_CONTAINS("reaches past x"));
  CHECK_THROWS_WITH(cpu.divide(x, x, Buf{}, 0.0f), LOCO_CONTAINS("divisor is 0"));
  for (Buf* b : {&x, &v, &idx, &table}) cpu.release(*b);
}

TEST_CASE("device pipeline refuses a pseudo-gradient of the wrong size", "[compress]") {
  CpuBackend cpu;
  compress::Settings st;
  st.selector = compress::Selector::ChunkedTopK;
  compress::DeviceCompressor dc(compress::make_plan(testing::awkward_shapes(), st), cpu);
  Buf wrong = cpu.alloc(dc.plan().total + 1, DType::F32);
  CHECK_THROWS_WITH(dc.compress(wrong, 0), LOCO_CONTAINS("must be f32 with"));
  cpu.release(wrong);
}

TEST_CASE("DeviceAggregator::add_all = add one by one; a bad payload names its index",
          "[compress]") {
  CpuBackend cpu;
  compress::Settings st;
  st.selector = compress::Selector::ChunkedTopK;
  st.quantizer = compress::Quantizer::Q2;
  st.error_feedback = true;
  const compress::Plan plan = compress::make_plan(testing::awkward_shapes(), st);
  compress::Compressor host(plan);
  std::vector<std::vector<uint8_t>> payloads;
  for (uint64_t step = 0; step < 3; ++step) {
    const auto d = testing::compress_test_data(plan.total, 500 + step, false);
    payloads.push_back(host.compress(d.data(), step));
  }
  // decode_sparse yields what decode() yields, in the same order.
  std::vector<uint32_t> flat;
  std::vector<float> values;
  compress::decode_sparse(plan, payloads[1].data(), payloads[1].size(), flat, values);
  size_t at = 0, mismatches = 0;
  compress::decode(plan, payloads[1].data(), payloads[1].size(), [&](size_t i, float v) {
    mismatches += at >= flat.size() || flat[at] != i || values[at] != v;
    ++at;
  });
  CHECK(at == flat.size());
  CHECK(mismatches == 0);

  compress::DeviceAggregator one_by_one(plan, compress::Aggregation::MeanSelected, cpu),
      together(plan, compress::Aggregation::MeanSelected, cpu);
  one_by_one.reset();
  together.reset();
  std::vector<compress::DeviceAggregator::Payload> all;
  for (const auto& p : payloads) {
    one_by_one.add(p.data(), p.size());
    all.push_back({p.data(), p.size()});
  }
  together.add_all(all);
  Buf a = cpu.alloc(plan.total, DType::F32), b = cpu.alloc(plan.total, DType::F32);
  one_by_one.finish(a, 3);
  together.finish(b, 3);
  CHECK(std::memcmp(a.data, b.data, a.bytes()) == 0);

  // Corrupt the middle payload: PayloadError index 1, and nothing was accumulated.
  std::vector<uint8_t> bad = payloads[1];
  bad[bad.size() / 2] ^= 0x40;
  all[1] = {bad.data(), bad.size()};
  together.reset();
  try {
    together.add_all(all);
    FAIL("a corrupt payload was accepted");
  } catch (const compress::PayloadError& e) {
    CHECK(e.index == 1);
    CHECK(std::string(e.what()).find("checksum") != std::string::npos);
  }
  together.finish(b, 3);
  std::vector<float> zeros(plan.total, 0.0f);
  CHECK(std::memcmp(b.data, zeros.data(), b.bytes()) == 0);
  cpu.release(a);
  cpu.release(b);
}
