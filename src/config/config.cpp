// Config <-> JSON, validation, overrides and data-path resolution.
//
// Every key is declared ONCE, in the `fields(V&, Section&)` functions below: one line per
// key with its JSON name, the struct member and an optional per-value rule. The same
// declaration drives reading (type checks + rules), writing (config_to_json), the set of
// known keys (unknown-key errors, --set path checks, "did you mean" suggestions) — so those
// can never drift apart.
//
// To add a key:     add the member (with its default) to the struct in config.hpp, add one
//                   `v.field("name", s.member, rule)` line to its section below, and a row
//                   to docs/config.md.
// To add a section: add the struct and a `Config` member in config.hpp, write
//                   `template <class V> void fields(V& v, NewSection& s) { ... }` next to
//                   the others (before `fields(V&, Config&)`), add
//                   `v.section("new_section", c.new_section);` to `fields(V&, Config&)`, put
//                   checks that involve several keys in `check_consistency`, and add a
//                   table to docs/config.md. Sections may nest (call v.section inside).
//
// Rules return "" when the value is fine, else what is allowed ("must be > 0"); the message
// becomes "<source>: <json.path> = <value>: <rule text>".
#include "loco/config/config.hpp"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/data/text_tokenizer.hpp"
#include "loco/optim/schedule.hpp"

