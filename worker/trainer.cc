#include "worker/trainer.h"

#include <cmath>
#include <limits>
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

// One JSON line of metrics.jsonl: kind, step, elapsed and training
// seconds, then `fields` (",\"key\":value..." already formatted).
std::string record(const char* kind, int64_t step, double elapsed, double train_seconds, const std::string& fields) {
  return fmt::format("{{\"kind\":\"{}\",\"step\":{},\"elapsed_s\":{:.2f},\"train_s\":{:.2f}{}}}\n", kind, step, elapsed,
                     train_seconds, fields);
}
void write_line(std::FILE* f, const std::string& line) {
  if (!f) return;
  std::fputs(line.c_str(), f);
  std::fflush(f);
}
void write_record(std::FILE* f, const char* kind, int64_t step, double elapsed, double train_seconds,
                  const std::string& fields) {
  if (f) write_line(f, record(kind, step, elapsed, train_seconds, fields));
}

std::string eval_fields(Task task, const EvalResult& r) {
  std::string s = fmt::format(",\"examples\":{},\"tokens\":{},\"loss\":{:.6f},\"token_accuracy\":{:.6f}", r.examples,
                              r.tokens, r.loss, r.token_accuracy);
  if (task == Task::kG2P) {
    s += fmt::format(",\"words\":{},\"per\":{:.6f},\"wer\":{:.6f}", r.words, r.per, r.wer);
  } else {
    s += fmt::format(",\"bytes\":{},\"bits_per_byte\":{:.6f},\"perplexity\":{:.4f}", r.bytes, r.bits_per_byte,
                     r.perplexity);
  }
  return s;
}

// train.best_metric with auto resolved: wer for G2P, loss for the LM.
std::string best_metric(const std::string& metric, Task task) {
  if (metric != "auto") return metric;
  return task == Task::kG2P ? "wer" : "loss";
}

// The validation figure of a resolved best metric (lower is better).
double best_figure(const std::string& metric, const EvalResult& r) {
  if (metric == "wer") return r.wer;
  if (metric == "per") return r.per;
  return r.loss;
}

}  // namespace

struct Trainer::StepTotals {
  int64_t tokens = 0;  // the batches' target tokens, as the pushes weigh them
  LossStats loss;      // the forward passes' loss over the tokens they counted
};

// What one run() keeps between its steps.
struct Trainer::Run {
  std::vector<BatchIterator> iterators;  // one per shard
  std::unique_ptr<DataCursor> cursor;    // the batches of each shard's next step, unless the servers say
  // Weights and gradients cross to the client through pinned host buffers,
  // or not at all when the client takes the model's own buffers: a GPU
  // model's on a client of its device, a CPU model's on any client (the
  // pulls write the weights, and the pushes read the gradient, in place).
  bool model_buffers = false;
  std::unique_ptr<HostBuffer> host_weights, host_grads;
  int64_t n = 0;  // parameters
  // A streaming client (docs/design.md, Streaming) delivers the weights in
  // layer order: a pull is begun after the pushes, and the next forward
  // completes it layer by layer as it needs them. The model holds weights
  // [0, have) of the version pulled last.
  bool stream = false;
  // Gradients go out layer by layer as backward finishes them, unless this
  // worker clips them first, which needs all of them (ASP, SSP).
  bool stream_push = false;
  int64_t have = 0;
  Stopwatch wall;
  std::unique_ptr<ProgressBar> bar;
  double train_seconds = 0;
  double deadline = 0;  // seconds of wall time (train.max_minutes here); 0: none
  int64_t eval_batch = 0;
  // Since the last logged step.
  double interval_loss = 0, interval_train = 0;
  int64_t interval_tokens = 0;
  // The last train row, written or not: a worker that becomes the lead
  // writes it first (the lead before it may have died before it could).
  std::string last_row;
  int64_t last_row_step = 0;
  TrainSummary sum;
  // train.keep_best and train.patience: the best validation figure so far,
  // the validations since, its weights (keep_best), and whether this worker
  // has asked the job to stop.
  double best = std::numeric_limits<double>::infinity();
  int64_t since_best = 0;
  std::vector<float> best_weights;
  bool stop_asked = false;

  // The time left for `left` more steps at the pace of the
  // `done_since_start` steps so far; capped by the deadline when there is one.
  double eta(int64_t done_since_start, int64_t left) const {
    double e = train_seconds / static_cast<double>(done_since_start) * static_cast<double>(left);
    if (deadline > 0) e = std::min(e, deadline - wall.seconds());
    return e;
  }
};

