// The study file and the journal (tune/study.h); tests/integration/tune_test.sh
// runs whole studies of pst train processes.
#include <fstream>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tune/study.h"

namespace pst {
namespace {

std::string study_text(const std::string& extra_study, const std::string& rest = "") {
  return "[study]\nbase = \"" + testing::source_path("configs/g2p-tiny.toml") + "\"\ndir = \"/tmp/x\"\n" + extra_study +
         "\n" + rest +
         "\n[space]\n\"optim.lr\" = { type = \"log_uniform\", low = 1e-4, high = 1e-2 }\n"
         "\"schedule.kind\" = { type = \"choice\", values = [\"constant\", \"cosine\"] }\n";
}

void expect_error(const std::string& text, const std::string& says) {
  auto s = parse_study(text, "s.toml");
  ASSERT_FALSE(s.ok()) << text;
  EXPECT_NE(s.status().message().find(says), std::string::npos) << s.status().message();
}

TEST(StudyTest, ParsesAStudyWithItsDefaults) {
  auto s = parse_study(study_text("set = [\"train.steps=100\"]", "[asha]\nmin_steps = 20\n"), "s.toml");
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->metric, "wer");  // a G2P job's default
  EXPECT_FALSE(s->maximize);
  EXPECT_EQ(s->sampler, SamplerKind::kTpe);
  EXPECT_EQ(s->trials, 20);
  EXPECT_EQ(s->min_steps, 20);
  EXPECT_EQ(s->reduction, 3);
  EXPECT_EQ(s->launch, Launch::kProcess);
  EXPECT_EQ(s->rung_metric, "wer");  // the study's, unless [asha] names one
  EXPECT_FALSE(s->metrics.enabled);
  auto acc = parse_study(study_text("metric = \"token_accuracy\""), "s.toml");
  ASSERT_TRUE(acc.ok());
  EXPECT_TRUE(acc->maximize);
}

TEST(StudyTest, ErrorsSayWhatIsAllowed) {
  expect_error("[study]\ndir = \"/tmp/x\"\n[space]\n", "base (the job file every trial starts from) is required");
  expect_error(study_text("metric = \"bits_per_byte\""),
               "metric 'bits_per_byte' (allowed for a g2p job: wer, per, loss, token_accuracy)");
  expect_error(study_text("direction = \"down\""), "direction 'down' (allowed: minimize, maximize)");
  expect_error(study_text("sampler = \"cmaes\""), "sampler 'cmaes' (allowed: grid, random, halton, tpe)");
  expect_error(study_text("launch = \"ssh\""), "launch 'ssh' (allowed: process, mpirun, command)");
  expect_error(study_text("launch = \"command\"\ncommand = [\"srun\"]"), "with {config} in it");
  expect_error(study_text("parallel = 0"), "parallel = 0: must be in [1, 256]");
  expect_error(study_text("colour = 1"), "unknown key 'colour'");
  expect_error(study_text("set = [\"optim.lr=0.1\"]"), "optim.lr is both in set and in [space]");
  expect_error(study_text("set = [\"optim.lrr=0.1\"]"), "unknown key 'lrr'");
  expect_error(study_text("", "[asha]\nmin_steps = 300\n"), "min_steps = 300: must be in [1, train.steps = 300)");
  expect_error(study_text("", "[asha]\nmin_steps = 30\nreduction = 1\n"), "reduction = 1: must be >= 2");
  expect_error(study_text("", "[asha]\nmin_steps = 30\nmetric = \"bleu\"\n"),
               "[asha]: metric 'bleu' (allowed for a g2p job: wer, per, loss, token_accuracy)");
  expect_error(study_text("", "[hyperband]\n"), "unknown key 'hyperband'");
}

TEST(StudyTest, TheJournalReplaysTrialsAndDropsOnlyATornLastLine) {
  auto s = parse_study(study_text(""), "s.toml");
  ASSERT_TRUE(s.ok());
  testing::TempDir dir;
  const std::string path = dir.file("journal.jsonl");
  const std::string lines =
      "{\"event\":\"study\",\"version\":1}\n"
      "{\"event\":\"start\",\"trial\":0,\"params\":{\"optim.lr\":0.001,\"schedule.kind\":\"cosine\"}}\n"
      "{\"event\":\"start\",\"trial\":1,\"params\":{\"optim.lr\":0.002,\"schedule.kind\":\"constant\"}}\n"
      "{\"event\":\"report\",\"trial\":0,\"rung\":0,\"step\":20,\"value\":0.7}\n"
      "{\"event\":\"end\",\"trial\":0,\"state\":\"complete\",\"value\":0.5,\"step\":100,\"seconds\":3.5}\n"
      "{\"event\":\"start\",\"trial\":2,\"params\":{\"optim.lr\":0.003,\"schedule.kind\":\"constant\"}}\n"
      "{\"event\":\"end\",\"trial\":2,\"state\":\"pruned\",\"value\":0.9,\"step\":20}\n";
  std::ofstream(path) << lines << "{\"event\":\"end\",\"trial\":1,\"sta";  // torn
  auto t = read_journal(path, s->space);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_EQ(t->size(), 3u);
  const TrialRecord& t0 = (*t)[0];
  EXPECT_EQ(t0.state, "complete");
  EXPECT_DOUBLE_EQ(t0.value, 0.5);
  EXPECT_EQ(t0.step, 100);
  ASSERT_EQ(t0.rungs.size(), 1u);
  EXPECT_DOUBLE_EQ(t0.rungs[0].second, 0.7);
  // Space order: optim.lr, schedule.kind (index 1 = cosine).
  EXPECT_DOUBLE_EQ(*t0.point[0], 0.001);
  EXPECT_EQ(*t0.point[1], 1);
  EXPECT_EQ((*t)[1].state, "running") << "its end was torn: it runs again";
  EXPECT_EQ((*t)[2].state, "pruned");
  // Samplers see complete and pruned trials; a maximised metric negated.
  const auto obs = observations(*t, /*maximize=*/true);
  ASSERT_EQ(obs.size(), 2u);
  EXPECT_DOUBLE_EQ(obs[0].value, -0.5);
  EXPECT_DOUBLE_EQ(obs[1].value, -0.9);

  // A rerun's start replaces the interrupted run's figures.
  std::ofstream(path)
      << lines
      << "{\"event\":\"report\",\"trial\":1,\"rung\":0,\"step\":20,\"value\":0.8}\n"
         "{\"event\":\"start\",\"trial\":1,\"params\":{\"optim.lr\":0.002,\"schedule.kind\":\"constant\"}}\n";
  t = read_journal(path, s->space);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE((*t)[1].rungs.empty());

  // A bad line that is not the last is an error naming it.
  std::ofstream(path) << "{\"event\":\"study\"}\nnot json\n" << lines;
  t = read_journal(path, s->space);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 2"), std::string::npos) << t.status().message();
  // A finished trial never starts again; a value the space does not have is refused.
  std::ofstream(path)
      << lines << "{\"event\":\"start\",\"trial\":0,\"params\":{\"optim.lr\":0.001,\"schedule.kind\":\"cosine\"}}\n";
  t = read_journal(path, s->space);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("trial 0 starts again after its end"), std::string::npos);
  std::ofstream(path) << "{\"event\":\"start\",\"trial\":0,\"params\":{\"schedule.kind\":\"step\"}}\n";
  t = read_journal(path, s->space);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("is not a value of schedule.kind"), std::string::npos);
  // Integers are integers in range: a number with an exponent or a fraction
  // would reach a plain float-to-integer cast (undefined past the range).
  const std::string start0 =
      "{\"event\":\"start\",\"trial\":0,\"params\":{\"optim.lr\":0.001,\"schedule.kind\":\"cosine\"}}\n";
  for (const auto& [line, says] : std::vector<std::pair<std::string, std::string>>{
           {"{\"event\":\"start\",\"trial\":1e30,\"params\":{}}", "trial is 1e+30, not an integer in"},
           {"{\"event\":\"report\",\"trial\":0,\"rung\":4294967296,\"step\":20,\"value\":0.8}",
            "rung is 4294967296, not an integer in"},
           {"{\"event\":\"report\",\"trial\":0,\"rung\":0.5,\"step\":20,\"value\":0.8}",
            "rung is 0.5, not an integer in"},
           {"{\"event\":\"end\",\"trial\":0,\"state\":\"complete\",\"value\":0.5,\"step\":-1e300}",
            "step is -1e+300, not an integer in"}}) {
    std::ofstream(path) << start0 << line << "\n";
    t = read_journal(path, s->space);
    ASSERT_FALSE(t.ok()) << line;
    EXPECT_NE(t.status().message().find("line 2"), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find(says), std::string::npos) << t.status().message();
  }
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? s : s.replace(at, from.size(), to);
}