namespace loco {

using nlohmann::json;

namespace {

constexpr size_t kMaxConfigBytes = 16u << 20;  // a config is a few hundred bytes
constexpr int kMaxJsonDepth = 64;              // the schema is 2 levels deep

// ------------------------------------------------------------------ rendering values

// A short, non-recursive rendering of a JSON value for messages (never dumps a deeply
// nested or huge value).
std::string render(const json& v) {
  switch (v.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      if (s.size() > 80) return json(s.substr(0, 77) + "...").dump();
      return v.dump();
    }
    case json::value_t::discarded:
      return "nothing";
    default:
      return v.dump();
  }
}

template <class T>
std::string render_value(const T& value) {
  return render(json(value));
}

// ------------------------------------------------------------------ rules

template <class T>
using Rule = std::function<std::string(const T&)>;

// 0.0 -> "0", 1e-05 -> "1e-05", 0.5 -> "0.5": bounds read naturally in rule messages.
std::string num(double x) {
  std::string s = json(x).dump();
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s;
}
std::string num(int x) { return std::to_string(x); }

template <class T>
Rule<T> greater_than(T lo) {
  return [lo](const T& x) { return x > lo ? std::string() : "must be > " + num(lo); };
}
template <class T>
Rule<T> at_least(T lo) {
  return [lo](const T& x) { return x >= lo ? std::string() : "must be >= " + num(lo); };
}
// lo <= x <= hi
template <class T>
Rule<T> in_closed(T lo, T hi) {
  return [lo, hi](const T& x) {
    return (x >= lo && x <= hi) ? std::string() : "must be in [" + num(lo) + ", " + num(hi) + "]";
  };
}
// lo <= x < hi
Rule<double> in_half_open(double lo, double hi) {
  return [lo, hi](const double& x) {
    return (x >= lo && x < hi) ? std::string() : "must be in [" + num(lo) + ", " + num(hi) + ")";
  };
}
Rule<std::string> one_of(std::vector<std::string> allowed) {
  return [allowed](const std::string& x) {
    if (std::find(allowed.begin(), allowed.end(), x) != allowed.end()) return std::string();
    std::string s = "must be one of ";
    for (size_t i = 0; i < allowed.size(); ++i) s += (i ? ", \"" : "\"") + allowed[i] + "\"";
    return s;
  };
}
Rule<std::string> non_empty() {
  return [](const std::string& x) { return x.empty() ? "must not be empty" : std::string(); };
}

// data.tokenizer: the file itself is checked where paths are resolved (load_config).
Rule<std::string> byte_or_model_file() {
  return [](const std::string& x) {
    const bool model = x.size() > 6 && x.compare(x.size() - 6, 6, ".model") == 0;
    return x == "byte" || model ? std::string()
                                : "must be \"byte\" or the path of a SentencePiece .model file";
  };
}

// ------------------------------------------------------------------ the schema

const std::vector<std::string> kScheduleTypes = {"constant", "linear", "cosine", "wsd", "infinite"};

template <class V>
void fields(V& v, ModelConfig& m) {
  v.field("vocab_size", m.vocab_size, at_least(2));
  v.field("d_model", m.d_model, greater_than(0));
  v.field("n_layers", m.n_layers, greater_than(0));
  v.field("n_heads", m.n_heads, greater_than(0));
  v.field("n_kv_heads", m.n_kv_heads, greater_than(0));
  v.field("d_ff", m.d_ff, greater_than(0));
  v.field("max_seq_len", m.max_seq_len, greater_than(0));
  v.field("rope_theta", m.rope_theta, greater_than(0.0));
  v.field("norm_eps", m.norm_eps, greater_than(0.0));
  v.field("tie_embeddings", m.tie_embeddings);
  v.field("init_std", m.init_std, greater_than(0.0));
  v.field("init_from", m.init_from);
}

template <class V>
void fields(V& v, DataConfig& d) {
  v.train_data("train", d.train, d.train_mixture);
  v.field("val", d.val);
  v.named_sets("extra_val", d.extra_val);
  v.field("tokenizer", d.tokenizer, byte_or_model_file());
  v.field("on_resume_change", d.on_resume_change, one_of({"refuse", "restart"}));
}

template <class V>
void fields(V& v, OptimizerConfig& o) {
  v.field("type", o.type, one_of({"adamw", "sgd", "muon"}));
  v.field("lr", o.lr, greater_than(0.0));
  v.field("beta1", o.beta1, in_half_open(0.0, 1.0));
  v.field("beta2", o.beta2, in_half_open(0.0, 1.0));
  v.field("eps", o.eps, greater_than(0.0));
  v.field("weight_decay", o.weight_decay, at_least(0.0));
  v.field("decay_embeddings", o.decay_embeddings);
  v.field("grad_clip", o.grad_clip, at_least(0.0));
  v.field("muon_lr", o.muon_lr, greater_than(0.0));
  v.field("muon_momentum", o.muon_momentum, in_half_open(0.0, 1.0));
  v.field("muon_nesterov", o.muon_nesterov);
  v.field("muon_weight_decay", o.muon_weight_decay, at_least(0.0));
  v.field("ns_steps", o.ns_steps, in_closed(1, 100));
  v.field("ns_a", o.ns_a, greater_than(0.0));  // small singular values must grow
  v.field("ns_b", o.ns_b);
  v.field("ns_c", o.ns_c);
  v.field("muon_scale", o.muon_scale, one_of({"original", "match_adamw"}));
}

template <class V>
void fields(V& v, ScheduleConfig& s) {
  v.field("type", s.type, one_of(kScheduleTypes));
  v.field("warmup_steps", s.warmup_steps, at_least(0));
  v.field("min_lr_ratio", s.min_lr_ratio, in_closed(0.0, 1.0));
  v.field("decay_fraction", s.decay_fraction, in_closed(0.0, 1.0));
  v.field("cooldown_steps", s.cooldown_steps, at_least(0));
  v.field("const_lr_ratio", s.const_lr_ratio, in_closed(0.0, 1.0));
  v.field("anneal_steps", s.anneal_steps, at_least(0));
}

template <class V>
void fields(V& v, TrainingConfig& t) {
  v.field("steps", t.steps, greater_than(0));
  v.field("micro_batch", t.micro_batch, greater_than(0));
  v.field("grad_accum", t.grad_accum, greater_than(0));
  v.field("seq_len", t.seq_len, greater_than(0));
  v.field("eval_interval", t.eval_interval, at_least(0));
  v.field("eval_batches", t.eval_batches, greater_than(0));
  v.field("log_interval", t.log_interval, greater_than(0));
  v.field("seed", t.seed);
  v.field("nan_policy", t.nan_policy, one_of({"stop", "skip"}));
}

template <class V>
void fields(V& v, OutputConfig& o) {
  v.field("dir", o.dir, non_empty());
}

template <class V>
void fields(V& v, OuterConfig& o) {
  v.field("interval", o.interval, greater_than(0));
  v.field("lr", o.lr, greater_than(0.0));
  v.field("momentum", o.momentum, in_half_open(0.0, 1.0));
  v.field("nesterov", o.nesterov);
  v.field("wire_dtype", o.wire_dtype, one_of({"f32", "bf16"}));
  v.field("overlap_steps", o.overlap_steps, at_least(0));
  v.field("merge_alpha", o.merge_alpha, in_closed(0.0, 1.0));
  v.field("fragments", o.fragments, at_least(1));
  v.field("transport", o.transport, one_of({"auto", "nccl", "mpi"}));
}

template <class V>
void fields(V& v, CompressionConfig& c) {
  v.field("error_feedback", c.error_feedback);
  v.field("beta", c.beta, in_closed(0.0, 1.0));
  v.field("selector", c.selector, one_of({"none", "chunked_topk", "global_topk", "random_k"}));
  v.field("topk", c.topk, at_least(1));
  v.field("chunk", c.chunk, in_closed(1, 256));
  v.field("quantizer", c.quantizer, one_of({"none", "bf16", "8bit", "4bit", "2bit"}));
  v.field("index_coding", c.index_coding, one_of({"auto", "rice", "fixed", "bitmap"}));
  v.field("aggregation", c.aggregation, one_of({"mean_selected", "mean_all"}));
  v.field("seed", c.seed);
  v.field("rules", c.rules, one_of({"loco", "templar"}));
}

template <class V>
void fields(V& v, LinkConfig& l) {
  v.field("bandwidth_mbps", l.bandwidth_mbps, at_least(0.0));
  v.field("latency_ms", l.latency_ms, at_least(0.0));
}

template <class V>
void fields(V& v, DistributedConfig& d) {
  v.field("method", d.method, one_of({"ddp", "diloco"}));
  v.field("replica_size", d.replica_size, greater_than(0));
  v.field("timeout_s", d.timeout_s, greater_than(0.0));
  v.section("outer", d.outer);
  v.section("compression", d.compression);
  v.section("link", d.link);
}

template <class V>
void fields(V& v, CheckpointConfig& c) {
  v.field("interval", c.interval, at_least(0));
  v.field("at_sync", c.at_sync, at_least(0));
  v.field("keep_last", c.keep_last, at_least(0));
  v.field("dir", c.dir);
  v.field("storage", c.storage, one_of({"shared", "node_local"}));
}

template <class V>
void fields(V& v, Config& c) {
  v.field("name", c.name, non_empty());
  v.field("backend", c.backend, one_of({"cpu", "cuda", "auto"}));
  v.section("model", c.model);
  v.section("data", c.data);
  v.section("optimizer", c.optimizer);
  v.section("schedule", c.schedule);
  v.section("training", c.training);
  v.section("output", c.output);
  v.section("distributed", c.distributed);
  v.section("checkpoint", c.checkpoint);
}

// Streaming DiLoCo fragments (loco/outer/fragments.hpp): strided layers, staggered by H/p.
template <class Fail>
void check_fragments(const Config& c, const Fail& fail) {
  const OuterConfig& o = c.distributed.outer;
  if (o.fragments == 1) return;
  const std::string p = num(o.fragments);
  if (c.distributed.method != "diloco")
    fail("distributed.outer.fragments", p,
         "splits the outer sync of method \"diloco\"; with method " +
             render_value(c.distributed.method) + " it must be 1");
  if (o.fragments > c.model.n_layers)
    fail("distributed.outer.fragments", p,
         "must be <= model.n_layers = " + num(c.model.n_layers) +
             " (fragment j holds the layers j, j + fragments, ...; none may be empty)");
  if (o.interval % o.fragments != 0)
    fail("distributed.outer.fragments", p,
         "must divide distributed.outer.interval = " + num(o.interval) +
             " (fragment j syncs at the steps t = j * interval / fragments (mod interval))");
}

// Checks that involve more than one key. `fail(path, value, why)` throws.
void check_consistency(const Config& c, const std::string& source) {
  auto fail = [&](const std::string& path, const std::string& value, const std::string& why) {
    throw Error(source + ": " + path + " = " + value + ": " + why);
  };
  const ModelConfig& m = c.model;
  if (m.d_model % m.n_heads != 0)
    fail("model.n_heads", num(m.n_heads),
         "must divide model.d_model = " + num(m.d_model) + " (head_dim = d_model / n_heads)");
  if (m.n_heads % m.n_kv_heads != 0)
    fail("model.n_kv_heads", num(m.n_kv_heads),
         "must divide model.n_heads = " + num(m.n_heads) + " (grouped-query attention)");
  if (m.head_dim() % 2 != 0)
    fail("model.d_model", num(m.d_model),
         "head_dim = d_model / n_heads = " + num(m.head_dim()) +
             " is odd; RoPE needs an even head_dim");
  if (c.data.tokenizer == "byte" && m.vocab_size < 256)
    fail("model.vocab_size", num(m.vocab_size),
         "must be >= 256 with data.tokenizer = \"byte\" (token ids 0..255)");

  const CompressionConfig& z = c.distributed.compression;
  if (z.topk > z.chunk * z.chunk)
    fail("distributed.compression.topk", num(z.topk),
         "must be <= chunk * chunk = " + num(z.chunk * z.chunk) + " (elements per chunk)");
  if ((z.compressed() || z.error_feedback) && c.distributed.method != "diloco")
    fail("distributed.method", render_value(c.distributed.method),
         "distributed.compression applies to DiLoCo pseudo-gradients: needs method \"diloco\" "
         "(or selector \"none\", quantizer \"none\", error_feedback false)");
  if (z.compressed() && c.distributed.outer.wire_dtype != "f32")
    fail("distributed.outer.wire_dtype", render_value(c.distributed.outer.wire_dtype),
         "applies to the dense all-reduce only; with distributed.compression.selector or "
         "quantizer set, use compression.quantizer (\"bf16\", ...) and keep wire_dtype \"f32\"");

  const OuterConfig& o = c.distributed.outer;
  if (o.transport == "nccl" && c.backend == "cpu")
    fail("distributed.outer.transport", render_value(o.transport),
         "NCCL carries device memory and needs backend \"cuda\"; the CPU backend's outer sync "
         "goes over MPI (use \"auto\" or \"mpi\")");
  check_fragments(c, fail);
  if (o.fragments == 1 && o.overlap_steps >= o.interval)
    fail("distributed.outer.overlap_steps", num(o.overlap_steps),
         "must be < distributed.outer.interval = " + num(o.interval) +
             " (a sync must complete before the next one is due)");
  if (o.fragments > 1 && o.overlap_steps >= o.interval / o.fragments)
    fail("distributed.outer.overlap_steps", num(o.overlap_steps),
         "must be < distributed.outer.interval / distributed.outer.fragments = " +
             num(o.interval / o.fragments) +
             " (a fragment's sync must complete before the next fragment's is due)");
  if (o.overlap_steps > 0 && c.distributed.method != "diloco")
    fail("distributed.outer.overlap_steps", num(o.overlap_steps),
         "overlaps the outer sync of method \"diloco\"; with method " +
             render_value(c.distributed.method) + " it must be 0");

  // The simulated link slows the outer-sync group down; DDP has none (its one group is the
  // fast intra-node link), and slowing its every-step all-reduce down instead would make the
  // same key mean two different links.
  const LinkConfig& l = c.distributed.link;
  if (l.enabled() && c.distributed.method != "diloco") {
    const bool bw = l.bandwidth_mbps > 0.0;
    fail(bw ? "distributed.link.bandwidth_mbps" : "distributed.link.latency_ms",
         num(bw ? l.bandwidth_mbps : l.latency_ms),
         "simulates the outer-sync link between DiLoCo replicas; method " +
             render_value(c.distributed.method) +
             " has no outer sync: use method \"diloco\" or leave distributed.link at 0");
  }

  const CheckpointConfig& k = c.checkpoint;
  if (k.at_sync > 0 && c.distributed.method != "diloco")
    fail("checkpoint.at_sync", num(k.at_sync),
         "writes checkpoints at the outer syncs of method \"diloco\"; with method " +
             render_value(c.distributed.method) + " use checkpoint.interval");
  if (k.at_sync > 0 && k.interval > 0)
    fail("checkpoint.interval", num(k.interval),
         "must be 0 with checkpoint.at_sync = " + num(k.at_sync) +
             " (one run writes one kind of checkpoint: per-rank files every interval steps, "
             "or global + per-replica files at outer syncs)");
  if (k.storage != "shared" && k.at_sync == 0)
    fail("checkpoint.storage", render_value(k.storage),
         "applies to checkpoints at outer syncs: set checkpoint.at_sync >= 1 (per-rank "
         "checkpoints need one file system that every rank sees)");

  const TrainingConfig& t = c.training;
  if (t.seq_len > m.max_seq_len)
    fail("training.seq_len", num(t.seq_len),
         "must be <= model.max_seq_len = " + num(m.max_seq_len));

  const ScheduleConfig& s = c.schedule;
  if (s.warmup_steps > t.steps)
    fail("schedule.warmup_steps", num(s.warmup_steps),
         "must be <= training.steps = " + num(t.steps));
  if (s.type == "wsd") {
    const int decay = wsd_decay_steps(s, t.steps);
    if (s.warmup_steps + decay > t.steps)
      fail("schedule.decay_fraction", num(s.decay_fraction),
           "wsd needs warmup_steps (" + num(s.warmup_steps) +
               ") + round(decay_fraction * training.steps) (" + num(decay) +
               ") <= training.steps = " + num(t.steps));
  }
  if (s.type == "infinite") {
    const long long sum =
        static_cast<long long>(s.warmup_steps) + s.cooldown_steps + s.anneal_steps;
    if (sum > t.steps)
      fail("schedule.cooldown_steps", num(s.cooldown_steps),
           "infinite needs warmup_steps (" + num(s.warmup_steps) + ") + cooldown_steps (" +
               num(s.cooldown_steps) + ") + anneal_steps (" + num(s.anneal_steps) +
               ") = " + std::to_string(sum) + " <= training.steps = " + num(t.steps));
    if (s.min_lr_ratio > s.const_lr_ratio)
      fail("schedule.min_lr_ratio", num(s.min_lr_ratio),
           "infinite needs min_lr_ratio <= const_lr_ratio = " + num(s.const_lr_ratio));
  }
}

// ------------------------------------------------------------------ reading values

[[noreturn]] void type_error(const std::string& source, const std::string& path,
                             const char* expected, const json& got) {
  throw Error(source + ": " + path + ": expected " + expected + ", got " + render(got));
}

template <class T>
T convert(const json& j, const std::string& source, const std::string& path) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) type_error(source, path, "a boolean (true or false)", j);
    return j.get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!j.is_string()) type_error(source, path, "a string", j);
    return j.get<std::string>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!j.is_number()) type_error(source, path, "a number", j);
    const double x = j.get<double>();
    if (!std::isfinite(x)) type_error(source, path, "a finite number", j);
    return x;
  } else {
    static_assert(std::is_integral_v<T>, "add a conversion for this field type");
    const bool is_unsigned = std::is_unsigned_v<T>;
    const char* expected = is_unsigned ? "a non-negative integer" : "an integer";
    // Integral floats (1e4) are accepted; 1.5 is not.
    if (j.is_number_float()) {
      const double x = j.get<double>();
      if (!std::isfinite(x) || std::trunc(x) != x) type_error(source, path, expected, j);
      // Both limits are powers of two (or one less), so the double comparison is exact.
      const double lo = static_cast<double>(std::numeric_limits<T>::min());
      const double hi_excl = std::ldexp(1.0, std::numeric_limits<T>::digits);
      if (x < lo || x >= hi_excl)
        throw Error(source + ": " + path + " = " + render(j) + ": out of range for " + expected +
                    " (must be in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                    std::to_string(std::numeric_limits<T>::max()) + "])");
      return static_cast<T>(x);
    }
    if (!j.is_number_integer()) type_error(source, path, expected, j);
    bool fits;
    if (j.is_number_unsigned()) {
      fits = j.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    } else {
      const int64_t x = j.get<int64_t>();
      if constexpr (std::is_unsigned_v<T>)
        fits = x >= 0 && static_cast<uint64_t>(x) <= std::numeric_limits<T>::max();
      else
        fits = x >= std::numeric_limits<T>::min() && x <= std::numeric_limits<T>::max();
    }
    if (!fits)
      throw Error(source + ": " + path + " = " + render(j) + ": out of range for " + expected +
                  " (must be in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                  std::to_string(std::numeric_limits<T>::max()) + "])");
    return j.is_number_unsigned() ? static_cast<T>(j.get<uint64_t>())
                                  : static_cast<T>(j.get<int64_t>());
  }
}

