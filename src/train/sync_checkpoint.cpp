// Checkpoints at outer syncs: see include/loco/train/sync_checkpoint.hpp.
#include "loco/train/sync_checkpoint.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "loco/core/error.hpp"
#include "loco/data/stream.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/outer/outer_sync.hpp"
#include "loco/train/resume_checks.hpp"

namespace loco {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A host copy of an F32 device buffer, shared with the writer thread's job.
std::shared_ptr<std::vector<float>> host_copy(Backend& backend, Buf b) {
  if (b.dtype != DType::F32) throw Error("checkpoint: expected an F32 buffer");
  auto host = std::make_shared<std::vector<float>>(b.numel);
  if (b.numel > 0) backend.download(host->data(), b);
  return host;
}

// The files of one rank's share of a checkpoint, owned by the writer's job.
struct PendingFile {
  std::string path;
  nlohmann::json meta;
  std::vector<std::pair<std::string, std::shared_ptr<std::vector<float>>>> tensors;

  uint64_t bytes() const {
    uint64_t n = 0;
    for (const auto& t : tensors) n += t.second->size() * sizeof(float);
    return n;
  }
  void write() const {
    CheckpointWriter w;
    for (const auto& [name, values] : tensors) w.add(name, *values);
    w.set_meta(meta);
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec)
      throw Error("cannot create checkpoint directory " + fs::path(path).parent_path().string() +
                  ": " + ec.message());
    w.write(path);
  }
};

std::string sanitize(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out.empty() ? "_" : out;
}

}  // namespace

std::string replica_state_file_name(const std::string& key) {
  return "replica-" + sanitize(key) + ".bin";
}

std::string global_state_path(const std::string& step_dir) {
  return (fs::path(step_dir) / kGlobalStateFile).string();
}

std::string replica_state_path(const std::string& step_dir, const std::string& key) {
  return (fs::path(step_dir) / replica_state_file_name(key)).string();
}

std::vector<std::string> replica_keys(const std::vector<RankPlacement>& placement) {
  std::vector<std::string> keys;
  std::map<std::string, int> per_host;
  for (const RankPlacement& p : placement) {
    if (p.rank_in_replica != 0) continue;
    if (size_t(p.replica) != keys.size())
      throw Error("replica_keys: replicas must be listed in order of their first rank");
    keys.push_back(p.host + "-" + std::to_string(per_host[p.host]++));
  }
  return keys;
}

SyncCheckpointRoles sync_checkpoint_roles(const CheckpointConfig& cfg, const RankPlacement& mine) {
  SyncCheckpointRoles r;
  r.global = cfg.storage == "node_local" ? mine.local_rank == 0 : mine.rank == 0;
  r.replica = mine.rank_in_replica == 0;
  return r;
}

nlohmann::json sync_checkpoint_identity(const Config& config) {
  nlohmann::json id = checkpoint_identity(config, 1, 0);
  id.erase("world_size");
  id.erase("rank");
  return id;
}

nlohmann::json SyncCheckpointStats::add(const SyncCheckpointCost& c) {
  ++count;
  stall_total += c.stall_seconds;
  stall_max = std::max(stall_max, c.stall_seconds);
  waited_total += c.waited_seconds;
  host_bytes = c.host_bytes;
  if (count > 1) {  // the previous checkpoint's write, finished by now
    write_total += c.previous_write_seconds;
    ++writes_measured;
  }
  return {{"stall_s", c.stall_seconds},
          {"waited_s", c.waited_seconds},
          {"host_bytes", c.host_bytes},
          {"previous_write_s", count > 1 ? nlohmann::json(c.previous_write_seconds) : nullptr}};
}

nlohmann::json SyncCheckpointStats::to_json() const {
  return {{"kind", "at_sync"},
          {"count", count},
          {"stall_s_mean", count ? stall_total / count : 0.0},
          {"stall_s_max", stall_max},
          {"waited_s_total", waited_total},
          {"host_bytes", host_bytes},
          {"write_s_mean", writes_measured ? nlohmann::json(write_total / writes_measured)
                                           : nlohmann::json(nullptr)},
          {"note",
           "rank 0's: stall = time the training loop spent in a checkpoint (waiting for the "
           "previous write + copying to host memory); the files are written in the "
           "background"}};
}

SyncCheckpointer::SyncCheckpointer(const Config& config, std::string root, const Runtime& runtime)
    : config_(config), root_(std::move(root)), runtime_(runtime) {
  roles_ = sync_checkpoint_roles(config.checkpoint, runtime.mine());
  keys_ = replica_keys(runtime.placement);
  replica_ = runtime.mine().replica;
}

