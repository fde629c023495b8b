// `pst checkpoint inspect DIR`, `pst checkpoint export DIR --out FILE` and
// `pst checkpoint average DIR... [--last N] --out FILE`.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

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

namespace {

// The first key of [model], or of the data keys the vocabularies follow
// from, whose value differs between a and b: "model.activation (relu in A,
// gelu in B)"; empty when none does.
std::string model_difference(const JobConfig& a, const std::string& a_name, const JobConfig& b,
                             const std::string& b_name) {
  const std::vector<std::string> data_keys = {"task", "path", "train", "tokenizer", "tokenizer_model"};
  auto lines = [&](const JobConfig& job) {
    std::vector<std::string> out;
    std::istringstream in(to_toml(job));
    std::string line, section;
    while (std::getline(in, line)) {
      if (line.starts_with("[")) {
        section = line.substr(1, line.size() - 2);
        continue;
      }
      const std::string key = line.substr(0, line.find(' '));
      if (section == "model" ||
          (section == "data" && std::find(data_keys.begin(), data_keys.end(), key) != data_keys.end()))
        out.push_back(section + "." + line);
    }
    return out;
  };
  const auto la = lines(a), lb = lines(b);
  for (size_t i = 0; i < la.size() && i < lb.size(); ++i) {
    if (la[i] == lb[i]) continue;
    const size_t eq = la[i].find(" = ");
    return fmt::format("{} ({} in {}, {} in {})", la[i].substr(0, eq), la[i].substr(eq + 3), a_name,
                       lb[i].substr(lb[i].find(" = ") + 3), b_name);
  }
  return "";
}

// Writes the elementwise mean of the weights of the checkpoints `dirs` (each
// resolved as by inspect) to `out`, in the format of pst train's
// model.safetensors, with the job, vocabularies and tokenizer of the first.
// The sum is taken in double, in the order given, and rounded once.
Status write_mean_model(const std::vector<std::string>& dirs, const std::string& out) {
  if (dirs.empty()) return invalid_argument("no checkpoint to write a model from");
  std::vector<std::string> paths, canonical;
  std::vector<Manifest> manifests;
  std::optional<JobConfig> first;  // the job of paths[0]
  for (const std::string& dir : dirs) {
    auto path = resolve_checkpoint(dir);
    if (!path.ok()) return path.status();
    std::string c = fs::weakly_canonical(*path).string();
    if (std::find(canonical.begin(), canonical.end(), c) != canonical.end())
      return invalid_argument("{} is named twice; each checkpoint is averaged once", *path);
    auto m = read_checkpoint(*path);
    if (!m.ok()) return m.status();
    auto job = checkpoint_job(*path, *m);
    if (!job.ok()) return job.status();
    if (first) {
      const std::string diff = model_difference(*first, paths[0], *job, *path);
      if (!diff.empty())
        return invalid_argument("{} and {} are not checkpoints of one model: {} differs", paths[0], *path, diff);
    } else {
      first = std::move(*job);
    }
    paths.push_back(*path);
    canonical.push_back(std::move(c));
    manifests.push_back(std::move(*m));
  }
  // The vocabularies (and so the embedding shapes) come from the job's data,
  // as in training.
  const JobConfig& job = *first;
  auto data = load_task_data(job);
  if (!data.ok()) return data.status();
  // The model only lays out the weights here; nothing is computed.
  const auto backend = make_cpu_backend(1);
  Transformer model(job.model, data->src_vocab, data->tgt_vocab, backend.get());
  std::vector<double> sum(static_cast<size_t>(model.num_params()), 0.0);
  std::vector<float> mean(sum.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    PST_RETURN_IF_ERROR(check_model(manifests[i], model.table()));
    auto state = load_shard(paths[i], manifests[i], model.table(), whole_tensors(model.table()));
    if (!state.ok()) return state.status();
    if (state->weights.size() != sum.size())
      return data_loss("{}: {} weights where the model has {}", paths[i], state->weights.size(), sum.size());
    for (size_t j = 0; j < sum.size(); ++j) sum[j] += state->weights[j];
  }
  for (size_t j = 0; j < sum.size(); ++j) mean[j] = static_cast<float>(sum[j] / static_cast<double>(paths.size()));
  model.set_weights(mean.data(), 0, model.num_params());
  PST_RETURN_IF_ERROR(save_model(out, job, model, data->g2p ? &data->g2p->letters : nullptr,
                                 data->g2p ? &data->g2p->phones : nullptr, &data->tokenizer));
  std::string steps;
  for (const Manifest& m : manifests) steps += (steps.empty() ? "" : ", ") + std::to_string(m.step);
  if (paths.size() == 1)
    spdlog::info("wrote {}: the weights of step {} ({} tensors) from {}", out, steps, model.table().size(), paths[0]);
  else
    spdlog::info("wrote {}: the mean of the weights of steps {} ({} checkpoints, {} tensors)", out, steps, paths.size(),
                 model.table().size());
  return Status();
}

int fail(const Status& s) {
  spdlog::error("{}", s.message());
  return 1;
}

}  // namespace

int run_checkpoint_export(const std::string& dir, const std::string& out) {
  const Status s = write_mean_model({dir}, out);
  return s.ok() ? 0 : fail(s);
}

int run_checkpoint_average(const std::vector<std::string>& dirs, std::optional<int64_t> given_last,
                           const std::string& out) {
  std::vector<std::string> chosen = dirs;
  if (given_last) {
    const int64_t last = *given_last;
    if (last < 1)
      return fail(invalid_argument("--last {}: must be at least 1 (the newest checkpoints to average)", last));
    if (dirs.size() != 1 || !fs::is_directory(dirs[0]) || fs::exists(dirs[0] + "/manifest.json"))
      return fail(invalid_argument("--last N takes one root of step directories (such as runs/x/checkpoints)"));
    chosen = newest_checkpoints(dirs[0], last);
    if (static_cast<int64_t>(chosen.size()) < last)
      return fail(
          invalid_argument("{} holds {} complete checkpoints; --last {} asks for more", dirs[0], chosen.size(), last));
  }
  const Status s = write_mean_model(chosen, out);
  return s.ok() ? 0 : fail(s);
}

}  // namespace pst
