#include "job/resume.h"

#include <spdlog/spdlog.h>

namespace pst {
namespace {

// The job a checkpoint in dir was written by (its manifest keeps the
// resolved config).
Result<JobConfig> checkpoint_job(const std::string& dir, const Manifest& m) {
  return parse_config(m.config, dir + "/manifest.json (config)", {});
}

}  // namespace

Result<std::optional<ResumePoint>> resume_point(const JobConfig& job, const ParamTable& table) {
  const std::string& r = job.checkpoint.resume;
  if (r.empty()) return std::optional<ResumePoint>();
  std::string dir = r;
  if (r == "auto" && step_dirs(checkpoint_root(job)).empty()) {
    spdlog::info("checkpoint.resume = auto: no checkpoint under {} yet; a fresh start", checkpoint_root(job));
    return std::optional<ResumePoint>();
  }
  if (r == "latest" || r == "auto") {
    PST_ASSIGN_OR_RETURN(dir, latest_checkpoint(checkpoint_root(job)));
  }
  PST_ASSIGN_OR_RETURN(Manifest m, read_checkpoint(dir));
  PST_RETURN_IF_ERROR(check_model(m, table).with_context(dir));
  // The data position counts steps' batches of train.accumulate micro-batches.
  auto was = checkpoint_job(dir, m);
  if (was.ok() && was->train.accumulate != job.train.accumulate)
    return failed_precondition(
        "{}: train.accumulate = {} here, {} in the checkpoint's job; its data position counts batches of that many "
        "micro-batches, so resume with train.accumulate = {}",
        dir, job.train.accumulate, was->train.accumulate, was->train.accumulate);
  // Another library or precision of the products resumes fine, but the
  // steps from here are not those of the run uninterrupted, bit for bit.
  if (was.ok() && (was->train.blas != job.train.blas || was->train.matmul != job.train.matmul))
    spdlog::warn(
        "{}: train.blas = {} and train.matmul = {} here, {} and {} in the checkpoint's job: the steps from here "
        "may differ in their last bits from the run's without the restart",
        dir, to_string(job.train.blas), to_string(job.train.matmul), to_string(was->train.blas),
        to_string(was->train.matmul));
  if (m.step >= job.train.steps)
    return failed_precondition("{} is at step {}; train.steps = {} leaves nothing to do", dir, m.step, job.train.steps);
  return std::optional<ResumePoint>(ResumePoint{dir, std::move(m)});
}

std::optional<std::string> finished_run(const JobConfig& job) {
  if (job.checkpoint.resume != "auto") return std::nullopt;
  auto dir = latest_checkpoint(checkpoint_root(job));
  if (!dir.ok()) return std::nullopt;
  auto m = read_checkpoint(*dir);
  if (!m.ok()) return std::nullopt;
  // train.epochs gives the steps only once the data is read: the
  // checkpoint's job resolved them for the same data and epochs.
  int64_t steps = job.train.steps;
  if (job.train.epochs > 0) {
    auto was = checkpoint_job(*dir, *m);
    if (!was.ok() || was->train.epochs != job.train.epochs) return std::nullopt;
    steps = was->train.steps;
  }
  if (m->step < steps) return std::nullopt;
  return fmt::format(
      "checkpoint.resume = auto: {} is at step {} of train.steps = {}; the job has run to its end and "
      "there is nothing to do",
      *dir, m->step, steps);
}

Status restore_server(ShardServer& server, const ResumePoint& from, const ParamTable& table, const ShardPlan& plan,
                      int k, int workers) {
  PST_ASSIGN_OR_RETURN(ShardState state, load_shard(from.dir, from.manifest, table, plan.owned(k)));
  const Manifest& m = from.manifest;
  server.restore(state, m.step, m.applied_steps, m.data_pool(workers));
  spdlog::info("server {}: resumed from {} (step {}, {} optimizer steps)", k, from.dir, from.manifest.step,
               from.manifest.applied_steps);
  return Status();
}

Status checkpoint_single(const JobConfig& job, const ParamTable& table, const ShardOptimizer& opt, double loss) {
  const std::string root = checkpoint_root(job);
  const std::string dir = checkpoint_dir(root, opt.version());
  ShardState state;
  state.ranges = opt.owned();
  opt.export_state(&state.weights, &state.exp_avg, &state.exp_avg_sq);
  StepReport report;
  report.version = opt.version();
  report.applied_steps = opt.applied_steps();
  Manifest m =
      step_manifest(to_toml(job), static_cast<uint64_t>(job.train.seed), table, 1, job.cluster.chunk_bytes, report);
  m.loss = loss;
  PST_ASSIGN_OR_RETURN(int64_t bytes, write_checkpoint_part(root, dir, 0, table, state, std::move(m),
                                                            job.checkpoint.keep, Deadline::after(0)));
  spdlog::info("checkpoint of step {}: {:.1f} MiB ({})", opt.version(), static_cast<double>(bytes) / (1 << 20), dir);
  return Status();
}

}  // namespace pst
