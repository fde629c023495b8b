// Sharded checkpoint files (docs/design.md, Checkpoints): written by S servers, read back
// by any other split of servers (re-sharding by name and offset) with the
// same values; a directory without a manifest, a truncated file, a flipped
// byte, a missing file and a different model are each a clear error, and
// `latest` falls back to the previous complete checkpoint; pruning keeps
// the newest K; a server that cannot write its part ends the checkpoint at
// once, leaving the previous one the latest.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <xxhash.h>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "ps/checkpoint.h"
#include "ps/shard_optimizer.h"
#include "tests/ps/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

namespace fs = std::filesystem;

// The flat state of server k of `servers` for `table`: w[i] = i, m[i] = -i,
// v[i] = 2i (so any misplaced float shows).
ShardState shard_state(const ParamTable& table, int servers, int k, int64_t chunk_bytes = 256) {
  auto plan = ShardPlan::make(table.numels(), servers, chunk_bytes);
  ShardState s;
  s.ranges = plan->owned(k);
  for (const ChunkRange& r : s.ranges)
    for (int64_t i = r.begin; i < r.begin + r.length; ++i) {
      s.weights.push_back(static_cast<float>(i));
      s.exp_avg.push_back(-static_cast<float>(i));
      s.exp_avg_sq.push_back(2.0f * static_cast<float>(i));
    }
  return s;
}

// A checkpoint of `table` at `step` written by `servers` servers, with the
// flat state w[i] = i, m[i] = -i, v[i] = 2i (so any misplaced float shows).
Manifest write_checkpoint(const std::string& root, const ParamTable& table, int servers, int64_t chunk_bytes,
                          int64_t step) {
  auto plan = ShardPlan::make(table.numels(), servers, chunk_bytes);
  EXPECT_TRUE(plan.ok());
  const std::string dir = checkpoint_dir(root, step);
  Manifest m;
  m.step = step;
  m.applied_steps = step - 1;
  m.skipped_steps = 1;
  m.loss = 2.5;
  m.config = "[model]\n";
  m.seed = 7;
  m.servers = servers;
  m.chunk_bytes = chunk_bytes;
  for (const ParamSpec& p : table.params()) m.params.emplace_back(p.name, p.shape);
  for (int k = 0; k < servers; ++k) {
    auto f = write_shard(dir, k, table, shard_state(table, servers, k, chunk_bytes));
    EXPECT_TRUE(f.ok()) << f.status().to_string();
    m.files.push_back(*f);
  }
  EXPECT_TRUE(write_manifest(dir, m).ok());
  return m;
}

ParamTable tiny_table() {
  const JobConfig job = testing::tiny_job();
  return build_param_table(job.model, 12, 12);
}

TEST(CheckpointTest, AnySplitOfServersReadsTheSameState) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  write_checkpoint(root.path(), table, 3, 256, 40);
  auto m = read_checkpoint(checkpoint_dir(root.path(), 40));
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->step, 40);
  EXPECT_EQ(m->applied_steps, 39);
  EXPECT_EQ(m->servers, 3);
  EXPECT_EQ(m->files.size(), 3u);
  for (auto [servers, chunk] :
       {std::pair{1, int64_t{1} << 20}, std::pair{2, int64_t{128}}, std::pair{3, int64_t{256}}}) {
    auto plan = ShardPlan::make(table.numels(), servers, chunk);
    ASSERT_TRUE(plan.ok());
    for (int k = 0; k < servers; ++k) {
      auto s = load_shard(checkpoint_dir(root.path(), 40), *m, table, plan->owned(k));
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      size_t local = 0;
      for (const ChunkRange& r : plan->owned(k))
        for (int64_t i = r.begin; i < r.begin + r.length; ++i, ++local) {
          ASSERT_EQ(s->weights[local], static_cast<float>(i)) << servers << " servers, server " << k;
          ASSERT_EQ(s->exp_avg[local], -static_cast<float>(i));
          ASSERT_EQ(s->exp_avg_sq[local], 2.0f * static_cast<float>(i));
        }
      EXPECT_EQ(local, s->weights.size());
    }
  }
}

