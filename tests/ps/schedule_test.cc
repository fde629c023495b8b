// Every schedule of docs/design.md (Optimizer and schedules) against its formula, written out here, and
// where PyTorch has the schedule, against torch.optim.lr_scheduler's values.
#include "ps/schedule.h"

#include <cmath>

#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "tests/test_util.h"

namespace pst {
namespace {

ScheduleConfig sched(ScheduleKind kind, int64_t warmup = 0) {
  ScheduleConfig s;
  s.kind = kind;
  s.warmup_steps = warmup;
  return s;
}

TEST(ScheduleTest, WarmupThenFormulas) {
  const double lr = 0.1;
  {
    LrSchedule s(sched(ScheduleKind::kConstant, 4), lr, 64, 100);
    EXPECT_DOUBLE_EQ(s.lr(0), 0.025);
    EXPECT_DOUBLE_EQ(s.lr(3), 0.1);
    EXPECT_DOUBLE_EQ(s.lr(50), 0.1);
  }
  {
    ScheduleConfig c = sched(ScheduleKind::kLinear, 10);
    c.min_lr = 0.01;
    LrSchedule s(c, lr, 64, 110);
    EXPECT_DOUBLE_EQ(s.lr(10), 0.1);
    EXPECT_NEAR(s.lr(60), 0.01 + 0.09 * 0.5, 1e-15);
    EXPECT_NEAR(s.lr(110), 0.01, 1e-15);
    EXPECT_NEAR(s.lr(500), 0.01, 1e-15);
  }
  {
    ScheduleConfig c = sched(ScheduleKind::kCosine, 10);
    c.min_lr = 0.0;
    LrSchedule s(c, lr, 64, 110);
    EXPECT_NEAR(s.lr(60), 0.05, 1e-15);
    EXPECT_NEAR(s.lr(35), 0.05 * (1 + std::cos(M_PI * 0.25)), 1e-15);
    EXPECT_NEAR(s.lr(110), 0.0, 1e-15);
  }
  {
    ScheduleConfig c = sched(ScheduleKind::kStep, 0);
    c.step_size = 5;
    c.gamma = 0.5;
    LrSchedule s(c, lr, 64, 100);
    EXPECT_DOUBLE_EQ(s.lr(4), 0.1);
    EXPECT_DOUBLE_EQ(s.lr(5), 0.05);
    EXPECT_DOUBLE_EQ(s.lr(12), 0.025);
  }
  {
    ScheduleConfig c = sched(ScheduleKind::kExponential, 2);
    c.decay_rate = 0.1;
    LrSchedule s(c, lr, 64, 100);
    EXPECT_NEAR(s.lr(7), 0.1 * std::exp(-0.5), 1e-15);
  }
  {
    // Vaswani et al.: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step = t + 1.
    LrSchedule s(sched(ScheduleKind::kInverseSqrt, 4000), 1.0, 512, 100000);
    EXPECT_NEAR(s.lr(0), std::pow(512.0, -0.5) * 1 * std::pow(4000.0, -1.5), 1e-18);
    EXPECT_NEAR(s.lr(3999), std::pow(512.0, -0.5) * std::pow(4000.0, -0.5), 1e-15);
    EXPECT_NEAR(s.lr(15999), std::pow(512.0, -0.5) * std::pow(16000.0, -0.5), 1e-15);
  }
}

// CosineAnnealingWarmRestarts as torch steps it, one step at a time: T_cur
// grows by one and, on reaching T_i, wraps to 0 while T_i grows by T_mult.
// Every restart must give the full rate; a cycle index taken from a
// logarithm misses some (T_0 = 5, T_mult = 3 at step 605).
TEST(ScheduleTest, WarmRestartsMatchTorchSteppedOneStepAtATime) {
  const double base = 0.1, eta_min = 0.001;
  int64_t restarts = 0;
  for (int64_t mult = 1; mult <= 5; ++mult) {
    for (int64_t t0 : {1, 2, 3, 5, 7, 12}) {
      for (int64_t warmup : {0, 3}) {
        ScheduleConfig c = sched(ScheduleKind::kCosine, warmup);
        c.cycle_steps = t0;
        c.cycle_mult = mult;
        c.min_lr = eta_min;
        LrSchedule s(c, base, 64, 1000);
        int64_t t_cur = 0, t_i = t0;
        int mismatches = 0;
        for (int64_t step = warmup; step < warmup + 200000 && mismatches < 3; ++step) {
          if (step > warmup && ++t_cur >= t_i) {
            t_cur -= t_i;
            t_i *= mult;
          }
          const double expect =
              eta_min +
              (base - eta_min) * (1 + std::cos(M_PI * static_cast<double>(t_cur) / static_cast<double>(t_i))) / 2;
          if (t_cur == 0) ++restarts;
          if (std::abs(s.lr(step) - expect) > 1e-12) {
            ++mismatches;
            ADD_FAILURE() << "T_0 " << t0 << " T_mult " << mult << " warmup " << warmup << " step " << step << ": lr "
                          << s.lr(step) << ", torch " << expect << " (T_cur " << t_cur << " of " << t_i << ")";
          }
        }
      }
    }
  }
  EXPECT_GT(restarts, 1000);
}

TEST(ScheduleTest, MatchesTorchSchedulers) {
  auto f = SafetensorsFile::read(testing::source_path("tests/reference/fixtures/optim/schedules.safetensors"));
  ASSERT_TRUE(f.ok());
  struct Case {
    const char* name;
    ScheduleConfig cfg;
    int64_t total;
  };
  std::vector<Case> cases;
  ScheduleConfig c = sched(ScheduleKind::kLinear);
  c.min_lr = 0.01;
  cases.push_back({"linear", c, 40});
  c = sched(ScheduleKind::kCosine);
  c.min_lr = 0.01;
  cases.push_back({"cosine", c, 40});
  c = sched(ScheduleKind::kStep);
  c.step_size = 7;
  c.gamma = 0.5;
  cases.push_back({"step", c, 60});
  c = sched(ScheduleKind::kExponential);
  c.decay_rate = 0.05;
  cases.push_back({"exponential", c, 60});
  c = sched(ScheduleKind::kCosine);
  c.cycle_steps = 10;
  c.cycle_mult = 2;
  c.min_lr = 0.001;
  cases.push_back({"sgdr", c, 60});
  c = sched(ScheduleKind::kCosine);
  c.cycle_steps = 12;
  c.cycle_mult = 1;
  cases.push_back({"sgdr1", c, 60});
  c = sched(ScheduleKind::kCosine);
  c.cycle_steps = 5;
  c.cycle_mult = 3;
  c.min_lr = 0.001;
  cases.push_back({"sgdr3", c, 700});
  c.cycle_steps = 3;
  c.cycle_mult = 4;
  cases.push_back({"sgdr4", c, 700});
  for (const Case& k : cases) {
    const auto expect = f->find(k.name)->to_f32();
    LrSchedule s(k.cfg, 0.1, 64, k.total);
    // Past T_max torch's CosineAnnealingLR climbs back up (it is periodic);
    // pst holds min_lr there, so compare up to the horizon.
    for (size_t t = 0; t < expect.size() && static_cast<int64_t>(t) <= k.total; ++t)
      EXPECT_NEAR(s.lr(static_cast<int64_t>(t)), expect[t], 1e-6 * 0.1 + 1e-6 * expect[t])
          << k.name << " at step " << t;
  }
}

}  // namespace
}  // namespace pst
