// `pst tune`: a hyperparameter study (docs/tuning.md). A study file names a
// base job file, a search space over its keys, the validation metric to
// minimise or maximise, a sampler and optionally the ASHA pruner; each trial
// is a `pst train` job of its own (a process, an mpirun job, or any command
// such as srun), N at a time.
//
// A study is a folder: study.toml (the file it was started from), an
// append-only journal.jsonl of every trial's start, rung figures and end
// (fsynced line by line, so `pst tune --resume` after a crash or Ctrl-C
// runs each unfinished trial again with its point and never reruns a
// finished one), trials/NNNN/ (each trial's train.output: config.toml,
// log.txt, metrics.jsonl, model), results.csv and results.jsonl, best.toml
// (the best trial's job file, ready to run), report.md with each key's
// importance, and plots/KEY.png.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/status.h"
#include "tune/sampler.h"
#include "tune/space.h"

namespace pst {

enum class Launch { kProcess, kMpirun, kCommand };

struct StudyConfig {
  std::string base;       // the job file every trial starts from
  std::string dir;        // the study's folder
  std::string metric;     // a figure of metrics.jsonl's valid rows
  bool maximize = false;  // direction
  SamplerKind sampler = SamplerKind::kTpe;
  int64_t trials = 20;            // trials in all (a grid: at most its points)
  int64_t parallel = 1;           // trials at once
  uint64_t seed = 1;              // the sampler's seed
  double minutes = 0;             // start no trial after this wall time (0: no limit)
  std::vector<std::string> sets;  // overrides every trial takes
  Launch launch = Launch::kProcess;
  std::vector<std::string> mpirun_args;  // launch = mpirun: before -np
  std::vector<std::string> command;      // launch = command: argv with {pst} {config} {np} {dir}
  TpeOptions tpe;
  int64_t min_steps = 0;       // ASHA's first rung (0: no pruning)
  int64_t reduction = 3;       // ASHA's reduction factor
  std::string rung_metric;     // the figure ASHA judges by (default: metric)
  bool rung_maximize = false;  // token_accuracy: higher is better
  MetricsConfig metrics;       // the tuner's /metrics (pst_tune_*); off unless [study] metrics_port is set
  // [study] baseline = true: trial 0 runs the base job's own values of the
  // space's keys (after set), the reference the report compares with.
  std::optional<Point> baseline;
  SearchSpace space;
  std::string text;  // the study file as given
};

// Parses a study file's text; `name` is used in messages. Every field is
// checked, the base job file loaded and each dimension's bounds and values
// tried on it.
Result<StudyConfig> parse_study(const std::string& text, const std::string& name);
Result<StudyConfig> load_study(const std::string& path);

// One trial as the journal has it.
struct TrialRecord {
  int64_t number = 0;
  Point point;
  std::string state = "running";  // running (started, no end: rerun on --resume), complete, pruned, failed
  double value = 0;               // complete: the last validation's figure; pruned: the last one reported
  bool has_value = false;
  int64_t step = 0;                           // the step of that figure
  double seconds = 0;                         // wall time of the trial's process
  std::string error;                          // failed: why
  std::vector<std::pair<int, double>> rungs;  // ASHA figures: (rung, figure of the rung metric)
};

// Reads journal.jsonl. A torn last line (the tuner stopped while writing
// it) is dropped with a warning; any other bad line is an error naming it.
Result<std::vector<TrialRecord>> read_journal(const std::string& path, const SearchSpace& space);

// The observation samplers see for a finished trial: complete and pruned
// trials with their figure, negated when the metric is maximised.
std::vector<Observation> observations(const std::vector<TrialRecord>& trials, bool maximize);

// A point as the journal and results.jsonl write it: {key: value}, a
// choice as its text, an int as an integer, inactive keys left out.
nlohmann::json params_json(const SearchSpace& space, const Point& p);

// A trial's overrides at point p: the study's set, then the point's keys.
std::vector<std::string> point_sets(const StudyConfig& s, const Point& p);

struct TuneArgs {
  std::string study;   // a study file: a new study in its [study] dir
  std::string resume;  // or a study folder to continue
  int64_t trials = 0;  // with resume: a new total (0: the study file's)
  int64_t parallel = 0;
};

// Runs (or continues) a study until its trials are done, its time is up or
// a stop is asked for (SIGINT, SIGTERM: running trials are ended and run
// again on --resume), then writes the results and the report.
Status run_tune(const TuneArgs& args);

// Writes results.csv, results.jsonl, best.toml, report.md and plots/ of a
// study folder from its journal.
Status write_study_report(const StudyConfig& study, const std::vector<TrialRecord>& trials);

}  // namespace pst