// Reads the keys that are present (missing keys keep the struct's default), then applies
// each field's rule to the resulting value.
struct Reader {
  const json* node;  // this section's object, or nullptr when the section is absent
  std::string prefix;
  const std::string& source;

  template <class T>
  void field(const char* name, T& value, const Rule<T>& rule = {}) {
    const std::string path = prefix + name;
    const json* given = nullptr;
    if (node) {
      auto it = node->find(name);
      if (it != node->end()) given = &*it;
    }
    if (given) value = convert<T>(*given, source, path);
    if (rule) {
      const std::string why = rule(value);
      if (!why.empty())
        throw Error(source + ": " + path + " = " + (given ? render(*given) : render_value(value)) +
                    ": " + why);
    }
  }

  // data.train: a path or glob, or a list of {"path", "weight"} (a mixture).
  void train_data(const char* name, std::string& single, std::vector<TrainSource>& mixture) {
    const json* given = node && node->contains(name) ? &node->at(name) : nullptr;
    if (!given || !given->is_array()) {
      field(name, single, non_empty());
      return;
    }
    const std::string path = prefix + name;
    if (given->empty())
      throw Error(source + ": " + path +
                  " = []: a mixture needs at least one source, e.g. [{\"path\": "
                  "\"data/new-*.bin\", \"weight\": 0.95}, {\"path\": \"data/old.bin\", "
                  "\"weight\": 0.05}]");
    mixture.clear();
    for (size_t i = 0; i < given->size(); ++i) {
      const json& e = (*given)[i];
      const std::string at = path + "[" + std::to_string(i) + "]";
      const json entry =
          list_entry(e, at, {"path", "weight"}, "{\"path\": shard path or glob, \"weight\": > 0}");
      TrainSource t;
      t.path = convert<std::string>(entry["path"], source, at + ".path");
      if (t.path.empty()) throw Error(source + ": " + at + ".path = \"\": must not be empty");
      t.weight = convert<double>(entry["weight"], source, at + ".weight");
      if (!(t.weight > 0.0))
        throw Error(source + ": " + at + ".weight = " + render(entry["weight"]) +
                    ": must be > 0 (the weights are normalised over the sources)");
      for (size_t j = 0; j < mixture.size(); ++j)
        if (mixture[j].path == t.path)
          throw Error(source + ": " + at + ".path = " + render(entry["path"]) + ": same as " +
                      path + "[" + std::to_string(j) +
                      "].path (give each source once; add "
                      "their weights)");
      mixture.push_back(t);
    }
    if (mixture.size() == 1) {  // one source: the plain form
      single = mixture.front().path;
      mixture.clear();
    } else {
      single.clear();
    }
  }

