#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/stop.h"
#include "core/terminal.h"
#include "core/version.h"

int main(int argc, char** argv) {
  pst::install_stop_handlers();  // before any thread starts (core/stop.h)
  pst::init_logging("info");
  CLI::App app{"pst: a parameter-server system for training Transformer models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("pst {} (commit {})", pst::version(), pst::git_commit()));
  app.option_defaults()->always_capture_default();  // --help shows each option's default

  pst::ConfigArgs train_args;
  auto* train = app.add_subcommand("train", "Train a model from a job file");
  train->add_option("--config", train_args.config, "TOML job file")->required();
  train->add_option("--set", train_args.sets, "Override a setting: section.key=value (repeatable)");
  std::string device;
  train->add_option("--device", device, "auto, cpu, cuda or cuda:N (same as --set train.device=...)");
  std::string role, scheduler;
  train->add_option("--role", role, "scheduler, server or worker: one process of a job started without mpirun");
  train->add_option("--scheduler", scheduler,
                    "With --role: the scheduler's endpoint (it binds there), e.g. tcp://host:5555");
  std::string resume;
  train->add_option("--resume", resume,
                    "Continue from a checkpoint: latest (the newest complete one under checkpoint.dir) or its "
                    "directory (same as --set checkpoint.resume=...)");
  int64_t servers = 0;
  train->add_option("--servers", servers, "Parameter servers of an mpirun job (same as --set cluster.servers=...)");
  bool overwrite = false, no_progress = false;
  train->add_flag("--overwrite", overwrite,
                  "Start afresh in a train.output that holds another run, removing its model and checkpoints "
                  "(same as --set train.overwrite=true)");
  train->add_flag("--no-progress", no_progress, "No progress bar, even on a terminal");

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
  auto* grads =
      debug->add_subcommand("grads", "Write weights, one batch, the loss and all gradients as safetensors files");
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
  pst::DecodeOptions decode;
  predict->add_option("--beam", decode.beam, "G2P: beam size (1 = greedy decoding)");
  predict->add_option("--length-penalty", decode.length_penalty,
                      "G2P beam search: rank by log-probability / length^this (0 = none, 1 = per token)");

  pst::EvalArgs eval_args;
  auto* eval = app.add_subcommand("eval", "The task's metrics of a model on a split of its data");
  eval->add_option("--model", eval_args.model, "model.safetensors (pst train, or pst checkpoint export)")->required();
  eval->add_option("--split", eval_args.split, "train, valid or test");
  eval->add_option("--predictions", eval_args.predictions, "G2P: write word<TAB>phones per word to this file");
  eval->add_option("--max-examples", eval_args.max_examples, "Only the first N words (G2P) or examples (0 = all)");
  eval->add_option("--data", eval_args.data, "The data file, if not the one the model was trained on (data.path)");
  eval->add_option("--threads", eval_args.threads, "CPU threads (0 = all cores)");
  eval->add_option("--beam", eval_args.decode.beam, "G2P: beam size (1 = greedy decoding)");
  eval->add_option("--length-penalty", eval_args.decode.length_penalty,
                   "G2P beam search: rank by log-probability / length^this (0 = none, 1 = per token)");

  auto* checkpoint = app.add_subcommand("checkpoint", "Inspect or export a checkpoint of pst train");
  checkpoint->require_subcommand(1);
  std::string ck_dir, ck_out;
  auto* inspect = checkpoint->add_subcommand(
      "inspect", "Step, loss, config, shards, sizes and checksums (verified) of a checkpoint");
  inspect->add_option("dir", ck_dir, "A checkpoint directory, or a root of them (its newest complete one)")->required();
  auto* export_ = checkpoint->add_subcommand(
      "export", "The weights of a checkpoint as one safetensors file (as pst train's model.safetensors)");
  export_->add_option("dir", ck_dir, "A checkpoint directory, or a root of them (its newest complete one)")->required();
  export_->add_option("--out", ck_out, "The file to write")->required();

  std::string key_out;
  auto* keygen =
      app.add_subcommand("keygen", "Write a job's keys (a secret and a CURVE key pair) for security.key_file");
  keygen->add_option("--out", key_out, "The key file to write (mode 0600)")->required();
  std::string health_endpoint = "127.0.0.1:9100";
  double health_timeout = 3;
  auto* health = app.add_subcommand("health", "Exit 0 when a pst process's /healthz says it is ready (HEALTHCHECK)");
  health->add_option("endpoint", health_endpoint, "HOST:PORT of its metrics endpoint (default 127.0.0.1:9100)");
  health->add_option("--timeout", health_timeout, "Seconds to wait for the answer");

  auto* config = app.add_subcommand("config", "Every setting of a job file, with its default and what it does");
  config->require_subcommand(1);
  config->add_subcommand("defaults", "Print a job file of every key at its default, each with its one-line doc");
  pst::ConfigArgs show_args;
  auto* show = config->add_subcommand("show", "Print a job's resolved settings (file, PST_* variables, --set)");
  show->add_option("--config", show_args.config, "TOML job file")->required();
  show->add_option("--set", show_args.sets, "Override a setting: section.key=value");

  if (int rc = pst::check_command_names(app, argc, argv); rc != 0) return rc;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a usage error exits 2, as
    // POSIX utilities do (CLI11's own codes are 100 and up).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (*train || *params || *grads || *show) {
    // Containers pass settings as PST_<SECTION>_<KEY> variables; --set wins.
    std::vector<std::string> environment;
    for (char** e = environ; *e; ++e) environment.emplace_back(*e);
    auto from_env = pst::env_overrides(environment);
    if (!from_env.ok()) {
      spdlog::error("{}", from_env.status().message());
      return 2;
    }
    for (pst::ConfigArgs* a : {&train_args, &params_args, &debug_args, &show_args})
      a->sets.insert(a->sets.begin(), from_env->begin(), from_env->end());
  }
  if (!device.empty()) train_args.sets.push_back("train.device=" + device);
  if (servers > 0) train_args.sets.push_back("cluster.servers=" + std::to_string(servers));
  if (!resume.empty()) train_args.sets.push_back("checkpoint.resume=" + resume);
  if (overwrite) train_args.sets.push_back("train.overwrite=true");
  if (no_progress) pst::disable_progress();
  if (*train && !role.empty()) return pst::run_train_role(train_args, role, scheduler);
  if (*train) return pst::run_train(train_args);
  if (*params) return pst::run_params(params_args, list);
  if (*grads) return pst::run_debug_grads(debug_args, seed, out_dir, debug_batch);
  if (*inspect) return pst::run_checkpoint_inspect(ck_dir);
  if (*export_) return pst::run_checkpoint_export(ck_dir, ck_out);
  if (*keygen) return pst::run_keygen(key_out);
  if (*health) return pst::run_health(health_endpoint, health_timeout);
  if (*predict) return pst::run_predict(model_path, inputs, gen_bytes, threads, decode);
  if (*eval) return pst::run_eval(eval_args);
  if (*show) return pst::run_config_show(show_args);
  if (*config) return pst::run_config_defaults();
  return 1;
}
