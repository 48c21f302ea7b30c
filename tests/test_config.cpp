// Config: defaults round trip, every class of error names source, path and value,
// --set overrides, load_config file handling and data-path resolution.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

using loco::Config;
using loco::config_from_json;
using loco::config_to_json;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using loco::testing::TempDir;

Config from(const json& j) { return config_from_json(j, "cfg.json"); }

// A fresh temporary directory, removed at scope exit.

// Changes the working directory for the scope.
struct ChangeDir {
  fs::path saved;
  explicit ChangeDir(const fs::path& to) : saved(fs::current_path()) { fs::current_path(to); }
  ~ChangeDir() { fs::current_path(saved); }
};

// Sets (or unsets, with nullptr) an environment variable for the scope.
struct SetEnv {
  std::string name;
  std::string old;
  bool had;
  SetEnv(const char* n, const char* value) : name(n) {
    const char* o = std::getenv(n);
    had = o != nullptr;
    if (had) old = o;
    if (value)
      ::setenv(n, value, 1);
    else
      ::unsetenv(n);
  }
  ~SetEnv() {
    if (had)
      ::setenv(name.c_str(), old.c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

// A config document whose data files exist (absolute paths in `dir`).
json with_data(const TempDir& dir) {
  json j = json::object();
  j["data"]["train"] = dir.write("shards/train.bin", "x");
  j["data"]["val"] = dir.write("shards/val.bin", "x");
  return j;
}

}  // namespace

// ------------------------------------------------------------------ defaults, round trip

TEST_CASE("defaults: every key is written and reads back unchanged", "[config]") {
  const Config d;
  const json j = config_to_json(d);
  // Every key of every section is present (catches a key missing from the field table).
  const json expected_keys = {
      {"name", nullptr},
      {"backend", nullptr},
      {"model",
       {"vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len",
        "rope_theta", "norm_eps", "tie_embeddings", "init_std", "init_from"}},
      {"data", {"train", "val", "extra_val", "tokenizer", "on_resume_change"}},
      {"optimizer",
       {"type", "lr", "beta1", "beta2", "eps", "weight_decay", "decay_embeddings", "grad_clip",
        "muon_lr", "muon_momentum", "muon_nesterov", "muon_weight_decay", "ns_steps", "ns_a",
        "ns_b", "ns_c", "muon_scale"}},
      {"schedule",
       {"type", "warmup_steps", "min_lr_ratio", "decay_fraction", "cooldown_steps",
        "const_lr_ratio", "anneal_steps"}},
      {"training",
       {"steps", "micro_batch", "grad_accum", "seq_len", "eval_interval", "eval_batches",
        "log_interval", "seed", "nan_policy"}},
      {"output", {"dir"}},
      {"distributed", {"method", "replica_size", "timeout_s", "outer", "compression", "link"}},
      {"checkpoint", {"interval", "at_sync", "keep_last", "dir", "storage"}},
  };
  REQUIRE(j.size() == expected_keys.size());
  for (auto it = expected_keys.begin(); it != expected_keys.end(); ++it) {
    INFO(it.key());
    REQUIRE(j.contains(it.key()));
    if (it->is_array()) {
      CHECK(j[it.key()].size() == it->size());
      for (const auto& k : *it) CHECK(j[it.key()].contains(k.get<std::string>()));
    }
  }
  CHECK(j["model"]["d_model"] == 128);
  CHECK(j["optimizer"]["lr"] == 1e-3);
  CHECK(j["training"]["seed"] == 1234u);
  CHECK(j["data"]["train"] == "data/kjv-train.bin");

  const Config back = from(j);
  CHECK(config_to_json(back) == j);
  // An empty document is all defaults.
  CHECK(config_to_json(from(json::object())) == j);
}

TEST_CASE("a config with every field changed round-trips", "[config]") {
  Config c;
  c.name = "exp";
  c.backend = "auto";
  c.model = {512, 96, 3, 6, 3, 200, 64, 5e5, 1e-6, true, 0.01, "hf/dir"};
  c.data = {"a/train-*.bin", {}, "", {{"held_out", "h/val.bin"}}, "byte", "restart"};
  c.optimizer = {"adamw", 3e-4, 0.8, 0.99, 1e-9, 0.0, true, 0.0};
  c.schedule = {"infinite", 5, 0.05, 0.3, 7, 0.4, 9};
  c.training = {100, 4, 2, 32, 0, 3, 10, 18446744073709551615ull};
  c.output.dir = "runs/x";
  const json j = config_to_json(c);
  const Config b = from(j);
  CHECK(config_to_json(b) == j);
  CHECK(b.name == "exp");
  CHECK(b.backend == "auto");
  CHECK(b.model.vocab_size == 512);
  CHECK(b.model.d_model == 96);
  CHECK(b.model.n_layers == 3);
  CHECK(b.model.n_heads == 6);
  CHECK(b.model.n_kv_heads == 3);
  CHECK(b.model.d_ff == 200);
  CHECK(b.model.max_seq_len == 64);
  CHECK(b.model.rope_theta == 5e5);
  CHECK(b.model.norm_eps == 1e-6);
  CHECK(b.model.tie_embeddings);
  CHECK(b.model.init_std == 0.01);
  CHECK(b.model.init_from == "hf/dir");
  CHECK(b.data.train == "a/train-*.bin");
  CHECK(b.data.val.empty());
  CHECK(b.data.on_resume_change == "restart");
  CHECK(b.optimizer.lr == 3e-4);
  CHECK(b.optimizer.beta1 == 0.8);
  CHECK(b.optimizer.beta2 == 0.99);
  CHECK(b.optimizer.eps == 1e-9);
  CHECK(b.optimizer.weight_decay == 0.0);
  CHECK(b.optimizer.decay_embeddings);
  CHECK(b.optimizer.grad_clip == 0.0);
  CHECK(b.schedule.type == "infinite");
  CHECK(b.schedule.warmup_steps == 5);
  CHECK(b.schedule.min_lr_ratio == 0.05);
  CHECK(b.schedule.decay_fraction == 0.3);
  CHECK(b.schedule.cooldown_steps == 7);
  CHECK(b.schedule.const_lr_ratio == 0.4);
  CHECK(b.schedule.anneal_steps == 9);
  CHECK(b.training.steps == 100);
  CHECK(b.training.micro_batch == 4);
  CHECK(b.training.grad_accum == 2);
  CHECK(b.training.seq_len == 32);
  CHECK(b.training.eval_interval == 0);
  CHECK(b.training.eval_batches == 3);
  CHECK(b.training.log_interval == 10);
  CHECK(b.training.seed == 18446744073709551615ull);
  CHECK(b.output.dir == "runs/x");
}

TEST_CASE("missing sections and keys take the defaults", "[config]") {
  const Config c = from(json::parse(R"({"model": {"d_model": 256}, "training": {}})"));
  CHECK(c.model.d_model == 256);
  CHECK(c.model.n_heads == 4);
  CHECK(c.training.steps == 600);
  CHECK(c.optimizer.lr == 1e-3);
  CHECK(c.schedule.type == "cosine");
}

TEST_CASE("integral numbers written as floats are accepted for integer keys", "[config]") {
  const Config c = from(json::parse(R"({"training": {"steps": 1e3, "seed": 7.0}})"));
  CHECK(c.training.steps == 1000);
  CHECK(c.training.seed == 7u);
  // Doubles accept integers.
  CHECK(from(json::parse(R"({"optimizer": {"lr": 1}})")).optimizer.lr == 1.0);
}

// ------------------------------------------------------------------ unknown keys

TEST_CASE("unknown keys name the path and suggest the nearest key", "[config]") {
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": {"n_head": 4}})")),
                      LOCO_CONTAINS("cfg.json: unknown key \"model.n_head\"") &&
                          LOCO_CONTAINS("did you mean \"model.n_heads\"?"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"modle": {}})")),
      LOCO_CONTAINS("unknown key \"modle\"") && LOCO_CONTAINS("did you mean \"model\"?"));
  // Right name, wrong section.
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"lr": 0.1}})")),
      LOCO_CONTAINS("unknown key \"model.lr\"") && LOCO_CONTAINS("did you mean \"optimizer.lr\"?"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"steps": 10})")),
                      LOCO_CONTAINS("did you mean \"training.steps\"?"));
  // Nothing close: no suggestion, but the allowed keys are listed.
  REQUIRE_THROWS_WITH(from(json::parse(R"({"output": {"zzzzzzzz": 1}})")),
                      LOCO_CONTAINS("unknown key \"output.zzzzzzzz\"; keys of \"output\": dir") &&
                          !LOCO_CONTAINS("did you mean"));
}