Trainer::Trainer(const JobConfig& job, const TaskData& data, Transformer* model, ParameterClient* client,
                 TrainerOptions options)
    : job_(job), data_(data), model_(model), client_(client), opt_(options) {}

Trainer::~Trainer() = default;

void Trainer::clip_gradient() {
  // Without a global view (ASP, SSP) each worker clips its own gradient;
  // a non-finite one is pushed as it is, and the servers skip it.
  Backend* be = model_->backend();
  bool nonfinite = false;
  const double norm = std::sqrt(be->sum_squares(model_->grads(), model_->num_params(), &nonfinite));
  const double coef = clip_coefficient(norm, opt_.clip_norm);
  if (!nonfinite && coef < 1.0) be->scale(model_->grads(), static_cast<float>(coef), model_->num_params());
}

Status Trainer::need(int64_t end) {
  Run& r = *run_;
  if (end <= r.have) return Status();
  Stopwatch waited;
  PST_RETURN_IF_ERROR(client_->await_weights(end));
  if (opt_.monitor) opt_.monitor->observe_phase(WorkerMetrics::kWait, waited.seconds());
  if (!r.model_buffers) model_->set_weights(r.host_weights->data(), r.have, end);
  r.have = end;
  return Status();
}

Status Trainer::exact_weights(int64_t version) {
  Run& r = *run_;
  PST_RETURN_IF_ERROR(need(r.n));
  if (!client_->lossy_pulls()) return Status();
  // The pulls carried rounded weights; validation and the model file take
  // the servers' own.
  Stopwatch pulled;
  PST_RETURN_IF_ERROR(
      client_->pull_exact(version, r.model_buffers ? model_->weights() : r.host_weights->data()).status());
  if (opt_.monitor) opt_.monitor->observe_phase(WorkerMetrics::kPull, pulled.seconds());
  if (!r.model_buffers) model_->set_weights(r.host_weights->data(), 0, r.n);
  return Status();
}

Result<StepReport> Trainer::pull(int64_t min_version) {
  Run& r = *run_;
  Stopwatch pulled;
  PST_ASSIGN_OR_RETURN(StepReport pi,
                       client_->begin_pull(min_version, r.model_buffers ? model_->weights() : r.host_weights->data()));
  if (opt_.monitor) opt_.monitor->observe_phase(WorkerMetrics::kPull, pulled.seconds());
  r.have = 0;
  if (!r.stream) PST_RETURN_IF_ERROR(need(r.n));
  return pi;
}

Status Trainer::train_shard(size_t i, int64_t step, int64_t version, int64_t batch, StepTotals& totals) {
  Run& r = *run_;
  const TrainConfig& tc = job_.train;
  // Batch g of a job that accumulates K micro-batches is micro-batches
  // gK .. gK + K - 1 of the iterator's order: each once per epoch, as the
  // batches of K = 1 are.
  const int64_t K = tc.accumulate;
  std::vector<Batch> micro;
  int64_t shard_tokens = 0;
  for (int64_t k = 0; k < K; ++k) {
    r.iterators[i].seek_batch(batch * K + k);
    micro.push_back(r.iterators[i].next());
    shard_tokens += micro.back().tokens();
  }
  model_->zero_grads();
  Status hooks;  // the first failure inside a hook; the pass runs on and it is returned after
  ForwardOptions fo;
  fo.train = true;
  // The mean over the tokens of all K micro-batches, as one batch of them all.
  fo.grad_scale = shard_tokens > 0 ? 1.0f / static_cast<float>(shard_tokens) : 0.0f;
  fo.label_smoothing = static_cast<float>(tc.label_smoothing);
  fo.seed = static_cast<uint64_t>(tc.seed);
  fo.worker = static_cast<uint64_t>(opt_.shards[i]);
  Stopwatch phase;
  auto phase_done = [&](WorkerMetrics::Phase p) {
    if (opt_.monitor) opt_.monitor->observe_phase(p, phase.seconds());
    phase.reset();
  };
  // Micro-batch k of step s draws the dropout masks of step sK + k (K = 1:
  // those of step s). All but the last add their gradients in place.
  LossStats shard_loss;
  for (int64_t k = 0; k < K; ++k) {
    fo.step = static_cast<uint64_t>(step * K + k);
    fo.need_weights = nullptr;
    if (r.stream && r.have < r.n)
      fo.need_weights = [&](int64_t end) {
        if (hooks.ok()) hooks = need(end);
      };
    const LossStats s = model_->forward(micro[static_cast<size_t>(k)], fo);
    PST_RETURN_IF_ERROR(hooks);
    shard_loss.loss_sum += s.loss_sum;
    shard_loss.tokens += s.tokens;
    phase_done(WorkerMetrics::kForward);
    if (k + 1 < K) {
      model_->backward();
      phase_done(WorkerMetrics::kBackward);
    }
  }
  if (r.stream_push) {
    // The client sends grads[begin, n) while backward computes the ranges
    // below begin, which it no longer writes once they are final.
    PST_RETURN_IF_ERROR(client_->begin_push(version, shard_tokens, shard_loss.loss_sum,
                                            r.model_buffers ? model_->grads() : r.host_grads->data()));
    int64_t final_from = r.n;
    model_->backward([&](int64_t begin) {
      if (!r.model_buffers) model_->get_grads(r.host_grads->data(), begin, final_from);
      final_from = begin;
      if (hooks.ok()) hooks = client_->push_final(begin);
    });
    PST_RETURN_IF_ERROR(hooks);
    phase_done(WorkerMetrics::kBackward);
    PST_RETURN_IF_ERROR(client_->finish_push());
  } else {
    model_->backward();
    if (opt_.clip_norm > 0) clip_gradient();
    if (!r.model_buffers) model_->get_grads(r.host_grads->data());
    phase_done(WorkerMetrics::kBackward);
    PST_RETURN_IF_ERROR(client_->push(version, shard_tokens, shard_loss.loss_sum,
                                      r.model_buffers ? model_->grads() : r.host_grads->data()));
  }
  phase_done(WorkerMetrics::kPush);
  totals.tokens += shard_tokens;
  totals.loss.tokens += shard_loss.tokens;
  totals.loss.loss_sum += shard_loss.loss_sum;
  return Status();
}

