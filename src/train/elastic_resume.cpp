// Resuming from checkpoints written at outer syncs, on any number of replicas: see
// include/loco/train/elastic_resume.hpp.
#include "loco/train/elastic_resume.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "loco/core/error.hpp"
#include "loco/data/stream.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/io/xxh64.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/outer/outer_sync.hpp"
#include "loco/train/resume_checks.hpp"
#include "loco/train/startup_checks.hpp"
#include "loco/train/sync_checkpoint.hpp"

namespace loco {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// What one rank finds on its own node's disk.
struct LocalView {
  int64_t step = -1;     // the step its pointer (or the given path) names; -1: none
  std::string step_dir;  // that step's directory
  std::string error;     // a pointer naming something that is not there, a bad path, ...
};

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

// The step directory's global.bin must be there; explain what is there instead.
void require_global_file(const std::string& step_dir, const std::string& named_by) {
  std::error_code ec;
  if (fs::is_regular_file(global_state_path(step_dir), ec)) return;
  if (fs::is_regular_file(checkpoint_rank_file(step_dir, 0), ec))
    throw Error(step_dir +
                " holds per-rank checkpoints (rank-<r>.bin, written with checkpoint.interval), "
                "not checkpoints at outer syncs (global.bin): resume it with "
                "checkpoint.at_sync = 0 on the same number of ranks");
  throw Error(named_by + ", but " + global_state_path(step_dir) + " is missing");
}

LocalView look_on_this_node(const std::string& spec, const std::string& root,
                            const std::string& host) {
  LocalView v;
  try {
    if (spec == "latest" || spec == "auto") {
      const auto step = read_latest_checkpoint(root);
      if (!step) return v;
      v.step = *step;
      v.step_dir = checkpoint_step_dir(root, *step);
      require_global_file(v.step_dir, (fs::path(root) / "latest").string() + " names " +
                                          checkpoint_step_name(*step));
      return v;
    }
    std::error_code ec;
    if (!fs::exists(spec, ec)) return v;  // not on this node: another node may hold it
    v.step_dir = resolve_resume(spec, root);
    const auto step = parse_checkpoint_step_name(fs::path(v.step_dir).filename().string());
    if (!step)
      throw Error("cannot resume from " + spec + ": " + v.step_dir +
                  " is not named like a step directory (step-<N>)");
    v.step = *step;
    require_global_file(v.step_dir, "--resume " + spec + " names " + v.step_dir);
  } catch (const Error& e) {
    v.error = "cannot resume: node " + host + ": " + e.what();
  }
  return v;
}

uint64_t hash_floats(const std::vector<float>& v) {
  return Xxh64::hash(v.data(), v.size() * sizeof(float));
}

void upload(Backend& backend, Buf dst, const std::vector<float>& host) {
  if (dst.numel > 0) backend.upload(dst, host.data());
}

std::vector<float> tensor_f32(const Checkpoint& c, const std::string& name, size_t count) {
  std::vector<float> out(count);
  c.copy_to(name, out.data(), count, StorageDType::F32);
  return out;
}

// A replica's state as read by its first rank, then shared with the replica's other ranks.
struct ReplicaState {
  bool found = false;
  std::string path;  // where it was looked for
  int64_t steps_taken = 0;
  std::vector<std::vector<float>> optimizer;  // in optimizer.state() order
  std::vector<float> error_feedback;          // empty: none
  std::vector<float> local_params;            // empty: θ_global
};

void broadcast_floats(Communicator& comm, std::vector<float>& v, int root) {
  uint64_t n = v.size();
  comm.broadcast_host(&n, sizeof n, root);
  v.resize(n);
  if (n > 0) comm.broadcast_host(v.data(), n * sizeof(float), root);
}

}  // namespace