// ------------------------------------------------------------------ wrong types

TEST_CASE("wrong types name the path, what was expected and the value", "[config]") {
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": {"d_model": "abc"}})")),
                      LOCO_CONTAINS("cfg.json: model.d_model: expected an integer, got \"abc\""));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": {"d_model": 1.5}})")),
                      LOCO_CONTAINS("model.d_model: expected an integer, got 1.5"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": {"d_model": true}})")),
                      LOCO_CONTAINS("model.d_model: expected an integer, got true"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"d_model": 3000000000}})")),
      LOCO_CONTAINS("model.d_model = 3000000000: out of range") && LOCO_CONTAINS("2147483647"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"training": {"steps": -3000000000}})")),
                      LOCO_CONTAINS("training.steps = -3000000000: out of range"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"training": {"steps": 1e10}})")),
                      LOCO_CONTAINS("training.steps = 10000000000.0: out of range"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"tie_embeddings": 1}})")),
      LOCO_CONTAINS("model.tie_embeddings: expected a boolean") && LOCO_CONTAINS("got 1"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"tie_embeddings": "true"}})")),
      LOCO_CONTAINS("model.tie_embeddings: expected a boolean") && LOCO_CONTAINS("got \"true\""));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"optimizer": {"lr": "fast"}})")),
                      LOCO_CONTAINS("optimizer.lr: expected a number, got \"fast\""));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"optimizer": {"lr": null}})")),
                      LOCO_CONTAINS("optimizer.lr: expected a number, got null"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"name": 5})")),
                      LOCO_CONTAINS("name: expected a string, got 5"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": [1, 2]})")),
                      LOCO_CONTAINS("model: expected an object (a section), got an array"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"data": {"train": {"a": 1}}})")),
                      LOCO_CONTAINS("data.train: expected a string, got an object"));
  REQUIRE_THROWS_WITH(from(json::parse(R"([1, 2])")),
                      LOCO_CONTAINS("cfg.json: (top level): expected a JSON object"));
  // seed: non-negative integers up to 2^64-1.
  REQUIRE_THROWS_WITH(from(json::parse(R"({"training": {"seed": -1}})")),
                      LOCO_CONTAINS("training.seed = -1: out of range for a non-negative integer"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"training": {"seed": 0.5}})")),
                      LOCO_CONTAINS("training.seed: expected a non-negative integer, got 0.5"));
  CHECK(from(json::parse(R"({"training": {"seed": 18446744073709551615}})")).training.seed ==
        18446744073709551615ull);
  // A long string value is shortened in the message.
  const std::string long_value(5000, 'x');
  REQUIRE_THROWS_WITH(from(json{{"model", {{"d_model", long_value}}}}),
                      LOCO_CONTAINS("xxx...\"") && !LOCO_CONTAINS(std::string(100, 'x')));
}

// ------------------------------------------------------------------ ranges and enums

