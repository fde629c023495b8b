#include "worker/trainer.h"

#include <cmath>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/stop.h"
#include "core/terminal.h"
#include "core/timer.h"
#include "data/dataset.h"

namespace pst {

namespace {

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<int64_t>(s);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// A one-line progress bar on a terminal (core/terminal.h); nothing otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : tty_(enabled && progress_allowed()) {}
  void draw(int64_t step, int64_t total, const std::string& text) {
    if (!tty_) return;
    constexpr int kWidth = 30;
    const int filled = total > 0 ? static_cast<int>(kWidth * step / total) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stdout, "\r\033[K[%s] %s", bar.c_str(), text.c_str());
    std::fflush(stdout);
  }
  // Clears the bar so that a log line starts on a clean line.
  void clear() {
    if (!tty_) return;
    std::fprintf(stdout, "\r\033[K");
    std::fflush(stdout);
  }

 private:
  bool tty_;
};

void write_eval(std::FILE* f, const char* kind, Task task, int64_t step, double elapsed, double train_seconds,
                const EvalResult& r) {
  if (!f) return;
  std::string s = fmt::format(
      "{{\"kind\":\"{}\",\"step\":{},\"elapsed_s\":{:.2f},\"train_s\":{:.2f},\"examples\":{},"
      "\"tokens\":{},\"loss\":{:.6f},\"token_accuracy\":{:.6f}",
      kind, step, elapsed, train_seconds, r.examples, r.tokens, r.loss, r.token_accuracy);
  if (task == Task::kG2P) {
    s += fmt::format(",\"words\":{},\"per\":{:.6f},\"wer\":{:.6f}", r.words, r.per, r.wer);
  } else {
    s += fmt::format(",\"bits_per_byte\":{:.6f},\"perplexity\":{:.4f}", r.bits_per_byte, r.perplexity);
  }
  std::fprintf(f, "%s}\n", s.c_str());
  std::fflush(f);
}

}  // namespace

Trainer::Trainer(const JobConfig& job, const TaskData& data, Transformer* model, ParameterClient* client,
                 TrainerOptions options)
    : job_(job), data_(data), model_(model), client_(client), opt_(options) {}

void Trainer::clip_gradient() {
  // Without a global view (ASP, SSP) each worker clips its own gradient;
  // a non-finite one is pushed as it is, and the servers skip it.
  Backend* be = model_->backend();
  bool nonfinite = false;
  const double norm = std::sqrt(be->sum_squares(model_->grads(), model_->num_params(), &nonfinite));
  const double coef = clip_coefficient(norm, opt_.clip_norm);
  if (!nonfinite && coef < 1.0) be->scale(model_->grads(), static_cast<float>(coef), model_->num_params());
}

