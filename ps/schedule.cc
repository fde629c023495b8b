#include "ps/schedule.h"

#include <algorithm>
#include <cmath>

namespace pst {

LrSchedule::LrSchedule(const ScheduleConfig& cfg, double base_lr, int64_t d_model, int64_t total_steps)
    : cfg_(cfg), base_(base_lr), d_model_(d_model), total_(total_steps) {}

double LrSchedule::lr(int64_t t) const {
  const int64_t w = cfg_.warmup_steps;
  if (cfg_.kind == ScheduleKind::kInverseSqrt) {
    const double n = static_cast<double>(t + 1);
    return base_ * std::pow(static_cast<double>(d_model_), -0.5) *
           std::min(std::pow(n, -0.5), n * std::pow(static_cast<double>(w), -1.5));
  }
  if (t < w) return base_ * (static_cast<double>(t + 1) / static_cast<double>(w));
  const double s = static_cast<double>(t - w);
  const double D = static_cast<double>(std::max<int64_t>(1, total_ - w));
  const double lo = cfg_.min_lr;
  switch (cfg_.kind) {
    case ScheduleKind::kConstant: return base_;
    case ScheduleKind::kLinear: return lo + (base_ - lo) * std::max(0.0, 1.0 - s / D);
    case ScheduleKind::kCosine: {
      if (cfg_.cycle_steps > 0) {
        // SGDR: the period starts at T_0 and grows by T_mult at each restart.
        // The cycle is found in integers: a logarithm's quotient can fall
        // just below a whole number at a restart and miss it.
        int64_t t_cur = t - w, t_i = cfg_.cycle_steps;
        if (cfg_.cycle_mult == 1) {
          t_cur %= t_i;
        } else {
          while (t_cur >= t_i) {
            t_cur -= t_i;
            t_i *= cfg_.cycle_mult;
          }
        }
        return lo + (base_ - lo) * (1.0 + std::cos(M_PI * static_cast<double>(t_cur) / static_cast<double>(t_i))) / 2.0;
      }
      return lo + (base_ - lo) * (1.0 + std::cos(M_PI * std::min(s, D) / D)) / 2.0;
    }
    case ScheduleKind::kStep: return base_ * std::pow(cfg_.gamma, std::floor(s / static_cast<double>(cfg_.step_size)));
    case ScheduleKind::kExponential: return base_ * std::exp(-cfg_.decay_rate * s);
    case ScheduleKind::kInverseSqrt: break;
  }
  return base_;
}

LrSchedule make_schedule(const JobConfig& job) {
  const int64_t total = job.schedule.total_steps > 0 ? job.schedule.total_steps : job.train.steps;
  return LrSchedule(job.schedule, job.optim.lr, job.model.d_model, total);
}

}  // namespace pst