TEST(CheckpointTest, DamageIsDetectedAndLatestFallsBack) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  write_checkpoint(root.path(), table, 2, 256, 10);
  write_checkpoint(root.path(), table, 2, 256, 20);
  const std::string newest = checkpoint_dir(root.path(), 20);
  const std::string file = newest + "/server-1.safetensors";
  auto latest = latest_checkpoint(root.path());
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, newest);

  // A flipped byte.
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x10;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << flipped;
  auto r = read_checkpoint(newest);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("server-1.safetensors: checksum"), std::string::npos) << r.status().message();
  EXPECT_EQ(*latest_checkpoint(root.path()), checkpoint_dir(root.path(), 10)) << "latest must fall back";
  write_checkpoint(root.path(), table, 2, 256, 5);
  write_checkpoint(root.path(), table, 2, 256, 30);
  EXPECT_EQ(newest_checkpoints(root.path(), 2),
            (std::vector<std::string>{checkpoint_dir(root.path(), 30), checkpoint_dir(root.path(), 10)}))
      << "the damaged step 20 is skipped";
  EXPECT_EQ(newest_checkpoints(root.path(), 9).size(), 3u) << "30, 10 and 5: fewer than asked";
  fs::remove_all(checkpoint_dir(root.path(), 5));
  fs::remove_all(checkpoint_dir(root.path(), 30));

  // Truncated.
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 100);
  r = read_checkpoint(newest);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();

  // Missing.
  fs::remove(file);
  r = read_checkpoint(newest);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("server-1.safetensors is missing"), std::string::npos) << r.status().message();

  // No manifest: not a checkpoint.
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
  ASSERT_TRUE(read_checkpoint(newest).ok());
  fs::remove(newest + "/manifest.json");
  r = read_checkpoint(newest);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no manifest.json"), std::string::npos);
  EXPECT_EQ(*latest_checkpoint(root.path()), checkpoint_dir(root.path(), 10));

  // A manifest that does not parse.
  std::ofstream(newest + "/manifest.json") << "{\"format\": 1, \"step\": ";
  r = read_checkpoint(newest);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a valid manifest"), std::string::npos) << r.status().message();
}

