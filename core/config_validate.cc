// validate(): every value of a job's config within what pst allows.
#include <algorithm>
#include <iterator>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "core/config.h"
#include "core/ports.h"

namespace pst {

namespace {

Status check_range(bool ok, const std::string& what) { return ok ? Status() : invalid_argument("{}", what); }

// The sections' checks; each error names the key, its value and what is allowed.
Status validate_model(const JobConfig& c) {
  const auto& m = c.model;
  // Upper bounds far past any model this code can train, so that sizes and
  // products of sizes stay in range; whether a model fits in memory is
  // checked before its buffers are allocated (model/param_table.h).
  PST_RETURN_IF_ERROR(check_range(m.d_model > 0 && m.d_model <= 65536,
                                  fmt::format("model.d_model = {}: must be in [1, 65536]", m.d_model)));
  PST_RETURN_IF_ERROR(
      check_range(m.heads > 0 && m.heads <= 1024, fmt::format("model.heads = {}: must be in [1, 1024]", m.heads)));
  PST_RETURN_IF_ERROR(check_range(m.encoder_layers <= 1024 && m.decoder_layers <= 1024,
                                  fmt::format("model.encoder_layers = {}, model.decoder_layers = {}: at most 1024 each",
                                              m.encoder_layers, m.decoder_layers)));
  PST_RETURN_IF_ERROR(
      check_range(m.d_model % m.heads == 0,
                  fmt::format("model.d_model = {} is not divisible by model.heads = {}", m.d_model, m.heads)));
  PST_RETURN_IF_ERROR(check_range(
      m.kv_heads >= 0 && m.kv_heads <= m.heads && (m.kv_heads == 0 || m.heads % m.kv_heads == 0),
      fmt::format("model.kv_heads = {}: must divide model.heads = {} (0: as many as heads)", m.kv_heads, m.heads)));
  PST_RETURN_IF_ERROR(check_range(m.positions != Positions::kRope || (m.d_model / m.heads) % 2 == 0,
                                  fmt::format("model.positions = \"rope\" needs an even head size; d_model / heads "
                                              "= {} / {} = {}",
                                              m.d_model, m.heads, m.d_model / m.heads)));
  PST_RETURN_IF_ERROR(check_range(m.rope_theta > 1 && m.rope_theta <= 1e9,
                                  fmt::format("model.rope_theta = {}: must be in (1, 1e9]", m.rope_theta)));
  PST_RETURN_IF_ERROR(check_range(m.ffn_dim > 0 && m.ffn_dim <= (int64_t{1} << 20),
                                  fmt::format("model.ffn_dim = {}: must be in [1, 2^20]", m.ffn_dim)));
  PST_RETURN_IF_ERROR(check_range(m.decoder_layers >= 1,
                                  fmt::format("model.decoder_layers = {}: must be at least 1", m.decoder_layers)));
  PST_RETURN_IF_ERROR(check_range(
      m.kind == ModelKind::kDecoderOnly || m.encoder_layers >= 1,
      fmt::format("model.encoder_layers = {}: an encoder_decoder model needs at least 1", m.encoder_layers)));
  PST_RETURN_IF_ERROR(check_range(m.max_len >= 2 && m.max_len <= 65536,
                                  fmt::format("model.max_len = {}: must be in [2, 65536]", m.max_len)));
  for (auto [v, n] : {std::pair{m.dropout, "model.dropout"}, std::pair{m.attention_dropout, "model.attention_dropout"},
                      std::pair{m.embedding_dropout, "model.embedding_dropout"}}) {
    PST_RETURN_IF_ERROR(check_range(v >= 0 && v < 1, fmt::format("{} = {}: must be in [0, 1)", n, v)));
  }
  PST_RETURN_IF_ERROR(
      check_range(m.layernorm_eps > 0, fmt::format("model.layernorm_eps = {}: must be positive", m.layernorm_eps)));
  PST_RETURN_IF_ERROR(check_range(m.init_std > 0, fmt::format("model.init_std = {}: must be positive", m.init_std)));
  PST_RETURN_IF_ERROR(check_range(m.init != InitScheme::kDeepNet || m.norm == NormPlacement::kDeepNorm,
                                  "model.init = \"deepnet\" needs model.norm = \"deepnorm\""));
  return Status();
}

Status validate_data(const JobConfig& c) {
  const auto& m = c.model;
  const auto& d = c.data;
  PST_RETURN_IF_ERROR(check_range(d.batch_size > 0 && d.batch_size <= (int64_t{1} << 20),
                                  fmt::format("data.batch_size = {}: must be in [1, 2^20]", d.batch_size)));
  PST_RETURN_IF_ERROR(check_range(d.train.empty() || d.path.empty(),
                                  fmt::format("data.path = \"{}\" and data.train = \"{}\": set one (data.path: one "
                                              "file split by hash; data.train, valid, test: a file per split)",
                                              d.path, d.train)));
  PST_RETURN_IF_ERROR(check_range(!d.train.empty() || (d.valid.empty() && d.test.empty()),
                                  "data.valid and data.test need data.train (without it data.path is split by hash)"));
  PST_RETURN_IF_ERROR(
      check_range(d.max_examples >= 0, fmt::format("data.max_examples = {}: must be >= 0", d.max_examples)));
  PST_RETURN_IF_ERROR(check_range(d.eval_max_examples >= 0,
                                  fmt::format("data.eval_max_examples = {}: must be >= 0", d.eval_max_examples)));
  PST_RETURN_IF_ERROR(check_range(d.test_max_examples >= 0,
                                  fmt::format("data.test_max_examples = {}: must be >= 0", d.test_max_examples)));
  PST_RETURN_IF_ERROR(check_range((d.task == Task::kLM) == (m.kind == ModelKind::kDecoderOnly),
                                  fmt::format("data.task = \"{}\" needs model.kind = \"{}\"", to_string(d.task),
                                              d.task == Task::kLM ? "decoder_only" : "encoder_decoder")));
  PST_RETURN_IF_ERROR(check_range(d.tokenizer == TokenizerKind::kBytes || d.task == Task::kLM,
                                  "data.tokenizer = \"sentencepiece\" is for data.task = \"lm\""));
  PST_RETURN_IF_ERROR(check_range(d.tokenizer == TokenizerKind::kBytes || !d.tokenizer_model.empty(),
                                  "data.tokenizer = \"sentencepiece\" needs data.tokenizer_model, the .model file of "
                                  "`pst tokenizer train`"));
  if (d.task == Task::kLM) {
    PST_RETURN_IF_ERROR(
        check_range(d.seq_len >= 2 && d.seq_len <= m.max_len,
                    fmt::format("data.seq_len = {}: must be in [2, model.max_len = {}]", d.seq_len, m.max_len)));
  }
  return Status();
}

Status validate_optimizer(const JobConfig& c) {
  const auto& o = c.optim;
  PST_RETURN_IF_ERROR(check_range(o.lr > 0, fmt::format("optim.lr = {}: must be positive", o.lr)));
  PST_RETURN_IF_ERROR(
      check_range(o.beta1 >= 0 && o.beta1 < 1, fmt::format("optim.beta1 = {}: must be in [0, 1)", o.beta1)));
  PST_RETURN_IF_ERROR(
      check_range(o.beta2 >= 0 && o.beta2 < 1, fmt::format("optim.beta2 = {}: must be in [0, 1)", o.beta2)));
  PST_RETURN_IF_ERROR(check_range(o.eps > 0, fmt::format("optim.eps = {}: must be positive", o.eps)));
  PST_RETURN_IF_ERROR(
      check_range(o.weight_decay >= 0, fmt::format("optim.weight_decay = {}: must be >= 0", o.weight_decay)));
  PST_RETURN_IF_ERROR(
      check_range(o.clip_norm >= 0, fmt::format("optim.clip_norm = {}: must be >= 0 (0 = off)", o.clip_norm)));
  const auto& s = c.schedule;
  PST_RETURN_IF_ERROR(
      check_range(s.warmup_steps >= 0, fmt::format("schedule.warmup_steps = {}: must be >= 0", s.warmup_steps)));
  PST_RETURN_IF_ERROR(check_range(s.min_lr >= 0 && s.min_lr <= o.lr,
                                  fmt::format("schedule.min_lr = {}: must be in [0, optim.lr = {}]", s.min_lr, o.lr)));
  PST_RETURN_IF_ERROR(
      check_range(s.total_steps >= 0, fmt::format("schedule.total_steps = {}: must be >= 0", s.total_steps)));
  PST_RETURN_IF_ERROR(
      check_range(s.cycle_steps >= 0, fmt::format("schedule.cycle_steps = {}: must be >= 0", s.cycle_steps)));
  PST_RETURN_IF_ERROR(check_range(s.cycle_mult >= 1 && s.cycle_mult <= 1000,
                                  fmt::format("schedule.cycle_mult = {}: must be in [1, 1000]", s.cycle_mult)));
  PST_RETURN_IF_ERROR(check_range(s.step_size >= 1, fmt::format("schedule.step_size = {}: must be >= 1", s.step_size)));
  PST_RETURN_IF_ERROR(
      check_range(s.gamma > 0 && s.gamma <= 1, fmt::format("schedule.gamma = {}: must be in (0, 1]", s.gamma)));
  PST_RETURN_IF_ERROR(
      check_range(s.decay_rate >= 0, fmt::format("schedule.decay_rate = {}: must be >= 0", s.decay_rate)));
  PST_RETURN_IF_ERROR(check_range(s.kind != ScheduleKind::kInverseSqrt || s.warmup_steps >= 1,
                                  "schedule.kind = \"inverse_sqrt\" needs schedule.warmup_steps >= 1"));
  return Status();
}

Status validate_train(const JobConfig& c) {
  const auto& t = c.train;
  PST_RETURN_IF_ERROR(check_range(t.steps >= 0, fmt::format("train.steps = {}: must be >= 0", t.steps)));
  PST_RETURN_IF_ERROR(check_range(t.epochs >= 0 && t.epochs <= 1000000,
                                  fmt::format("train.epochs = {}: must be in [0, 10^6]", t.epochs)));
  PST_RETURN_IF_ERROR(check_range(t.patience >= 0,
                                  fmt::format("train.patience = {}: must be >= 0 (0: no early stopping)", t.patience)));
  PST_RETURN_IF_ERROR(
      check_range(t.patience == 0 || t.eval_every > 0,
                  fmt::format("train.patience = {} needs train.eval_every > 0 (validations to count)", t.patience)));
  PST_RETURN_IF_ERROR(
      check_range(t.best_metric == "auto" || t.best_metric == "loss" ||
                      ((t.best_metric == "wer" || t.best_metric == "per") && c.data.task == Task::kG2P),
                  fmt::format("train.best_metric = \"{}\": must be auto, loss{}", t.best_metric,
                              c.data.task == Task::kG2P ? ", wer or per" : " (wer and per are G2P's)")));
  PST_RETURN_IF_ERROR(check_range(t.accumulate >= 1 && t.accumulate <= 4096,
                                  fmt::format("train.accumulate = {}: must be in [1, 4096]", t.accumulate)));
  PST_RETURN_IF_ERROR(check_range(t.threads >= 0 && t.threads <= 256,
                                  fmt::format("train.threads = {}: must be in [0, 256]", t.threads)));
  PST_RETURN_IF_ERROR(check_range(t.label_smoothing >= 0 && t.label_smoothing < 1,
                                  fmt::format("train.label_smoothing = {}: must be in [0, 1)", t.label_smoothing)));
  PST_RETURN_IF_ERROR(check_range(t.log_every >= 1, fmt::format("train.log_every = {}: must be >= 1", t.log_every)));
  PST_RETURN_IF_ERROR(check_range(t.eval_every >= 0, fmt::format("train.eval_every = {}: must be >= 0", t.eval_every)));
  PST_RETURN_IF_ERROR(
      check_range(t.max_minutes >= 0, fmt::format("train.max_minutes = {}: must be >= 0", t.max_minutes)));
  PST_RETURN_IF_ERROR(check_range(!t.output.empty(), "train.output: must not be empty"));
  PST_RETURN_IF_ERROR(parse_device(t.device).status());
  {
    static const char* const kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    const bool known =
        std::any_of(std::begin(kLevels), std::end(kLevels), [&](const char* l) { return t.log_level == l; });
    PST_RETURN_IF_ERROR(check_range(known, fmt::format("train.log_level = \"{}\": allowed are trace, debug, info, "
                                                       "warn, error, critical and off",
                                                       t.log_level)));
  }
  return Status();
}

// cluster, checkpoint and metrics
Status validate_cluster(const JobConfig& c) {
  const auto& k = c.cluster;
  PST_RETURN_IF_ERROR(check_range(k.servers >= 1 && k.servers <= 1024,
                                  fmt::format("cluster.servers = {}: must be in [1, 1024]", k.servers)));
  PST_RETURN_IF_ERROR(check_range(k.workers >= 1 && k.workers <= 4096,
                                  fmt::format("cluster.workers = {}: must be in [1, 4096]", k.workers)));
  PST_RETURN_IF_ERROR(
      check_range(k.chunk_bytes >= 4 && k.chunk_bytes % 4 == 0 && k.chunk_bytes <= (int64_t{1} << 31),
                  fmt::format("cluster.chunk_bytes = {}: must be a multiple of 4 in [4, 2^31]", k.chunk_bytes)));
  PST_RETURN_IF_ERROR(
      check_range(k.stream_bytes >= 4, fmt::format("cluster.stream_bytes = {}: must be >= 4", k.stream_bytes)));
  PST_RETURN_IF_ERROR(
      check_range(k.timeout_s > 0, fmt::format("cluster.timeout_s = {}: must be positive", k.timeout_s)));
  PST_RETURN_IF_ERROR(check_range(k.start_timeout_s > 0,
                                  fmt::format("cluster.start_timeout_s = {}: must be positive", k.start_timeout_s)));
  PST_RETURN_IF_ERROR(check_range(k.heartbeat_s >= 0.01 && k.heartbeat_s <= 60,
                                  fmt::format("cluster.heartbeat_s = {}: must be in [0.01, 60]", k.heartbeat_s)));
  PST_RETURN_IF_ERROR(
      check_range(k.heartbeat_misses >= 2 && k.heartbeat_misses <= 1000,
                  fmt::format("cluster.heartbeat_misses = {}: must be in [2, 1000]", k.heartbeat_misses)));
  PST_RETURN_IF_ERROR(check_range(
      k.min_workers >= 1 && k.min_workers <= k.workers,
      fmt::format("cluster.min_workers = {}: must be in [1, cluster.workers = {}]", k.min_workers, k.workers)));
  PST_RETURN_IF_ERROR(check_range(k.max_restarts >= 0 && k.max_restarts <= 1000,
                                  fmt::format("cluster.max_restarts = {}: must be in [0, 1000]", k.max_restarts)));
  PST_RETURN_IF_ERROR(check_range(
      k.max_workers == 0 || (k.max_workers >= k.workers && k.max_workers <= 4096),
      fmt::format("cluster.max_workers = {}: must be 0 (cluster.workers) or in [cluster.workers = {}, 4096]",
                  k.max_workers, k.workers)));
  PST_RETURN_IF_ERROR(
      check_range(k.max_workers <= k.workers || k.consistency == Consistency::kBsp,
                  fmt::format("cluster.max_workers = {} > cluster.workers = {}: workers join a running job only under "
                              "cluster.consistency = bsp",
                              k.max_workers, k.workers)));
  PST_RETURN_IF_ERROR(
      check_range(!k.host.empty(), "cluster.host: must not be empty (an address, a host name or auto)"));
  PST_RETURN_IF_ERROR(
      check_range(k.interface.empty() || k.host == "auto",
                  fmt::format("cluster.interface = \"{}\": only used with cluster.host = \"auto\" (host is \"{}\")",
                              k.interface, k.host)));
  PST_RETURN_IF_ERROR(parse_port_range(k.port_range).status());
  const auto& ck = c.checkpoint;
  PST_RETURN_IF_ERROR(
      check_range(ck.every_steps >= 0,
                  fmt::format("checkpoint.every_steps = {}: must be >= 0 (0: no checkpoints)", ck.every_steps)));
  PST_RETURN_IF_ERROR(
      check_range(ck.every_minutes >= 0,
                  fmt::format("checkpoint.every_minutes = {}: must be >= 0 (0: none by time)", ck.every_minutes)));
  PST_RETURN_IF_ERROR(check_range(ck.keep >= 1, fmt::format("checkpoint.keep = {}: must be >= 1", ck.keep)));
  PST_RETURN_IF_ERROR(check_range(
      (ck.every_steps == 0 && ck.every_minutes == 0) || k.consistency == Consistency::kBsp,
      "checkpoint.every_steps, checkpoint.every_minutes: checkpoints need cluster.consistency = bsp (ASP and SSP "
      "servers hold no common step)"));
  const auto& mc = c.metrics;
  PST_RETURN_IF_ERROR(
      check_range(mc.port >= 0 && mc.port <= 65535,
                  fmt::format("metrics.port = {}: must be in [0, 65535] (0: an ephemeral port per process)", mc.port)));
  PST_RETURN_IF_ERROR(check_range(!mc.bind.empty(), "metrics.bind: must not be empty"));
  PST_RETURN_IF_ERROR(check_range(mc.linger_s >= 0, fmt::format("metrics.linger_s = {}: must be >= 0", mc.linger_s)));
  PST_RETURN_IF_ERROR(check_range(k.staleness >= 0, fmt::format("cluster.staleness = {}: must be >= 0", k.staleness)));
  PST_RETURN_IF_ERROR(check_range(k.wire_rounding == WireRounding::kNearest || k.wire == WireFormat::kBf16,
                                  "cluster.wire_rounding = stochastic: rounds bfloat16 gradients, so it needs "
                                  "cluster.wire = bf16 (the wire is fp32)"));
  return Status();
}

}  // namespace

Status validate(const JobConfig& c) {
  PST_RETURN_IF_ERROR(validate_model(c));
  PST_RETURN_IF_ERROR(validate_data(c));
  PST_RETURN_IF_ERROR(validate_optimizer(c));
  PST_RETURN_IF_ERROR(validate_train(c));
  return validate_cluster(c);
}

}  // namespace pst
