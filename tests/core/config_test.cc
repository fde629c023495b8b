#include "core/config.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <tuple>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace pst {
namespace {

TEST(ConfigTest, DefaultsAreValid) { EXPECT_TRUE(validate(JobConfig{}).ok()); }

// `pst config defaults` prints every key with the comment of its field in
// core/config.h: no key may lack one, and none may be documented that the
// parser does not know (a renamed field).
TEST(ConfigTest, EveryKeyHasItsOneLineDocumentation) {
  std::set<std::string> keys, documented;
  for (const std::string& k : config_keys()) keys.insert(k);
  for (const ConfigDoc& d : config_docs()) {
    const std::string key = std::string(d.section) + "." + d.key;
    EXPECT_TRUE(documented.insert(key).second) << key << " is documented twice";
    EXPECT_GT(std::string(d.doc).size(), 3u) << key;
  }
  EXPECT_EQ(documented, keys);
  EXPECT_GT(keys.size(), 60u);
}

TEST(ConfigTest, TheDocumentedDefaultsAreAJobFileOfTheDefaults) {
  const std::string text = to_documented_toml(JobConfig{});
  EXPECT_NE(text.find("# peak learning rate (for inverse_sqrt: a multiplier)\nlr = "), std::string::npos) << text;
  auto back = parse_config(text, "pst config defaults", {});
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(to_toml(*back), to_toml(JobConfig{}));
}

TEST(ConfigTest, ParsesEverySection) {
  auto c = parse_config(R"(
[model]
kind = "decoder_only"
d_model = 64
heads = 8
norm = "pre"
activation = "gelu_tanh"
dropout = 0
[data]
task = "lm"
seq_len = 32
[optim]
lr = 3e-4
clip_norm = 0
[schedule]
kind = "inverse_sqrt"
warmup_steps = 100
[train]
steps = 7
device = "cpu"
)",
                        "t.toml", {});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model.kind, ModelKind::kDecoderOnly);
  EXPECT_EQ(c->model.d_model, 64);
  EXPECT_EQ(c->model.norm, NormPlacement::kPre);
  EXPECT_EQ(c->model.activation, Activation::kGeluTanh);
  EXPECT_EQ(c->model.dropout, 0.0);  // an integer is accepted for a float
  EXPECT_EQ(c->data.seq_len, 32);
  EXPECT_DOUBLE_EQ(c->optim.lr, 3e-4);
  EXPECT_EQ(c->schedule.kind, ScheduleKind::kInverseSqrt);
  EXPECT_EQ(c->train.steps, 7);
  EXPECT_EQ(c->train.device, "cpu");
}

void expect_error(const std::string& toml, const std::vector<std::string>& sets,
                  const std::vector<std::string>& fragments) {
  auto c = parse_config(toml, "job.toml", sets);
  ASSERT_FALSE(c.ok()) << "accepted: " << toml;
  for (const auto& f : fragments)
    EXPECT_NE(c.status().message().find(f), std::string::npos)
        << "message '" << c.status().message() << "' lacks '" << f << "'";
}

TEST(ConfigTest, DeviceSpecs) {
  for (auto [text, kind, index] :
       {std::tuple{"auto", DeviceKind::kAuto, -1}, std::tuple{"cpu", DeviceKind::kCpu, -1},
        std::tuple{"cuda", DeviceKind::kCuda, -1}, std::tuple{"cuda:3", DeviceKind::kCuda, 3}}) {
    auto d = parse_device(text);
    ASSERT_TRUE(d.ok()) << text;
    EXPECT_EQ(d->kind, kind) << text;
    EXPECT_EQ(d->index, index) << text;
  }
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "CPU", ""})
    expect_error("", {std::string("train.device=") + bad}, {"train.device", "auto, cpu, cuda and cuda:N"});
  auto c = parse_config("[train]\nmatmul = \"tf32\"\n", "t", {});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->train.matmul, MatmulPrecision::kTf32);
  expect_error("[train]\nmatmul = \"fp16\"\n", {}, {"train.matmul", "fp32, tf32, bf16"});
  auto blas = parse_config("[train]\nblas = \"onednn\"\n", "t", {});
  ASSERT_TRUE(blas.ok()) << blas.status().to_string();
  EXPECT_EQ(blas->train.blas, CpuBlas::kOneDnn);
  EXPECT_EQ(parse_config("", "t", {})->train.blas, CpuBlas::kOpenBlas);
  expect_error("[train]\nblas = \"mkl\"\n", {}, {"train.blas", "openblas, onednn"});
}