TEST_CASE("out-of-range values name the path, the value and the allowed range", "[config]") {
  REQUIRE_THROWS_WITH(from(json::parse(R"({"optimizer": {"lr": -1}})")),
                      LOCO_CONTAINS("cfg.json: optimizer.lr = -1: must be > 0"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"optimizer": {"lr": 0}})")),
                      LOCO_CONTAINS("optimizer.lr = 0: must be > 0"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": {"vocab_size": 1}})")),
                      LOCO_CONTAINS("model.vocab_size = 1: must be >= 2"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"model": {"d_model": 0}})")),
                      LOCO_CONTAINS("model.d_model = 0: must be > 0"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"optimizer": {"beta1": 1.0}})")),
                      LOCO_CONTAINS("optimizer.beta1 = 1.0: must be in [0, 1)"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"optimizer": {"weight_decay": -0.1}})")),
      LOCO_CONTAINS("optimizer.weight_decay = -0.1: must be >= 0") && !LOCO_CONTAINS(">= 0.0"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"schedule": {"min_lr_ratio": 1.5}})")),
                      LOCO_CONTAINS("schedule.min_lr_ratio = 1.5: must be in [0, 1]"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"schedule": {"warmup_steps": -1}})")),
                      LOCO_CONTAINS("schedule.warmup_steps = -1: must be >= 0"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"training": {"eval_interval": -5}})")),
                      LOCO_CONTAINS("training.eval_interval = -5: must be >= 0"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"output": {"dir": ""}})")),
                      LOCO_CONTAINS("output.dir = \"\": must not be empty"));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"data": {"train": ""}})")),
                      LOCO_CONTAINS("data.train = \"\": must not be empty"));
  // Boundary values that are allowed.
  CHECK(from(json::parse(R"({"optimizer": {"beta1": 0, "grad_clip": 0}})")).optimizer.beta1 == 0.0);
  CHECK(from(json::parse(R"({"schedule": {"warmup_steps": 0}})")).schedule.warmup_steps == 0);
}

TEST_CASE("enum strings list the allowed values", "[config]") {
  REQUIRE_THROWS_WITH(from(json::parse(R"({"schedule": {"type": "cosin"}})")),
                      LOCO_CONTAINS("schedule.type = \"cosin\": must be one of \"constant\", "
                                    "\"linear\", \"cosine\", \"wsd\", \"infinite\""));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"backend": "gpu"})")),
      LOCO_CONTAINS("backend = \"gpu\": must be one of \"cpu\", \"cuda\", \"auto\""));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"optimizer": {"type": "adam"}})")),
      LOCO_CONTAINS("optimizer.type = \"adam\": must be one of \"adamw\", \"sgd\""));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"distributed": {"method": "fedavg"}})")),
      LOCO_CONTAINS("distributed.method = \"fedavg\": must be one of \"ddp\", \"diloco\""));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"distributed": {"outer": {"wire_dtype": "f16"}}})")),
                      LOCO_CONTAINS("distributed.outer.wire_dtype = \"f16\""));
  REQUIRE_THROWS_WITH(from(json::parse(R"({"data": {"tokenizer": "gpt2"}})")),
                      LOCO_CONTAINS("data.tokenizer = \"gpt2\": must be \"byte\" or the path "
                                    "of a SentencePiece .model file"));
  for (const char* t : {"constant", "linear", "cosine", "wsd", "infinite"})
    CHECK(from(json{{"schedule", {{"type", t}}}}).schedule.type == t);
}

// ------------------------------------------------------------------ consistency

TEST_CASE("inconsistent values name both keys and their values", "[config]") {
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"d_model": 128, "n_heads": 6}})")),
      LOCO_CONTAINS("cfg.json: model.n_heads = 6: must divide model.d_model = 128"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"d_model": 128, "n_heads": 4, "n_kv_heads": 3}})")),
      LOCO_CONTAINS("model.n_kv_heads = 3: must divide model.n_heads = 4"));
  // 4 heads of 30: head_dim odd? 120/4 = 30 is even; 60/4 = 15 is odd.
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"d_model": 60, "n_heads": 4, "n_kv_heads": 2}})")),
      LOCO_CONTAINS("model.d_model = 60: head_dim = d_model / n_heads = 15 is odd") &&
          LOCO_CONTAINS("RoPE"));
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"max_seq_len": 64}, "training": {"seq_len": 65}})")),
      LOCO_CONTAINS("training.seq_len = 65: must be <= model.max_seq_len = 64"));
  CHECK(from(json::parse(R"({"model": {"max_seq_len": 64}, "training": {"seq_len": 64}})"))
            .training.seq_len == 64);
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"schedule": {"warmup_steps": 601}})")),
      LOCO_CONTAINS("schedule.warmup_steps = 601: must be <= training.steps = 600"));
  CHECK(from(json::parse(R"({"schedule": {"warmup_steps": 600}})")).schedule.warmup_steps == 600);
  REQUIRE_THROWS_WITH(
      from(json::parse(R"({"model": {"vocab_size": 100}})")),
      LOCO_CONTAINS("model.vocab_size = 100: must be >= 256") && LOCO_CONTAINS("byte"));
}

TEST_CASE("outer-sync overlap: overlap_steps and merge_alpha are validated", "[config]") {
  // Defaults: blocking syncs, α = 0.5.
  const Config d = from(json::object());
  CHECK(d.distributed.outer.overlap_steps == 0);
  CHECK(d.distributed.outer.merge_alpha == 0.5);
  const json diloco = json::parse(R"({"distributed": {"method": "diloco",
      "outer": {"interval": 50, "overlap_steps": 5, "merge_alpha": 0.25}}})");
  const Config c = from(diloco);
  CHECK(c.distributed.outer.overlap_steps == 5);
  CHECK(c.distributed.outer.merge_alpha == 0.25);
  CHECK(config_to_json(from(config_to_json(c))) == config_to_json(c));
  // Boundaries that are allowed: τ = H − 1, α = 0 and α = 1.
  json edge = diloco;
  edge["distributed"]["outer"]["overlap_steps"] = 49;
  edge["distributed"]["outer"]["merge_alpha"] = 0;
  CHECK(from(edge).distributed.outer.overlap_steps == 49);
  edge["distributed"]["outer"]["merge_alpha"] = 1;
  CHECK(from(edge).distributed.outer.merge_alpha == 1.0);

  auto with = [&](const char* key, const json& v) {
    json j = diloco;
    j["distributed"]["outer"][key] = v;
    return j;
  };
  REQUIRE_THROWS_WITH(
      from(with("overlap_steps", -1)),
      LOCO_CONTAINS("cfg.json: distributed.outer.overlap_steps = -1: must be >= 0"));
  REQUIRE_THROWS_WITH(from(with("overlap_steps", 2.5)),
                      LOCO_CONTAINS("distributed.outer.overlap_steps: expected an integer"));
  REQUIRE_THROWS_WITH(
      from(with("overlap_steps", 50)),
      LOCO_CONTAINS("distributed.outer.overlap_steps = 50: must be < distributed.outer.interval "
                    "= 50"));
  REQUIRE_THROWS_WITH(from(with("merge_alpha", 1.5)),
                      LOCO_CONTAINS("distributed.outer.merge_alpha = 1.5: must be in [0, 1]"));
  REQUIRE_THROWS_WITH(from(with("merge_alpha", -0.1)),
                      LOCO_CONTAINS("distributed.outer.merge_alpha = -0.1: must be in [0, 1]"));
  REQUIRE_THROWS_WITH(from(with("merge_alpha", "half")),
                      LOCO_CONTAINS("distributed.outer.merge_alpha: expected a number"));
  // Overlap is a DiLoCo feature: DDP has no outer sync to overlap.
  json ddp = with("overlap_steps", 3);
  ddp["distributed"]["method"] = "ddp";
  REQUIRE_THROWS_WITH(from(ddp), LOCO_CONTAINS("distributed.outer.overlap_steps = 3") &&
                                     LOCO_CONTAINS("\"diloco\""));
}

