// The study file of `pst tune` and its journal (tune/study.h).
#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "core/json_fields.h"
#include "tune/study.h"

namespace pst {
namespace {

const std::vector<std::string> kStudyKeys = {
    "base",    "dir", "metric", "direction",   "sampler", "trials",       "parallel",     "seed",
    "minutes", "set", "launch", "mpirun_args", "command", "metrics_port", "metrics_bind", "baseline"};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

Status check_keys(const toml::table& t, const std::vector<std::string>& allowed, const std::string& where) {
  for (const auto& [k, v] : t) {
    (void)v;
    if (std::find(allowed.begin(), allowed.end(), std::string(k.str())) == allowed.end())
      return invalid_argument("{}: unknown key '{}' (allowed: {})", where, k.str(), join(allowed));
  }
  return Status();
}

template <typename T>
Result<std::optional<T>> get(const toml::table& t, const char* key, const std::string& where, const char* what) {
  const toml::node* n = t.get(key);
  if (!n) return std::optional<T>();
  if constexpr (std::is_same_v<T, double>) {
    if (n->is_number()) return std::optional<T>(*n->value<double>());
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (n->is_integer()) return std::optional<T>(*n->value<int64_t>());
  } else {
    if (n->is_string()) return std::optional<T>(*n->value<std::string>());
  }
  return invalid_argument("{}: {} must be {}", where, key, what);
}

Result<std::vector<std::string>> strings(const toml::table& t, const char* key, const std::string& where) {
  std::vector<std::string> out;
  const toml::node* n = t.get(key);
  if (!n) return out;
  const toml::array* a = n->as_array();
  if (!a) return invalid_argument("{}: {} must be an array of strings", where, key);
  for (const toml::node& e : *a) {
    if (!e.is_string()) return invalid_argument("{}: {} must be an array of strings", where, key);
    out.push_back(*e.value<std::string>());
  }
  return out;
}

// The dimensions' indices, unconditional ones first.
std::vector<size_t> space_order(const SearchSpace& space) {
  std::vector<size_t> order;
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < space.size(); ++i)
      if (space.params[i].when_key.empty() == (pass == 0)) order.push_back(i);
  return order;
}

// The point of the base job's own values, each one the space must hold.
Result<Point> base_point(const SearchSpace& space, const JobConfig& job, const std::string& where) {
  const toml::table t = toml::parse(to_toml(job));
  Point p(space.size());
  // The unconditional keys first: a conditional one counts only where active.
  for (size_t i : space_order(space)) {
    const Param& q = space.params[i];
    if (!space.active(p, i)) continue;
    const toml::node* n = t.at_path(q.key).node();
    if (!n) return invalid_argument("{}: baseline: the base job has no {}", where, q.key);
    if (q.kind == ParamKind::kChoice) {
      PST_ASSIGN_OR_RETURN(const std::string text, toml_scalar_text(*n, where + " baseline " + q.key));
      const auto it = std::find(q.values.begin(), q.values.end(), text);
      if (it == q.values.end())
        return invalid_argument("{}: baseline: the base job's {} = {} is not one of the choices ({})", where, q.key,
                                text, join(q.values));
      p[i] = static_cast<double>(it - q.values.begin());
    } else {
      if (!n->is_number()) return invalid_argument("{}: baseline: the base job's {} is not a number", where, q.key);
      const double v = *n->value<double>();
      const bool on_step = q.kind != ParamKind::kInt || std::fmod(v - q.low, q.step) == 0;
      if (v < q.low || v > q.high || !on_step)
        return invalid_argument("{}: baseline: the base job's {} = {} is outside the space's range [{}, {}]", where,
                                q.key, v, q.low, q.high);
      p[i] = v;
    }
  }
  return p;
}

}  // namespace