  // data.extra_val: a list of {"name", "path"}; names unique, [A-Za-z0-9_.-]+.
  void named_sets(const char* name, std::vector<ValSource>& sets) {
    const json* given = node && node->contains(name) ? &node->at(name) : nullptr;
    if (!given) return;
    const std::string path = prefix + name;
    if (!given->is_array())
      type_error(source, path, "a list of {\"name\": ..., \"path\": ...}", *given);
    sets.clear();
    for (size_t i = 0; i < given->size(); ++i) {
      const std::string at = path + "[" + std::to_string(i) + "]";
      const json entry =
          list_entry((*given)[i], at, {"name", "path"},
                     "{\"name\": a name for its loss, \"path\": shard path or glob}");
      ValSource v;
      v.name = convert<std::string>(entry["name"], source, at + ".name");
      const bool good_name =
          !v.name.empty() && std::all_of(v.name.begin(), v.name.end(), [](char ch) {
            return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' ||
                   ch == '.';
          });
      if (!good_name)
        throw Error(source + ": " + at + ".name = " + render(entry["name"]) +
                    ": must be letters, digits, '_', '-' or '.' (it names the loss in "
                    "metrics.jsonl and summary.json)");
      for (size_t j = 0; j < sets.size(); ++j)
        if (sets[j].name == v.name)
          throw Error(source + ": " + at + ".name = " + render(entry["name"]) + ": same as " +
                      path + "[" + std::to_string(j) + "].name (names must be unique)");
      v.path = convert<std::string>(entry["path"], source, at + ".path");
      if (v.path.empty()) throw Error(source + ": " + at + ".path = \"\": must not be empty");
      sets.push_back(v);
    }
  }