void Trainer::log_step(int64_t step, const StepReport& info, const StepTotals& totals, bool last) {
  Run& r = *run_;
  const TrainConfig& tc = job_.train;
  const double eta = r.eta(step + 1 - opt_.first_step, tc.steps - step - 1);
  if ((step + 1) % tc.log_every != 0 && !last) {
    r.bar->draw(
        step + 1, tc.steps,
        fmt::format("step {}/{}  loss {:.4f}  lr {:.2e}  ETA {}", step + 1, tc.steps,
                    totals.loss.tokens > 0 ? totals.loss.loss_sum / static_cast<double>(totals.loss.tokens) : 0.0,
                    info.lr, duration(eta)));
    return;
  }
  const double loss = r.interval_tokens > 0 ? r.interval_loss / static_cast<double>(r.interval_tokens) : 0.0;
  const double tps = r.interval_train > 0 ? static_cast<double>(r.interval_tokens) / r.interval_train : 0.0;
  r.sum.last_loss = loss;
  if (opt_.monitor) opt_.monitor->set_train_loss(loss);
  r.bar->clear();
  spdlog::info("step {}/{}  loss {:.4f}  lr {:.3e}  grad norm {:.3f}  {:.0f} tokens/s  ETA {}", step + 1, tc.steps,
               loss, info.lr, info.grad_norm, tps, duration(eta));
  r.last_row = record("train", step + 1, r.wall.seconds(), r.train_seconds,
                      fmt::format(",\"loss\":{:.6f},\"lr\":{:.6e},\"grad_norm\":{:.6f},\"tokens_per_s\":{:.1f}", loss,
                                  info.lr, info.grad_norm, tps));
  r.last_row_step = step + 1;
  write_line(opt_.metrics, r.last_row);
  r.interval_loss = 0;
  r.interval_tokens = 0;
  r.interval_train = 0;
}

void Trainer::validate(int64_t step) {
  Run& r = *run_;
  if (!(opt_.evaluate || r.sum.lead) || data_.valid->size() == 0) return;
  // (need(n) has completed the pull: run() does it before any evaluation.)
  r.bar->clear();
  Stopwatch ev;
  r.sum.valid = evaluate(*model_, data_, Split::kValid, r.eval_batch, job_.data.eval_max_examples);
  if (r.sum.valid.stopped) {
    r.sum.eval_stopped = true;
    return;
  }
  if (opt_.monitor) opt_.monitor->set_eval_loss(r.sum.valid.loss);
  spdlog::info("valid @ step {}: {} [{:.1f}s]", step, describe_eval(data_.task, r.sum.valid), ev.seconds());
  write_record(opt_.metrics, "valid", step, r.wall.seconds(), r.train_seconds, eval_fields(data_.task, r.sum.valid));
  track_best(step);
}