Result<StudyConfig> parse_study(const std::string& text, const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    return invalid_argument("{}: {} (line {})", name, e.description(), e.source().begin.line);
  }
  PST_RETURN_IF_ERROR(check_keys(root, {"study", "space", "asha", "tpe"}, name));
  StudyConfig s;
  s.text = text;
  const toml::table* st = root["study"].as_table();
  if (!st) return invalid_argument("{}: no [study] table (it names base, dir and metric)", name);
  const std::string w = name + " [study]";
  PST_RETURN_IF_ERROR(check_keys(*st, kStudyKeys, w));
  PST_ASSIGN_OR_RETURN(auto base, get<std::string>(*st, "base", w, "a path"));
  PST_ASSIGN_OR_RETURN(auto dir, get<std::string>(*st, "dir", w, "a path"));
  if (!base || base->empty()) return invalid_argument("{}: base (the job file every trial starts from) is required", w);
  if (!dir || dir->empty()) return invalid_argument("{}: dir (the study's folder) is required", w);
  s.base = *base, s.dir = *dir;
  PST_ASSIGN_OR_RETURN(s.sets, strings(*st, "set", w));
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(s.base, s.sets));
  const bool g2p = job.data.task == Task::kG2P;
  const std::vector<std::string> metrics =
      g2p ? std::vector<std::string>{"wer", "per", "loss", "token_accuracy"}
          : std::vector<std::string>{"loss", "bits_per_byte", "perplexity", "token_accuracy"};
  PST_ASSIGN_OR_RETURN(auto metric, get<std::string>(*st, "metric", w, "a string"));
  s.metric = metric.value_or(g2p ? "wer" : "bits_per_byte");
  if (std::find(metrics.begin(), metrics.end(), s.metric) == metrics.end())
    return invalid_argument("{}: metric '{}' (allowed for a {} job: {})", w, s.metric, to_string(job.data.task),
                            join(metrics));
  PST_ASSIGN_OR_RETURN(auto direction, get<std::string>(*st, "direction", w, "a string"));
  const std::string dir_text = direction.value_or(s.metric == "token_accuracy" ? "maximize" : "minimize");
  if (dir_text != "minimize" && dir_text != "maximize")
    return invalid_argument("{}: direction '{}' (allowed: minimize, maximize)", w, dir_text);
  s.maximize = dir_text == "maximize";
  PST_ASSIGN_OR_RETURN(auto sampler, get<std::string>(*st, "sampler", w, "a string"));
  PST_ASSIGN_OR_RETURN(s.sampler, parse_sampler(sampler.value_or("tpe")));
  PST_ASSIGN_OR_RETURN(auto trials, get<int64_t>(*st, "trials", w, "an integer"));
  PST_ASSIGN_OR_RETURN(auto parallel, get<int64_t>(*st, "parallel", w, "an integer"));
  PST_ASSIGN_OR_RETURN(auto seed, get<int64_t>(*st, "seed", w, "an integer"));
  PST_ASSIGN_OR_RETURN(auto minutes, get<double>(*st, "minutes", w, "a number"));
  s.trials = trials.value_or(20), s.parallel = parallel.value_or(1), s.minutes = minutes.value_or(0);
  s.seed = static_cast<uint64_t>(seed.value_or(1));
  if (s.trials < 1) return invalid_argument("{}: trials = {}: must be >= 1", w, s.trials);
  if (s.parallel < 1 || s.parallel > 256)
    return invalid_argument("{}: parallel = {}: must be in [1, 256]", w, s.parallel);
  if (!(s.minutes >= 0)) return invalid_argument("{}: minutes = {}: must be >= 0 (0: no limit)", w, s.minutes);
  PST_ASSIGN_OR_RETURN(auto launch, get<std::string>(*st, "launch", w, "a string"));
  const std::string l = launch.value_or("process");
  if (l == "process") {
    s.launch = Launch::kProcess;
  } else if (l == "mpirun") {
    s.launch = Launch::kMpirun;
  } else if (l == "command") {
    s.launch = Launch::kCommand;
  } else {
    return invalid_argument("{}: launch '{}' (allowed: process, mpirun, command)", w, l);
  }
  PST_ASSIGN_OR_RETURN(s.mpirun_args, strings(*st, "mpirun_args", w));
  if (!st->get("mpirun_args")) s.mpirun_args = {"--oversubscribe", "--bind-to", "none"};
  PST_ASSIGN_OR_RETURN(s.command, strings(*st, "command", w));
  if (s.launch == Launch::kCommand) {
    if (s.command.empty() || std::none_of(s.command.begin(), s.command.end(),
                                          [](const std::string& a) { return a.find("{config}") != std::string::npos; }))
      return invalid_argument(
          "{}: launch = \"command\" needs command = [...] with {{config}} in it, e.g. "
          "[\"srun\", \"-n\", \"{{np}}\", \"{{pst}}\", \"train\", \"--config\", \"{{config}}\"]",
          w);
  } else if (!s.command.empty()) {
    return invalid_argument("{}: command is for launch = \"command\"", w);
  }
  PST_ASSIGN_OR_RETURN(auto port, get<int64_t>(*st, "metrics_port", w, "an integer"));
  PST_ASSIGN_OR_RETURN(auto bind, get<std::string>(*st, "metrics_bind", w, "a string"));
  s.metrics.enabled = port.has_value();
  s.metrics.port = port.value_or(0);
  s.metrics.bind = bind.value_or("127.0.0.1");
  if (s.metrics.port < 0 || s.metrics.port > 65535)
    return invalid_argument("{}: metrics_port = {}: must be in [0, 65535] (0: an ephemeral port)", w, s.metrics.port);

  if (const toml::table* t = root["tpe"].as_table()) {
    PST_RETURN_IF_ERROR(check_keys(*t, {"startup_trials", "candidates"}, name + " [tpe]"));
    PST_ASSIGN_OR_RETURN(auto st2, get<int64_t>(*t, "startup_trials", name + " [tpe]", "an integer"));
    PST_ASSIGN_OR_RETURN(auto cand, get<int64_t>(*t, "candidates", name + " [tpe]", "an integer"));
    s.tpe.startup = st2.value_or(s.tpe.startup), s.tpe.candidates = cand.value_or(s.tpe.candidates);
    if (s.tpe.startup < 1 || s.tpe.candidates < 1)
      return invalid_argument("{} [tpe]: startup_trials and candidates must be >= 1", name);
  }
  if (const toml::table* t = root["asha"].as_table()) {
    const std::string wa = name + " [asha]";
    PST_RETURN_IF_ERROR(check_keys(*t, {"min_steps", "reduction", "metric"}, wa));
    PST_ASSIGN_OR_RETURN(auto rung_metric, get<std::string>(*t, "metric", wa, "a string"));
    s.rung_metric = rung_metric.value_or(s.metric);
    if (std::find(metrics.begin(), metrics.end(), s.rung_metric) == metrics.end())
      return invalid_argument("{}: metric '{}' (allowed for a {} job: {})", wa, s.rung_metric, to_string(job.data.task),
                              join(metrics));
    s.rung_maximize = s.rung_metric == "token_accuracy";
    PST_ASSIGN_OR_RETURN(auto min_steps, get<int64_t>(*t, "min_steps", wa, "an integer"));
    PST_ASSIGN_OR_RETURN(auto reduction, get<int64_t>(*t, "reduction", wa, "an integer"));
    if (!min_steps) return invalid_argument("{}: min_steps (the first rung, in steps) is required", wa);
    s.min_steps = *min_steps, s.reduction = reduction.value_or(3);
    if (s.min_steps < 1 || s.min_steps >= job.train.steps)
      return invalid_argument("{}: min_steps = {}: must be in [1, train.steps = {})", wa, s.min_steps, job.train.steps);
    if (s.reduction < 2) return invalid_argument("{}: reduction = {}: must be >= 2", wa, s.reduction);
  }
  const toml::table* space = root["space"].as_table();
  if (!space) return invalid_argument("{}: no [space] table (the keys to search and their ranges)", name);
  PST_ASSIGN_OR_RETURN(s.space, parse_space(*space, name));
  for (const std::string& set : s.sets)
    for (const Param& p : s.space.params)
      if (set.starts_with(p.key + "=")) return invalid_argument("{}: {} is both in set and in [space]", w, p.key);
  if (const toml::node* b = st->get("baseline")) {
    if (!b->is_boolean()) return invalid_argument("{}: baseline must be true or false", w);
    if (*b->value<bool>()) {
      if (s.sampler == SamplerKind::kGrid)
        return invalid_argument("{}: baseline is for the random, halton and tpe samplers (a grid runs its own points)",
                                w);
      PST_ASSIGN_OR_RETURN(Point p, base_point(s.space, job, w));
      s.baseline = p;
    }
  }
  return s;
}