// Numbers a job cannot have written: each field out of range is named, and
// the checkpoint is refused (it used to resume at step -5 with 0 servers).
TEST(CheckpointTest, ManifestFieldsAreRangeChecked) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  write_checkpoint(root.path(), table, 2, 256, 10);
  const std::string dir = checkpoint_dir(root.path(), 10);
  const std::string path = dir + "/manifest.json";
  nlohmann::json good;
  {
    std::ifstream in(path);
    good = nlohmann::json::parse(in);
  }
  ASSERT_TRUE(read_checkpoint(dir).ok());
  const std::vector<std::tuple<const char*, nlohmann::json, const char*>> cases = {
      {"step", -5, "step = -5: must be >= 0"},
      {"step", 11, "step = 11, but the directory is step-000000010"},
      {"applied_steps", 12, "applied_steps = 12: must be in [0, step]"},
      {"skipped_steps", -1, "skipped_steps = -1"},
      {"servers", 0, "servers = 0: must be in [1, 1024]"},
      {"servers", 3, "lists 2 files for 3 servers"},
      {"chunk_bytes", 0, "chunk_bytes = 0: must be a multiple of 4"},
      {"chunk_bytes", 257, "chunk_bytes = 257"},
      // Numbers that are not integers of the field's type (a plain cast
      // turned 1e30 into a seed, undefined behaviour; the fuzzer found it).
      {"seed", 1e30, "seed is 1e+30, not an integer"},
      {"seed", -1, "seed is -1, not an integer in [0, 18446744073709551615]"},
      {"step", 10.5, "step is 10.5, not an integer"},
      {"servers", 18446744073709551615ull, "servers is 18446744073709551615, not an integer"},
      {"format", 2.0, "format is 2.0, not an integer"},
  };
  // The manifest checks itself: an edit is refused by its checksum before
  // any field is read, unless the editor also re-signs it, as here.
  {
    nlohmann::json j = good;
    j["step"] = 9;
    std::ofstream(path, std::ios::trunc) << j.dump();
    const auto r = read_checkpoint(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("the manifest's checksum is"), std::string::npos) << r.status().message();
  }
  auto resign = [](nlohmann::json j) {
    nlohmann::json body = j;
    body.erase("manifest_xxh3");
    const std::string canonical = body.dump();
    j["manifest_xxh3"] = fmt::format("{:016x}", XXH3_64bits(canonical.data(), canonical.size()));
    return j;
  };
  for (const auto& [field, value, want] : cases) {
    nlohmann::json j = good;
    j[field] = value;
    std::ofstream(path, std::ios::trunc) << resign(j).dump();
    const auto r = read_checkpoint(dir);
    ASSERT_FALSE(r.ok()) << field << " = " << value.dump() << " was accepted";
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
  }
  // The data pool (data/data_cursor.h): holes are batches before next, each
  // once; a manifest without one (an earlier pst's) resumes at step x workers.
  const std::vector<std::tuple<nlohmann::json, const char*>> pools = {
      {{{"next", -4}, {"holes", nlohmann::json::array()}}, "data_position.next = -4"},
      {{{"next", 30}, {"holes", {31}}}, "holes: 31 is not a batch before next = 30"},
      {{{"next", 30}, {"holes", {3, 3}}}, "holes: 3 is not a batch before next = 30, or is listed twice"},
  };
  for (const auto& [pool, want] : pools) {
    nlohmann::json j = good;
    for (const auto& [k, v] : pool.items()) j["data_position"][k] = v;
    std::ofstream(path, std::ios::trunc) << resign(j).dump();
    const auto r = read_checkpoint(dir);
    ASSERT_FALSE(r.ok()) << pool.dump() << " was accepted";
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
  }
  // Shapes whose elements overflow int64 (inspect summed them: undefined
  // behaviour) or with a negative dimension.
  for (const nlohmann::json& shape : {nlohmann::json{4, -1}, nlohmann::json{4294967296ll, 4294967296ll}}) {
    nlohmann::json j = good;
    j["params"][0]["shape"] = shape;
    std::ofstream(path, std::ios::trunc) << resign(j).dump();
    const auto r = read_checkpoint(dir);
    ASSERT_FALSE(r.ok()) << shape.dump() << " was accepted";
    EXPECT_NE(r.status().message().find("each dimension must be >= 0"), std::string::npos) << r.status().message();
  }
  {
    nlohmann::json j = good;
    j["params"][0]["shape"] = {4611686018427387904ll};  // 2^62, twice
    j["params"][1]["shape"] = {4611686018427387904ll};
    std::ofstream(path, std::ios::trunc) << resign(j).dump();
    const auto r = read_checkpoint(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("more elements than 2^63"), std::string::npos) << r.status().message();
  }
  // A file's checksum that is not 64 bits of hex: std::stoull's errors
  // (invalid_argument, out_of_range) are a damaged manifest, not a crash.
  for (const char* sum : {"zz", "1ffffffffffffffff"}) {
    nlohmann::json j = good;
    j["files"][0]["xxh3"] = sum;
    std::ofstream(path, std::ios::trunc) << resign(j).dump();
    const auto r = read_checkpoint(dir);
    ASSERT_FALSE(r.ok()) << sum << " was accepted";
    EXPECT_NE(r.status().message().find("not a valid manifest"), std::string::npos) << r.status().message();
  }
  {
    nlohmann::json j = good;
    j["data_position"]["next"] = 30;
    j["data_position"]["holes"] = {7, 3};
    std::ofstream(path, std::ios::trunc) << resign(j).dump();
    const auto r = read_checkpoint(dir);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->data_pool(3).next, 30);
    EXPECT_EQ(r->data_pool(3).holes, (std::vector<int64_t>{7, 3}));
  }
  std::ofstream(path, std::ios::trunc) << good.dump();
  ASSERT_TRUE(read_checkpoint(dir).ok());
  EXPECT_EQ(read_checkpoint(dir)->data_pool(3).next, 30) << "no pool recorded: step 10 x 3 workers";
  EXPECT_TRUE(read_checkpoint(dir)->data_pool(3).holes.empty());
}

