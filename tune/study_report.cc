// What `pst tune` leaves in a study folder at its end (tune/study.h).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "tune/report.h"
#include "tune/study.h"

namespace pst {
namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string file_name(const std::string& key) {
  std::string f;
  for (char c : key) f += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ? c : '_';
  return f;
}

}  // namespace

Status write_study_report(const StudyConfig& s, const std::vector<TrialRecord>& trials) {
  std::vector<const TrialRecord*> ended;
  for (const TrialRecord& t : trials)
    if (t.state != "running") ended.push_back(&t);
  std::sort(ended.begin(), ended.end(),
            [](const TrialRecord* a, const TrialRecord* b) { return a->number < b->number; });
  const auto folded = [&](double v) { return s.maximize ? -v : v; };

  // results.csv and results.jsonl: one row per finished trial.
  std::string csv = "trial,state," + s.metric + ",step,seconds";
  for (const Param& p : s.space.params) csv += fmt::format(",{}", csv_field(p.key));
  csv += ",error\n";
  std::string jsonl;
  for (const TrialRecord* t : ended) {
    csv += fmt::format("{},{},{},{},{:.2f}", t->number, t->state, t->has_value ? fmt::format("{}", t->value) : "",
                       t->step, t->seconds);
    for (size_t i = 0; i < s.space.size(); ++i)
      csv += fmt::format(",{}", t->point[i] ? csv_field(value_text(s.space.params[i], *t->point[i])) : "");
    csv += fmt::format(",{}\n", csv_field(t->error));
    nlohmann::json j = {{"trial", t->number},
                        {"state", t->state},
                        {"step", t->step},
                        {"seconds", t->seconds},
                        {"params", params_json(s.space, t->point)}};
    j[s.metric] = t->has_value ? nlohmann::json(t->value) : nlohmann::json(nullptr);
    if (!t->error.empty()) j["error"] = t->error;
    jsonl += j.dump() + "\n";
  }
  PST_RETURN_IF_ERROR(write_atomic(s.dir + "/results.csv", csv));
  PST_RETURN_IF_ERROR(write_atomic(s.dir + "/results.jsonl", jsonl));

  std::vector<const TrialRecord*> complete;
  for (const TrialRecord* t : ended)
    if (t->state == "complete" && t->has_value) complete.push_back(t);
  std::stable_sort(complete.begin(), complete.end(),
                   [&](const TrialRecord* a, const TrialRecord* b) { return folded(a->value) < folded(b->value); });
  const auto count = [&](const char* state) {
    return std::count_if(ended.begin(), ended.end(), [&](const TrialRecord* t) { return t->state == state; });
  };
  std::string md =
      fmt::format("# Study {}\n\n{} trials: {} complete, {} pruned, {} failed. Objective: validation {} ({}).\n\n",
                  s.dir, ended.size(), count("complete"), count("pruned"), count("failed"), s.metric,
                  s.maximize ? "maximize" : "minimize");
  if (complete.empty()) {
    md += "No trial completed: no best configuration.\n";
    return write_atomic(s.dir + "/report.md", md);
  }

  // best.toml: the base job file with the study's and the best point's
  // settings, its output a folder of its own, the trial-only settings
  // (threads, test_at_end, eval_every) as the base has them.
  const TrialRecord& best = *complete.front();
  std::vector<std::string> sets = point_sets(s, best.point);
  sets.push_back("train.output=" + s.dir + "/best");
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(s.base, sets));
  const std::string header = fmt::format(
      "# pst tune: the best trial ({}) of the study in {}: validation {} = {} at step {}.\n"
      "# Run it with: pst train --config {}/best.toml\n",
      best.number, s.dir, s.metric, best.value, best.step, s.dir);
  PST_RETURN_IF_ERROR(write_atomic(s.dir + "/best.toml", header + to_toml(job)));

  md += fmt::format("## Best\n\nTrial {}: {} = {} at step {}; `best.toml` is its job file.\n\n", best.number, s.metric,
                    best.value, best.step);
  if (s.baseline) {
    const auto base = std::find_if(ended.begin(), ended.end(), [](const TrialRecord* t) { return t->number == 0; });
    if (base != ended.end() && (*base)->state == "complete" && (*base)->has_value)
      md += fmt::format(
          "The baseline (trial 0, the base job's own values): {} = {} at step {}; the best is {} it by "
          "{:.4g} ({:+.1f}%).\n\n",
          s.metric, (*base)->value, (*base)->step,
          folded(best.value) < folded((*base)->value) ? "better than" : "no better than",
          std::abs(best.value - (*base)->value), 100 * (best.value - (*base)->value) / std::abs((*base)->value));
    else if (base != ended.end())
      md += fmt::format("The baseline (trial 0) ended {} without a figure.\n\n", (*base)->state);
  }
  md += fmt::format("| trial | {} |", s.metric);
  for (const Param& p : s.space.params) md += fmt::format(" {} |", p.key);
  md += "\n|---|---|";
  for (size_t i = 0; i < s.space.size(); ++i) md += "---|";
  md += "\n";
  for (size_t k = 0; k < std::min<size_t>(10, complete.size()); ++k) {
    md += fmt::format("| {} | {:.6g} |", complete[k]->number, complete[k]->value);
    for (size_t i = 0; i < s.space.size(); ++i)
      md += fmt::format(" {} |", complete[k]->point[i] ? value_text(s.space.params[i], *complete[k]->point[i]) : "-");
    md += "\n";
  }

  // Importance over the complete trials, and a plot per key.
  std::vector<Observation> obs;
  for (const TrialRecord* t : complete) obs.push_back(Observation{t->point, t->value});
  md +=
      "\n## Importance\n\nThe share of the objective's variance over the complete trials that each key explains "
      "on its own (epsilon squared over the key's values or bins; interactions are not apportioned).\n\n"
      "| key | share | explained | trials | plot |\n|---|---|---|---|---|\n";
  std::error_code ec;
  std::filesystem::create_directories(s.dir + "/plots", ec);
  if (ec) return io_error("cannot create {}/plots: {}", s.dir, ec.message());
  for (const Importance& imp : importance(s.space, obs)) {
    const Param& p = s.space.params[static_cast<size_t>(s.space.index_of(imp.key))];
    std::vector<double> x, y;
    const size_t d = static_cast<size_t>(s.space.index_of(imp.key));
    for (const TrialRecord* t : complete)
      if (t->point[d]) x.push_back(*t->point[d]), y.push_back(t->value);
    const std::string png = "plots/" + file_name(imp.key) + ".png";
    PST_RETURN_IF_ERROR(write_scatter_png(s.dir + "/" + png, p, x, y));
    md += fmt::format("| {} | {:.1f}% | {:.3f} | {} | [{}]({}) |\n", imp.key, 100 * imp.share, imp.explained,
                      imp.trials, png, png);
  }
  for (const Param& p : s.space.params)
    if (p.kind == ParamKind::kChoice) {
      md += fmt::format("\nIn the plot of {}, column k is its value k:", p.key);
      for (size_t k = 0; k < p.values.size(); ++k)
        md += fmt::format(" {} = {}{}", k, p.values[k], k + 1 < p.values.size() ? "," : ".");
      md += "\n";
    }
  return write_atomic(s.dir + "/report.md", md);
}

}  // namespace pst
