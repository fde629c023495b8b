// libFuzzer target: any bytes as server 0's file of a checkpoint of the fuzz
// job's model (fuzz/frames.h) through load_shard, re-sharded for one server
// and for two: the tensors' names, kinds, offsets and lengths. (The manifest
// that names the file, whose size and checksum read_checkpoint verifies
// first, is fuzz_manifest's; a crafted checkpoint can match it to any
// file.) The seeds are real checkpoint parts, whole and half of a model.
#include <cstdint>
#include <fstream>
#include <string>

#include "fuzz/frames.h"
#include "fuzz/scratch.h"
#include "ps/checkpoint.h"

using namespace pst;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string& dir = fuzz::scratch_dir("shard");
  static const JobConfig job = fuzz::fuzz_job();
  static const ParamTable table = build_param_table(job.model, 12, 12);
  static const Manifest base = [] {
    StepReport report;
    report.version = 10;
    report.applied_steps = 10;
    Manifest m = step_manifest(to_toml(job), 1, table, 1, fuzz::kFuzzChunkBytes, report);
    m.files = {CheckpointFile{shard_file_name(0), 0, 0}};
    return m;
  }();
  {
    std::ofstream out(dir + "/" + shard_file_name(0), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  for (int servers : {1, 2}) {
    auto plan = ShardPlan::make(table.numels(), servers, fuzz::kFuzzChunkBytes);
    if (!plan.ok()) __builtin_trap();
    for (int k = 0; k < servers; ++k) {
      auto shard = load_shard(dir, base, table, plan->owned(k));
      if (!shard.ok()) continue;
      // A loaded shard holds exactly the ranges it owns, of each kind.
      int64_t owned = 0;
      for (const ChunkRange& r : plan->owned(k)) owned += r.length;
      if (static_cast<int64_t>(shard->weights.size()) != owned ||
          static_cast<int64_t>(shard->exp_avg.size()) != owned ||
          static_cast<int64_t>(shard->exp_avg_sq.size()) != owned)
        __builtin_trap();
    }
  }
  return 0;
}