Result<StudyConfig> load_study(const std::string& path) {
  auto text = read_all(path);
  if (!text.ok()) return not_found("study file {} cannot be read", path);
  return parse_study(*text, path);
}

Result<std::vector<TrialRecord>> read_journal(const std::string& path, const SearchSpace& space) {
  std::vector<TrialRecord> trials;
  auto all = read_all(path);
  if (!all.ok()) return trials;  // (no journal yet)
  const bool last_complete = all->empty() || all->back() == '\n';
  std::vector<std::string> lines;
  std::istringstream is(*all);
  for (std::string line; std::getline(is, line);) lines.push_back(line);
  auto find = [&](int64_t n) -> TrialRecord* {
    for (TrialRecord& t : trials)
      if (t.number == n) return &t;
    return nullptr;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = fmt::format("{} line {}", path, i + 1);
    nlohmann::json j;
    std::optional<std::string> bad;  // why line i is not an entry
    try {
      j = nlohmann::json::parse(lines[i]);
      const std::string event = j.at("event").get<std::string>();
      if (event == "study") continue;
      const int64_t n = json_integer<int64_t>(j.at("trial"), "trial");
      if (event == "start") {
        TrialRecord t;
        t.number = n;
        t.point.assign(space.size(), std::nullopt);
        for (const auto& [key, v] : j.at("params").items()) {
          const int d = space.index_of(key);
          if (d < 0) return data_loss("{}: key '{}' is not in the study's [space]", where, key);
          const Param& p = space.params[static_cast<size_t>(d)];
          if (p.kind == ParamKind::kChoice) {
            const auto it = std::find(p.values.begin(), p.values.end(), v.get<std::string>());
            if (it == p.values.end()) return data_loss("{}: '{}' is not a value of {}", where, v.dump(), key);
            t.point[static_cast<size_t>(d)] = static_cast<double>(it - p.values.begin());
          } else {
            t.point[static_cast<size_t>(d)] = v.get<double>();
          }
        }
        if (TrialRecord* old = find(n)) {
          if (old->state != "running") return data_loss("{}: trial {} starts again after its end", where, n);
          *old = t;  // a rerun of an interrupted trial: its old figures are void
        } else {
          trials.push_back(t);
        }
      } else if (event == "report") {
        TrialRecord* t = find(n);
        if (!t) return data_loss("{}: a report of trial {}, which has not started", where, n);
        t->rungs.emplace_back(json_integer<int>(j.at("rung"), "rung"), j.at("value").get<double>());
      } else if (event == "end") {
        TrialRecord* t = find(n);
        if (!t) return data_loss("{}: the end of trial {}, which has not started", where, n);
        t->state = j.at("state").get<std::string>();
        if (t->state != "complete" && t->state != "pruned" && t->state != "failed")
          return data_loss("{}: state '{}' (allowed: complete, pruned, failed)", where, t->state);
        t->has_value = j.contains("value") && !j.at("value").is_null();
        if (t->has_value) t->value = j.at("value").get<double>();
        t->step = j.contains("step") ? json_integer<int64_t>(j["step"], "step") : 0;
        t->seconds = j.value("seconds", 0.0);
        t->error = j.value("error", std::string());
      } else {
        return data_loss("{}: event '{}' (allowed: study, start, report, end)", where, event);
      }
    } catch (const nlohmann::json::exception& e) {
      bad = e.what();
    } catch (const std::logic_error& e) {  // json_integer's std::invalid_argument
      bad = e.what();
    }
    // Only what a damaged line causes is a bad line; anything else (an
    // allocation failure) goes on up.
    if (bad) {
      if (i + 1 == lines.size() && !last_complete) {
        spdlog::warn("{}: a torn last line (the tuner stopped while writing it) is dropped", where);
        break;
      }
      return data_loss("{}: not a journal entry ({})", where, *bad);
    }
  }
  return trials;
}

std::vector<Observation> observations(const std::vector<TrialRecord>& trials, bool maximize) {
  std::vector<Observation> out;
  for (const TrialRecord& t : trials)
    if ((t.state == "complete" || t.state == "pruned") && t.has_value)
      out.push_back(Observation{t.point, maximize ? -t.value : t.value, t.step});
  return out;
}

}  // namespace pst