TEST_CASE("outer-sync fragments: fragments is validated against the layers and H", "[config]") {
  CHECK(from(json::object()).distributed.outer.fragments == 1);
  // 4 layers (the default model), H = 20, τ = 5 < H/p = 10.
  const json diloco = json::parse(R"({"distributed": {"method": "diloco",
      "outer": {"interval": 20, "overlap_steps": 5, "fragments": 2}}})");
  const Config c = from(diloco);
  CHECK(c.distributed.outer.fragments == 2);
  CHECK(config_to_json(c)["distributed"]["outer"]["fragments"] == 2);
  CHECK(config_to_json(from(config_to_json(c))) == config_to_json(c));
  auto with = [&](const char* key, const json& v) {
    json j = diloco;
    j["distributed"]["outer"][key] = v;
    return j;
  };
  json four = with("fragments", 4);  // p = n_layers, τ < H/p = 5
  four["distributed"]["outer"]["overlap_steps"] = 4;
  CHECK(from(four).distributed.outer.fragments == 4);
  REQUIRE_THROWS_WITH(from(with("fragments", 0)),
                      LOCO_CONTAINS("distributed.outer.fragments = 0: must be >= 1"));
  REQUIRE_THROWS_WITH(from(with("fragments", 1.5)),
                      LOCO_CONTAINS("distributed.outer.fragments: expected an integer"));
  json many = with("fragments", 5);
  many["distributed"]["outer"]["interval"] = 20;
  REQUIRE_THROWS_WITH(from(many), LOCO_CONTAINS("cfg.json: distributed.outer.fragments = 5: "
                                                "must be <= model.n_layers = 4"));
  json odd = with("fragments", 3);
  odd["distributed"]["outer"]["overlap_steps"] = 0;
  REQUIRE_THROWS_WITH(from(odd), LOCO_CONTAINS("distributed.outer.fragments = 3: must divide "
                                               "distributed.outer.interval = 20"));
  // τ must fit between two fragments' syncs: < H/p.
  json slow = diloco;
  slow["distributed"]["outer"]["overlap_steps"] = 10;
  REQUIRE_THROWS_WITH(from(slow),
                      LOCO_CONTAINS("distributed.outer.overlap_steps = 10: must be < "
                                    "distributed.outer.interval / distributed.outer.fragments "
                                    "= 10"));
  slow["distributed"]["outer"]["overlap_steps"] = 9;
  CHECK(from(slow).distributed.outer.overlap_steps == 9);
  // A DiLoCo feature.
  json ddp = diloco;
  ddp["distributed"]["method"] = "ddp";
  ddp["distributed"]["outer"]["overlap_steps"] = 0;
  REQUIRE_THROWS_WITH(
      from(ddp), LOCO_CONTAINS("distributed.outer.fragments = 2") && LOCO_CONTAINS("\"diloco\""));
}

TEST_CASE("distributed.link: a simulated slow link for DiLoCo's outer syncs", "[config]") {
  // Defaults: off.
  const Config d = from(json::object());
  CHECK(d.distributed.link.bandwidth_mbps == 0.0);
  CHECK(d.distributed.link.latency_ms == 0.0);
  CHECK_FALSE(d.distributed.link.enabled());
  CHECK(config_to_json(d)["distributed"]["link"] ==
        json::parse(R"({"bandwidth_mbps": 0.0, "latency_ms": 0.0})"));

  const json diloco = json::parse(R"({"distributed": {"method": "diloco",
      "link": {"bandwidth_mbps": 100, "latency_ms": 50}}})");
  const Config c = from(diloco);
  CHECK(c.distributed.link.bandwidth_mbps == 100.0);
  CHECK(c.distributed.link.latency_ms == 50.0);
  CHECK(c.distributed.link.enabled());
  CHECK(config_to_json(from(config_to_json(c))) == config_to_json(c));
  // Either one alone turns the simulation on (bandwidth 0 = unlimited: latency only).
  json lat = diloco;
  lat["distributed"]["link"]["bandwidth_mbps"] = 0;
  CHECK(from(lat).distributed.link.enabled());

  auto with = [&](const char* key, const json& v) {
    json j = diloco;
    j["distributed"]["link"][key] = v;
    return j;
  };
  REQUIRE_THROWS_WITH(
      from(with("bandwidth_mbps", -1)),
      LOCO_CONTAINS("cfg.json: distributed.link.bandwidth_mbps = -1: must be >= 0"));
  REQUIRE_THROWS_WITH(from(with("latency_ms", -0.5)),
                      LOCO_CONTAINS("cfg.json: distributed.link.latency_ms = -0.5: must be >= 0"));
  for (double bad :
       {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    REQUIRE_THROWS_WITH(from(with("bandwidth_mbps", bad)),
                        LOCO_CONTAINS("distributed.link.bandwidth_mbps: expected a finite number"));
    REQUIRE_THROWS_WITH(from(with("latency_ms", bad)),
                        LOCO_CONTAINS("distributed.link.latency_ms: expected a finite number"));
  }
  REQUIRE_THROWS_WITH(from(with("bandwidth_mbps", "fast")),
                      LOCO_CONTAINS("distributed.link.bandwidth_mbps: expected a number"));
  REQUIRE_THROWS_WITH(from(with("jitter_ms", 1)), LOCO_CONTAINS("distributed.link.jitter_ms"));
  // DDP has no outer-sync group: rejected, naming the key that is set.
  json ddp = diloco;
  ddp["distributed"]["method"] = "ddp";
  REQUIRE_THROWS_WITH(from(ddp), LOCO_CONTAINS("distributed.link.bandwidth_mbps = 100") &&
                                     LOCO_CONTAINS("method \"ddp\" has no outer sync"));
  ddp["distributed"]["link"]["bandwidth_mbps"] = 0;
  REQUIRE_THROWS_WITH(
      from(ddp), LOCO_CONTAINS("distributed.link.latency_ms = 50") && LOCO_CONTAINS("\"diloco\""));
  // Off (both 0) is fine with DDP.
  ddp["distributed"]["link"]["latency_ms"] = 0;
  CHECK_FALSE(from(ddp).distributed.link.enabled());
}