  // An element of a list of objects: an object with exactly the keys `keys`.
  json list_entry(const json& e, const std::string& at, const std::vector<std::string>& keys,
                  const char* form) const {
    if (!e.is_object()) type_error(source, at, (std::string("an object ") + form).c_str(), e);
    for (auto it = e.begin(); it != e.end(); ++it)
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) {
        std::string known;
        for (const auto& k : keys) known += (known.empty() ? "" : ", ") + k;
        throw Error(source + ": unknown key \"" + at + "." + it.key() + "\"; keys of " + at + ": " +
                    known);
      }
    for (const auto& k : keys)
      if (!e.contains(k))
        throw Error(source + ": " + at + ": missing \"" + k + "\" (expected " + form + ")");
    return e;
  }

  template <class S>
  void section(const char* name, S& s) {
    const json* child = nullptr;
    if (node) {
      auto it = node->find(name);
      if (it != node->end()) {
        if (!it->is_object()) type_error(source, prefix + name, "an object (a section)", *it);
        child = &*it;
      }
    }
    Reader sub{child, prefix + name + ".", source};
    fields(sub, s);
  }
};

struct Writer {
  json* node;

  void train_data(const char* name, std::string& single, std::vector<TrainSource>& mixture) {
    if (mixture.empty()) {
      (*node)[name] = single;
      return;
    }
    json list = json::array();
    for (const TrainSource& t : mixture) list.push_back({{"path", t.path}, {"weight", t.weight}});
    (*node)[name] = list;
  }