TEST(StudyTest, TheBaselineIsTheBaseJobsOwnValues) {
  // g2p-tiny: lr 3e-3, schedule constant (index 0).
  auto s = parse_study(study_text("baseline = true\nsampler = \"random\""), "s.toml");
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_TRUE(s->baseline.has_value());
  EXPECT_DOUBLE_EQ(*(*s->baseline)[0], 3e-3);
  EXPECT_EQ(*(*s->baseline)[1], 0);
  // A range: the base's value (g2p-tiny has no label smoothing).
  const std::string kinds = "[\"constant\", \"cosine\"]";
  s = parse_study(replaced(study_text("baseline = true\nset = [\"model.dropout=0.2\"]"), "\"optim.lr\"",
                           "\"train.label_smoothing\" = { type = \"uniform\", low = 0.0, high = 0.3 }\n\"optim.lr\""),
                  "s.toml");
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_DOUBLE_EQ(*(*s->baseline)[2], 0.0);  // train.label_smoothing, sorted last
  // Refused where the base's value is outside the space.
  expect_error(replaced(study_text("baseline = true"), "low = 1e-4, high = 1e-2", "low = 1e-4, high = 1e-3"),
               "baseline: the base job's optim.lr = 0.003 is outside the space's range [0.0001, 0.001]");
  expect_error(replaced(study_text("baseline = true"), kinds, "[\"linear\", \"step\"]"),
               "baseline: the base job's schedule.kind = constant is not one of the choices (linear, step)");
  expect_error(study_text("baseline = true\nsampler = \"grid\""),
               "baseline is for the random, halton and tpe samplers");
}

TEST(StudyTest, PointSetsAreTheStudysThenThePoints) {
  auto s = parse_study(study_text("set = [\"train.steps=100\"]"), "s.toml");
  ASSERT_TRUE(s.ok());
  const Point p = {0.00125, 1.0};
  EXPECT_EQ(point_sets(*s, p),
            (std::vector<std::string>{"train.steps=100", "optim.lr=0.00125", "schedule.kind=cosine"}));
  // Each is one the job file takes.
  auto job = load_config(s->base, point_sets(*s, p));
  ASSERT_TRUE(job.ok());
  EXPECT_DOUBLE_EQ(job->optim.lr, 0.00125);
  EXPECT_EQ(job->schedule.kind, ScheduleKind::kCosine);
}

}  // namespace
}  // namespace pst