TEST_CASE("checkpoint.at_sync and checkpoint.storage: checkpoints at outer syncs", "[config]") {
  const Config d = from(json::object());
  CHECK(d.checkpoint.at_sync == 0);
  CHECK(d.checkpoint.storage == "shared");
  const json diloco = json::parse(R"({"distributed": {"method": "diloco"},
      "checkpoint": {"at_sync": 2, "storage": "node_local"}})");
  const Config c = from(diloco);
  CHECK(c.checkpoint.at_sync == 2);
  CHECK(c.checkpoint.storage == "node_local");
  CHECK(config_to_json(from(config_to_json(c))) == config_to_json(c));

  auto with = [&](const char* key, const json& v) {
    json j = diloco;
    j["checkpoint"][key] = v;
    return j;
  };
  REQUIRE_THROWS_WITH(from(with("at_sync", -1)),
                      LOCO_CONTAINS("cfg.json: checkpoint.at_sync = -1: must be >= 0"));
  REQUIRE_THROWS_WITH(
      from(with("storage", "nfs")),
      LOCO_CONTAINS("checkpoint.storage = \"nfs\"") && LOCO_CONTAINS("\"shared\", \"node_local\""));
  // One kind of checkpoint per run.
  REQUIRE_THROWS_WITH(
      from(with("interval", 10)),
      LOCO_CONTAINS("checkpoint.interval = 10: must be 0 with checkpoint.at_sync = 2"));
  // DDP has no outer syncs.
  json ddp = diloco;
  ddp["distributed"]["method"] = "ddp";
  REQUIRE_THROWS_WITH(from(ddp), LOCO_CONTAINS("checkpoint.at_sync = 2") &&
                                     LOCO_CONTAINS("use checkpoint.interval"));
  // node_local storage exists only for checkpoints at syncs.
  json per_rank = with("at_sync", 0);
  per_rank["checkpoint"]["interval"] = 5;
  REQUIRE_THROWS_WITH(from(per_rank), LOCO_CONTAINS("checkpoint.storage = \"node_local\"") &&
                                          LOCO_CONTAINS("checkpoint.at_sync >= 1"));
}

TEST_CASE("schedule parameters must fit in training.steps", "[config]") {
  // infinite: warmup + cooldown + anneal <= steps.
  REQUIRE_THROWS_WITH(from(json::parse(R"({"schedule": {"type": "infinite", "warmup_steps": 100,
                           "cooldown_steps": 400, "anneal_steps": 101}})")),
                      LOCO_CONTAINS("schedule.cooldown_steps = 400") && LOCO_CONTAINS("= 601") &&
                          LOCO_CONTAINS("<= training.steps = 600"));
  CHECK(from(json::parse(R"({"schedule": {"type": "infinite", "warmup_steps": 100,
                             "cooldown_steps": 400, "anneal_steps": 100}})"))
            .schedule.anneal_steps == 100);
  // The same numbers are fine for cosine, which ignores cooldown/anneal.
  CHECK(from(json::parse(R"({"schedule": {"type": "cosine", "warmup_steps": 100,
                             "cooldown_steps": 400, "anneal_steps": 101}})"))
            .schedule.type == "cosine");
  REQUIRE_THROWS_WITH(from(json::parse(R"({"schedule": {"type": "infinite", "min_lr_ratio": 0.6,
                           "const_lr_ratio": 0.5}})")),
                      LOCO_CONTAINS("schedule.min_lr_ratio = 0.6: infinite needs min_lr_ratio <= "
                                    "const_lr_ratio = 0.5"));
  // wsd: warmup + round(decay_fraction * steps) <= steps.
  REQUIRE_THROWS_WITH(
      from(json::parse(
          R"({"schedule": {"type": "wsd", "warmup_steps": 300, "decay_fraction": 0.6}})")),
      LOCO_CONTAINS("schedule.decay_fraction = 0.6") && LOCO_CONTAINS("(360)") &&
          LOCO_CONTAINS("<= training.steps = 600"));
  CHECK(from(json::parse(
                 R"({"schedule": {"type": "wsd", "warmup_steps": 300, "decay_fraction": 0.5}})"))
            .schedule.decay_fraction == 0.5);
}

// ------------------------------------------------------------------ overrides