TEST(ConfigTest, CountsAreWholeDecimalNumbers) {
  EXPECT_EQ(parse_count("0"), 0);
  EXPECT_EQ(parse_count("31000"), 31000);
  EXPECT_EQ(parse_count("9223372036854775807"), INT64_MAX);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1x", "0x10", "1.5", "9223372036854775808"})
    EXPECT_FALSE(parse_count(bad).has_value()) << "'" << bad << "'";
}

TEST(ConfigTest, UnknownKeyNamesKeyLineAndAllowedKeys) {
  expect_error("[model]\nd_model = 8\nheadz = 2\n", {}, {"job.toml:3", "unknown key 'headz'", "[model]", "heads"});
}

TEST(ConfigTest, UnknownSection) { expect_error("[modle]\nx = 1\n", {}, {"unknown section [modle]", "model"}); }

TEST(ConfigTest, WrongType) {
  expect_error("[model]\nd_model = \"big\"\n", {}, {"model.d_model", "expected an integer", "a string"});
  expect_error("[model]\ntie_embeddings = 1\n", {}, {"model.tie_embeddings", "true or false"});
}

TEST(ConfigTest, BadEnumListsChoices) {
  expect_error("[model]\nnorm = \"middle\"\n", {}, {"model.norm", "'middle'", "pre, post, deepnorm"});
}

TEST(ConfigTest, DModelNotDivisibleByHeads) {
  expect_error("[model]\nd_model = 100\nheads = 3\n", {}, {"d_model = 100", "heads = 3", "divisible"});
}

TEST(ConfigTest, ModernBlockSettingsAreChecked) {
  expect_error("", {"model.kv_heads=3"}, {"model.kv_heads = 3", "must divide model.heads = 4"});
  expect_error("", {"model.kv_heads=8"}, {"model.kv_heads = 8", "must divide"});
  expect_error("", {"model.positions=rope", "model.d_model=12", "model.heads=4"},
               {"rope", "even head size", "12 / 4 = 3"});
  expect_error("", {"model.positions=rope", "model.rope_theta=0.5"}, {"model.rope_theta = 0.5", "(1, 1e9]"});
  expect_error("", {"model.norm_type=batchnorm"}, {"model.norm_type", "layernorm, rmsnorm"});
  auto ok =
      parse_config("", "job.toml",
                   {"model.kv_heads=2", "model.positions=rope", "model.norm_type=rmsnorm", "model.activation=swiglu"});
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->model.kv_heads, 2);
  EXPECT_EQ(ok->model.positions, Positions::kRope);
  EXPECT_EQ(ok->model.norm_type, NormType::kRmsNorm);
  EXPECT_EQ(ok->model.activation, Activation::kSwiGLU);
}

TEST(ConfigTest, TokenizerSettingsAreChecked) {
  expect_error("", {"data.tokenizer=sentencepiece", "data.tokenizer_model=m.model"},
               {"data.tokenizer = \"sentencepiece\" is for data.task = \"lm\""});
  const std::vector<std::string> lm{"data.task=lm", "model.kind=decoder_only", "data.seq_len=32"};
  std::vector<std::string> no_model = lm;
  no_model.push_back("data.tokenizer=sentencepiece");
  expect_error("", no_model, {"needs data.tokenizer_model", "pst tokenizer train"});
  expect_error("", {"data.tokenizer=wordpiece"}, {"data.tokenizer", "bytes, sentencepiece"});
  std::vector<std::string> ok = no_model;
  ok.push_back("data.tokenizer_model=m.model");
  EXPECT_TRUE(parse_config("", "job.toml", ok).ok());
}

TEST(ConfigTest, RangesAreChecked) {
  expect_error("[model]\ndropout = 1.5\n", {}, {"model.dropout", "[0, 1)"});
  expect_error("[optim]\nlr = -1\n", {}, {"optim.lr"});
  expect_error("[data]\ntask = \"lm\"\n", {}, {"data.task", "decoder_only"});
  expect_error("[model]\ninit = \"deepnet\"\n", {}, {"deepnet", "deepnorm"});
  expect_error("[schedule]\nkind = \"inverse_sqrt\"\n", {}, {"inverse_sqrt", "warmup_steps"});
}

TEST(ConfigTest, LogLevelsAreCheckedLikeEveryOtherKey) {
  expect_error("[train]\nlog_level = \"debgu\"\n", {}, {"train.log_level = \"debgu\"", "trace, debug, info"});
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"})
    EXPECT_TRUE(parse_config("", "job.toml", {std::string("train.log_level=") + level}).ok()) << level;
}