  void named_sets(const char* name, std::vector<ValSource>& sets) {
    json list = json::array();
    for (const ValSource& v : sets) list.push_back({{"name", v.name}, {"path", v.path}});
    (*node)[name] = list;
  }

  template <class T>
  void field(const char* name, T& value, const Rule<T>& = {}) {
    (*node)[name] = value;
  }

  template <class S>
  void section(const char* name, S& s) {
    json& child = (*node)[name] = json::object();
    Writer sub{&child};
    fields(sub, s);
  }
};

// The default document: the key set every input is checked against.
const json& schema() {
  static const json doc = config_to_json(Config{});
  return doc;
}

// ------------------------------------------------------------------ unknown keys

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (same ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Where the schema holds `key`: a sibling with a similar name, else the same name in
// another section. Returns the full path or "".
std::string suggest(const json& section, const std::string& prefix, const std::string& key) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (auto it = section.begin(); it != section.end(); ++it) {
    const size_t d = edit_distance(key, it.key());
    if (d < best_d) best_d = d, best = it.key();
  }
  const size_t limit = key.size() <= 4 ? 1 : key.size() <= 8 ? 2 : 3;
  if (!best.empty() && best_d <= limit) return prefix + best;
  // Same name elsewhere (e.g. "model.lr" -> "optimizer.lr"; "lr" -> "optimizer.lr").
  const json& root = schema();
  if (root.contains(key)) return key;
  for (auto it = root.begin(); it != root.end(); ++it)
    if (it->is_object() && it->contains(key)) return it.key() + "." + key;
  return "";
}

std::string unknown_key_message(const json& section, const std::string& prefix,
                                const std::string& key) {
  std::string msg = "unknown key \"" + prefix + key + "\"";
  const std::string s = suggest(section, prefix, key);
  if (!s.empty()) msg += " (did you mean \"" + s + "\"?)";
  msg += "; ";
  msg +=
      prefix.empty() ? "top-level keys" : "keys of \"" + prefix.substr(0, prefix.size() - 1) + "\"";
  msg += ": ";
  bool first = true;
  for (auto it = section.begin(); it != section.end(); ++it) {
    msg += (first ? "" : ", ") + it.key();
    first = false;
  }
  return msg;
}