TEST_CASE("apply_override sets nested keys, parsing the value as JSON when it can", "[config]") {
  json j = json::object();
  loco::apply_override(j, "optimizer.lr=3e-4");
  loco::apply_override(j, "training.steps=150");
  loco::apply_override(j, "model.tie_embeddings=true");
  loco::apply_override(j, "schedule.type=wsd");    // not JSON: a string
  loco::apply_override(j, "name=\"123\"");         // a JSON string
  loco::apply_override(j, "output.dir=runs/a=b");  // only the first '=' splits
  loco::apply_override(j, "data.val=");            // empty: the empty string
  CHECK(j["optimizer"]["lr"].is_number_float());
  CHECK(j["optimizer"]["lr"] == 3e-4);
  CHECK(j["training"]["steps"].is_number_integer());
  CHECK(j["training"]["steps"] == 150);
  CHECK(j["model"]["tie_embeddings"] == true);
  CHECK(j["schedule"]["type"] == "wsd");
  CHECK(j["name"] == "123");
  CHECK(j["output"]["dir"] == "runs/a=b");
  CHECK(j["data"]["val"] == "");
  const Config c = from(j);
  CHECK(c.optimizer.lr == 3e-4);
  CHECK(c.training.steps == 150);
  CHECK(c.model.tie_embeddings);
  CHECK(c.schedule.type == "wsd");
  CHECK(c.name == "123");
  CHECK(c.data.val.empty());

  // Overrides replace existing values and keep their siblings.
  json k = json::parse(R"({"model": {"d_model": 64, "n_layers": 2}})");
  loco::apply_override(k, "model.d_model=256");
  CHECK(k["model"]["d_model"] == 256);
  CHECK(k["model"]["n_layers"] == 2);
  // A whole section may be set at once.
  loco::apply_override(k, R"(model={"d_model": 32})");
  CHECK(k["model"] == json::parse(R"({"d_model": 32})"));
  // A value that is the wrong type is caught when the document is validated.
  loco::apply_override(k, "training.steps=lots");
  REQUIRE_THROWS_WITH(from(k), LOCO_CONTAINS("training.steps: expected an integer, got \"lots\""));
}

TEST_CASE("bad overrides name the override", "[config]") {
  json j = json::object();
  REQUIRE_THROWS_WITH(loco::apply_override(j, "optimizer.lr"),
                      LOCO_CONTAINS("--set optimizer.lr: expected KEY=VALUE"));
  REQUIRE_THROWS_WITH(loco::apply_override(j, "model.n_head=4"),
                      LOCO_CONTAINS("--set model.n_head=4: unknown key \"model.n_head\"") &&
                          LOCO_CONTAINS("did you mean \"model.n_heads\"?"));
  REQUIRE_THROWS_WITH(
      loco::apply_override(j, "lr=0.1"),
      LOCO_CONTAINS("--set lr=0.1: unknown key \"lr\"") && LOCO_CONTAINS("\"optimizer.lr\""));
  REQUIRE_THROWS_WITH(loco::apply_override(j, "model.d_model.x=1"),
                      LOCO_CONTAINS("--set model.d_model.x=1") &&
                          LOCO_CONTAINS("\"model.d_model\" is a value, not a section"));
  REQUIRE_THROWS_WITH(loco::apply_override(j, "model..d_model=1"),
                      LOCO_CONTAINS("--set model..d_model=1: malformed key"));
  REQUIRE_THROWS_WITH(loco::apply_override(j, "=1"), LOCO_CONTAINS("--set =1: malformed key"));
  json bad = json::parse(R"({"model": 5})");
  REQUIRE_THROWS_WITH(loco::apply_override(bad, "model.d_model=1"),
                      LOCO_CONTAINS("\"model\" in the config is 5, not an object"));
  CHECK(j == json::object());  // failed overrides leave the document alone
}

// ------------------------------------------------------------------ load_config

TEST_CASE("load_config reads, overrides and validates a file", "[config]") {
  TempDir dir;
  json j = with_data(dir);
  j["model"]["d_model"] = 64;
  j["training"]["steps"] = 100;
  const std::string path = dir.write("exp.json", j.dump(2));
  const Config c = loco::load_config(path, {"optimizer.lr=0.01", "schedule.warmup_steps=10"});
  CHECK(c.model.d_model == 64);
  CHECK(c.training.steps == 100);
  CHECK(c.optimizer.lr == 0.01);
  CHECK(c.schedule.warmup_steps == 10);
  CHECK(c.data.train == (dir.path / "shards/train.bin").string());

  // Overrides are applied before validation, and their errors name the override.
  REQUIRE_THROWS_WITH(loco::load_config(path, {"optimizer.lr=-1"}),
                      LOCO_CONTAINS(path + ": optimizer.lr = -1: must be > 0"));
  REQUIRE_THROWS_WITH(loco::load_config(path, {"optimizer.lrr=1"}),
                      LOCO_CONTAINS("--set optimizer.lrr=1: unknown key"));
  // Comments are allowed.
  json no_model = j;
  no_model.erase("model");
  const std::string commented =
      dir.write("c.json", "// tiny\n{\n  /* the model */ \"model\": {\"d_model\": 32}, " +
                              no_model.dump().substr(1));
  CHECK(loco::load_config(commented, {}).model.d_model == 32);
}

TEST_CASE("load_config: unreadable and malformed files name the file", "[config]") {
  TempDir dir;
  const std::string missing = (dir.path / "nope.json").string();
  REQUIRE_THROWS_WITH(loco::load_config(missing, {}),
                      LOCO_CONTAINS(missing) && LOCO_CONTAINS("no such file"));
  REQUIRE_THROWS_WITH(loco::load_config(dir.path.string(), {}),
                      LOCO_CONTAINS(dir.path.string()) && LOCO_CONTAINS("is a directory"));

  // Parse error on line 3: the message names the file, line and byte.
  const std::string broken = dir.write("broken.json", "{\n  \"model\": {\n    \"d_model\": ,\n");
  REQUIRE_THROWS_WITH(loco::load_config(broken, {}), LOCO_CONTAINS(broken + ":3:") &&
                                                         LOCO_CONTAINS("invalid JSON (byte ") &&
                                                         LOCO_CONTAINS("line 3"));
  const std::string empty = dir.write("empty.json", "");
  REQUIRE_THROWS_WITH(loco::load_config(empty, {}),
                      LOCO_CONTAINS(empty) && LOCO_CONTAINS("invalid JSON"));
  const std::string array = dir.write("array.json", "[1, 2, 3]");
  REQUIRE_THROWS_WITH(loco::load_config(array, {}),
                      LOCO_CONTAINS(array + ": (top level): expected a JSON object, got an array"));
  // Unknown keys in a file name the file.
  const std::string typo = dir.write("typo.json", R"({"model": {"n_head": 4}})");
  REQUIRE_THROWS_WITH(loco::load_config(typo, {}),
                      LOCO_CONTAINS(typo + ": unknown key \"model.n_head\" (did you mean "
                                           "\"model.n_heads\"?)"));
}

