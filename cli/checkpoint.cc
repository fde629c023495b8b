// `pst checkpoint inspect DIR` and `pst checkpoint export DIR --out FILE`.
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "model/backend.h"
#include "ps/checkpoint.h"
#include "ps/shard_optimizer.h"
#include "worker/model_file.h"
#include "worker/task_data.h"

namespace pst {
namespace {

namespace fs = std::filesystem;

// DIR itself when it holds a manifest; otherwise DIR is a root of
// step-N directories and the newest complete one is meant.
Result<std::string> resolve_checkpoint(const std::string& dir) {
  if (!fs::exists(dir)) return not_found("{}: no such directory", dir);
  if (fs::exists(dir + "/manifest.json")) return dir;
  if (step_dirs(dir).empty()) return read_checkpoint(dir).status();  // names the missing manifest
  return latest_checkpoint(dir);
}

// The job of a checkpoint, from the resolved config its manifest carries.
Result<JobConfig> checkpoint_job(const std::string& dir, const Manifest& m) {
  auto job = parse_config(m.config, dir + "/manifest.json (config)", {});
  if (!job.ok()) return data_loss("{}: the manifest's config does not parse: {}", dir, job.status().message());
  return job;
}

}  // namespace

int run_checkpoint_inspect(const std::string& dir) {
  // A root: every step directory and what it is.
  if (fs::exists(dir) && !fs::exists(dir + "/manifest.json")) {
    for (const auto& [step, path] : step_dirs(dir)) {
      auto m = read_checkpoint(path);
      std::printf("%s\t%s\n", fs::path(path).filename().c_str(),
                  m.ok() ? "complete, verified" : m.status().message().c_str());
    }
  }
  auto path = resolve_checkpoint(dir);
  if (!path.ok()) {
    spdlog::error("{}", path.status().message());
    return 1;
  }
  auto m = read_checkpoint(*path);
  if (!m.ok()) {
    spdlog::error("{}", m.status().message());
    return 1;
  }
  int64_t numel = 0, bytes = 0;
  for (const auto& [name, shape] : m->params) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    numel += n;
  }
  std::printf("checkpoint     %s\n", path->c_str());
  std::printf("step           %lld (%lld optimizer steps applied, %lld skipped)\n", static_cast<long long>(m->step),
              static_cast<long long>(m->applied_steps), static_cast<long long>(m->skipped_steps));
  std::printf("loss           %.6f (training loss of the step)\n", m->loss);
  std::printf("seed           %llu (data order and dropout masks follow from seed and step)\n",
              static_cast<unsigned long long>(m->seed));
  std::printf("parameters     %zu tensors, %lld floats\n", m->params.size(), static_cast<long long>(numel));
  std::printf("shards         %lld servers, chunk_bytes %lld\n", static_cast<long long>(m->servers),
              static_cast<long long>(m->chunk_bytes));
  for (const CheckpointFile& f : m->files) {
    std::printf("  %-24s %12lld bytes  xxh3 %016llx  verified\n", f.name.c_str(), static_cast<long long>(f.bytes),
                static_cast<unsigned long long>(f.xxh3));
    bytes += f.bytes;
  }
  std::printf("total          %lld bytes (weights and two Adam moments)\n", static_cast<long long>(bytes));
  std::printf("config:\n%s", m->config.c_str());
  return 0;
}

int run_checkpoint_export(const std::string& dir, const std::string& out) {
  auto fail = [](const Status& s) {
    spdlog::error("{}", s.message());
    return 1;
  };
  auto path = resolve_checkpoint(dir);
  if (!path.ok()) return fail(path.status());
  auto m = read_checkpoint(*path);
  if (!m.ok()) return fail(m.status());
  auto job = checkpoint_job(*path, *m);
  if (!job.ok()) return fail(job.status());
  // The vocabularies (and so the embedding shapes) come from the job's data,
  // as in training.
  auto data = load_task_data(*job);
  if (!data.ok()) return fail(data.status());
  auto backend = make_backend(DeviceSpec{DeviceKind::kCpu, 0}, job->train.matmul, 1);
  if (!backend.ok()) return fail(backend.status());
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, backend->get());
  Status s = check_model(*m, model.table());
  if (!s.ok()) return fail(s);
  auto state = load_shard(*path, *m, model.table(), whole_tensors(model.table()));
  if (!state.ok()) return fail(state.status());
  model.set_weights(state->weights.data(), 0, model.num_params());
  s = save_model(out, *job, model, data->g2p ? &data->g2p->letters : nullptr, data->g2p ? &data->g2p->phones : nullptr,
                 &data->tokenizer);
  if (!s.ok()) return fail(s);
  spdlog::info("wrote {}: the weights of step {} ({} tensors) from {}", out, m->step, model.table().size(), *path);
  return 0;
}

}  // namespace pst