// Server 1 cannot write its part (its temp file's path is taken by a
// directory, as a full disk would refuse it): it says why in
// server-1.failed, and server 0, which holds the manifest, gives up at once
// naming server 1 and its reason instead of waiting out its 60 s deadline
// (it waited 2 x timeout_s, stalling the next checkpoint's update). No
// manifest is written, and the previous checkpoint stays the latest. A
// marker left by an earlier run is not taken for this checkpoint's.
TEST(CheckpointTest, AServerThatCannotWriteItsPartEndsTheCheckpointAtOnce) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  write_checkpoint(root.path(), table, 2, 256, 10);
  const std::string dir = checkpoint_dir(root.path(), 20);
  fs::create_directories(dir + "/" + shard_file_name(1) + ".tmp");
  Manifest m = *read_checkpoint(checkpoint_dir(root.path(), 10));
  m.step = 20;
  auto failed =
      write_checkpoint_part(root.path(), dir, 1, table, shard_state(table, 2, 1), std::nullopt, 3, Deadline::after(60));
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(fs::exists(dir + "/server-1.failed"));
  const Deadline patience = Deadline::after(50);
  auto holder = write_checkpoint_part(root.path(), dir, 0, table, shard_state(table, 2, 0), m, 3, Deadline::after(60));
  ASSERT_FALSE(holder.ok());
  EXPECT_FALSE(patience.expired()) << "server 0 waited out its deadline";
  EXPECT_NE(holder.status().message().find("server 1 could not write its part"), std::string::npos)
      << holder.status().message();
  EXPECT_NE(holder.status().message().find(failed.status().message().substr(0, 40)), std::string::npos)
      << holder.status().message();
  EXPECT_FALSE(fs::exists(dir + "/manifest.json"));
  EXPECT_EQ(*latest_checkpoint(root.path()), checkpoint_dir(root.path(), 10));

  // Another run reaches step 20 again: the old marker (an hour old) does not
  // end the checkpoint; server 1's file, written a moment later, completes it.
  fs::remove_all(dir + "/" + shard_file_name(1) + ".tmp");
  fs::last_write_time(dir + "/server-1.failed", fs::file_time_type::clock::now() - std::chrono::hours(1));
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_TRUE(write_shard(dir, 1, table, shard_state(table, 2, 1)).ok());
  });
  auto again = write_checkpoint_part(root.path(), dir, 0, table, shard_state(table, 2, 0), m, 3, Deadline::after(60));
  late.join();
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(*latest_checkpoint(root.path()), dir);
}

// The job re-forms while server 0 waits for server 1's part, which never
// comes (server 1 was lost): the cancel flag ends the wait long before its
// deadline, no manifest is written, and the previous checkpoint stays the
// latest. With the part there, a set flag changes nothing.
TEST(CheckpointTest, AReformEndsTheWaitForAMissingPart) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  write_checkpoint(root.path(), table, 2, 256, 10);
  Manifest m = *read_checkpoint(checkpoint_dir(root.path(), 10));
  m.step = 20;
  const std::string dir = checkpoint_dir(root.path(), 20);
  std::atomic<bool> cancel{false};
  std::thread reform([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    cancel = true;
  });
  const Deadline patience = Deadline::after(50);
  auto holder =
      write_checkpoint_part(root.path(), dir, 0, table, shard_state(table, 2, 0), m, 3, Deadline::after(60), &cancel);
  reform.join();
  ASSERT_FALSE(holder.ok());
  EXPECT_FALSE(patience.expired()) << "server 0 waited out its deadline";
  EXPECT_NE(holder.status().message().find("server 1's part"), std::string::npos) << holder.status().message();
  EXPECT_FALSE(fs::exists(dir + "/manifest.json"));
  EXPECT_EQ(*latest_checkpoint(root.path()), checkpoint_dir(root.path(), 10));

  ASSERT_TRUE(write_shard(dir, 1, table, shard_state(table, 2, 1)).ok());
  auto whole =
      write_checkpoint_part(root.path(), dir, 0, table, shard_state(table, 2, 0), m, 3, Deadline::after(60), &cancel);
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  EXPECT_EQ(*latest_checkpoint(root.path()), dir);
}

