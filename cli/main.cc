#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  pst::init_logging("info");
  CLI::App app{"pst: a parameter-server system for training Transformer models"};
  app.require_subcommand(1);

  pst::ConfigArgs train_args;
  auto* train = app.add_subcommand("train", "Train a model from a job file");
  train->add_option("--config", train_args.config, "TOML job file")->required();
  train->add_option("--set", train_args.sets, "Override a setting: section.key=value (repeatable)");
  std::string device;
  train->add_option("--device", device, "auto, cpu, cuda or cuda:N (same as --set train.device=...)");
  std::string role, scheduler;
  train->add_option("--role", role, "scheduler, server or worker: one process of a job started without mpirun");
  train->add_option("--scheduler", scheduler, "With --role: the scheduler's endpoint (it binds there), e.g. tcp://host:5555");
  int64_t servers = 0;
  train->add_option("--servers", servers, "Parameter servers of an mpirun job (same as --set cluster.servers=...)");

  pst::ConfigArgs params_args;
  bool list = false;
  auto* params = app.add_subcommand("params", "Parameter counts, memory and FLOPs of a model");
  params->add_option("--config", params_args.config, "TOML job file")->required();
  params->add_option("--set", params_args.sets, "Override a setting: section.key=value");
  params->add_flag("--list", list, "Also list every tensor");

  auto* debug = app.add_subcommand("debug", "Debugging tools");
  debug->require_subcommand(1);
  pst::ConfigArgs debug_args;
  int64_t seed = 1, debug_batch = 0;
  std::string out_dir;
  auto* grads = debug->add_subcommand(
      "grads", "Write weights, one batch, the loss and all gradients as safetensors files");
  grads->add_option("--config", debug_args.config, "TOML job file")->required();
  grads->add_option("--set", debug_args.sets, "Override a setting: section.key=value");
  grads->add_option("--seed", seed, "Seed of the initial weights and of the batch order");
  grads->add_option("--batch-size", debug_batch, "Examples in the batch (default: data.batch_size)");
  grads->add_option("--out", out_dir, "Output directory")->required();

  std::string model_path;
  std::vector<std::string> inputs;
  int64_t gen_bytes = 200;
  int threads = 0;
  auto* predict = app.add_subcommand("predict", "Phones for words (G2P) or a continuation of text (LM)");
  predict->add_option("--model", model_path, "model.safetensors written by pst train")->required();
  predict->add_option("inputs", inputs, "Words (G2P) or prompts (LM)")->required();
  predict->add_option("--bytes", gen_bytes, "LM: bytes to generate per prompt");
  predict->add_option("--threads", threads, "CPU threads (0 = all cores)");

  CLI11_PARSE(app, argc, argv);
  if (!device.empty()) train_args.sets.push_back("train.device=" + device);
  if (servers > 0) train_args.sets.push_back("cluster.servers=" + std::to_string(servers));
  if (*train && !role.empty()) return pst::run_train_role(train_args, role, scheduler);
  if (*train) return pst::run_train(train_args);
  if (*params) return pst::run_params(params_args, list);
  if (*grads) return pst::run_debug_grads(debug_args, seed, out_dir, debug_batch);
  if (*predict) return pst::run_predict(model_path, inputs, gen_bytes, threads);
  return 1;
}
