// train.output's metrics.jsonl when a job resumes (job/outputs.h): the rows
// of steps after the resume step were logged by the run it continues before
// that run lost them (a re-formed job trains them again), so open_output
// drops them and appends after the rest; rows without a step stay. So does
// a worker that keeps the record once it is the lead. A fresh run starts the
// file over, and a resumed run without a step keeps it whole.
#include "job/outputs.h"

#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace pst {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(OutputsTest, AResumedJobDropsTheRowsOfLaterSteps) {
  testing::TempDir dir;
  JobConfig job;
  job.train.output = dir.path();
  const std::string rows =
      "{\"kind\":\"train\",\"step\":9,\"loss\":1.5}\n"
      "{\"kind\":\"train\",\"step\":10,\"loss\":1.4}\n"
      "{\"kind\":\"valid\",\"step\":10,\"loss\":1.6}\n"
      "{\"kind\":\"note\"}\n"
      "{\"kind\":\"train\",\"step\":11,\"loss\":1.3}\n"
      "{\"kind\":\"train\",\"step\":100,\"loss\":1.2}\n";
  const std::string path = dir.path() + "/metrics.jsonl";
  std::ofstream(path) << rows;

  job.checkpoint.resume = "latest";
  {
    auto f = open_output(job, /*resumed_at=*/10);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    std::fputs("{\"kind\":\"train\",\"step\":11,\"loss\":1.3}\n", f->get());
  }
  const std::string kept =
      "{\"kind\":\"train\",\"step\":9,\"loss\":1.5}\n"
      "{\"kind\":\"train\",\"step\":10,\"loss\":1.4}\n"
      "{\"kind\":\"valid\",\"step\":10,\"loss\":1.6}\n"
      "{\"kind\":\"note\"}\n"
      "{\"kind\":\"train\",\"step\":11,\"loss\":1.3}\n";
  EXPECT_EQ(read_text(path), kept);

  {  // resumed, no step given: appended to, nothing dropped
    auto f = open_output(job);
    ASSERT_TRUE(f.ok());
  }
  EXPECT_EQ(read_text(path), kept);

  job.checkpoint.resume = "";
  {  // the lead of a job without a resume keeps the record from step 9
    auto f = open_output(job, 9);
    ASSERT_TRUE(f.ok());
  }
  EXPECT_EQ(read_text(path), "{\"kind\":\"train\",\"step\":9,\"loss\":1.5}\n{\"kind\":\"note\"}\n");
  {  // a fresh run: the file starts over
    auto f = open_output(job);
    ASSERT_TRUE(f.ok());
  }
  EXPECT_EQ(read_text(path), "");
}

}  // namespace
}  // namespace pst