TEST(CheckpointTest, AnotherModelIsRejected) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  write_checkpoint(root.path(), table, 1, 1024, 5);
  auto m = read_checkpoint(checkpoint_dir(root.path(), 5));
  ASSERT_TRUE(m.ok());
  JobConfig other = testing::tiny_job();
  other.model.ffn_dim = 24;
  const ParamTable bigger = build_param_table(other.model, 12, 12);
  const Status s = check_model(*m, bigger);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("linear1.weight 16x8; this model's is"), std::string::npos) << s.message();
  EXPECT_FALSE(load_shard(checkpoint_dir(root.path(), 5), *m, bigger, whole_tensors(bigger)).ok());
}

// A shard file whose tensor names are not KIND/TENSOR@OFFSET, in a
// checkpoint whose manifest matches it (a crafted one: the checksums guard
// against damage, not against an editor who recomputes them): refused,
// naming the tensor. The offset was read with std::stoll, whose exception
// ended the process.
TEST(CheckpointTest, AShardFileWithBadTensorNamesIsRefused) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  Manifest m = write_checkpoint(root.path(), table, 1, 1024, 5);
  const std::string dir = checkpoint_dir(root.path(), 5);
  const std::string file = dir + "/" + shard_file_name(0);
  auto original = SafetensorsFile::read(file);
  ASSERT_TRUE(original.ok()) << original.status().to_string();
  ASSERT_TRUE(load_shard(dir, m, table, whole_tensors(table)).ok());
  for (const char* offset : {"x", "", "-4", "99999999999999999999", "4x", " 4"}) {
    SafetensorsFile f;
    for (const auto& [k, v] : original->metadata()) f.set_metadata(k, v);
    std::string bad;
    for (const auto& [key, t] : original->tensors()) {
      std::string name = key;
      if (bad.empty()) bad = name = key.substr(0, key.rfind('@') + 1) + offset;
      const std::vector<float> values = t.to_f32();
      f.add_f32(name, t.shape, values.data());
    }
    ASSERT_TRUE(f.write(file).ok());
    auto on_disk = checkpoint_file(dir, shard_file_name(0));
    ASSERT_TRUE(on_disk.ok());
    m.files[0] = *on_disk;
    ASSERT_TRUE(write_manifest(dir, m).ok());
    auto read = read_checkpoint(dir);
    ASSERT_TRUE(read.ok()) << read.status().to_string();
    const auto s = load_shard(dir, *read, table, whole_tensors(table));
    ASSERT_FALSE(s.ok()) << "'" << bad << "' was taken";
    EXPECT_NE(s.status().message().find(fmt::format("unexpected tensor '{}'", bad)), std::string::npos)
        << s.status().message();
  }
}

TEST(CheckpointTest, PruneKeepsTheNewestComplete) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  for (int64_t step : {10, 20, 30, 40}) write_checkpoint(root.path(), table, 1, 1024, step);
  fs::create_directories(checkpoint_dir(root.path(), 25));  // an interrupted write: no manifest
  fs::create_directories(checkpoint_dir(root.path(), 50));  // one in progress, newer than all
  ASSERT_TRUE(prune_checkpoints(root.path(), 2, 40).ok());
  EXPECT_FALSE(fs::exists(checkpoint_dir(root.path(), 10)));
  EXPECT_FALSE(fs::exists(checkpoint_dir(root.path(), 20)));
  EXPECT_FALSE(fs::exists(checkpoint_dir(root.path(), 25)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 30)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 40)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 50))) << "a newer write in progress is left alone";
}

// A run resumed from step 20 of a run that went on to step 40 writes step
// 30: keeping the newest 2 by step number alone would remove the step just
// written. Later steps are left alone, the new one and its predecessor stay.
TEST(CheckpointTest, PruneNeverRemovesTheCheckpointJustWritten) {
  testing::TempDir root;
  const ParamTable table = tiny_table();
  for (int64_t step : {10, 20, 35, 40}) write_checkpoint(root.path(), table, 1, 1024, step);
  write_checkpoint(root.path(), table, 1, 1024, 30);
  ASSERT_TRUE(prune_checkpoints(root.path(), 2, 30).ok());
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 30))) << "the checkpoint just written";
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 20)));
  EXPECT_FALSE(fs::exists(checkpoint_dir(root.path(), 10)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 35)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(root.path(), 40)));
}