TEST_CASE("load_config refuses a key given twice, naming its JSON path", "[config]") {
  TempDir dir;
  // nlohmann alone would keep the last value silently.
  const std::string twice =
      dir.write("twice.json", R"({"optimizer": {"lr": 0.1, "beta1": 0.8, "lr": 0.2}})");
  REQUIRE_THROWS_WITH(loco::load_config(twice, {}),
                      LOCO_CONTAINS(twice + ": duplicate key \"optimizer.lr\""));
  const std::string top = dir.write("top.json", R"({"name": "a", "model": {}, "name": "b"})");
  REQUIRE_THROWS_WITH(loco::load_config(top, {}), LOCO_CONTAINS("duplicate key \"name\""));
  const std::string section =
      dir.write("section.json", R"({"model": {"d_model": 64}, "model": {"n_layers": 2}})");
  REQUIRE_THROWS_WITH(loco::load_config(section, {}), LOCO_CONTAINS("duplicate key \"model\""));
  // The same name in different objects is fine.
  json j = with_data(dir);
  j["model"]["init_std"] = 0.01;
  j["optimizer"]["eps"] = 1e-7;
  j["distributed"]["outer"]["lr"] = 0.5;
  j["optimizer"]["lr"] = 0.01;
  const std::string same = dir.write("same.json", j.dump(2));
  CHECK(loco::load_config(same, {}).optimizer.lr == 0.01);
}

TEST_CASE("load_config survives hostile JSON", "[config]") {
  TempDir dir;
  // Very deep nesting: rejected with a message, no stack overflow.
  const std::string deep = dir.write(
      "deep.json", "{\"model\": " + std::string(200000, '[') + std::string(200000, ']') + "}");
  REQUIRE_THROWS_WITH(loco::load_config(deep, {}),
                      LOCO_CONTAINS(deep) && LOCO_CONTAINS("nested deeper than"));
  // Oversized file.
  const std::string huge =
      dir.write("huge.json", "{\"name\": \"" + std::string(17 << 20, 'a') + "\"}");
  REQUIRE_THROWS_WITH(loco::load_config(huge, {}),
                      LOCO_CONTAINS(huge) && LOCO_CONTAINS("larger than"));
  // Numbers too large for a double are a parse error, not a crash.
  const std::string big = dir.write("big.json", R"({"optimizer": {"lr": 1e999}})");
  REQUIRE_THROWS_WITH(loco::load_config(big, {}),
                      LOCO_CONTAINS(big) && LOCO_CONTAINS("invalid JSON"));
  // A deeply nested override value is only a wrong type.
  json j = json::object();
  loco::apply_override(j, "model.d_model=" + std::string(100000, '[') + std::string(100000, ']'));
  REQUIRE_THROWS_WITH(from(j), LOCO_CONTAINS("model.d_model: expected an integer, got an array"));
}

// ------------------------------------------------------------------ data paths

TEST_CASE("data paths: absolute as given, relative to cwd first, then the source tree",
          "[config]") {
  TempDir work;    // stands for the current directory
  TempDir source;  // stands for the source tree ($LOCO_SOURCE_DIR)
  TempDir other;   // a directory with no data
  const std::string cfg = other.write("cfg.json", R"({"data": {"train": "d/train.bin",
                                                            "val": "d/val-*.bin"}})");
  source.write("d/train.bin", "x");
  source.write("d/val-0.bin", "x");
  source.write("d/val-1.bin", "x");
  SetEnv env("LOCO_SOURCE_DIR", source.path.string().c_str());

  SECTION("found in the source tree when the current directory lacks it") {
    ChangeDir cd(other.path);
    const Config c = loco::load_config(cfg, {});
    CHECK(c.data.train == (source.path / "d/train.bin").string());
    CHECK(c.data.val == (source.path / "d/val-*.bin").string());  // the glob, made absolute
  }
  SECTION("the current directory wins over the source tree") {
    work.write("d/train.bin", "x");
    work.write("d/val-7.bin", "x");
    ChangeDir cd(work.path);
    const Config c = loco::load_config(cfg, {});
    CHECK(c.data.train == (work.path / "d/train.bin").string());
    CHECK(c.data.val == (work.path / "d/val-*.bin").string());
  }
  SECTION("absolute paths are used as given") {
    ChangeDir cd(other.path);
    const std::string abs = work.write("abs/t.bin", "x");
    const Config c = loco::load_config(cfg, {"data.train=" + abs, "data.val="});
    CHECK(c.data.train == abs);
    CHECK(c.data.val.empty());  // empty val: no validation, nothing to resolve
  }
  SECTION("no match names the key, the pattern and where it looked") {
    ChangeDir cd(other.path);
    REQUIRE_THROWS_WITH(loco::load_config(cfg, {"data.val=d/nothing-*.bin"}),
                        LOCO_CONTAINS(cfg + ": data.val = \"d/nothing-*.bin\": matches no file") &&
                            LOCO_CONTAINS((other.path / "d/nothing-*.bin").string()) &&
                            LOCO_CONTAINS((source.path / "d/nothing-*.bin").string()));
    REQUIRE_THROWS_WITH(loco::load_config(cfg, {"data.train=/no/such/dir/x.bin"}),
                        LOCO_CONTAINS("data.train = \"/no/such/dir/x.bin\": matches no file"));
    // A directory is not a data file.
    REQUIRE_THROWS_WITH(loco::load_config(cfg, {"data.train=d"}),
                        LOCO_CONTAINS("data.train = \"d\": matches no file"));
  }
}

