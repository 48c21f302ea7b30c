// OwnedBuf and the classes that hold their memory in it: a constructor that fails at its
// k-th allocation frees the k-1 it made (no leak on a partial failure), and a finished object
// frees everything when it goes. A CPU backend that counts live allocations and can be told
// to fail one stands in for an out-of-memory device.
#include <memory>
#include <stdexcept>
#include <utility>

#include "loco/backend/cpu_backend.hpp"
#include "loco/backend/owned_buf.hpp"
#include "loco/compress/compress.hpp"
#include "loco/compress/device_compressor.hpp"
#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/model/llama.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/optim/muon.hpp"
#include "loco/optim/optimizer.hpp"
#include "support/catch.hpp"
#include "support/device_compress_checks.hpp"

using namespace loco;

namespace {

class CountingBackend final : public CpuBackend {
 public:
  int live = 0;     // allocations not yet released
  int made = 0;     // allocations so far
  int fail_at = 0;  // the allocation (1-based) that throws; 0: none
  Buf alloc(size_t numel, DType dtype) override {
    if (++made == fail_at) throw Error("counting backend: allocation " + std::to_string(made));
    Buf b = CpuBackend::alloc(numel, dtype);
    if (b.data != nullptr) ++live;
    return b;
  }
  void release(Buf& buf) override {
    if (buf.data != nullptr) --live;
    CpuBackend::release(buf);
  }
};

ModelConfig small_model() {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 16;
  m.n_layers = 2;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.d_ff = 24;
  m.max_seq_len = 8;
  return m;
}

// Builds with every allocation failing in turn: each failure throws and leaves nothing live;
// the one that succeeds frees everything it made when destroyed. Returns the allocations a
// successful build makes.
template <typename Make>
int check_no_leak(Make&& make) {
  CountingBackend probe;
  { auto object = make(probe); }
  const int allocations = probe.made;
  CHECK(probe.live == 0);
  for (int k = 1; k <= allocations; ++k) {
    CountingBackend be;
    be.fail_at = k;
    INFO("allocation " << k << " of " << allocations << " fails");
    CHECK_THROWS_AS(make(be), Error);
    CHECK(be.live == 0);
  }
  return allocations;
}

}  // namespace

TEST_CASE("OwnedBuf releases once, moves ownership and frees on reset", "[memory]") {
  CountingBackend be;
  {
    OwnedBuf a(be, 10, DType::F32);
    CHECK(be.live == 1);
    CHECK(a->numel == 10);
    CHECK(a.get().space == MemSpace::Host);
    OwnedBuf b = std::move(a);
    CHECK(a.empty());
    CHECK(be.live == 1);
    b = OwnedBuf(be, 3, DType::I32);  // the old buffer goes
    CHECK(be.live == 1);
    CHECK(b->dtype == DType::I32);
    b.reset();
    CHECK(be.live == 0);
    b.reset();  // twice is harmless
  }
  CHECK(be.live == 0);
}

TEST_CASE("constructors free what they allocated when a later allocation fails", "[memory]") {
  const ModelConfig model = small_model();
  const ParamLayout layout = llama_param_layout(model);

  SECTION("Muon") {
    OptimizerConfig cfg;
    cfg.type = "muon";
    const int n =
        check_no_leak([&](Backend& be) { return std::make_unique<Muon>(cfg, layout, be); });
    CHECK(n > 1);
  }
  SECTION("AdamW") {
    OptimizerConfig cfg;
    const int n =
        check_no_leak([&](Backend& be) { return std::make_unique<AdamW>(cfg, layout, be); });
    CHECK(n > 1);
  }
  SECTION("LlamaModel with its activations") {
    const int n = check_no_leak([&](Backend& be) {
      auto m = std::make_unique<LlamaModel>(model, be);
      std::vector<int32_t> tokens(2 * 8, 1);
      m->forward_loss(tokens.data(), tokens.data(), 2, 8);  // allocates the activations
      return m;
    });
    CHECK(n > 1);
  }
  SECTION("DeviceCompressor and DeviceAggregator") {
    using namespace compress;
    const Plan plan = make_plan(testing::awkward_shapes(),
                                Settings{Selector::ChunkedTopK, Quantizer::Q2, IndexCoding::Auto,
                                         Aggregation::MeanSelected, 64, 64, true, 0.9f, 7});
    check_no_leak([&](Backend& be) { return std::make_unique<DeviceCompressor>(plan, be); });
    check_no_leak([&](Backend& be) {
      return std::make_unique<DeviceAggregator>(plan, Aggregation::MeanSelected, be);
    });
  }
}