// Walks `in` alongside the schema; recursion depth is bounded by the schema's depth.
void check_unknown_keys(const json& in, const json& sch, const std::string& prefix,
                        const std::string& source) {
  for (auto it = in.begin(); it != in.end(); ++it) {
    auto s = sch.find(it.key());
    if (s == sch.end()) throw Error(source + ": " + unknown_key_message(sch, prefix, it.key()));
    if (s->is_object() && it->is_object())
      check_unknown_keys(*it, *s, prefix + it.key() + ".", source);
  }
}

// ------------------------------------------------------------------ files

std::string source_dir_from_build() {
#ifdef LOCO_SOURCE_DIR
  return LOCO_SOURCE_DIR;
#else
  return "";
#endif
}

// Escapes glob metacharacters in a literal directory prefix.
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

// True when `pattern` (with the literal `base` directory in front, if any) matches at least
// one regular file.
bool matches_a_file(const std::string& base, const std::string& pattern) {
  const std::string full = base.empty() ? pattern : glob_escape(base) + "/" + pattern;
  glob_t g{};
  const int rc = ::glob(full.c_str(), 0, nullptr, &g);
  bool found = false;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc && !found; ++i) {
      struct stat st {};
      found = ::stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode);
    }
  }
  ::globfree(&g);
  return found;
}

// Absolute path (or glob) for a data key: as given when absolute, else the current
// directory, then $LOCO_SOURCE_DIR, then the source tree this library was built from.
std::string resolve_data_path(const std::string& key, const std::string& pattern,
                              const std::string& source) {
  namespace fs = std::filesystem;
  std::vector<std::string> bases;
  if (fs::path(pattern).is_absolute()) {
    bases.push_back("");
  } else {
    std::error_code ec;
    const fs::path cwd = fs::current_path(ec);
    if (!ec) bases.push_back(cwd.string());
    if (const char* env = std::getenv("LOCO_SOURCE_DIR"); env && *env) bases.push_back(env);
    const std::string built = source_dir_from_build();
    if (!built.empty()) bases.push_back(built);
  }
  std::vector<std::string> tried;
  for (const auto& base : bases) {
    const std::string full =
        base.empty() ? pattern : (fs::path(base) / pattern).lexically_normal().string();
    if (std::find(tried.begin(), tried.end(), full) != tried.end()) continue;
    tried.push_back(full);
    if (matches_a_file(base, pattern)) return full;
  }
  std::string msg = source + ": " + key + " = " + render(json(pattern)) +
                    ": matches no file (a path or glob is required; tried ";
  for (size_t i = 0; i < tried.size(); ++i) msg += (i ? ", " : "") + tried[i];
  throw Error(msg + ")");
}

// model.init_from: relative to the current directory, stored absolute; it must exist (what
// it holds is checked when the weights are loaded).
std::string resolve_init_from(const std::string& value, const std::string& source) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path abs = fs::absolute(value, ec).lexically_normal();
  if (ec || !fs::exists(abs, ec))
    throw Error(source + ": model.init_from = " + render(json(value)) +
                ": no such file or directory (expected a Hugging Face directory or a loco "
                "checkpoint: a rank file, a step directory or a run directory)");
  return abs.string();
}

std::string read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(path + ": cannot read config: no such file");
  if (fs::is_directory(st)) throw Error(path + ": cannot read config: is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot read config: " + std::strerror(errno));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes)
      throw Error(path + ": config is larger than " + std::to_string(kMaxConfigBytes >> 20) +
                  " MiB; not a config file?");
  }
  if (in.bad()) throw Error(path + ": cannot read config: read error");
  return text;
}

struct TooDeep {};
struct DuplicateKey {
  std::string path;  // dotted JSON path of the repeated key
};

// Tracks the keys of every open object while nlohmann parses, so that a key given twice is
// an error: nlohmann would silently keep the last value, and a config whose "lr" is set
// twice almost always holds a mistake.
class DuplicateKeyCheck {
 public:
  void operator()(json::parse_event_t event, const json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        frames_.push_back(Frame{});
        break;
      case json::parse_event_t::array_start:
        frames_.push_back(Frame{{}, "[]", true});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!frames_.empty()) frames_.pop_back();
        break;
      case json::parse_event_t::key:
        if (!frames_.empty() && parsed.is_string()) {
          Frame& f = frames_.back();
          f.current = parsed.get<std::string>();
          if (!f.seen.insert(f.current).second) throw DuplicateKey{path()};
        }
        break;
      default:
        break;
    }
  }

 private:
  struct Frame {
    std::set<std::string> seen;
    std::string current;
    bool is_array = false;
  };
  std::string path() const {
    std::string p;
    for (const Frame& f : frames_) {
      if (f.is_array) {
        p += "[]";
      } else {
        p += (p.empty() ? "" : ".") + f.current;
      }
    }
    return p;
  }
  std::vector<Frame> frames_;
};

