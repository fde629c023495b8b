// Writes the seed corpora of the fuzz targets from real messages and files
// (fuzz/frames.h gives the multipart form): seeds DIR makes DIR/message,
// DIR/server, DIR/scheduler, DIR/safetensors, DIR/manifest and DIR/shard
// (configs come from configs/*.toml, copied by scripts/fuzz).
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "fuzz/frames.h"
#include "ps/checkpoint.h"

namespace fs = std::filesystem;
using namespace pst;

namespace {

void save(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  const std::string root = argv[1];
  for (const char* d : {"message", "server", "scheduler", "safetensors", "manifest", "shard"})
    fs::create_directories(root + "/" + d);
  const JobConfig job = fuzz::fuzz_job();
  const ParamTable table = build_param_table(job.model, 12, 12);
  const ShardPlan plan = *ShardPlan::make(table.numels(), 1, fuzz::kFuzzChunkBytes);
  std::vector<float> w(static_cast<size_t>(table.total_numel()));
  init_params(table, 1, w.data());
  const int32_t worker = 1, server = 0;  // ranks of the 1-server, 2-worker layout: server 0, workers 1 and 2

  std::vector<std::pair<std::string, Frames>> messages;
  auto add = [&](const std::string& name, OutMessage& m) { messages.emplace_back(name, m.finish()); };
  {
    OutMessage m(wire::Kind::REGISTER, fuzz::kFuzzJob, -1, 0, 1);
    auto n = m.header().initNode();
    n.setRole(wire::Role::WORKER);
    n.setEndpoint("tcp://10.0.0.2:5601");
    n.setHost("host-a");
    n.setMetrics("10.0.0.2:9100");
    add("register", m);
  }
  {
    OutMessage m(wire::Kind::REGISTER, fuzz::kFuzzJob, -1, 0, 9);
    auto n = m.header().initNode();
    n.setRole(wire::Role::SERVER);
    n.setEndpoint("tcp://10.0.0.3:5601");
    n.setHost("host-b");
    add("register-server", m);
  }
  {
    OutMessage m(wire::Kind::PUSH, fuzz::kFuzzJob, worker, 0, 2);
    m.header().initPush().setTokens(10);
    for (const Chunk& c : plan.chunks()) m.add_chunk(c.key, w.data() + c.begin, c.length, nullptr);
    add("push", m);
  }
  {
    OutMessage m(wire::Kind::PUSH, fuzz::kFuzzJob, worker, 0, 3);
    m.header().initPush().setTokens(10);
    const Chunk& c = plan.chunks().front();
    m.add_chunk(c.key, w.data() + c.begin, c.length, nullptr);
    add("push-part", m);
  }
  {
    OutMessage m(wire::Kind::PULL, fuzz::kFuzzJob, worker, 1, 4);
    add("pull", m);
  }
  // cluster.wire = bf16: bfloat16 chunks, and a pull that asks for them.
  std::vector<uint16_t> w16(w.size());
  to_bf16(w.data(), w16.data(), static_cast<int64_t>(w.size()));
  {
    OutMessage m(wire::Kind::PUSH, fuzz::kFuzzJob, worker, 0, 2);
    m.header().initPush().setTokens(10);
    for (const Chunk& c : plan.chunks()) m.add_chunk_bf16(c.key, w16.data() + c.begin, c.length, nullptr);
    add("push-bf16", m);
  }
  {
    OutMessage m(wire::Kind::PULL, fuzz::kFuzzJob, worker, 1, 4);
    m.header().setDtype(wire::DType::BFLOAT16);
    add("pull-bf16", m);
  }
  {
    OutMessage m(wire::Kind::PULL_REPLY, fuzz::kFuzzJob, server, 1, 4);
    m.header().initStepInfo().setApplied(true);
    for (const Chunk& c : plan.chunks()) m.add_chunk_bf16(c.key, w16.data() + c.begin, c.length, nullptr);
    add("pull-reply-bf16", m);
  }
  {
    OutMessage m(wire::Kind::PULL_REPLY, fuzz::kFuzzJob, server, 1, 4);
    m.header().initStepInfo().setApplied(true);
    for (const Chunk& c : plan.chunks()) m.add_chunk(c.key, w.data() + c.begin, c.length, nullptr);
    add("pull-reply", m);
  }
  {
    OutMessage m(wire::Kind::NODE_TABLE, fuzz::kFuzzJob, 0, 0, 1);
    auto nodes = m.header().initNodes(2);
    nodes[0].setRank(1);
    nodes[0].setRole(wire::Role::SERVER);
    nodes[0].setEndpoint("tcp://10.0.0.3:5601");
    nodes[1].setRank(2);
    nodes[1].setRole(wire::Role::WORKER);
    add("node-table", m);
  }
  {
    OutMessage m(wire::Kind::REPORT, fuzz::kFuzzJob, server, 3, 5);
    auto st = m.header().initStats();
    st.setSumSquares(1.5);
    auto c = st.initContributors(2);
    c.set(0, true);
    add("report-stats", m);
  }
  {
    OutMessage m(wire::Kind::MEMBERSHIP, fuzz::kFuzzJob, 0, 0, 9);
    m.header().initDeparted(1).set(0, worker);
    add("membership", m);
  }
  {
    OutMessage m(wire::Kind::ERROR, fuzz::kFuzzJob, server, 0, 6);
    m.header().initError().setMessage("a reason");
    add("error", m);
  }
  {
    OutMessage m(wire::Kind::RESERVED7, fuzz::kFuzzJob, worker, 0, 7);  // rejected
    add("reserved", m);
  }
  for (wire::Kind k : {wire::Kind::HEARTBEAT, wire::Kind::SHUTDOWN, wire::Kind::BARRIER}) {
    OutMessage m(k, fuzz::kFuzzJob, worker, 0, 8);
    add(kind_name(k), m);
  }
  for (auto& [name, frames] : messages) {
    const std::string bytes = fuzz::join_frames(frames);
    save(root + "/message/" + name, bytes);
    save(root + "/server/" + name, bytes);
    save(root + "/scheduler/" + name, bytes);
  }

  // A checkpoint of the fuzz job's model: its server file and manifest.
  const std::string dir = checkpoint_dir(root + "/checkpoint", 10);
  ShardState state;
  state.ranges = plan.owned(0);
  state.weights = w;
  state.exp_avg.assign(w.size(), 0.01f);
  state.exp_avg_sq.assign(w.size(), 0.0001f);
  StepReport report;
  report.version = 10;
  report.applied_steps = 10;
  Manifest manifest = step_manifest(to_toml(job), 1, table, 1, fuzz::kFuzzChunkBytes, report);
  auto written = write_checkpoint_part(root + "/checkpoint", dir, 0, table, state, manifest, 3, Deadline::after(60));
  if (!written.ok()) {
    std::fprintf(stderr, "%s\n", written.status().to_string().c_str());
    return 1;
  }
  std::ifstream in(dir + "/manifest.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  save(root + "/manifest/format2.json", text);
  nlohmann::json j = nlohmann::json::parse(text);
  j.erase("manifest_xxh3");
  j["format"] = 1;
  save(root + "/manifest/format1.json", j.dump(2));
  fs::copy_file(dir + "/" + shard_file_name(0), root + "/safetensors/checkpoint-part.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(dir + "/" + shard_file_name(0), root + "/shard/whole", fs::copy_options::overwrite_existing);
  {
    // Server 0's half of a 2-server checkpoint: the other half's ranges are missing.
    const ShardPlan two = *ShardPlan::make(table.numels(), 2, fuzz::kFuzzChunkBytes);
    ShardState half;
    half.ranges = two.owned(0);
    for (const ChunkRange& r : half.ranges) {
      half.weights.insert(half.weights.end(), w.begin() + r.begin, w.begin() + r.begin + r.length);
      half.exp_avg.insert(half.exp_avg.end(), static_cast<size_t>(r.length), 0.01f);
      half.exp_avg_sq.insert(half.exp_avg_sq.end(), static_cast<size_t>(r.length), 0.0001f);
    }
    auto f = write_shard(root + "/half", 0, table, half);
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", f.status().to_string().c_str());
      return 1;
    }
    fs::copy_file(root + "/half/" + shard_file_name(0), root + "/shard/half", fs::copy_options::overwrite_existing);
    fs::remove_all(root + "/half");
  }
  SafetensorsFile small;
  const std::vector<int32_t> ids{1, 2, 3};
  small.add_i32("ids", {3}, ids.data());
  small.add_f32("w", {2, 2}, w.data());
  small.set_metadata("format", "1");
  if (!small.write(root + "/safetensors/small.safetensors").ok()) return 1;
  fs::remove_all(root + "/checkpoint");
  return 0;
}