TEST(ConfigTest, TrainingLengthAndBestModelSettingsAreChecked) {
  expect_error("", {"train.accumulate=0"}, {"train.accumulate = 0", "[1, 4096]"});
  expect_error("", {"train.epochs=-1"}, {"train.epochs = -1", "[0, 10^6]"});
  expect_error("", {"train.patience=-2"}, {"train.patience = -2", ">= 0"});
  expect_error("", {"train.patience=3", "train.eval_every=0"}, {"train.patience = 3", "train.eval_every > 0"});
  expect_error("", {"train.best_metric=bleu"}, {"train.best_metric = \"bleu\"", "auto, loss, wer or per"});
  expect_error("", {"data.task=lm", "model.kind=decoder_only", "data.seq_len=32", "train.best_metric=wer"},
               {"train.best_metric = \"wer\"", "wer and per are G2P's"});
  expect_error("", {"data.path=a", "data.train=b"}, {"data.path = \"a\"", "set one"});
  expect_error("", {"data.valid=v"}, {"data.valid and data.test need data.train"});
  EXPECT_TRUE(parse_config("", "job.toml", {"train.patience=2", "train.keep_best=true", "train.best_metric=per"}).ok());
}

TEST(ConfigTest, StartDeadlineAndRestartGrowthAreChecked) {
  expect_error("", {"cluster.start_timeout_s=0"}, {"cluster.start_timeout_s = 0", "positive"});
  expect_error("", {"cluster.heartbeat_s=0"}, {"cluster.heartbeat_s = 0", "[0.01, 60]"});
  expect_error("", {"cluster.heartbeat_misses=1"}, {"cluster.heartbeat_misses = 1", "[2, 1000]"});
  expect_error("", {"cluster.workers=2", "cluster.min_workers=3"},
               {"cluster.min_workers = 3", "[1, cluster.workers = 2]"});
  expect_error("", {"cluster.min_workers=0"}, {"cluster.min_workers = 0"});
  expect_error("", {"cluster.workers=3", "cluster.max_workers=2"},
               {"cluster.max_workers = 2", "0 (cluster.workers) or in [cluster.workers = 3, 4096]"});
  expect_error("", {"cluster.max_restarts=-1"}, {"cluster.max_restarts = -1", "[0, 1000]"});
  expect_error("", {"cluster.max_restarts=1001"}, {"cluster.max_restarts = 1001", "[0, 1000]"});
  expect_error("", {"cluster.workers=2", "cluster.max_workers=4", "cluster.consistency=asp"},
               {"cluster.max_workers = 4 > cluster.workers = 2", "only under cluster.consistency = bsp"});
  expect_error("", {"schedule.cycle_mult=0"}, {"schedule.cycle_mult = 0", "[1, 1000]"});
  auto c = parse_config("", "job.toml", {"cluster.start_timeout_s=30", "data.test_max_examples=7"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->cluster.start_timeout_s, 30);
  EXPECT_EQ(c->data.test_max_examples, 7);
}

TEST(ConfigTest, StochasticRoundingNeedsABf16Wire) {
  expect_error("", {"cluster.wire_rounding=stochastic"},
               {"cluster.wire_rounding = stochastic", "needs cluster.wire = bf16"});
  expect_error("", {"cluster.wire=bf16", "cluster.wire_rounding=up"},
               {"cluster.wire_rounding", "nearest", "stochastic"});
  EXPECT_TRUE(parse_config("", "job.toml", {"cluster.wire=bf16", "cluster.wire_rounding=stochastic"}).ok());
}

TEST(ConfigTest, SizesHaveUpperBounds) {
  expect_error("", {"model.d_model=1000000000"}, {"model.d_model = 1000000000", "[1, 65536]"});
  expect_error("", {"model.ffn_dim=1000000000000"}, {"model.ffn_dim = 1000000000000", "[1, 2^20]"});
  expect_error("", {"model.decoder_layers=1000000"}, {"model.decoder_layers = 1000000", "at most 1024"});
  expect_error("", {"data.batch_size=100000000"}, {"data.batch_size = 100000000"});
}

TEST(ConfigTest, ADirectoryIsNotAJobFile) {
  testing::TempDir dir;
  auto c = load_config(dir.path(), {});
  ASSERT_FALSE(c.ok()) << "a directory was read as an empty job file";
  EXPECT_NE(c.status().message().find("is a directory"), std::string::npos) << c.status().message();
}

TEST(ConfigTest, SyntaxErrorHasLine) { expect_error("[model]\nd_model = = 3\n", {}, {"job.toml:2", "syntax"}); }

TEST(ConfigTest, OverridesApplyAndAreChecked) {
  auto c = parse_config("[model]\nd_model = 64\n", "t", {"model.d_model=128", "optim.lr=0.5", "train.output=\"x y\""});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model.d_model, 128);
  EXPECT_DOUBLE_EQ(c->optim.lr, 0.5);
  EXPECT_EQ(c->train.output, "x y");
  expect_error("", {"model.d_model=abc"}, {"model.d_model", "'abc'"});
  expect_error("", {"model.nope=1"}, {"unknown key 'nope'"});
  expect_error("", {"d_model=1"}, {"section.key=value"});
  expect_error("", {"model.heads=3"}, {"divisible"});  // validation runs after overrides
}