// ------------------------------------------------------------------ mixtures and extra validation

TEST_CASE("data.train as a weighted mixture; data.extra_val: forms, round trip, errors",
          "[config][mixture]") {
  const Config c = from(json::parse(R"({"data": {
      "train": [{"path": "new-*.bin", "weight": 0.95}, {"path": "kjv.bin", "weight": 0.05}],
      "extra_val": [{"name": "kjv", "path": "kjv-val.bin"}]}})"));
  REQUIRE(c.data.train_mixture.size() == 2);
  CHECK(c.data.train.empty());
  CHECK(c.data.train_mixture[0].path == "new-*.bin");
  CHECK(c.data.train_mixture[1].weight == 0.05);
  REQUIRE(c.data.extra_val.size() == 1);
  CHECK(c.data.extra_val[0].name == "kjv");
  // Written back as given, and read again to the same config.
  const json j = config_to_json(c);
  CHECK(j["data"]["train"] ==
        json::parse(
            R"([{"path": "new-*.bin", "weight": 0.95}, {"path": "kjv.bin", "weight": 0.05}])"));
  CHECK(config_to_json(from(j)) == j);
  // A list of one source is that source's path (weights mean nothing alone).
  const Config one = from(json::parse(R"({"data": {"train": [{"path": "a.bin", "weight": 3}]}})"));
  CHECK(one.data.train == "a.bin");
  CHECK(one.data.train_mixture.empty());
  CHECK(config_to_json(one)["data"]["train"] == "a.bin");
  // The default has no extra validation sets.
  CHECK(Config{}.data.extra_val.empty());

  auto refused = [](const char* text) { return from(json::parse(text)); };
  REQUIRE_THROWS_WITH(refused(R"({"data": {"train": []}})"),
                      LOCO_CONTAINS("data.train = []: a mixture needs at least one source"));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"train": [{"path": "a.bin", "weight": 1}, {"path": "b.bin", "weight": 0}]}})"),
      LOCO_CONTAINS("cfg.json: data.train[1].weight = 0: must be > 0"));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"train": [{"path": "a.bin", "weight": -2}, {"path": "b.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("data.train[0].weight = -2: must be > 0"));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"train": [{"path": "a.bin", "weight": "x"}, {"path": "b.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("data.train[0].weight: expected a number"));
  REQUIRE_THROWS_WITH(
      refused(R"({"data": {"train": [{"path": "a.bin"}, {"path": "b.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("data.train[0]: missing \"weight\""));
  REQUIRE_THROWS_WITH(
      refused(R"({"data": {"train": [{"weight": 1}, {"path": "b.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("data.train[0]: missing \"path\""));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"train": [{"path": "a.bin", "wieght": 1}, {"path": "b.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("unknown key \"data.train[0].wieght\"; keys of data.train[0]: path, weight"));
  REQUIRE_THROWS_WITH(refused(R"({"data": {"train": ["a.bin", "b.bin"]}})"),
                      LOCO_CONTAINS("data.train[0]: expected an object"));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"train": [{"path": "", "weight": 1}, {"path": "b.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("data.train[0].path = \"\": must not be empty"));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"train": [{"path": "a.bin", "weight": 1}, {"path": "a.bin", "weight": 1}]}})"),
      LOCO_CONTAINS("data.train[1].path = \"a.bin\": same as data.train[0].path"));
  REQUIRE_THROWS_WITH(refused(R"({"data": {"extra_val": {"name": "x", "path": "a.bin"}}})"),
                      LOCO_CONTAINS("data.extra_val: expected a list"));
  REQUIRE_THROWS_WITH(refused(R"({"data": {"extra_val": [{"name": "a b", "path": "a.bin"}]}})"),
                      LOCO_CONTAINS("data.extra_val[0].name = \"a b\": must be letters, digits"));
  REQUIRE_THROWS_WITH(
      refused(
          R"({"data": {"extra_val": [{"name": "x", "path": "a.bin"}, {"name": "x", "path": "b.bin"}]}})"),
      LOCO_CONTAINS("data.extra_val[1].name = \"x\": same as data.extra_val[0].name"));
  REQUIRE_THROWS_WITH(refused(R"({"data": {"extra_val": [{"path": "a.bin"}]}})"),
                      LOCO_CONTAINS("data.extra_val[0]: missing \"name\""));
}

TEST_CASE("data.train mixture and data.extra_val paths resolve like data.train; --set takes a list",
          "[config][mixture]") {
  TempDir dir;
  dir.write("d/new.bin", "x");
  dir.write("d/old.bin", "x");
  const std::string cfg = dir.write("cfg.json", R"({"data": {"val": ""}})");
  ChangeDir cd(dir.path);
  const Config c = loco::load_config(
      cfg,
      {R"(data.train=[{"path": "d/new.bin", "weight": 0.95}, {"path": "d/old.bin", "weight": 0.05}])",
       R"(data.extra_val=[{"name": "old", "path": "d/old.bin"}])"});
  REQUIRE(c.data.train_mixture.size() == 2);
  CHECK(c.data.train_mixture[0].path == (dir.path / "d/new.bin").string());
  CHECK(c.data.train_mixture[1].path == (dir.path / "d/old.bin").string());
  CHECK(c.data.extra_val.at(0).path == (dir.path / "d/old.bin").string());
  REQUIRE_THROWS_WITH(
      loco::load_config(
          cfg,
          {R"(data.train=[{"path": "d/new.bin", "weight": 1}, {"path": "d/gone-*.bin", "weight": 1}])"}),
      LOCO_CONTAINS("data.train[1].path = \"d/gone-*.bin\": matches no file"));
  REQUIRE_THROWS_WITH(
      loco::load_config(cfg, {R"(data.extra_val=[{"name": "x", "path": "d/gone.bin"}])"}),
      LOCO_CONTAINS("data.extra_val[0].path = \"d/gone.bin\": matches no file"));
}
