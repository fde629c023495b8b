// The threads bootstrap (job/local.cc) runs the job's real nodes
// (job/nodes.h) as threads: S servers and W workers over inproc sockets, for
// S, W in {1, 2, 3} (S = W = 1 runs in one thread without sockets), with
// tensors cut into 4 KiB chunks spread over the servers, and streamed pushes
// and pulls too, train to the same weights, bit for bit, as one thread
// playing the W workers in turn against one optimizer (the sequential job,
// an independent path: no sockets, no shards, no reducer). A node that cannot
// start (here the workers' device) ends the whole job at once with its
// error, not at the others' deadlines.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "job/job.h"
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
  bool overlap = false;  // pushes per layer and pulls in layer order, streamed every 1 KiB
};

class ThreadsJobTest : public ::testing::TestWithParam<Layout> {};

TEST_P(ThreadsJobTest, EqualsOneThreadPlayingTheWorkersBitForBit) {
  const auto [S, W, overlap] = GetParam();
  TempDir tmp;
  const std::string config = source_path("configs/g2p-tiny.toml");
  auto threads = job_settings(tmp.path() + "/threads");
  threads.push_back(fmt::format("cluster.servers={}", S));
  threads.push_back(fmt::format("cluster.workers={}", W));
  if (overlap) {
    threads.push_back("cluster.overlap=on");
    threads.push_back("cluster.stream_bytes=1024");
  }
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
                                           Layout{2, 3, true}, Layout{3, 3, true}),
                         [](const ::testing::TestParamInfo<Layout>& p) {
                           return fmt::format("S{}W{}{}", p.param.servers, p.param.workers,
                                              p.param.overlap ? "Streamed" : "");
                         });

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
