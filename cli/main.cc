#include <cblas.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/config.h"
#include "core/cpus.h"
#include "core/logging.h"
#include "core/memory.h"
#include "core/stop.h"
#include "core/terminal.h"
#include "core/version.h"
#include "job/job.h"
#include "tune/study.h"

namespace {

// Every flag of every command, as CLI11 fills them in.
struct Flags {
  CLI::App* train = nullptr;
  pst::ConfigArgs train_args;
  std::string device, role, scheduler, resume;
  int64_t servers = 0;
  bool overwrite = false, no_progress = false;

  CLI::App *params = nullptr, *grads = nullptr;
  pst::ConfigArgs params_args, debug_args;
  bool list = false;
  int64_t seed = 1, debug_batch = 0;
  std::string out_dir;

  CLI::App *predict = nullptr, *eval = nullptr;
  std::string model_path;
  std::vector<std::string> inputs;
  std::string input_file;
  int64_t gen_bytes = 200;
  int threads = 0;
  pst::DecodeOptions decode;
  pst::Sampling sampling;
  pst::EvalArgs eval_args;

  CLI::App *inspect = nullptr, *export_ = nullptr, *average = nullptr, *keygen = nullptr, *health = nullptr;
  CLI::App *config = nullptr, *show = nullptr;
  std::vector<std::string> ck_dirs;
  int64_t ck_last = 0;
  std::string ck_dir, ck_out, key_out, health_endpoint = "127.0.0.1:9100";
  double health_timeout = 3;
  pst::ConfigArgs show_args;

  CLI::App* tokenizer_train = nullptr;
  pst::TokenizerArgs tokenizer_args;

