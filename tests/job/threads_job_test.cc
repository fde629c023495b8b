// The threads bootstrap (job/local.cc) runs the job's real nodes
// (job/nodes.h) as threads: S servers and W workers over inproc sockets, for
// S, W in {1, 2, 3} (S = W = 1 runs in one thread without sockets), with
// tensors cut into 4 KiB chunks spread over the servers, and streamed pushes
// and pulls too, train to the same weights, bit for bit, as one thread
// playing the W workers in turn against one optimizer (the sequential job,
// an independent path: no sockets, no shards, no reducer). A node that cannot
// start (here the workers' device) ends the whole job at once with its
// error, not at the others' deadlines.
#include <bit>
#include <cmath>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "job/cluster.h"
#include "job/job.h"
#include "ps/checkpoint.h"
#include "ps/shard_optimizer.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using testing::source_path;
using testing::TempDir;

std::vector<std::string> job_settings(const std::string& output) {
  return {"train.steps=4",     "train.eval_every=0",          "train.test_at_end=false",  "data.batch_size=16",
          "model.dropout=0.1", "model.attention_dropout=0.1", "cluster.chunk_bytes=4096", "cluster.timeout_s=60",
          "train.threads=1",   "metrics.enabled=false",       "train.output=" + output};
}

// The weights of two runs' model.safetensors, tensor by tensor, bit for bit.
void expect_same_model(const std::string& a_path, const std::string& b_path) {
  auto a = SafetensorsFile::read(a_path);
  auto b = SafetensorsFile::read(b_path);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  ASSERT_GT(b->tensors().size(), 10u);
  for (const auto& [name, t] : b->tensors()) {
    const StoredTensor* u = a->find(name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_EQ(u->to_f32(), t.to_f32()) << name;
  }
}

struct Layout {
  int servers, workers;
  bool overlap = false;   // pushes per layer and pulls in layer order, streamed every 1 KiB
  bool streamed = false;  // overlap off, the servers' pull replies streamed every 1 KiB
};

class ThreadsJobTest : public ::testing::TestWithParam<Layout> {};

TEST_P(ThreadsJobTest, EqualsOneThreadPlayingTheWorkersBitForBit) {
  const auto [S, W, overlap, streamed] = GetParam();
  TempDir tmp;
  const std::string config = source_path("configs/g2p-tiny.toml");
  auto threads = job_settings(tmp.path() + "/threads");
  threads.push_back(fmt::format("cluster.servers={}", S));
  threads.push_back(fmt::format("cluster.workers={}", W));
  threads.push_back(overlap ? "cluster.overlap=on" : "cluster.overlap=off");
  if (overlap || streamed) threads.push_back("cluster.stream_bytes=1024");
  const Status s = train(TrainArgs{config, threads, "", ""});
  ASSERT_TRUE(s.ok()) << s.to_string();
  auto sequential = job_settings(tmp.path() + "/sequential");
  sequential.push_back(fmt::format("cluster.workers={}", W));
  sequential.push_back("cluster.in_process=sequential");
  const Status r = train(TrainArgs{config, sequential, "", ""});
  ASSERT_TRUE(r.ok()) << r.to_string();
  expect_same_model(tmp.path() + "/threads/model.safetensors", tmp.path() + "/sequential/model.safetensors");
}

INSTANTIATE_TEST_SUITE_P(Layouts, ThreadsJobTest,
                         ::testing::Values(Layout{1, 2}, Layout{1, 3}, Layout{2, 1}, Layout{2, 2}, Layout{2, 3},
                                           Layout{3, 1}, Layout{3, 2}, Layout{3, 3}, Layout{1, 2, true},
                                           Layout{2, 3, true}, Layout{3, 3, true}, Layout{1, 2, false, true},
                                           Layout{2, 3, false, true}),
                         [](const ::testing::TestParamInfo<Layout>& p) {
                           return fmt::format("S{}W{}{}", p.param.servers, p.param.workers,
                                              p.param.overlap    ? "Streamed"
                                              : p.param.streamed ? "ServersStream"
                                                                 : "");
                         });

// cluster.wire = bf16, S = W = 2 with streamed pushes and pulls: the
// model the lead worker writes is the servers' float32 weights (their
// checkpoint of the last step), bit for bit, not the bfloat16 copies the
// pulls carried; the rounded gradients make it differ from the fp32 job's
// model, by little.
TEST(ThreadsJobTest, ABf16WireJobWritesTheServersFloat32Weights) {
  TempDir tmp;
  const std::string config = source_path("configs/g2p-tiny.toml");
  auto settings = [&](const std::string& wire) {
    auto s = job_settings(tmp.path() + "/" + wire);
    for (const char* x : {"cluster.servers=2", "cluster.workers=2", "cluster.overlap=on", "cluster.stream_bytes=1024",
                          "checkpoint.every_steps=4"})
      s.push_back(x);
    s.push_back("cluster.wire=" + wire);
    return s;
  };
  for (const std::string wire : {"bf16", "fp32"}) {
    const Status s = train(TrainArgs{config, settings(wire), "", ""});
    ASSERT_TRUE(s.ok()) << wire << ": " << s.to_string();
  }
  auto job = load_config(config, settings("bf16"));
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto data = load_job_data(*job);
  ASSERT_TRUE(data.ok()) << data.status().to_string();
  const ParamTable table = build_param_table(job->model, data->src_vocab, data->tgt_vocab);
  auto dir = latest_checkpoint(checkpoint_root(*job));
  ASSERT_TRUE(dir.ok()) << dir.status().to_string();
  auto manifest = read_checkpoint(*dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status().to_string();
  EXPECT_EQ(manifest->step, 4);
  auto state = load_shard(*dir, *manifest, table, whole_tensors(table));
  ASSERT_TRUE(state.ok()) << state.status().to_string();
  auto model = SafetensorsFile::read(tmp.path() + "/bf16/model.safetensors");
  auto fp32 = SafetensorsFile::read(tmp.path() + "/fp32/model.safetensors");
  ASSERT_TRUE(model.ok() && fp32.ok());
  int64_t unrounded = 0, differ = 0;
  double worst = 0;
  for (int64_t i = 0; i < table.size(); ++i) {
    const std::string& name = table[i].name;
    const StoredTensor* t = model->find(name);
    const StoredTensor* f = fp32->find(name);
    ASSERT_TRUE(t && f) << name;
    const std::vector<float> got = t->to_f32(), other = f->to_f32();
    const int64_t at = table.offset_of(name);
    const std::vector<float> want(state->weights.begin() + at, state->weights.begin() + at + table[i].numel);
    ASSERT_EQ(got, want) << name << ": the model is not the servers' float32 weights";
    for (size_t j = 0; j < got.size(); ++j) {
      unrounded += (std::bit_cast<uint32_t>(got[j]) & 0xffffu) != 0;
      differ += got[j] != other[j];
      worst = std::max(worst, static_cast<double>(std::fabs(got[j] - other[j])));
    }
  }
  EXPECT_GT(unrounded, table.total_numel() / 2) << "the model holds bfloat16 values";
  EXPECT_GT(differ, 0) << "the bf16 job's gradients were not rounded";
  // Four AdamW steps at the tiny config's learning rate move a weight by at
  // most about 4 lr; rounded gradients change the direction, not the size.
  EXPECT_LT(worst, 4 * job->optim.lr + 1e-6);
}

// cluster.wire_rounding = stochastic: the bits that round a value are
// those of its place in the model, so 1 server with streamed pushes and 2
// servers without give the same model, bit for bit; rounding to nearest
// gives another.
TEST(ThreadsJobTest, StochasticRoundingOfTheWireDoesNotDependOnTheServers) {
  TempDir tmp;
  const std::string config = source_path("configs/g2p-tiny.toml");
  auto run = [&](const std::string& name, const std::vector<std::string>& extra) {
    auto s = job_settings(tmp.path() + "/" + name);
    s.push_back("cluster.workers=2");
    s.push_back("cluster.wire=bf16");
    s.insert(s.end(), extra.begin(), extra.end());
    const Status st = train(TrainArgs{config, s, "", ""});
    ASSERT_TRUE(st.ok()) << name << ": " << st.to_string();
  };
  run("one",
      {"cluster.servers=1", "cluster.wire_rounding=stochastic", "cluster.overlap=on", "cluster.stream_bytes=1024"});
  run("two", {"cluster.servers=2", "cluster.wire_rounding=stochastic"});
  run("nearest", {"cluster.servers=2"});
  expect_same_model(tmp.path() + "/one/model.safetensors", tmp.path() + "/two/model.safetensors");
  auto a = SafetensorsFile::read(tmp.path() + "/two/model.safetensors");
  auto b = SafetensorsFile::read(tmp.path() + "/nearest/model.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  int64_t differ = 0;
  for (const auto& [name, t] : b->tensors()) {
    const std::vector<float> x = t.to_f32(), y = a->find(name)->to_f32();
    for (size_t i = 0; i < x.size(); ++i) differ += x[i] != y[i];
  }
  EXPECT_GT(differ, 0) << "stochastic rounding gave the model of rounding to nearest";
}

TEST(ThreadsJobFailureTest, ANodeThatCannotStartEndsTheJobWithItsError) {
  TempDir tmp;
  auto settings = job_settings(tmp.path() + "/out");
  settings.push_back("cluster.servers=2");
  settings.push_back("cluster.workers=3");
  settings.push_back("train.device=cuda:7");  // absent here and on a machine of one GPU
  const Status s = train(TrainArgs{source_path("configs/g2p-tiny.toml"), settings, "", ""});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(exit_code(s), 2) << s.to_string();
  EXPECT_NE(s.message().find("worker"), std::string::npos) << s.to_string();
  EXPECT_NE(s.message().find("cuda"), std::string::npos) << s.to_string();
}

TEST(ExitCodeTest, TwoWhenARerunFailsAgainOneWhenItMaySucceed) {
  EXPECT_EQ(exit_code(Status()), 0);
  EXPECT_EQ(exit_code(invalid_argument("x")), 2);
  EXPECT_EQ(exit_code(not_found("x")), 2);
  EXPECT_EQ(exit_code(failed_precondition("x")), 2);
  EXPECT_EQ(exit_code(data_loss("x")), 2);
  EXPECT_EQ(exit_code(deadline_exceeded("x")), 1);
  EXPECT_EQ(exit_code(io_error("x")), 1);
}

}  // namespace
}  // namespace pst