ElasticResume resume_from_sync_checkpoint(const std::string& spec, const std::string& root,
                                          const Config& config, Runtime& runtime, LlamaModel& model,
                                          InnerOptimizer& optimizer, OuterSync& outer,
                                          TokenStream& stream, uint64_t data_hash) {
  Communicator& world = *runtime.world;
  Topology& topo = runtime.topo;
  Backend& backend = *runtime.backend;
  const RankPlacement& me = runtime.mine();
  const bool is_root = world.rank() == 0;
  const std::vector<std::string> keys = replica_keys(runtime.placement);
  const std::string& my_key = keys.at(size_t(me.replica));
  ElasticResume out;

  // 1. What each node holds.
  const LocalView view = look_on_this_node(spec, root, me.host);
  fail_together(world, view.error, "cannot resume");
  const std::vector<uint64_t> steps = world.all_gather_host(uint64_t(view.step + 1));
  const int64_t step = int64_t(*std::max_element(steps.begin(), steps.end())) - 1;
  std::vector<int> holders;
  for (size_t r = 0; r < steps.size(); ++r)
    if (int64_t(steps[r]) - 1 == step && step >= 0) holders.push_back(int(r));
  if (step < 0) {
    if (spec == "auto") return out;
    std::vector<std::string> hosts;
    for (const RankPlacement& p : runtime.placement)
      if (std::find(hosts.begin(), hosts.end(), p.host) == hosts.end()) hosts.push_back(p.host);
    throw Error("cannot resume: no node holds a checkpoint to resume from (looked for " +
                (spec == "latest" ? (fs::path(root) / "latest").string() : spec) + " on " +
                (hosts.size() == 1 ? "node " : "nodes ") + join(hosts) + ")");
  }
  const int source = holders.front();
  const bool holder = view.step == step;
  const std::string step_dir = broadcast_string(world, view.step_dir, source);
  out.found = true;
  out.step = step;
  out.from = step_dir;

  // 2. The run's state: every holder reads its own global.bin; they must agree.
  const size_t N = model.num_params();
  std::vector<float> theta, momentum;
  std::string meta_text;
  {
    std::string error;
    if (holder) {
      try {
        const Checkpoint c = read_checkpoint(global_state_path(view.step_dir));
        const json& m = c.meta();
        if (m.value("kind", "") != "global" || m.value("step", int64_t(-1)) != step)
          throw Error(c.path() + ": not the global state of step " + std::to_string(step) +
                      " (meta kind/step disagree)");
        theta = tensor_f32(c, kParamsTensor, N);
        momentum = tensor_f32(c, "outer.momentum", outer.momentum().numel);
        meta_text = m.dump();
      } catch (const Error& e) {
        error = "cannot resume: node " + me.host + ": " + e.what();
      }
    }
    fail_together(world, error, "cannot resume");
  }
  const uint64_t my_hash = holder ? hash_floats(theta) ^ (hash_floats(momentum) * 31) : 0;
  const std::vector<uint64_t> hashes = world.all_gather_host(my_hash);
  for (int r : holders)
    if (hashes[size_t(r)] != hashes[size_t(source)])
      throw Error("cannot resume: the nodes' global states of step " + std::to_string(step) +
                  " differ: " + global_state_path(step_dir) + " on node " +
                  runtime.placement[size_t(r)].host + " is not the one on node " +
                  runtime.placement[size_t(source)].host +
                  " (files of two different runs in one checkpoint directory?)");
  meta_text = broadcast_string(world, meta_text, source);
  if (holders.size() < size_t(world.size())) {
    theta.resize(N);
    momentum.resize(outer.momentum().numel);
    world.broadcast_host(theta.data(), N * sizeof(float), source);
    world.broadcast_host(momentum.data(), momentum.size() * sizeof(float), source);
  }
  const json meta = json::parse(meta_text);
  const std::string named =
      global_state_path(step_dir) + " (node " + runtime.placement[size_t(source)].host + ")";
  // The same meta on every rank: these checks throw on all ranks alike.
  if (meta.contains("replica_size") &&
      meta.at("replica_size") != json(config.distributed.replica_size))
    throw Error("cannot resume: " + named + " was written by replicas of " +
                meta.at("replica_size").dump() +
                " rank(s) (distributed.replica_size), this run's "
                "have " +
                std::to_string(config.distributed.replica_size) +
                ": an elastic resume changes the number of replicas, not their size");
  try {
    validate_compatible(meta, sync_checkpoint_identity(config), named);
  } catch (const Error& e) {
    throw Error(std::string("cannot resume: ") + e.what());
  }
  out.data_change = training_data_change(meta, config, data_hash);
  if (!out.data_change.empty() && config.data.on_resume_change != "restart")
    throw Error("cannot resume: " + named + ": the training data changed since the checkpoint (" +
                out.data_change +
                "); its data position means nothing for other data. To "
                "continue training these weights on the new data from its beginning, set "
                "data.on_resume_change = \"restart\"");
  std::vector<std::string> old_keys;
  StreamPosition position;
  try {
    out.skipped_steps = meta.value("skipped_steps", int64_t(0));
    out.tokens = meta.at("tokens").get<int64_t>();
    outer.set_syncs_done(meta.at("outer_syncs_done").get<int>());
    if (meta.contains("outer_fragment_syncs"))
      outer.set_fragment_syncs(meta.at("outer_fragment_syncs").get<std::vector<int>>());
    for (const json& r : meta.at("replicas")) old_keys.push_back(r.at("key").get<std::string>());
    if (out.data_change.empty())
      position = redeal(meta.at("data_position").at("epoch").get<uint64_t>(),
                        meta.at("data_position").at("slot").get<uint64_t>(), topo.num_replicas,
                        stream.windows());
  } catch (const json::exception& e) {
    throw Error("cannot resume: " + named + ": malformed checkpoint metadata: " + e.what());
  }
  upload(backend, outer.global_params(), theta);
  upload(backend, outer.momentum(), momentum);
  stream.restore(position);

  // 3. Each replica's own state: its first rank looks on its node, then tells the others.
  ReplicaState mine;
  auto opt_state = optimizer.state();
  {
    std::string error;
    if (me.rank_in_replica == 0) {
      mine.path = replica_state_path(step_dir, my_key);
      std::error_code ec;
      if (fs::is_regular_file(mine.path, ec)) {
        try {
          const Checkpoint c = read_checkpoint(mine.path);
          const json& m = c.meta();
          if (m.value("kind", "") != "replica" || m.value("step", int64_t(-1)) != step ||
              m.value("key", "") != my_key)
            throw Error(c.path() + ": not the state of replica " + my_key + " at step " +
                        std::to_string(step) + " (meta kind/step/key disagree)");
          validate_compatible(m, sync_checkpoint_identity(config), c.path());
          mine.found = true;
          mine.steps_taken = m.at("optimizer_steps_taken").get<int64_t>();
          for (auto& [name, buf] : opt_state)
            mine.optimizer.push_back(tensor_f32(c, name, buf.numel));
          if (!outer.error_feedback().empty())
            mine.error_feedback = tensor_f32(c, "outer.error_feedback", N);
          if (c.has("local.params")) mine.local_params = tensor_f32(c, "local.params", N);
        } catch (const std::exception& e) {
          error = "cannot resume: node " + me.host + ": " + e.what();
        }
      }
    }
    fail_together(world, error, "cannot resume");
  }
  if (topo.replica->size() > 1) {
    uint64_t head[2] = {mine.found ? 1u : 0u, uint64_t(mine.steps_taken)};
    topo.replica->broadcast_host(head, sizeof head, 0);
    mine.found = head[0] != 0;
    mine.steps_taken = int64_t(head[1]);
    if (mine.found) {
      mine.optimizer.resize(opt_state.size());
      for (auto& v : mine.optimizer) broadcast_floats(*topo.replica, v, 0);
      broadcast_floats(*topo.replica, mine.error_feedback, 0);
      broadcast_floats(*topo.replica, mine.local_params, 0);
    }
  }
  if (mine.found) {
    for (size_t i = 0; i < opt_state.size(); ++i)
      upload(backend, opt_state[i].second, mine.optimizer[i]);
    optimizer.set_steps_taken(mine.steps_taken);
    if (!mine.error_feedback.empty()) outer.restore_error_feedback(mine.error_feedback);
  }
  upload(backend, model.params(), mine.local_params.empty() ? theta : mine.local_params);
  model.params_changed();
  out.global_fingerprint = backend.fingerprint(outer.global_params());

  // 4. Who continues, who is new, who is gone: the log and the resume record.
  const std::vector<uint64_t> kept_flags = world.all_gather_host(mine.found ? 1u : 0u);
  json kept = json::array(), fresh = json::array(), dropped = json::array();
  for (const RankPlacement& p : runtime.placement) {
    if (p.rank_in_replica != 0) continue;
    (kept_flags[size_t(p.rank)] ? kept : fresh).push_back(keys[size_t(p.replica)]);
  }
  for (const std::string& k : old_keys)
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) dropped.push_back(k);
  const uint64_t slot = global_slot(position, topo.num_replicas);
  out.record = {{"replicas_before", old_keys.size()},
                {"replicas_now", keys.size()},
                {"kept", kept},
                {"new", fresh},
                {"dropped", dropped},
                {"global_fingerprint", fmt::format("{:016x}", out.global_fingerprint)},
                {"data", {{"epoch", position.epoch}, {"slot", slot}}}};
  if (is_root) {
    spdlog::info(
        "elastic resume from {} (step {}): {} replica(s) at the checkpoint, {} now, "
        "{} rank(s) each; θ_global {:016x}",
        step_dir, step, old_keys.size(), keys.size(), topo.replica_size, out.global_fingerprint);
    for (size_t r = 0; r < keys.size(); ++r) {
      const bool k = std::find(kept.begin(), kept.end(), json(keys[r])) != kept.end();
      if (k)
        spdlog::info("  replica {} ({}): continues with its inner optimizer state{} of step {}", r,
                     keys[r], outer.error_feedback().empty() ? "" : " and error feedback", step);
      else
        spdlog::info(
            "  replica {} ({}): new: starts from θ_global with fresh inner optimizer "
            "state{} (no {} on its node)",
            r, keys[r], outer.error_feedback().empty() ? "" : " and zero error feedback",
            replica_state_path(step_dir, keys[r]));
    }
    for (const json& k : dropped)
      spdlog::warn(
          "  replica {} of step {} is not in this run: its inner optimizer state is "
          "discarded{}",
          k.get<std::string>(), step,
          outer.error_feedback().empty()
              ? std::string()
              : " and its unsent error feedback (the part of its pseudo-gradients it "
                "had not yet sent) is lost");
    if (out.data_change.empty())
      spdlog::info(
          "  data: epoch {}, slots [0, {}) consumed; the {} replica(s) are dealt the "
          "rest of the epoch from slot {} (no window repeated or skipped)",
          position.epoch, slot, keys.size(), slot);
  }
  return out;
}

}  // namespace loco