  CLI::App* tune = nullptr;
  pst::TuneArgs tune_args;
};

void add_train(CLI::App& app, Flags& f) {
  f.train = app.add_subcommand("train", "Train a model from a job file");
  CLI::App* train = f.train;
  train->add_option("--config", f.train_args.config, "TOML job file")->required();
  train->add_option("--set", f.train_args.sets, "Override a setting: section.key=value (repeatable)");
  train->add_option("--device", f.device, "auto, cpu, cuda or cuda:N (same as --set train.device=...)");
  train->add_option("--role", f.role,
                    "scheduler, server or worker: one process of a job started without mpirun; auto: the role of "
                    "Slurm task SLURM_PROCID (0 the scheduler, 1..S servers, the rest workers)");
  train->add_option("--scheduler", f.scheduler,
                    "With --role: the scheduler's endpoint (it binds there), e.g. tcp://host:5555");
  train->add_option("--resume", f.resume,
                    "Continue from a checkpoint: latest (the newest complete one under checkpoint.dir) or its "
                    "directory (same as --set checkpoint.resume=...)");
  train->add_option("--servers", f.servers, "Parameter servers of an mpirun job (same as --set cluster.servers=...)");
  train->add_flag("--overwrite", f.overwrite,
                  "Start afresh in a train.output that holds another run, removing its model and checkpoints "
                  "(same as --set train.overwrite=true)");
  train->add_flag("--no-progress", f.no_progress, "No progress bar, even on a terminal");
}

void add_model_tools(CLI::App& app, Flags& f) {
  f.params = app.add_subcommand("params", "Parameter counts, memory and FLOPs of a model");
  f.params->add_option("--config", f.params_args.config, "TOML job file")->required();
  f.params->add_option("--set", f.params_args.sets, "Override a setting: section.key=value");
  f.params->add_flag("--list", f.list, "Also list every tensor");

  auto* debug = app.add_subcommand("debug", "Debugging tools");
  debug->require_subcommand(1);
  f.grads = debug->add_subcommand("grads", "Write weights, one batch, the loss and all gradients as safetensors files");
  f.grads->add_option("--config", f.debug_args.config, "TOML job file")->required();
  f.grads->add_option("--set", f.debug_args.sets, "Override a setting: section.key=value");
  f.grads->add_option("--seed", f.seed, "Seed of the initial weights and of the batch order");
  f.grads->add_option("--batch-size", f.debug_batch, "Examples in the batch (default: data.batch_size)");
  f.grads->add_option("--out", f.out_dir, "Output directory")->required();

  f.predict = app.add_subcommand("predict", "Phones for words (G2P) or a continuation of text (LM)");
  f.predict->add_option("--model", f.model_path, "model.safetensors written by pst train")->required();
  f.predict->add_option("inputs", f.inputs, "Words (G2P) or prompts (LM)");
  f.predict->add_option("--input", f.input_file,
                        "Read the words (G2P) or prompts (LM) from this file, one per line ('-': standard input), "
                        "after any given as arguments (with neither, standard input is read when it is not a "
                        "terminal)");
  f.predict->add_option("--bytes", f.gen_bytes, "LM: bytes to generate per prompt");
  f.predict->add_option("--temperature", f.sampling.temperature,
                        "LM: sample each byte from softmax(logits / T) (0 = greedy: the most probable byte)");
  f.predict->add_option("--top-k", f.sampling.top_k, "LM sampling: only the K most probable bytes (0 = all)");
  f.predict->add_option("--top-p", f.sampling.top_p,
                        "LM sampling: only the fewest most probable bytes whose probability reaches P (1 = all)");
  f.predict->add_option("--seed", f.sampling.seed, "LM sampling: the random stream (the same seed, the same text)");
  f.predict->add_option("--threads", f.threads, "CPU threads (0 = all cores)");
  f.predict->add_option("--beam", f.decode.beam, "G2P: beam size (1 = greedy decoding)");
  f.predict->add_option("--length-penalty", f.decode.length_penalty,
                        "G2P beam search: rank by log-probability / length^this (0 = none, 1 = per token)");
  const char* no_cache =
      "Decode without keeping the decoder's keys and values: every step re-runs the whole prefix (slower; the "
      "reference the cache is tested against)";
  f.predict->add_flag_function(
      "--no-cache", [&f](int64_t) { f.decode.cache = false; }, no_cache);

  pst::EvalArgs& e = f.eval_args;
  f.eval = app.add_subcommand("eval", "The task's metrics of a model on a split of its data");
  f.eval->add_option("--model", e.model, "model.safetensors (pst train, or pst checkpoint export)")->required();
  f.eval->add_option("--split", e.split,
                     "train, valid, test, or all (each, then their union); default test, or all with --data");
  f.eval->add_option("--predictions", e.predictions, "G2P: write word<TAB>phones per word to this file");
  f.eval->add_option("--max-examples", e.max_examples, "Only the first N words (G2P) or examples (0 = all)");
  f.eval->add_option("--data", e.data,
                     "Another data file (or LM directory) to evaluate, with the model's vocabularies; by default "
                     "all of it");
  f.eval->add_option("--threads", e.threads, "CPU threads (0 = all cores)");
  f.eval->add_option("--beam", e.decode.beam, "G2P: beam size (1 = greedy decoding)");
  f.eval->add_option("--length-penalty", e.decode.length_penalty,
                     "G2P beam search: rank by log-probability / length^this (0 = none, 1 = per token)");
  f.eval->add_flag_function(
      "--no-cache", [&e](int64_t) { e.decode.cache = false; }, no_cache);
  f.eval->add_flag_function(
      "--decode-all", [&e](int64_t) { e.decode.from_scoring = false; },
      "G2P greedy: decode every word, also those whose output the teacher-forced pass already shows (one of "
      "their references is greedy's choice at every position)");
}

void add_job_tools(CLI::App& app, Flags& f) {
  auto* checkpoint = app.add_subcommand("checkpoint", "Inspect, export or average checkpoints of pst train");
  checkpoint->require_subcommand(1);
  f.inspect = checkpoint->add_subcommand("inspect",
                                         "Step, loss, config, shards, sizes and checksums (verified) of a checkpoint");
  f.inspect->add_option("dir", f.ck_dir, "A checkpoint directory, or a root of them (its newest complete one)")
      ->required();
  f.export_ = checkpoint->add_subcommand(
      "export", "The weights of a checkpoint as one safetensors file (as pst train's model.safetensors)");
  f.export_->add_option("dir", f.ck_dir, "A checkpoint directory, or a root of them (its newest complete one)")
      ->required();
  f.export_->add_option("--out", f.ck_out, "The file to write")->required();
  f.average = checkpoint->add_subcommand(
      "average", "The mean of the weights of several checkpoints of one run as one safetensors file");
  f.average->add_option("dirs", f.ck_dirs, "Checkpoint directories, or with --last one root of them")->required();
  f.average->add_option("--last", f.ck_last, "Average the N newest complete checkpoints under the root");
  f.average->add_option("--out", f.ck_out, "The file to write")->required();

  f.keygen = app.add_subcommand("keygen", "Write a job's keys (a secret and a CURVE key pair) for security.key_file");
  f.keygen->add_option("--out", f.key_out, "The key file to write (mode 0600)")->required();
  f.health = app.add_subcommand("health", "Exit 0 when a pst process's /healthz says it is ready (HEALTHCHECK)");
  f.health->add_option("endpoint", f.health_endpoint, "HOST:PORT of its metrics endpoint (default 127.0.0.1:9100)");
  f.health->add_option("--timeout", f.health_timeout, "Seconds to wait for the answer");

  auto* tokenizer = app.add_subcommand("tokenizer", "Subword tokenizers for language models");
  tokenizer->require_subcommand(1);
  f.tokenizer_train =
      tokenizer->add_subcommand("train", "Learn a SentencePiece model from text (data.tokenizer_model)");
  f.tokenizer_train->add_option("--data", f.tokenizer_args.data, "A text file or directory, as data.path")->required();
  f.tokenizer_train->add_option("--vocab", f.tokenizer_args.vocab, "Pieces in the model (default 8000)");
  f.tokenizer_train->add_option("--type", f.tokenizer_args.type, "bpe (default) or unigram");
  f.tokenizer_train->add_option("--out", f.tokenizer_args.out, "The .model file to write")->required();
  f.tokenizer_train->add_flag("--whole", f.tokenizer_args.whole,
                              "Learn from all of --data, not its hash split's training part");

  pst::TuneArgs& t = f.tune_args;
  f.tune =
      app.add_subcommand("tune", "Hyperparameter search: trials of pst train chosen by a sampler (docs/tuning.md)");
  auto* study = f.tune->add_option("--study", t.study, "A study file: a new study in its [study] dir");
  auto* resume = f.tune->add_option("--resume", t.resume,
                                    "A study folder to continue (unfinished trials run again; finished ones never)");
  study->excludes(resume);
  f.tune->add_option("--trials", t.trials, "Trials in all (default: the study file's trials)");
  f.tune->add_option("--parallel", t.parallel, "Trials at once (default: the study file's parallel)");

  f.config = app.add_subcommand("config", "Every setting of a job file, with its default and what it does");
  f.config->require_subcommand(1);
  f.config->add_subcommand("defaults", "Print a job file of every key at its default, each with its one-line doc");
  f.show = f.config->add_subcommand("show", "Print a job's resolved settings (file, PST_* variables, --set)");
  f.show->add_option("--config", f.show_args.config, "TOML job file")->required();
  f.show->add_option("--set", f.show_args.sets, "Override a setting: section.key=value");
}

// Containers pass settings as PST_<SECTION>_<KEY> variables; --set wins.
// The train flags that stand for settings become --set overrides too.
int add_overrides(Flags& f) {
  if (*f.train || *f.params || *f.grads || *f.show) {
    std::vector<std::string> environment;
    for (char** e = environ; *e; ++e) environment.emplace_back(*e);
    auto from_env = pst::env_overrides(environment);
    if (!from_env.ok()) {
      spdlog::error("{}", from_env.status().message());
      return 2;
    }
    for (pst::ConfigArgs* a : {&f.train_args, &f.params_args, &f.debug_args, &f.show_args})
      a->sets.insert(a->sets.begin(), from_env->begin(), from_env->end());
  }
  std::vector<std::string>& sets = f.train_args.sets;
  if (!f.device.empty()) sets.push_back("train.device=" + f.device);
  if (f.servers > 0) sets.push_back("cluster.servers=" + std::to_string(f.servers));
  if (!f.resume.empty()) sets.push_back("checkpoint.resume=" + f.resume);
  if (f.overwrite) sets.push_back("train.overwrite=true");
  return 0;
}

int run_command(Flags& f) {
  if (*f.train) {
    const pst::Status s = pst::train(pst::TrainArgs{f.train_args.config, f.train_args.sets, f.role, f.scheduler});
    if (!s.ok()) spdlog::error("{}", s.message());
    return pst::exit_code(s);
  }
  if (*f.params) return pst::run_params(f.params_args, f.list);
  if (*f.grads) return pst::run_debug_grads(f.debug_args, f.seed, f.out_dir, f.debug_batch);
  if (*f.inspect) return pst::run_checkpoint_inspect(f.ck_dir);
  if (*f.export_) return pst::run_checkpoint_export(f.ck_dir, f.ck_out);
  if (*f.average)
    return pst::run_checkpoint_average(
        f.ck_dirs, f.average->count("--last") ? std::optional<int64_t>(f.ck_last) : std::nullopt, f.ck_out);
  if (*f.keygen) return pst::run_keygen(f.key_out);
  if (*f.health) return pst::run_health(f.health_endpoint, f.health_timeout);
  if (*f.predict) {
    std::vector<std::string> inputs = f.inputs;
    // With no words given, words piped in are read, as a filter reads them
    // (`cut -f1 words.tsv | pst predict --model M`); a terminal is not
    // waited on.
    std::string from = f.input_file;
    if (from.empty() && inputs.empty() && !::isatty(STDIN_FILENO)) from = "-";
    if (!from.empty()) {
      const pst::Status s = pst::read_lines(from, &inputs);
      if (!s.ok()) {
        spdlog::error("{}", s.message());
        return 2;
      }
    }
    if (inputs.empty()) {
      spdlog::error("predict: no words or prompts (give them as arguments, with --input FILE, or on standard input)");
      return 2;
    }
    return pst::run_predict(f.model_path, inputs, f.gen_bytes, f.threads, f.decode, f.sampling);
  }
  if (*f.eval) return pst::run_eval(f.eval_args);
  if (*f.tokenizer_train) return pst::run_tokenizer_train(f.tokenizer_args);
  if (*f.tune) {
    if (f.tune_args.study.empty() && f.tune_args.resume.empty()) {
      spdlog::error("pst tune: give --study FILE (a new study) or --resume DIR (a study to continue)");
      return 2;
    }
    const pst::Status s = pst::run_tune(f.tune_args);
    if (!s.ok()) spdlog::error("{}", s.message());
    if (s.ok() && pst::stop_requested()) return 128 + pst::stop_signal();  // stopped: --resume continues
    return pst::exit_code(s);
  }
  if (*f.show) return pst::run_config_show(f.show_args);
  if (*f.config) return pst::run_config_defaults();
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  pst::install_stop_handlers();  // before any thread starts (core/stop.h)
  pst::keep_freed_memory();      // messages' buffers are reused, not faulted in anew (core/memory.h)
  pst::init_logging("info");
  // Before any thread starts: OpenBLAS's kernels that fit this CPU (core/cpus.h).
  pst::restart_with_fitting_openblas_kernels();
  CLI::App app{"pst: a parameter-server system for training Transformer models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("pst {} (commit {}); OpenBLAS kernels: {}", pst::version(),
                                                pst::git_commit(), openblas_get_corename()));
  app.option_defaults()->always_capture_default();  // --help shows each option's default
  Flags flags;
  add_train(app, flags);
  add_model_tools(app, flags);
  add_job_tools(app, flags);
  if (int rc = pst::check_command_names(app, argc, argv); rc != 0) return rc;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a usage error exits 2, as
    // POSIX utilities do (CLI11's own codes are 100 and up).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (int rc = add_overrides(flags); rc != 0) return rc;
  if (flags.no_progress) pst::disable_progress();
  return run_command(flags);
}
