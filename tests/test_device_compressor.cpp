// The backend-driven compression pipeline (loco/compress/device_compressor.hpp) on the CPU
// backend: bit for bit the host pipeline, and the backend's compression primitives against
// brute force. tests/gpu/gpu_test_compress.cpp runs the same checks on CUDA.
#include <vector>

#include "loco/backend/cpu_backend.hpp"
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
