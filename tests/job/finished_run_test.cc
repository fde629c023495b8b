// A process started again after its job has run to the end (a StatefulSet
// restarts its servers whatever their status; a restart policy; a requeue)
// with checkpoint.resume = auto: finished_run names the checkpoint of the
// last step, and a --role process exits at once with success, before any
// rendezvous, leaving train.output as it was. Not so with a later
// train.steps, with resume = latest, or before the last step.
#include <gtest/gtest.h>

#include <filesystem>

#include "job/job.h"
#include "job/resume.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using testing::source_path;
using testing::TempDir;

std::vector<std::string> settings(const std::string& output, const std::string& steps) {
  return {steps,
          "train.eval_every=0",
          "train.test_at_end=false",
          "data.batch_size=16",
          "cluster.servers=1",
          "cluster.workers=2",
          "checkpoint.every_steps=2",
          "train.threads=1",
          "metrics.enabled=false",
          "train.output=" + output};
}

Result<JobConfig> job_of(const std::string& output, const std::string& steps, const std::string& resume) {
  auto s = settings(output, steps);
  s.push_back("checkpoint.resume=" + resume);
  return load_config(source_path("configs/g2p-tiny.toml"), s);
}

// Every file under dir with its size and last write time.
std::map<std::string, std::pair<uintmax_t, std::filesystem::file_time_type>> files_of(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, std::filesystem::file_time_type>> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[e.path().string()] = {e.file_size(), e.last_write_time()};
  return out;
}

TEST(FinishedRunTest, OnlyACheckpointOfTheLastStepWithResumeAutoIsTheEnd) {
  TempDir tmp;
  const std::string out = tmp.path() + "/run";
  auto none = job_of(out, "train.steps=4", "auto");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(finished_run(*none)) << "no checkpoint yet";
  ASSERT_TRUE(train(TrainArgs{source_path("configs/g2p-tiny.toml"), settings(out, "train.steps=4"), "", ""}).ok());

  auto done = job_of(out, "train.steps=4", "auto");
  ASSERT_TRUE(done.ok());
  const auto said = finished_run(*done);
  ASSERT_TRUE(said);
  EXPECT_NE(said->find("step-000000004 is at step 4 of train.steps = 4"), std::string::npos) << *said;

  auto longer = job_of(out, "train.steps=6", "auto");
  ASSERT_TRUE(longer.ok());
  EXPECT_FALSE(finished_run(*longer)) << "train.steps raised: the job goes on";
  auto latest = job_of(out, "train.steps=4", "latest");
  ASSERT_TRUE(latest.ok());
  EXPECT_FALSE(finished_run(*latest)) << "an explicit resume keeps its error";

  // Without the last step's checkpoint, the newest is step 2: not the end.
  std::filesystem::remove_all(out + "/checkpoints/step-000000004");
  EXPECT_FALSE(finished_run(*done));
}

TEST(FinishedRunTest, EpochsCountTheStepsTheCheckpointsJobResolved) {
  TempDir tmp;
  const std::string out = tmp.path() + "/run";
  ASSERT_TRUE(train(TrainArgs{source_path("configs/g2p-tiny.toml"), settings(out, "train.epochs=1"), "", ""}).ok());
  auto again = job_of(out, "train.epochs=1", "auto");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(finished_run(*again)) << "train.steps of the config is not yet resolved; the checkpoint's is";
  auto more = job_of(out, "train.epochs=2", "auto");
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(finished_run(*more));
}

TEST(FinishedRunTest, ARoleStartedAfterTheEndSucceedsWithoutAScheduler) {
  TempDir tmp;
  const std::string out = tmp.path() + "/run";
  ASSERT_TRUE(train(TrainArgs{source_path("configs/g2p-tiny.toml"), settings(out, "train.steps=4"), "", ""}).ok());
  const auto before = files_of(out);
  auto s = settings(out, "train.steps=4");
  s.push_back("checkpoint.resume=auto");
  s.push_back("security.mode=none");
  s.push_back("cluster.start_timeout_s=5");
  // Nothing listens at the scheduler's endpoint: a process that registered
  // would fail after 5 s without an answer.
  for (const char* role : {"server", "worker", "scheduler"}) {
    const Status st = train(TrainArgs{source_path("configs/g2p-tiny.toml"), s, role, "tcp://127.0.0.1:9"});
    EXPECT_TRUE(st.ok()) << role << ": " << st.to_string();
  }
  EXPECT_EQ(files_of(out), before);
}

}  // namespace
}  // namespace pst
