// --role auto (job/launch.h, role_from_slurm): Slurm's task rank decides a
// process's role with the layout of an mpirun job, checked against every
// task of jobs of several sizes. cluster.transport = mpi only where mpirun
// launched the job.
#include <algorithm>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "comm/socket.h"
#include "job/cluster.h"
#include "job/job.h"
#include "job/launch.h"
#include "tests/test_util.h"

namespace pst {
namespace {

class SlurmEnv : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("SLURM_PROCID");
    unsetenv("SLURM_NTASKS");
  }
  Result<std::string> role(int procid, int ntasks, JobConfig& job) {
    setenv("SLURM_PROCID", std::to_string(procid).c_str(), 1);
    setenv("SLURM_NTASKS", std::to_string(ntasks).c_str(), 1);
    return role_from_slurm(job);
  }
};

TEST_F(SlurmEnv, TaskZeroSchedulesThenServersThenWorkers) {
  for (int servers = 1; servers <= 3; ++servers)
    for (int ntasks = servers + 2; ntasks <= servers + 6; ++ntasks) {
      int counts[3] = {0, 0, 0};
      for (int procid = 0; procid < ntasks; ++procid) {
        JobConfig job;
        job.cluster.servers = servers;
        auto r = role(procid, ntasks, job);
        ASSERT_TRUE(r.ok()) << r.status().to_string();
        EXPECT_EQ(job.cluster.workers, ntasks - 1 - servers);
        ++counts[*r == "scheduler" ? 0 : *r == "server" ? 1 : 2];
        if (procid == 0) {
          EXPECT_EQ(*r, "scheduler");
        }
        if (procid == ntasks - 1) {
          EXPECT_EQ(*r, "worker");
        }
      }
      EXPECT_EQ(counts[0], 1);
      EXPECT_EQ(counts[1], servers);
      EXPECT_EQ(counts[2], ntasks - 1 - servers);
    }
}

TEST_F(SlurmEnv, ErrorsNameWhatIsWrong) {
  JobConfig job;
  job.cluster.servers = 2;
  auto few = role(0, 3, job);
  ASSERT_FALSE(few.ok());
  EXPECT_NE(few.status().message().find("SLURM_NTASKS = 3 with cluster.servers = 2 leaves no worker"),
            std::string::npos)
      << few.status().message();
  setenv("SLURM_PROCID", "x", 1);
  auto bad = role_from_slurm(job);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("SLURM_PROCID = 'x' is not a count"), std::string::npos);
  unsetenv("SLURM_PROCID");
  auto none = role_from_slurm(job);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("SLURM_PROCID is not set"), std::string::npos);
}

// cluster.port_range: a server's ZeroMQ socket takes the first free port of
// the range, past the ones in use; a range with none free is an error.
TEST(PortRangeJobTest, ServersBindWithinTheRange) {
  zmq::context_t ctx;
  auto taken = Router::bind(ctx, "tcp://127.0.0.1:0");
  ASSERT_TRUE(taken.ok());
  const std::string ep = (*taken)->endpoint();
  const int busy = std::stoi(ep.substr(ep.rfind(':') + 1));
  const int last = std::min(busy + 30, 65535);
  ASSERT_GT(last, busy);
  JobConfig job;
  job.cluster.port_range = fmt::format("{}-{}", busy, last);
  auto router = bind_node_router(job, ctx);
  ASSERT_TRUE(router.ok()) << router.status().to_string();
  const std::string got = (*router)->endpoint();
  const int port = std::stoi(got.substr(got.rfind(':') + 1));
  EXPECT_GT(port, busy);
  EXPECT_LE(port, last);
  job.cluster.port_range = fmt::format("{}-{}", busy, busy);
  auto full = bind_node_router(job, ctx);
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("every port of cluster.port_range"), std::string::npos)
      << full.status().message();
  job.cluster.port_range = "";
  EXPECT_TRUE(bind_node_router(job, ctx).ok());  // an ephemeral port
}

TEST(TransportTest, MpiIsRefusedWhereMpirunDidNotLaunchTheJob) {
  auto bad = load_config(testing::source_path("configs/g2p-tiny.toml"), {"cluster.transport=tcp"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("zmq"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("mpi"), std::string::npos) << bad.status().message();
  testing::TempDir tmp;
  const std::vector<std::string> sets = {"cluster.transport=mpi", "train.steps=1", "metrics.enabled=false",
                                         "train.output=" + tmp.path() + "/run"};
  for (const auto& [role, mode] : {std::pair{"", "a one-process job"}, std::pair{"worker", "a --role job"}}) {
    const Status s = train(TrainArgs{testing::source_path("configs/g2p-tiny.toml"), sets, role, "tcp://127.0.0.1:9"});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find(std::string("cluster.transport = mpi")), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(mode), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace pst
