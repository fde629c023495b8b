// train.device auto and cuda: the local rank's GPU, from the launcher's
// environment, spread over the host's devices (model/backend.h).
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "model/backend.h"

namespace pst {
namespace {

const char* const kLocalRankVars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK", "MPI_LOCALRANKID"};

// Sets the launchers' local-rank variables for one test and restores them.
class LocalRankEnv : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kLocalRankVars) {
      const char* old = std::getenv(v);
      saved_.push_back(old ? std::optional<std::string>(old) : std::nullopt);
      unsetenv(v);
    }
  }
  void TearDown() override {
    for (size_t i = 0; i < saved_.size(); ++i) {
      if (saved_[i])
        setenv(kLocalRankVars[i], saved_[i]->c_str(), 1);
      else
        unsetenv(kLocalRankVars[i]);
    }
  }
  std::vector<std::optional<std::string>> saved_;
};

TEST_F(LocalRankEnv, NoLauncherNoLocalRank) {
  EXPECT_FALSE(local_rank_from_env().has_value());
  EXPECT_EQ(local_device(std::nullopt, 4), 0);
}

TEST_F(LocalRankEnv, EachLauncherIsRead) {
  for (const char* v : kLocalRankVars) {
    setenv(v, "3", 1);
    auto local = local_rank_from_env();
    ASSERT_TRUE(local.has_value()) << v;
    EXPECT_EQ(local->rank, 3) << v;
    EXPECT_EQ(local->source, v);
    unsetenv(v);
  }
}

TEST_F(LocalRankEnv, OpenMpiBeforeSlurmBeforeTorchrun) {
  // srun --mpi=pmix of an Open MPI program sets both; mpirun's count is the
  // job's own.
  setenv("LOCAL_RANK", "5", 1);
  setenv("SLURM_LOCALID", "2", 1);
  EXPECT_EQ(local_rank_from_env()->source, "SLURM_LOCALID");
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  EXPECT_EQ(local_rank_from_env()->rank, 1);
}

TEST_F(LocalRankEnv, GarbageIsIgnored) {
  for (const char* bad : {"x", "-1", "1.5", "2 ", ""}) {
    setenv("SLURM_LOCALID", bad, 1);
    setenv("LOCAL_RANK", "7", 1);
    auto local = local_rank_from_env();
    ASSERT_TRUE(local.has_value()) << bad;
    EXPECT_EQ(local->source, "LOCAL_RANK") << "SLURM_LOCALID='" << bad << "' must be skipped";
    EXPECT_EQ(local->rank, 7);
  }
}

// cuBLAS is loaded at run time: where the CUDA backend is built, the library
// and every function the backend calls must be found, a GPU or not (a
// misspelt name would otherwise show only on a GPU machine).
TEST(CudaBlas, IsLoadedWithEveryFunctionWhereCudaIsBuilt) {
  std::string why;
  const bool loaded = cuda_blas_loaded(&why);
  if (!cuda_compiled()) {
    EXPECT_FALSE(loaded);
    EXPECT_NE(why.find("no CUDA backend"), std::string::npos) << why;
    return;
  }
  EXPECT_TRUE(loaded) << why;
}

TEST(LocalDevice, SpreadsLocalRanksOverTheDevices) {
  // Brute force: every device of a host with `count` GPUs gets the same
  // number of ranks (within one) from local ranks 0..n-1.
  for (int count = 1; count <= 8; ++count)
    for (int n = 1; n <= 20; ++n) {
      std::vector<int> per(count, 0);
      for (int r = 0; r < n; ++r) {
        const int d = local_device(LocalRank{r, "t"}, count);
        ASSERT_GE(d, 0);
        ASSERT_LT(d, count);
        ++per[d];
      }
      const auto [lo, hi] = std::minmax_element(per.begin(), per.end());
      EXPECT_LE(*hi - *lo, 1) << count << " devices, " << n << " ranks";
    }
  EXPECT_EQ(local_device(LocalRank{3, "t"}, 0), 0);  // no device: nothing to spread
}

TEST_F(LocalRankEnv, CudaWithoutADeviceNamesWhatIsMissing) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  setenv("SLURM_LOCALID", "1", 1);
  auto cpu = make_backend(DeviceSpec{DeviceKind::kAuto, -1}, MatmulPrecision::kFp32, 1);
  ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
  EXPECT_EQ(std::string((*cpu)->name()), "cpu");
  auto cuda = make_backend(DeviceSpec{DeviceKind::kCuda, -1}, MatmulPrecision::kFp32, 1);
  ASSERT_FALSE(cuda.ok());
  EXPECT_NE(cuda.status().message().find("train.device = \"cuda\": no CUDA device"), std::string::npos)
      << cuda.status().message();
}

}  // namespace
}  // namespace pst