TEST(ConfigTest, EnvironmentVariablesAreOverrides) {
  auto o = env_overrides({"HOME=/root", "PST_TRAIN_STEPS=500", "PST_TRAIN_EVAL_EVERY=0", "PST_CLUSTER_HOST=auto",
                          "PST_SECURITY_KEY_FILE=/run/secrets/pst_key", "PST_BIN=/usr/bin/pst", "PSTX_TRAIN_STEPS=1",
                          "PST_METRICS_BIND=0.0.0.0=x"});
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  const std::vector<std::string> want{"train.steps=500", "train.eval_every=0", "cluster.host=auto",
                                      "security.key_file=/run/secrets/pst_key", "metrics.bind=0.0.0.0=x"};
  EXPECT_EQ(*o, want);
  auto c = parse_config("", "t",
                        {"train.steps=500", "train.eval_every=0", "cluster.host=auto",
                         "security.key_file=/run/secrets/pst_key", "security.mode=curve"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->train.steps, 500);
  EXPECT_EQ(c->security.mode, SecurityMode::kCurve);
  EXPECT_EQ(JobConfig().security.mode, SecurityMode::kSecret) << "authentication is on by default";
  EXPECT_EQ(c->security.key_file, "/run/secrets/pst_key");
  auto bad = env_overrides({"PST_TRAIN_STEP=5"});
  ASSERT_FALSE(bad.ok());
  for (const char* part : {"PST_TRAIN_STEP", "unknown key 'step' in [train]", "steps", "--set train.key=VALUE"})
    EXPECT_NE(bad.status().message().find(part), std::string::npos) << part << " in " << bad.status().message();
  EXPECT_FALSE(env_overrides({"PST_SECURITY=1"}).ok()) << "a section without a key";
}

TEST(ConfigTest, JobIdIgnoresPerProcessSettingsOnly) {
  const JobConfig base;
  JobConfig local = base;
  local.train.device = "cuda";
  local.train.threads = 3;
  local.train.log_level = "debug";
  local.cluster.host = "auto";
  local.cluster.interface = "eth0";
  local.metrics.bind = "0.0.0.0";
  local.metrics.port = 9100;
  local.security.key_file = "/run/secrets/k";
  EXPECT_EQ(job_id(local), job_id(base));
  for (const char* o : {"train.steps=7", "model.d_model=128", "cluster.servers=3", "security.mode=curve",
                        "optim.lr=0.5", "checkpoint.every_steps=5"}) {
    JobConfig other = base;
    ASSERT_TRUE(apply_override(other, o).ok()) << o;
    EXPECT_NE(job_id(other), job_id(base)) << o;
  }
}

TEST(ConfigTest, InterfaceNeedsHostAuto) {
  expect_error("", {"cluster.interface=eth0"}, {"cluster.interface = \"eth0\"", "auto"});
  EXPECT_TRUE(parse_config("", "t", {"cluster.interface=eth0", "cluster.host=auto"}).ok());
}

TEST(ConfigTest, ResolvedTomlRoundTrips) {
  JobConfig a;
  a.model.kind = ModelKind::kDecoderOnly;
  a.data.task = Task::kLM;
  a.model.max_len = 256;
  a.model.dropout = 0.123456789012345;
  a.optim.eps = 1e-9;
  a.train.output = "/tmp/x";
  auto b = parse_config(to_toml(a), "round trip", {});
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(to_toml(*b), to_toml(a));
  EXPECT_EQ(b->model.dropout, a.model.dropout);
  EXPECT_EQ(b->optim.eps, a.optim.eps);
}

TEST(ConfigTest, ShippedConfigsAreValid) {
  // Every job file in configs/ (studies/ holds pst tune's files, not jobs).
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(testing::source_path("configs")))
    if (e.path().extension() == ".toml") names.push_back(e.path().filename().string());
  for (const char* f :
       {"g2p-small.toml", "lm-fortunes.toml", "g2p-tiny.toml", "g2p-quick.toml", "g2p-modern.toml", "lm-modern.toml"})
    EXPECT_NE(std::find(names.begin(), names.end(), f), names.end()) << f;
  for (const std::string& f : names) {
    auto c = load_config(testing::source_path("configs/" + f), {});
    EXPECT_TRUE(c.ok()) << f << ": " << c.status().to_string();
  }
  EXPECT_FALSE(load_config("/nonexistent/job.toml", {}).ok());
}

}  // namespace
}  // namespace pst