Result<TrainSummary> Trainer::run() {
  TrainSummary sum;
  const TrainConfig& tc = job_.train;
  std::vector<BatchIterator> iterators;
  for (int64_t shard : opt_.shards)
    iterators.emplace_back(data_.train.get(), job_.data.batch_size, static_cast<uint64_t>(tc.seed), shard, opt_.workers,
                           true);
  for (BatchIterator& it : iterators) it.skip(opt_.first_step);
  // Weights and gradients cross to the client through pinned host buffers,
  // or not at all when the client takes the model's device buffers.
  const bool on_device = client_->device_buffers();
  const int64_t n = model_->num_params();
  std::unique_ptr<HostBuffer> host_weights, host_grads;
  if (!on_device) {
    host_weights = std::make_unique<HostBuffer>(model_->backend(), static_cast<size_t>(n));
    host_grads = std::make_unique<HostBuffer>(model_->backend(), host_weights->size());
  }
  // A streaming client (docs/design.md, Streaming) delivers the weights in layer order:
  // a pull is begun after the pushes, and the next forward completes it
  // layer by layer as it needs them. The model holds weights [0, have) of
  // the version pulled last.
  const bool stream = client_->streams() && opt_.overlap;
  int64_t have = n;
  WorkerMetrics* mon = opt_.monitor;
  auto need = [&](int64_t end) -> Status {
    if (end <= have) return Status();
    Stopwatch waited;
    PST_RETURN_IF_ERROR(client_->await_weights(end));
    if (mon) mon->observe_phase(WorkerMetrics::kWait, waited.seconds());
    if (!on_device) model_->set_weights(host_weights->data(), have, end);
    have = end;
    return Status();
  };
  auto pull = [&](int64_t min_version) -> Result<PullInfo> {
    Stopwatch pulled;
    PST_ASSIGN_OR_RETURN(PullInfo pi,
                         client_->begin_pull(min_version, on_device ? model_->weights() : host_weights->data()));
    if (mon) mon->observe_phase(WorkerMetrics::kPull, pulled.seconds());
    have = on_device ? n : 0;
    if (!stream) PST_RETURN_IF_ERROR(need(n));
    return pi;
  };
  // Gradients go out layer by layer as backward finishes them, unless this
  // worker clips them first, which needs all of them (ASP, SSP).
  const bool stream_push = stream && !on_device && opt_.clip_norm <= 0;
  PST_ASSIGN_OR_RETURN(PullInfo info, pull(opt_.first_step));
  int64_t version = info.version;
  if (opt_.first_step > 0 && version != opt_.first_step)
    return failed_precondition("the servers hold version {}; this worker starts at step {}", version, opt_.first_step);

  Stopwatch wall;
  ProgressBar bar(opt_.progress);
  double train_seconds = 0;
  double interval_loss = 0;
  int64_t interval_tokens = 0;
  double interval_train = 0;
  const double deadline = tc.max_minutes > 0 && opt_.stop_at_max_minutes ? tc.max_minutes * 60.0 : 0.0;
  const int64_t eval_batch = std::max<int64_t>(job_.data.batch_size, 64);

  auto run_valid = [&](int64_t step) {
    if (!opt_.evaluate || data_.valid->size() == 0) return;
    // (need(n) has completed the pull: run() does it before any evaluation.)
    bar.clear();
    Stopwatch ev;
    sum.valid = evaluate(*model_, data_, Split::kValid, eval_batch, job_.data.eval_max_examples);
    if (sum.valid.stopped) {
      sum.eval_stopped = true;
      return;
    }
    if (mon) mon->set_eval_loss(sum.valid.loss);
    spdlog::info("valid @ step {}: {} [{:.1f}s]", step, describe_eval(data_.task, sum.valid), ev.seconds());
    write_eval(opt_.metrics, "valid", data_.task, step, wall.seconds(), train_seconds, sum.valid);
  };

  for (int64_t step = opt_.first_step; step < tc.steps; ++step) {
    Stopwatch step_clock;
    int64_t tokens = 0;
    LossStats ls;
    for (size_t i = 0; i < opt_.shards.size(); ++i) {
      const Batch batch = iterators[i].next();
      const int64_t shard_tokens = batch.tokens();
      model_->zero_grads();
      Status hooks;  // the first failure inside a hook; the pass runs on and it is returned after
      ForwardOptions fo;
      fo.train = true;
      fo.grad_scale = shard_tokens > 0 ? 1.0f / static_cast<float>(shard_tokens) : 0.0f;
      fo.label_smoothing = static_cast<float>(tc.label_smoothing);
      fo.seed = static_cast<uint64_t>(tc.seed);
      fo.step = static_cast<uint64_t>(step);
      fo.worker = static_cast<uint64_t>(opt_.shards[i]);
      if (stream && have < n)
        fo.need_weights = [&](int64_t end) {
          if (hooks.ok()) hooks = need(end);
        };
      Stopwatch phase;
      auto phase_done = [&](WorkerMetrics::Phase p) {
        if (mon) mon->observe_phase(p, phase.seconds());
        phase.reset();
      };
      const LossStats shard_loss = model_->forward(batch, fo);
      PST_RETURN_IF_ERROR(hooks);
      phase_done(WorkerMetrics::kForward);
      if (stream_push) {
        PST_RETURN_IF_ERROR(client_->begin_push(version, shard_tokens, shard_loss.loss_sum, host_grads->data()));
        int64_t final_from = n;
        model_->backward([&](int64_t begin) {
          model_->get_grads(host_grads->data(), begin, final_from);
          final_from = begin;
          if (hooks.ok()) hooks = client_->push_final(begin);
        });
        PST_RETURN_IF_ERROR(hooks);
        phase_done(WorkerMetrics::kBackward);
        PST_RETURN_IF_ERROR(client_->finish_push());
      } else {
        model_->backward();
        if (opt_.clip_norm > 0) clip_gradient();
        if (!on_device) model_->get_grads(host_grads->data());
        phase_done(WorkerMetrics::kBackward);
        PST_RETURN_IF_ERROR(client_->push(version, shard_tokens, shard_loss.loss_sum,
                                          on_device ? model_->grads() : host_grads->data()));
      }
      phase_done(WorkerMetrics::kPush);
      tokens += shard_tokens;
      ls.tokens += shard_loss.tokens;
      ls.loss_sum += shard_loss.loss_sum;
    }
    PST_ASSIGN_OR_RETURN(info, pull(version + 1));
    version = info.version;
    if (!info.applied) {
      ++sum.skipped_steps;
      bar.clear();
      spdlog::warn("step {}: non-finite gradient; step skipped, schedule not advanced", step + 1);
    }
    const double dt = step_clock.seconds();
    train_seconds += dt;
    interval_train += dt;
    sum.tokens += tokens;
    interval_loss += ls.loss_sum;
    interval_tokens += tokens;
    sum.steps = step + 1;
    sum.applied_steps = info.applied_steps;
    if (mon) mon->step_done(tokens, dt, info.lr, info.grad_norm);

    const bool time_up = deadline > 0 && wall.seconds() >= deadline;
    sum.stopped = (info.stop || time_up) && step + 1 < tc.steps;
    const bool last = step + 1 == tc.steps || sum.stopped;
    if ((step + 1) % tc.log_every == 0 || last) {
      const double loss = interval_tokens > 0 ? interval_loss / static_cast<double>(interval_tokens) : 0.0;
      const double tps = interval_train > 0 ? static_cast<double>(interval_tokens) / interval_train : 0.0;
      const double sec_per_step = train_seconds / static_cast<double>(step + 1 - opt_.first_step);
      double eta = sec_per_step * static_cast<double>(tc.steps - step - 1);
      if (deadline > 0) eta = std::min(eta, deadline - wall.seconds());
      sum.last_loss = loss;
      if (mon) mon->set_train_loss(loss);
      bar.clear();
      spdlog::info("step {}/{}  loss {:.4f}  lr {:.3e}  grad norm {:.3f}  {:.0f} tokens/s  ETA {}", step + 1, tc.steps,
                   loss, info.lr, info.grad_norm, tps, duration(eta));
      if (opt_.metrics) {
        std::fprintf(opt_.metrics,
                     "{\"kind\":\"train\",\"step\":%lld,\"elapsed_s\":%.2f,\"train_s\":%.2f,"
                     "\"loss\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f}\n",
                     static_cast<long long>(step + 1), wall.seconds(), train_seconds, loss, info.lr, info.grad_norm,
                     tps);
        std::fflush(opt_.metrics);
      }
      interval_loss = 0;
      interval_tokens = 0;
      interval_train = 0;
    } else {
      bar.draw(step + 1, tc.steps,
               fmt::format("step {}/{}  loss {:.4f}  lr {:.2e}  ETA {}", step + 1, tc.steps,
                           ls.tokens > 0 ? ls.loss_sum / static_cast<double>(ls.tokens) : 0.0, info.lr,
                           duration((train_seconds / static_cast<double>(step + 1 - opt_.first_step)) *
                                    static_cast<double>(tc.steps - step - 1))));
    }
    if (tc.eval_every > 0 && (step + 1) % tc.eval_every == 0 && !last && opt_.evaluate) {
      PST_RETURN_IF_ERROR(need(n));
      run_valid(step + 1);
    }
    if (sum.stopped) {
      if (time_up)
        spdlog::info("train.max_minutes = {} reached after step {}; resume with --resume latest", tc.max_minutes,
                     step + 1);
      else
        spdlog::info(
            "stopped after step {} (a signal, or train.max_minutes on the servers); resume with --resume "
            "latest",
            step + 1);
      break;
    }
  }
  bar.clear();
  PST_RETURN_IF_ERROR(need(n));  // the last pull, before evaluation and before the caller reads the model
  sum.train_seconds = train_seconds;
  if (opt_.save) PST_RETURN_IF_ERROR(opt_.save());
  sum.eval_stopped = false;  // (a stop during an earlier validation has stopped training too)
  if (!sum.stopped) run_valid(sum.steps);
  if (opt_.evaluate && tc.test_at_end && data_.test->size() > 0 && !sum.stopped && !sum.eval_stopped) {
    Stopwatch ev;
    sum.test = evaluate(*model_, data_, Split::kTest, eval_batch, job_.data.test_max_examples);
    if (sum.test.stopped) {
      sum.eval_stopped = true;
    } else {
      sum.have_test = true;
      spdlog::info("test: {} [{:.1f}s]", describe_eval(data_.task, sum.test), ev.seconds());
      write_eval(opt_.metrics, "test", data_.task, sum.steps, wall.seconds(), train_seconds, sum.test);
    }
  }
  if (sum.eval_stopped)
    spdlog::info("the final evaluation was stopped (signal {}); the model is written", stop_signal());
  sum.wall_seconds = wall.seconds();
  return sum;
}

}  // namespace pst