json parse_config_text(const std::string& text, const std::string& path) {
  try {
    DuplicateKeyCheck duplicates;
    json::parser_callback_t check = [&duplicates](int depth, json::parse_event_t event,
                                                  json& parsed) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      duplicates(event, parsed);
      return true;
    };
    return json::parse(text, check, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const TooDeep&) {
    throw Error(path + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                " levels; not a config file?");
  } catch (const DuplicateKey& d) {
    throw Error(path + ": duplicate key \"" + d.path +
                "\" (given twice in the same object; remove one of them)");
  } catch (const json::parse_error& e) {
    // Line and column of the byte nlohmann stopped at (1-based).
    size_t line = 1, col = 1;
    const size_t stop = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    for (size_t i = 0; i < stop; ++i) {
      if (text[i] == '\n')
        ++line, col = 1;
      else
        ++col;
    }
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos && what.rfind("[json.", 0) == 0)
      what = what.substr(p + 2);
    throw Error(path + ":" + std::to_string(line) + ":" + std::to_string(col) +
                ": invalid JSON (byte " + std::to_string(e.byte) + "): " + what);
  } catch (const json::exception& e) {  // e.g. out_of_range.406: number overflow (1e999)
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos && what.rfind("[json.", 0) == 0)
      what = what.substr(p + 2);
    throw Error(path + ": invalid JSON: " + what);
  }
}

}  // namespace

// ------------------------------------------------------------------ public API

nlohmann::json config_to_json(const Config& c) {
  Config copy = c;
  json j = json::object();
  Writer w{&j};
  fields(w, copy);
  return j;
}

Config config_from_json(const nlohmann::json& j, const std::string& source) {
  try {
    if (!j.is_object()) type_error(source, "(top level)", "a JSON object", j);
    check_unknown_keys(j, schema(), "", source);
    Config c;
    Reader r{&j, "", source};
    fields(r, c);
    check_consistency(c, source);
    return c;
  } catch (const json::exception& e) {  // should not happen; never let it escape unexplained
    throw Error(source + ": " + e.what());
  }
}

void apply_override(nlohmann::json& j, const std::string& assignment) {
  std::string shown = assignment.size() > 200 ? assignment.substr(0, 197) + "..." : assignment;
  const std::string where = "--set " + shown + ": ";
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw Error(where + "expected KEY=VALUE with a dotted key, e.g. --set optimizer.lr=3e-4");
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);

  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? dot : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& p : parts)
    if (p.empty())
      throw Error(where + "malformed key \"" + key +
                  "\" (expected a dotted path such as optimizer.lr)");

  // The path must exist in the schema (the default document).
  const json* sch = &schema();
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!sch->is_object())
      throw Error(where + "\"" + prefix.substr(0, prefix.size() - 1) +
                  "\" is a value, not a section; unknown key \"" + key + "\"");
    auto it = sch->find(parts[i]);
    if (it == sch->end()) throw Error(where + unknown_key_message(*sch, prefix, parts[i]));
    sch = &*it;
    prefix += parts[i] + ".";
  }

  json value;
  try {
    value = json::parse(text, nullptr, /*allow_exceptions=*/true);
  } catch (const json::exception&) {
    value = text;  // not JSON: a plain string (e.g. schedule.type=wsd)
  }

  if (j.is_null()) j = json::object();
  if (!j.is_object()) throw Error(where + "the config is not a JSON object");
  json* node = &j;
  std::string walked;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    walked += (walked.empty() ? "" : ".") + parts[i];
    json& child = (*node)[parts[i]];
    if (child.is_null()) child = json::object();
    if (!child.is_object())
      throw Error(where + "\"" + walked + "\" in the config is " + render(child) +
                  ", not an object");
    node = &child;
  }
  (*node)[parts.back()] = std::move(value);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  try {
    json j = parse_config_text(read_file(path), path);
    if (!j.is_object()) type_error(path, "(top level)", "a JSON object", j);
    for (const auto& o : overrides) apply_override(j, o);
    Config c = config_from_json(j, path);
    if (c.data.train_mixture.empty())
      c.data.train = resolve_data_path("data.train", c.data.train, path);
    for (size_t i = 0; i < c.data.train_mixture.size(); ++i) {
      const std::string key = "data.train[" + std::to_string(i) + "].path";
      c.data.train_mixture[i].path = resolve_data_path(key, c.data.train_mixture[i].path, path);
    }
    for (size_t i = 0; i < c.data.extra_val.size(); ++i) {
      const std::string key = "data.extra_val[" + std::to_string(i) + "].path";
      c.data.extra_val[i].path = resolve_data_path(key, c.data.extra_val[i].path, path);
    }
    if (!c.data.val.empty()) c.data.val = resolve_data_path("data.val", c.data.val, path);
    if (!c.model.init_from.empty()) c.model.init_from = resolve_init_from(c.model.init_from, path);
    if (c.data.tokenizer != "byte") {
      c.data.tokenizer = resolve_data_path("data.tokenizer", c.data.tokenizer, path);
      check_tokenizer_fits(c, path);
    }
    return c;
  } catch (const json::exception& e) {
    throw Error(path + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(path + ": out of memory while reading the config");
  }
}

}  // namespace loco
