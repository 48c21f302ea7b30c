// Checkpoints: one file per rank holding a JSON metadata document (whatever the caller puts
// in: step counters, resolved config, data positions, RNG states, comm counters, ...) and
// named raw tensors (parameters, optimizer state, outer-loop state, ...), protected by an
// XXH64 checksum of every byte, written atomically (temporary file, fsync, rename, fsync of
// the directory). docs/reliability.md describes the on-disk format byte by byte.
//
//   CheckpointWriter w;
//   w.set_meta(meta);                                  // a JSON object
//   w.add("params", host_params, n, DType::F32);       // the pointer must stay valid until write()
//   w.add("adam.m", host_m, n, DType::F32);
//   w.write(checkpoint_rank_path(root, step, rank));
//
//   Checkpoint c = read_checkpoint(path);              // verifies everything, or throws
//   validate_compatible(c.meta(), checkpoint_identity(config, world_size, rank), c.path());
//   c.copy_to("params", host_params, n, DType::F32);   // checks dtype and count
//
// Directory layout (checkpoint_root(run_dir) = <run_dir>/checkpoints unless
// checkpoint.dir says otherwise):
//
//   <root>/step-000100/rank-0.bin, rank-1.bin, ...
//   <root>/latest        "step-000100\n", written (atomically) after every rank's file
//
// Conventions the CLI tools rely on (export-hf, eval): meta["config"] is the resolved config
// (config_to_json) and the tensor "params" holds the model's weights in llama_param_layout
// order (F32). checkpoint_base_meta() fills in those keys and the identity.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/core/buffer.hpp"
#include "loco/io/dtype.hpp"
#include "loco/io/file_io.hpp"

namespace loco {

inline constexpr char kCheckpointMagic[8] = {'L', 'O', 'C', 'O', 'C', 'K', 'P', 'T'};
inline constexpr uint32_t kCheckpointVersion = 1;
inline constexpr const char* kParamsTensor = "params";

// ------------------------------------------------------------------ writing

class CheckpointWriter {
 public:
  void set_meta(nlohmann::json meta);  // must be a JSON object
  // Adds a tensor of `count` elements; `data` is NOT copied and must stay valid until write().
  // Names must be unique and non-empty.
  void add(const std::string& name, const void* data, uint64_t count, StorageDType dtype);
  void add(const std::string& name, const void* data, uint64_t count, DType dtype) {
    add(name, data, count, to_storage_dtype(dtype));
  }
  void add(const std::string& name, std::span<const float> values) {
    add(name, values.data(), values.size(), StorageDType::F32);
  }
  // Copies the values: for small vectors that would otherwise need a home until write().
  void add_copy(const std::string& name, const void* data, uint64_t count, StorageDType dtype);

  // Writes the file atomically. Throws loco::Error naming the path and the reason; on
  // failure the previous file at `path` (if any) is untouched and no temporary file remains.
  // Returns the number of bytes written.
  uint64_t write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    StorageDType dtype;
    uint64_t count;
    const void* data;
    size_t owned_index;  // index into owned_ + 1, or 0
  };
  nlohmann::json meta_ = nlohmann::json::object();
  std::vector<Entry> entries_;
  std::vector<std::vector<unsigned char>> owned_;
};

// ------------------------------------------------------------------ reading

struct CheckpointTensor {
  std::string name;
  StorageDType dtype = StorageDType::F32;
  uint64_t count = 0;
  const void* data = nullptr;  // 64-byte aligned, valid while the Checkpoint lives
  uint64_t bytes = 0;

  // Typed views; throw naming the tensor when the dtype differs.
  std::span<const float> f32() const;
  std::span<const int32_t> i32() const;
  std::span<const uint16_t> bf16_bits() const;
};

class Checkpoint {
 public:
  const std::string& path() const { return path_; }
  const nlohmann::json& meta() const { return meta_; }
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  bool has(const std::string& name) const;
  // Throws naming the file, the tensor and the tensors present.
  const CheckpointTensor& tensor(const std::string& name) const;
  // Copies a tensor into host memory after checking its dtype and element count.
  void copy_to(const std::string& name, void* dst, uint64_t count, StorageDType dtype) const;
  void copy_to(const std::string& name, void* dst, uint64_t count, DType dtype) const {
    copy_to(name, dst, count, to_storage_dtype(dtype));
  }
  uint64_t file_bytes() const { return bytes_.size; }

 private:
  friend Checkpoint parse_checkpoint(AlignedBytes, const std::string&, bool);
  std::string path_;
  nlohmann::json meta_;
  std::vector<CheckpointTensor> tensors_;
  AlignedBytes bytes_;
};

