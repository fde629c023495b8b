// Sharded checkpoints (docs/design.md, Checkpoints). A checkpoint of step v is a directory
// ROOT/step-<v, 9 digits>/ holding one safetensors file per server with its
// chunks' weights and Adam moments, named by (tensor name, float offset in
// the tensor): "param/<name>@<offset>", "exp_avg/<name>@<offset>",
// "exp_avg_sq/<name>@<offset>"; and manifest.json, written last and
// atomically, with the step, the optimizer's counters, the resolved config,
// the parameter table (names and shapes), the data position and seeds, and
// each file's size and XXH3-64 checksum, and the manifest's own checksum. A
// directory without a manifest is not a checkpoint. Loading re-shards by (name, offset), so a job may resume
// with another number of servers (or chunk size).
//
// Each server writes its file (temp + fsync + rename, by SafetensorsFile);
// the manifest goes last, so a crash while writing leaves at most a
// directory without a manifest, which readers skip. A server that cannot
// write its file (a full disk) removes its temp file and leaves
// server-K.failed with the reason, so that the manifest's holder gives up
// at once instead of waiting out its deadline.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/shard_plan.h"
#include "core/deadline.h"
#include "core/files.h"
#include "core/status.h"
#include "data/data_cursor.h"
#include "model/param_table.h"
#include "ps/shard_optimizer.h"

namespace pst {

// A server's part of a checkpoint: its owned ranges (in owned order) and
// their weights and moments, back to back in the same order.
struct ShardState {
  std::vector<ChunkRange> ranges;
  std::vector<float> weights, exp_avg, exp_avg_sq;
};

struct CheckpointFile {
  std::string name;  // relative to the checkpoint directory
  int64_t bytes = 0;
  uint64_t xxh3 = 0;
};

struct Manifest {
  int64_t step = 0;           // weights version (rounds done)
  int64_t applied_steps = 0;  // optimizer steps applied (the schedule's counter)
  int64_t skipped_steps = 0;
  double loss = 0.0;   // the last logged training loss, for `checkpoint inspect`
  std::string config;  // the job's resolved config (TOML)
  uint64_t seed = 0;   // train.seed: data order and dropout masks follow from (seed, step)
  // The data pool of the next step (data/data_cursor.h): batches from
  // data_next on, and the holes before it; -1: not recorded (a checkpoint of
  // an earlier pst or of one process), step x workers then.
  int64_t data_next = -1;
  std::vector<int64_t> data_holes;

  // The pool a job of `workers` resumes from.
  DataPool data_pool(int64_t workers) const;
  int64_t servers = 0;
  int64_t chunk_bytes = 0;
  std::vector<std::pair<std::string, std::vector<int64_t>>> params;  // the parameter table: names and shapes
  std::vector<CheckpointFile> files;
};

// ROOT/step-<step>.
std::string checkpoint_dir(const std::string& root, int64_t step);
// The step-N directories under root (complete or not), by step.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& root);

// The manifest of a checkpoint after the step `report` describes, its files
// still to be added: config is the job's resolved TOML.
Manifest step_manifest(const std::string& config, uint64_t seed, const ParamTable& table, int64_t servers,
                       int64_t chunk_bytes, const StepReport& report);
// One server's part of the checkpoint in dir (under root): its file. The
// server that holds the manifest (server 0; a job of one process) then
// waits for every other server's file to appear (each appears whole, by
// rename; an error at the deadline), writes the manifest last and prunes
// root to `keep`; it gives up as soon as another server says it failed, or
// `cancel` (may be null) is set while a file is missing (the job re-forms).
// Returns the bytes of the checkpoint's files for the
// manifest's holder, of its own file for the others.
Result<int64_t> write_checkpoint_part(const std::string& root, const std::string& dir, int server,
                                      const ParamTable& table, const ShardState& state,
                                      std::optional<Manifest> manifest, int64_t keep, Deadline deadline,
                                      const std::atomic<bool>* cancel = nullptr);

// Writes server k's file into dir (created if needed); its size and checksum.
Result<CheckpointFile> write_shard(const std::string& dir, int server, const ParamTable& table,
                                   const ShardState& state);
// The size and checksum of dir/name as it is on disk.
Result<CheckpointFile> checkpoint_file(const std::string& dir, const std::string& name);
// The name of server k's file.
std::string shard_file_name(int server);
// Writes manifest.json atomically (temp + fsync + rename) after checking
// that every file it names is present with that size and checksum.
Status write_manifest(const std::string& dir, const Manifest& manifest);

// Reads dir's manifest and verifies every file (present, size, checksum);
// errors name the directory and what is wrong.
Result<Manifest> read_checkpoint(const std::string& dir);
// The newest complete checkpoint under root: the highest step whose
// manifest and files verify (a broken newer one is skipped with a warning).
Result<std::string> latest_checkpoint(const std::string& root);
// The `count` newest complete checkpoints under root, newest first, skipped
// ones as in latest_checkpoint; fewer when root holds fewer.
std::vector<std::string> newest_checkpoints(const std::string& root, int64_t count);

// Checks that a checkpoint's parameter table is the model's (names and
// shapes, in order): a clear error naming the first difference.
Status check_model(const Manifest& m, const ParamTable& table);
// The state of `ranges` (any split into servers and chunks) from a verified
// checkpoint: pieces are found by (tensor name, offset) in any of its files.
Result<ShardState> load_shard(const std::string& dir, const Manifest& m, const ParamTable& table,
                              const std::vector<ChunkRange>& ranges);
// After the checkpoint of step `written`: removes all but the newest `keep`
// complete checkpoints of steps up to `written` under root, and directories
// without a manifest older than the newest of those. Checkpoints of later
// steps (a run resumed from an earlier step left them) are not this run's
// to remove, and the one just written is always kept.
Status prune_checkpoints(const std::string& root, int64_t keep, int64_t written);

}  // namespace pst
