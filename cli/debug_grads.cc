#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/safetensors.h"
#include "model/backend.h"
#include "ps/reference_step.h"
#include "worker/task_data.h"

namespace pst {

int run_debug_grads(const ConfigArgs& args, int64_t seed, const std::string& out_dir, int64_t batch_size) {
  auto job = load_config(args.config, args.sets);
  if (!job.ok()) {
    spdlog::error("{}", job.status().message());
    return 2;
  }
  // PyTorch cannot reproduce pst's dropout masks, so the comparison runs without dropout.
  if (job->model.dropout > 0 || job->model.attention_dropout > 0 || job->model.embedding_dropout > 0)
    spdlog::info("debug grads: dropout set to 0 so that PyTorch can reproduce the step");
  job->model.dropout = job->model.attention_dropout = job->model.embedding_dropout = 0;
  job->train.seed = seed;
  if (batch_size > 0) job->data.batch_size = batch_size;
  auto data = load_task_data(*job);
  if (!data.ok()) {
    spdlog::error("{}", data.status().message());
    return 2;
  }
  BatchIterator it(data->train.get(), job->data.batch_size, static_cast<uint64_t>(seed));
  const Batch batch = it.next();
  auto backend = make_cpu_backend(static_cast<int>(job->train.threads));
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, backend.get());
  model.init_weights(static_cast<uint64_t>(seed));

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    spdlog::error("--out {}: cannot create directory: {}", out_dir, ec.message());
    return 2;
  }
  std::ofstream(out_dir + "/config.toml") << to_toml(*job);
  SafetensorsFile weights_file, batch_file;
  std::vector<float> w(static_cast<size_t>(model.num_params()));
  model.get_weights(w.data());
  for (const ParamSpec& p : model.table().params()) weights_file.add_f32(p.name, p.shape, w.data() + p.offset);
  add_batch(batch_file, batch);
  const ReferenceStep ref = run_reference_step(*job, model, batch, kReferenceSteps);
  SafetensorsFile out = reference_step_file(model.table(), ref, batch, model.tgt_vocab());
  for (const auto& [file, path] : {std::pair{&weights_file, "/weights.safetensors"},
                                   std::pair{&batch_file, "/batch.safetensors"}, std::pair{&out, "/pst.safetensors"}}) {
    Status s = file->write(out_dir + path);
    if (!s.ok()) {
      spdlog::error("{}", s.to_string());
      return 1;
    }
  }
  spdlog::info("wrote {}: loss {:.6f} over {} tokens; weights after {} steps", out_dir, ref.loss, batch.tokens(),
               kReferenceSteps);
  return 0;
}

}  // namespace pst