// The resume invariant at the optimizer's level: 2 servers take 3 steps,
// write a checkpoint, and 3 fresh servers (another split) restore it and
// take 3 more; the weights equal 6 uninterrupted steps of one optimizer bit
// for bit, the learning rate of the schedule included (warmup of 3 steps,
// then linear decay).
TEST(CheckpointTest, ResumingOnAnotherSplitContinuesTheSameSteps) {
  testing::TempDir root;
  JobConfig job = testing::tiny_job();
  job.optim.weight_decay = 0.1;
  const ParamTable table = build_param_table(job.model, 12, 12);
  std::vector<float> w0(static_cast<size_t>(table.total_numel()));
  init_params(table, 5, w0.data());
  auto grad = [&](int step) { return testing::random_vec(w0.size(), 100 + static_cast<uint32_t>(step), 0.5f); };
  // Steps [first, last) on the optimizers of a plan, each with its share.
  auto run = [&](std::vector<std::unique_ptr<ShardOptimizer>>& opts, int first, int last) {
    for (int step = first; step < last; ++step) {
      const std::vector<float> g = grad(step);
      GradStats total;
      for (auto& o : opts) {
        o->add_push(g.data(), 10, 0.0);
        const GradStats part = o->reduce();
        total.sum_squares += part.sum_squares;
        total.nonfinite = total.nonfinite || part.nonfinite;
      }
      for (auto& o : opts) o->apply(total);
    }
  };
  auto flat = [&](std::vector<std::unique_ptr<ShardOptimizer>>& opts) {
    std::vector<float> w(w0.size());
    for (auto& o : opts) o->copy_weights(w.data());
    return w;
  };
  std::vector<std::unique_ptr<ShardOptimizer>> one;
  one.push_back(std::make_unique<ShardOptimizer>(job, table, whole_tensors(table), w0.data()));
  run(one, 0, 6);

  auto plan2 = ShardPlan::make(table.numels(), 2, 256);
  std::vector<std::unique_ptr<ShardOptimizer>> two;
  for (int k = 0; k < 2; ++k) two.push_back(std::make_unique<ShardOptimizer>(job, table, plan2->owned(k), w0.data()));
  run(two, 0, 3);
  Manifest m;
  m.step = two[0]->version();
  m.applied_steps = two[0]->applied_steps();
  m.servers = 2;
  m.chunk_bytes = 256;
  for (const ParamSpec& p : table.params()) m.params.emplace_back(p.name, p.shape);
  const std::string dir = checkpoint_dir(root.path(), m.step);
  for (int k = 0; k < 2; ++k) {
    ShardState s;
    s.ranges = plan2->owned(k);
    two[static_cast<size_t>(k)]->export_state(&s.weights, &s.exp_avg, &s.exp_avg_sq);
    auto f = write_shard(dir, k, table, s);
    ASSERT_TRUE(f.ok());
    m.files.push_back(*f);
  }
  ASSERT_TRUE(write_manifest(dir, m).ok());

  auto latest = latest_checkpoint(root.path());
  ASSERT_TRUE(latest.ok());
  auto back = read_checkpoint(*latest);
  ASSERT_TRUE(back.ok());
  auto plan3 = ShardPlan::make(table.numels(), 3, 128);
  std::vector<std::unique_ptr<ShardOptimizer>> three;
  for (int k = 0; k < 3; ++k) {
    three.push_back(std::make_unique<ShardOptimizer>(job, table, plan3->owned(k), w0.data()));
    auto s = load_shard(*latest, *back, table, plan3->owned(k));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    three.back()->import_state(s->weights.data(), s->exp_avg.data(), s->exp_avg_sq.data(), back->step,
                               back->applied_steps);
  }
  EXPECT_EQ(three[0]->version(), 3);
  run(three, 3, 6);
  const std::vector<float> want = flat(one), got = flat(three);
  EXPECT_EQ(got, want);
  EXPECT_NE(got, flat(two)) << "the resumed servers must have moved on";
}

}  // namespace
}  // namespace pst