SyncCheckpointCost SyncCheckpointer::save(const SyncCheckpointState& s) {
  SyncCheckpointCost cost;
  const auto t0 = Clock::now();
  // The previous checkpoint first: host memory holds one checkpoint at a time.
  {
    const auto tw = Clock::now();
    const std::string error = writer_.wait();
    cost.waited_seconds = seconds_since(tw);
    if (!error.empty() && pending_error_.empty()) pending_error_ = error;
  }
  cost.previous_write_seconds = writer_.last_job_seconds();
  Backend& backend = s.model->backend();
  const std::string step_dir = checkpoint_step_dir(root_, s.step);
  const int K = static_cast<int>(keys_.size());
  std::vector<PendingFile> files;

  if (roles_.replica) {
    PendingFile f;
    f.path = replica_state_path(step_dir, key());
    nlohmann::json opt_names = nlohmann::json::array();
    for (auto& [name, buf] : s.optimizer->state()) {
      f.tensors.emplace_back(name, host_copy(backend, buf));
      opt_names.push_back(name);
    }
    auto ef = std::make_shared<std::vector<float>>(s.outer->error_feedback());
    const bool has_ef = !ef->empty();
    if (has_ef) f.tensors.emplace_back("outer.error_feedback", ef);
    // After a blocking sync θ_local is θ_global, which global.bin holds: only a merge
    // (overlap) or a fragment sync leaves them apart.
    const bool own_params =
        backend.fingerprint(s.model->params()) != backend.fingerprint(s.outer->global_params());
    if (own_params) f.tensors.emplace_back("local.params", host_copy(backend, s.model->params()));
    const RankPlacement& me = runtime_.mine();
    f.meta = sync_checkpoint_identity(config_);
    f.meta["format"] = "loco-checkpoint";
    f.meta["layout"] = kSyncLayout;
    f.meta["kind"] = "replica";
    f.meta["step"] = s.step;
    f.meta["key"] = key();
    f.meta["replica"] = replica_;
    f.meta["host"] = me.host;
    f.meta["optimizer_steps_taken"] = s.optimizer->steps_taken();
    f.meta["optimizer_state"] = opt_names;
    f.meta["outer_error_feedback"] = has_ef;
    f.meta["local_params"] = own_params;
    files.push_back(std::move(f));
  }
  if (roles_.global) {
    PendingFile f;
    f.path = global_state_path(step_dir);
    f.tensors.emplace_back(kParamsTensor, host_copy(backend, s.outer->global_params()));
    f.tensors.emplace_back("outer.momentum", host_copy(backend, s.outer->momentum()));
    const StreamPosition pos = s.stream->position();
    nlohmann::json replicas = nlohmann::json::array();
    for (int r = 0; r < K; ++r) {
      const auto& first = *std::find_if(
          runtime_.placement.begin(), runtime_.placement.end(),
          [r](const RankPlacement& p) { return p.replica == r && p.rank_in_replica == 0; });
      replicas.push_back({{"key", keys_[size_t(r)]}, {"replica", r}, {"host", first.host}});
    }
    f.meta = checkpoint_base_meta(config_, runtime_.world->size(), 0, s.step);
    f.meta["layout"] = kSyncLayout;
    f.meta["kind"] = "global";
    f.meta["outer_syncs_done"] = s.outer->syncs_done();
    f.meta["outer_fragment_syncs"] = s.outer->fragment_syncs();
    f.meta["global_fingerprint"] =
        fmt::format("{:016x}", backend.fingerprint(s.outer->global_params()));
    f.meta["data_position"] = {{"epoch", pos.epoch}, {"slot", global_slot(pos, K)}};
    f.meta[kDataHashKey] = s.data_hash;
    f.meta["tokens"] = s.tokens;
    f.meta["skipped_steps"] = s.skipped_steps;
    f.meta["replicas"] = replicas;
    f.meta["num_replicas"] = K;
    files.push_back(std::move(f));
  }
  for (const PendingFile& f : files) cost.host_bytes += f.bytes();

  if (!files.empty()) {
    const bool writes_latest = roles_.global;
    // Pruning waits for nothing, so it keeps the previous step too: another rank may still
    // be writing its file of that step (every rank waits for its previous write before the
    // next checkpoint, and a sync point lies between two checkpoints, so nothing older is
    // still being written).
    const int keep =
        config_.checkpoint.keep_last == 0 ? 0 : std::max(config_.checkpoint.keep_last, 2);
    const int64_t step = s.step;
    const std::string root = root_;
    writer_.submit("checkpoint of step " + std::to_string(step),
                   [files = std::move(files), writes_latest, keep, step, root] {
                     for (const PendingFile& f : files) f.write();
                     if (!writes_latest) return;
                     write_latest_checkpoint(root, step);
                     prune_checkpoints(root, keep, step, /*sweep_step_dirs=*/false);
                   });
  }
  cost.stall_seconds = seconds_since(t0);
  return cost;
}

std::string SyncCheckpointer::finish() {
  std::string error = writer_.wait();
  if (error.empty()) error.swap(pending_error_);
  pending_error_.clear();
  return error;
}

std::string SyncCheckpointer::take_error() {
  if (pending_error_.empty()) pending_error_ = writer_.failed_so_far();
  std::string e;
  e.swap(pending_error_);
  return e;
}

}  // namespace loco