void Trainer::track_best(int64_t step) {
  Run& r = *run_;
  const TrainConfig& tc = job_.train;
  if (!tc.keep_best && tc.patience == 0) return;
  const std::string metric = best_metric(tc.best_metric, data_.task);
  const double v = best_figure(metric, r.sum.valid);
  if (v < r.best) {
    r.best = v;
    r.sum.best = v;
    r.sum.best_step = step;
    r.since_best = 0;
    if (!tc.keep_best) return;
    r.best_weights.resize(static_cast<size_t>(r.n));
    model_->get_weights(r.best_weights.data());
    if (opt_.save) {
      const Status s = opt_.save("best.safetensors");
      if (!s.ok()) spdlog::warn("best.safetensors not written ({}); the best weights stay in memory", s.message());
    }
    return;
  }
  ++r.since_best;
  const bool training = step < tc.steps && !r.sum.early_stopped;  // (not the final validation)
  if (tc.patience > 0 && r.since_best >= tc.patience && !r.stop_asked && training) {
    spdlog::info(
        "early stopping: {} validations without a better {} than {:.4f} (step {}); the job ends after the next step",
        r.since_best, metric, r.best, r.sum.best_step);
    client_->ask_to_stop();
    r.stop_asked = true;
  }
}

Status Trainer::restore_best() {
  Run& r = *run_;
  if (!job_.train.keep_best || r.best_weights.empty() || r.sum.best_step == r.sum.steps) return Status();
  model_->set_weights(r.best_weights.data());
  spdlog::info("train.keep_best: the model is the weights of step {}, the best validation ({:.4f})", r.sum.best_step,
               r.best);
  if (opt_.save) return opt_.save("model.safetensors");
  return Status();
}

void Trainer::test() {
  Run& r = *run_;
  if (!(opt_.evaluate || r.sum.lead) || !job_.train.test_at_end || data_.test->size() == 0 || r.sum.stopped ||
      r.sum.eval_stopped)
    return;
  Stopwatch ev;
  r.sum.test = evaluate(*model_, data_, Split::kTest, r.eval_batch, job_.data.test_max_examples);
  if (r.sum.test.stopped) {
    r.sum.eval_stopped = true;
    return;
  }
  r.sum.have_test = true;
  spdlog::info("test: {} [{:.1f}s]", describe_eval(data_.task, r.sum.test), ev.seconds());
  std::string fields = eval_fields(data_.task, r.sum.test);
  if (job_.train.keep_best) fields += fmt::format(",\"weights_step\":{}", r.sum.best_step);
  write_record(opt_.metrics, "test", r.sum.steps, r.wall.seconds(), r.train_seconds, fields);
}

