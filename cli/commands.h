// The `pst` subcommands other than train (job/job.h). Each returns the
// process exit code.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "worker/evaluate.h"

namespace pst {

struct ConfigArgs {
  std::string config;
  std::vector<std::string> sets;
};

int run_params(const ConfigArgs& args, bool list_tensors);
int run_debug_grads(const ConfigArgs& args, int64_t seed, const std::string& out_dir, int64_t batch_size);
// `pst checkpoint inspect DIR`: DIR's manifest (or, for a root of step
// directories, each one's state and the newest complete one's), every file
// verified. `pst checkpoint export DIR --out FILE`: the weights as one model
// file, as `pst train` writes model.safetensors. `pst checkpoint average
// DIR... --out FILE`: the elementwise mean of the checkpoints' weights as one
// model file; with `--last N`, DIR is a root and its N newest complete
// checkpoints are averaged. They must be of one model (the [model] section
// and the data keys the vocabularies follow from are compared).
int run_checkpoint_inspect(const std::string& dir);
int run_checkpoint_export(const std::string& dir, const std::string& out);
int run_checkpoint_average(const std::vector<std::string>& dirs, std::optional<int64_t> last, const std::string& out);
// `pst keygen --out FILE`: a job's keys (secret and CURVE pair) for security.key_file.
int run_keygen(const std::string& out);
// `pst health [HOST:PORT]`: exit 0 when the process there answers /healthz
// with 200 (it has passed the rendezvous), else 1; for HEALTHCHECK.
int run_health(const std::string& endpoint, double timeout_s);
// Appends the lines of `path` ('-': standard input) to *lines, without
// their line ends; blank lines are skipped.
Status read_lines(const std::string& path, std::vector<std::string>* lines);
int run_predict(const std::string& model_path, const std::vector<std::string>& inputs, int64_t bytes, int threads,
                const DecodeOptions& decode, const Sampling& sampling);

struct EvalArgs {
  std::string model, split, predictions, data;  // split: empty = test, or all with data
  int64_t max_examples = 0;
  int threads = 0;
  DecodeOptions decode;
};
// `pst tokenizer train --data PATH --vocab N --out FILE`: a SentencePiece
// model (BPE or unigram) learnt from the training split of PATH (or all of
// it with --whole), for data.tokenizer = "sentencepiece".
struct TokenizerArgs {
  std::string data, out, type = "bpe";
  int64_t vocab = 8000;
  bool whole = false;
};
int run_tokenizer_train(const TokenizerArgs& args);

// `pst config defaults`: a job file of every key at its default, each key
// under its one-line doc. `pst config show --config F [--set ...]`: the same
// for a job's resolved settings.
int run_config_defaults();
int run_config_show(const ConfigArgs& args);

// Before CLI11 parses: a word where a subcommand must stand that names none
// is a usage error naming the nearest one (`pst trian` -> "did you mean
// train?"), exit 2; 0 when every command word is known.
int check_command_names(const CLI::App& app, int argc, char** argv);

// `pst eval`: the task's metrics of a model on a split, and optionally its
// predictions (G2P), one "word<TAB>phones" line per word.
int run_eval(const EvalArgs& args);

}  // namespace pst