// Reads and verifies a checkpoint file: magic, version, sizes, checksum (whole file, and per
// tensor to say which one is damaged), JSON header, tensor table (dtypes, sizes, offsets,
// alignment, overlaps, unique names). Errors are loco::Error:
//   "<path>: checksum mismatch (file is corrupt or truncated)"
Checkpoint read_checkpoint(const std::string& path);
// The same from bytes in memory; `source` names them in messages. verify_checksum = false
// is for the fuzzer only (it lets mutated inputs reach the structural checks).
Checkpoint parse_checkpoint(AlignedBytes bytes, const std::string& source,
                            bool verify_checksum = true);

// ------------------------------------------------------------------ compatibility

// What must match between a checkpoint and the run that resumes from it: the model's shape
// (vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, tie_embeddings), the method,
// replica_size, the inner optimizer type, the world size and this rank.
nlohmann::json checkpoint_identity(const Config& config, int world_size, int rank);

// Throws "<source>: checkpoint does not match this run: model.d_model is 256 in the
// checkpoint but 128 here" for the first key of `expected` (recursively) whose value differs
// from, or is missing in, `meta`. Keys of `meta` that `expected` does not name are ignored.
void validate_compatible(const nlohmann::json& meta, const nlohmann::json& expected,
                         const std::string& source);

// Meta every loco checkpoint should carry: {"format": "loco-checkpoint", "step", "config"
// (config_to_json), and the checkpoint_identity keys}. Callers add their own keys.
nlohmann::json checkpoint_base_meta(const Config& config, int world_size, int rank, int64_t step);
// The resolved config stored by checkpoint_base_meta; errors name `source`.
Config config_from_checkpoint_meta(const nlohmann::json& meta, const std::string& source);

// ------------------------------------------------------------------ directory layout

// "<run_dir>/checkpoints" when checkpoint_dir is empty, else checkpoint_dir.
std::string checkpoint_root(const std::string& run_dir, const std::string& checkpoint_dir = "");
std::string checkpoint_step_name(int64_t step);  // "step-000100" (at least 6 digits)
std::string checkpoint_step_dir(const std::string& root, int64_t step);
std::string checkpoint_rank_path(const std::string& root, int64_t step, int rank);
// Parses "step-000100" -> 100; nullopt for anything else.
std::optional<int64_t> parse_checkpoint_step_name(const std::string& name);

// <step_dir>/rank-<rank>.bin
std::string checkpoint_rank_file(const std::string& step_dir, int rank);

// Creates <root>/step-<N>/ (and its parents) if needed and writes this rank's file there.
// Returns the path. The whole protocol for one checkpoint of a K-rank run:
//   every rank:  write_checkpoint_rank(w, root, step, rank);
//   barrier (every file is complete);
//   rank 0:      write_latest_checkpoint(root, step); prune_checkpoints(root, keep_last, step);
// Resuming: step_dir = resolve_resume(spec, root); c = read_checkpoint(
//   checkpoint_rank_file(step_dir, rank)); validate_compatible(c.meta(), identity, c.path()).
std::string write_checkpoint_rank(const CheckpointWriter& w, const std::string& root, int64_t step,
                                  int rank);

// Step numbers of the step directories under `root`, ascending (empty when root is missing).
std::vector<int64_t> list_checkpoint_steps(const std::string& root);

// Points <root>/latest at `step` (atomically; write it after every rank's file is complete).
void write_latest_checkpoint(const std::string& root, int64_t step);
// The step <root>/latest names, or nullopt when there is no `latest` file. Throws when the
// file exists but is malformed or names a step directory that does not exist.
std::optional<int64_t> read_latest_checkpoint(const std::string& root);

// Deletes step directories so that at most `keep_last` remain among those with a step
// <= just_written (keep_last <= 0 keeps everything). Never deletes the step just written nor
// the one `latest` points to; step directories newer than just_written (left by an abandoned
// run that was resumed from an earlier step) are left alone. Also deletes the hidden
// temporary files that killed writes leave behind (".rank-0.bin.tmp-<pid>-<n>") in the root
// and the remaining step directories up to just_written: call it after every rank's file of
// just_written is complete (after a barrier). With sweep_step_dirs = false only the root is
// swept (other ranks may still be writing into the remaining step directories). Returns the
// deleted steps.
std::vector<int64_t> prune_checkpoints(const std::string& root, int keep_last, int64_t just_written,
                                       bool sweep_step_dirs = true);

// Where to resume from. `spec` is "latest" (the step <root>/latest points to), a step
// directory, a run directory (its latest), or a rank file (its step directory).
// Returns the step directory; throws naming what was looked at.
std::string resolve_resume(const std::string& spec, const std::string& root);

// The rank file to read from a user-given path: a rank file itself, a step directory
// (its rank-<rank>.bin) or a run/checkpoint directory (latest step, rank-<rank>.bin).
std::string resolve_checkpoint_file(const std::string& path, int rank = 0);

}  // namespace loco