Result<TrainSummary> Trainer::run() {
  run_ = std::make_unique<Run>();
  Run& r = *run_;
  const TrainConfig& tc = job_.train;
  for (int64_t shard : opt_.shards)
    r.iterators.emplace_back(data_.train.get(), job_.data.batch_size, static_cast<uint64_t>(tc.seed), shard,
                             opt_.workers, true);
  r.cursor = std::make_unique<DataCursor>(static_cast<int>(opt_.workers), opt_.data_pool);
  r.cursor->assign_all();
  r.model_buffers = client_->device_buffers() || (model_->backend()->host_memory() && !opt_.stage_buffers);
  r.n = r.have = model_->num_params();
  if (!r.model_buffers) {
    r.host_weights = std::make_unique<HostBuffer>(model_->backend(), static_cast<size_t>(r.n));
    r.host_grads = std::make_unique<HostBuffer>(model_->backend(), r.host_weights->size());
  }
  r.stream = client_->streams() && opt_.overlap;
  r.stream_push = r.stream && !client_->device_buffers() && opt_.clip_norm <= 0;
  PST_ASSIGN_OR_RETURN(StepReport info, pull(opt_.first_step));
  int64_t version = info.version;
  if (opt_.first_step > 0 && version != opt_.first_step)
    return failed_precondition("the servers hold version {}; this worker starts at step {}", version, opt_.first_step);
  r.wall.reset();
  r.bar = std::make_unique<ProgressBar>(opt_.progress);
  r.deadline = tc.max_minutes > 0 && opt_.stop_at_max_minutes ? tc.max_minutes * 60.0 : 0.0;
  r.eval_batch = std::max<int64_t>(job_.data.batch_size, 64);
  for (int64_t step = opt_.first_step; step < tc.steps; ++step) {
    Stopwatch step_clock;
    StepTotals totals;
    for (size_t i = 0; i < opt_.shards.size(); ++i) {
      // The servers' word on the batch when there is one: a BSP job's
      // membership may have changed (a worker removed, its batch handed on).
      const bool told = info.batch >= 0 && opt_.shards.size() == 1;
      const int64_t batch = told ? info.batch : r.cursor->batch(static_cast<int>(opt_.shards[i]));
      PST_RETURN_IF_ERROR(train_shard(i, step, version, batch, totals));
    }
    r.cursor->applied(std::vector<uint8_t>(static_cast<size_t>(opt_.workers), 1));
    r.cursor->assign_all();
    PST_ASSIGN_OR_RETURN(info, pull(version + 1));
    version = info.version;
    // Worker 0 was removed: the lead validates and keeps the record, one
    // worker at a time. A new lead writes its last row first (from that
    // step on); one that is no longer the lead writes this step's row, then
    // stops (the next lead takes over after it).
    r.sum.lead = opt_.evaluate || info.lead;
    const bool may_lead = !opt_.evaluate && opt_.metrics_for_lead;
    if (may_lead && info.lead && !opt_.metrics) {
      opt_.metrics = opt_.metrics_for_lead(true, r.last_row_step > 0 ? r.last_row_step - 1 : step);
      if (r.last_row_step > 0) write_line(opt_.metrics, r.last_row);
    }
    if (!info.applied) {
      ++r.sum.skipped_steps;
      r.bar->clear();
      spdlog::warn("step {}: non-finite gradient; step skipped, schedule not advanced", step + 1);
    }
    const double dt = step_clock.seconds();
    r.train_seconds += dt;
    r.interval_train += dt;
    r.sum.tokens += totals.tokens;
    r.interval_loss += totals.loss.loss_sum;
    r.interval_tokens += totals.tokens;
    r.sum.steps = step + 1;
    r.sum.applied_steps = info.applied_steps;
    if (opt_.monitor) {
      opt_.monitor->step_done(totals.tokens, dt, info.lr, info.grad_norm);
      if (const auto mem = model_->backend()->device_memory())
        opt_.monitor->set_gpu_memory(mem->device, mem->used_bytes, mem->total_bytes);
    }
    const bool time_up = r.deadline > 0 && r.wall.seconds() >= r.deadline;
    r.sum.stopped = (info.stop || time_up) && step + 1 < tc.steps;
    if (r.sum.stopped && r.stop_asked && !time_up && !stop_requested()) {
      // The stop this worker asked for (train.patience): the end of training.
      r.sum.stopped = false;
      r.sum.early_stopped = true;
    }
    const bool last = step + 1 == tc.steps || r.sum.stopped || r.sum.early_stopped;
    log_step(step, info, totals, last);
    if (may_lead && !info.lead && opt_.metrics) opt_.metrics = opt_.metrics_for_lead(false, step);
    if (tc.eval_every > 0 && (step + 1) % tc.eval_every == 0 && !last && r.sum.lead) {
      PST_RETURN_IF_ERROR(exact_weights(version));
      validate(step + 1);
    }
    if (r.sum.stopped) {
      if (time_up)
        spdlog::info("train.max_minutes = {} reached after step {}; resume with --resume latest", tc.max_minutes,
                     step + 1);
      else
        spdlog::info(
            "stopped after step {} (a signal, train.max_minutes on the servers, or the lead's early stopping); "
            "resume with --resume latest",
            step + 1);
      break;
    }
    if (r.sum.early_stopped) {
      spdlog::info("early stopping ended training after step {} of {}", step + 1, tc.steps);
      break;
    }
  }
  r.bar->clear();
  PST_RETURN_IF_ERROR(need(r.n));  // the last pull, before evaluation and before the caller reads the model
  r.sum.train_seconds = r.train_seconds;
  // The final evaluation and the model are worker 0's, or, once it has been
  // removed, those of the worker the servers name lead.
  r.sum.lead = opt_.evaluate || info.lead;
  if (info.lead && !opt_.evaluate)
    spdlog::info("worker 0 was removed from the job: this worker validates, tests and writes the model");
  if (r.sum.lead) {
    PST_RETURN_IF_ERROR(exact_weights(version));
    if (opt_.save) PST_RETURN_IF_ERROR(opt_.save("model.safetensors"));
    r.sum.eval_stopped = false;  // (a stop during an earlier validation has stopped training too)
    if (!r.sum.stopped) validate(r.sum.steps);
    PST_RETURN_IF_ERROR(restore_best());
    test();
    if (r.sum.eval_stopped)
      spdlog::info("the final evaluation was stopped (signal {}); the model is written", stop_signal());
  }
  r.sum.wall_seconds = r.wall.seconds();
  return r.sum;
}

}  // namespace pst
