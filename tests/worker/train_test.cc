// End-to-end training in one process: the tiny config memorises 64 CMUdict
// words (loss near zero, pronunciations reproduced by greedy decoding), and
// evaluation metrics agree with a recount.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>

#include <gtest/gtest.h>

#include "model/backend.h"
#include "ps/local_client.h"
#include "ps/shard_optimizer.h"
#include "tests/test_backend.h"
#include "tests/test_util.h"
#include "worker/evaluate.h"
#include "worker/trainer.h"

namespace pst {
namespace {

std::vector<float> initial_weights(const Transformer& m, uint64_t seed) {
  std::vector<float> w(static_cast<size_t>(m.num_params()));
  init_params(m.table(), seed, w.data());
  return w;
}

// A model with its in-process server (holding initial weights of `seed`)
// and the client a Trainer pushes to.
struct LocalTraining {
  LocalTraining(const JobConfig& job, const TaskData& data, Backend* be, uint64_t seed = 1)
      : model(job.model, data.src_vocab, data.tgt_vocab, be),
        init(initial_weights(model, seed)),
        server(job, model.table(), whole_tensors(model.table()), init.data()),
        client(&server) {}
  Transformer model;
  std::vector<float> init;
  ShardOptimizer server;
  LocalParameterClient client;
};

TEST(TrainTest, TinyConfigOverfits64Words) {
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {"train.threads=2"});
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok()) << data.status().to_string();
  ASSERT_EQ(data->g2p->train.size(), 64u);
  PST_TEST_BACKEND_OR_SKIP(be);
  job->train.test_at_end = false;
  LocalTraining t(*job, *data, be.get());
  Transformer& model = t.model;
  TrainerOptions opt;
  Trainer trainer(*job, *data, &model, &t.client, opt);
  auto sum = trainer.run();
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  EXPECT_EQ(sum->steps, 300);
  EXPECT_EQ(sum->applied_steps, 300);

  // Loss over all training examples, without dropout.
  const Dataset& train = *data->train;
  std::vector<int64_t> ids(train.size());
  for (int64_t i = 0; i < train.size(); ++i) ids[i] = i;
  const Batch all = collate(train, ids);
  const LossStats ls = model.forward(all, ForwardOptions{});
  EXPECT_LT(ls.loss_sum / static_cast<double>(ls.tokens), 0.02);
  EXPECT_EQ(ls.correct, ls.tokens);

  // Greedy decoding reproduces a reference pronunciation of every word.
  const auto& g = static_cast<const G2PDataset&>(train);
  std::vector<std::vector<int32_t>> srcs;
  for (const auto& w : data->g2p->train) srcs.push_back(g.encode_word(w.word));
  const auto out = greedy_decode(model, srcs, 30);
  int right = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<std::string> phones;
    for (int32_t id : out[i]) phones.push_back(data->g2p->phones.token(id));
    right += score_word(phones, data->g2p->train[i].prons).correct ? 1 : 0;
  }
  EXPECT_EQ(right, 64);
}

TEST(TrainTest, EvaluationCountsMatchARecount) {
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {"data.eval_max_examples=40"});
  ASSERT_TRUE(job.ok());
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok());
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, be.get());
  model.init_weights(4);
  std::vector<std::string> lines;
  const EvalResult r = evaluate(model, *data, Split::kValid, 16, 40, &lines);
  ASSERT_EQ(r.words, 40);
  ASSERT_EQ(lines.size(), 40u);
  // Recount WER and PER from the written predictions.
  int64_t wrong = 0, dist = 0, len = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto tab = lines[i].find('\t');
    ASSERT_EQ(lines[i].substr(0, tab), data->g2p->valid[i].word);
    std::vector<std::string> phones;
    std::string rest = lines[i].substr(tab + 1), tok;
    for (char c : rest + " ") {
      if (c == ' ') {
        if (!tok.empty()) phones.push_back(tok);
        tok.clear();
      } else {
        tok += c;
      }
    }
    const WordScore s = score_word(phones, data->g2p->valid[i].prons);
    wrong += s.correct ? 0 : 1;
    dist += s.distance;
    len += s.ref_length;
  }
  EXPECT_DOUBLE_EQ(r.wer, static_cast<double>(wrong) / 40);
  EXPECT_DOUBLE_EQ(r.per, static_cast<double>(dist) / static_cast<double>(len));
  EXPECT_GT(r.tokens, 40);
}

// train.accumulate = K sums K micro-batches into one gradient per step: the
// gradient of one batch holding all their examples (the mean over all their
// tokens), recomputed here by collating micro-batches gK .. gK + K - 1 of the
// iterator's order into one batch, at the reference's own weights after its
// own optimizer steps.
TEST(TrainTest, AccumulationIsALargerBatch) {
  constexpr int64_t K = 3, kSteps = 2;
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"),
                         {"data.batch_size=8", "train.accumulate=3", "train.steps=2", "train.test_at_end=false",
                          "train.label_smoothing=0.1", "train.threads=2"});
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok());
  PST_TEST_BACKEND_OR_SKIP(be);
  LocalTraining t(*job, *data, be.get(), 5);
  Transformer& model = t.model;
  TrainerOptions opt;
  opt.progress = false;
  Trainer trainer(*job, *data, &model, &t.client, opt);
  auto sum = trainer.run();
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  std::vector<float> accumulated(model.num_params());
  model.get_grads(accumulated.data());  // the last step's

  // The reference: one batch of the K micro-batches' examples per step.
  LocalTraining r(*job, *data, be.get(), 5);
  Transformer& ref = r.model;
  LocalParameterClient& ref_client = r.client;
  BatchIterator it(data->train.get(), 8, static_cast<uint64_t>(job->train.seed));
  std::vector<float> w(ref.num_params()), big_grads(ref.num_params()), first_micro(ref.num_params());
  int64_t tokens = 0, micro_tokens = 0;
  for (int64_t step = 0; step < kSteps; ++step) {
    ASSERT_TRUE(ref_client.pull(step, w.data()).ok());
    ref.set_weights(w.data());
    std::vector<int64_t> ids;
    for (int64_t k = 0; k < K; ++k) {
      it.seek_batch(step * K + k);
      const Batch micro = it.next();
      ids.insert(ids.end(), micro.example_ids.begin(), micro.example_ids.end());
      if (step == kSteps - 1 && k == 0) {  // a micro-batch's own gradient, to tell them apart
        ForwardOptions fo;
        fo.train = true;
        micro_tokens = micro.tokens();
        fo.grad_scale = 1.0f / static_cast<float>(micro_tokens);
        fo.label_smoothing = 0.1f;
        ref.zero_grads();
        ref.forward(micro, fo);
        ref.backward();
        ref.get_grads(first_micro.data());
      }
    }
    const Batch big = collate(*data->train, ids);
    ASSERT_EQ(big.B, 3 * 8);
    tokens = big.tokens();
    ForwardOptions fo;
    fo.train = true;
    fo.grad_scale = 1.0f / static_cast<float>(tokens);
    fo.label_smoothing = 0.1f;
    ref.zero_grads();
    const LossStats ls = ref.forward(big, fo);
    ref.backward();
    ref.get_grads(big_grads.data());
    ASSERT_TRUE(ref_client.push(step, tokens, ls.loss_sum, big_grads.data()).ok());
  }
  EXPECT_EQ(sum->tokens, [&] {  // every token of both steps
    int64_t n = 0;
    for (int64_t g = 0; g < kSteps * K; ++g) {
      it.seek_batch(g);
      n += it.next().tokens();
    }
    return n;
  }());
  double scale = 0, diff = 0, micro_diff = 0;
  for (size_t j = 0; j < big_grads.size(); ++j) {
    scale = std::max(scale, static_cast<double>(std::fabs(big_grads[j])));
    diff = std::max(diff, static_cast<double>(std::fabs(accumulated[j] - big_grads[j])));
    micro_diff = std::max(micro_diff, static_cast<double>(std::fabs(first_micro[j] - big_grads[j])));
  }
  EXPECT_GT(scale, 0);
  EXPECT_LT(diff, 1e-4 * scale) << "largest gradient " << scale;
  EXPECT_GT(micro_diff, 1e-2 * scale);  // one micro-batch alone is another gradient
}

// The validation records (step, loss) of a metrics.jsonl written to `f`.
std::vector<std::pair<int64_t, double>> valid_losses(std::FILE* f) {
  std::rewind(f);
  std::vector<std::pair<int64_t, double>> out;
  char line[4096];
  while (std::fgets(line, sizeof line, f)) {
    const std::string l = line;
    if (l.find("\"kind\":\"valid\"") == std::string::npos) continue;
    auto field = [&](const char* key) { return std::stod(l.substr(l.find(key) + std::strlen(key))); };
    out.emplace_back(static_cast<int64_t>(field("\"step\":")), field("\"loss\":"));
  }
  return out;
}

// A job that overfits 64 words: validation loss on other words is lowest
// early and rises after (by far more than rounding).
struct OverfitJob {
  explicit OverfitJob(std::vector<std::string> sets) {
    sets.insert(sets.end(),
                {"train.eval_every=25", "train.best_metric=loss", "train.test_at_end=false", "train.threads=2"});
    auto loaded = load_config(testing::source_path("configs/g2p-tiny.toml"), sets);
    PST_CHECK(loaded.ok());
    job = *loaded;
    auto d = load_task_data(job);
    PST_CHECK(d.ok());
    data = std::move(*d);
  }
  JobConfig job;
  TaskData data;
};

// train.keep_best: the model ends with the weights of the validation with
// the lowest figure (found here from the metrics file), written as
// model.safetensors; best.safetensors was written with them when they were
// validated. Re-evaluating the final model gives that figure again.
TEST(TrainTest, KeepBestEndsWithTheBestValidatedWeights) {
  OverfitJob f({"train.steps=150", "train.keep_best=true"});
  PST_TEST_BACKEND_OR_SKIP(be);
  LocalTraining t(f.job, f.data, be.get());
  Transformer& model = t.model;
  std::FILE* metrics = std::tmpfile();
  std::map<std::string, std::vector<float>> saved;
  TrainerOptions opt;
  opt.progress = false;
  opt.metrics = metrics;
  opt.save = [&](const std::string& file) {
    std::vector<float>& w = saved[file];
    w.resize(static_cast<size_t>(model.num_params()));
    model.get_weights(w.data());
    return Status();
  };
  Trainer trainer(f.job, f.data, &model, &t.client, opt);
  auto sum = trainer.run();
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  const auto valid = valid_losses(metrics);
  std::fclose(metrics);
  ASSERT_EQ(valid.size(), 6u);  // steps 25, 50, ..., 150
  const auto best =
      std::min_element(valid.begin(), valid.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  EXPECT_EQ(sum->best_step, best->first);
  EXPECT_LT(sum->best_step, 150);  // overfitting: the last is not the best
  EXPECT_FALSE(sum->early_stopped);
  std::vector<float> final_weights(model.num_params());
  model.get_weights(final_weights.data());
  EXPECT_EQ(saved["model.safetensors"], final_weights);
  EXPECT_EQ(saved["best.safetensors"], final_weights);
  const EvalResult again = evaluate(model, f.data, Split::kValid, 64, f.job.data.eval_max_examples);
  EXPECT_NEAR(again.loss, best->second, 1e-6);  // (the record keeps 6 decimals)
}

// A CPU model whose own buffers go to the client (the push reads the model's
// gradient, the pull writes its weights) ends with the bits of one trained
// through host staging copies (TrainerOptions::stage_buffers), with an
// in-process server, for a round of one push (the server reads the gradient
// where it lies) and of two (one process playing two workers, which reuses
// its gradient buffer). The losses on the way are the same too. (Jobs of
// threads, with per-layer pushes and pulls among them, are held to the
// sequential job bit for bit in tests/job/threads_job_test.cc.)
TEST(TrainTest, ModelBuffersTrainAsStagingCopies) {
  if (testing::testing_cuda()) GTEST_SKIP() << "a CPU model's buffers (the CPU run checks them)";
  for (int64_t workers : {1, 2}) {
    OverfitJob f({"train.steps=30", "cluster.workers=" + std::to_string(workers)});
    std::vector<float> final_weights[2];
    double last_loss[2] = {0, 0};
    for (bool stage : {true, false}) {
      const bool model_buffers = !stage;
      std::unique_ptr<Backend> be = make_cpu_backend(2);
      Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
      const std::vector<float> init = initial_weights(model, 3);
      ShardOptimizer server(f.job, model.table(), whole_tensors(model.table()), init.data());
      LocalParameterClient client(&server, false, static_cast<int>(workers));
      TrainerOptions opt;
      opt.progress = false;
      opt.stage_buffers = stage;
      opt.workers = workers;
      opt.shards.clear();
      for (int64_t w = 0; w < workers; ++w) opt.shards.push_back(w);
      Trainer trainer(f.job, f.data, &model, &client, opt);
      auto sum = trainer.run();
      ASSERT_TRUE(sum.ok()) << sum.status().to_string();
      ASSERT_EQ(sum->applied_steps, 30);
      last_loss[model_buffers] = sum->last_loss;
      final_weights[model_buffers].resize(static_cast<size_t>(model.num_params()));
      model.get_weights(final_weights[model_buffers].data());
      EXPECT_NE(final_weights[model_buffers], init);
    }
    EXPECT_EQ(final_weights[1], final_weights[0]) << workers << " workers";
    EXPECT_EQ(last_loss[1], last_loss[0]) << workers << " workers";
  }
}

// train.patience = 2: the second validation in a row without a lower loss
// asks the job to stop; it ends after the next step, and the final
// validation runs. The expected step comes from the recorded figures.
TEST(TrainTest, EarlyStoppingEndsAfterPatienceValidations) {
  OverfitJob f({"train.steps=300", "train.patience=2"});
  PST_TEST_BACKEND_OR_SKIP(be);
  LocalTraining t(f.job, f.data, be.get());
  Transformer& model = t.model;
  std::FILE* metrics = std::tmpfile();
  TrainerOptions opt;
  opt.progress = false;
  opt.metrics = metrics;
  Trainer trainer(f.job, f.data, &model, &t.client, opt);
  auto sum = trainer.run();
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  const auto valid = valid_losses(metrics);
  std::fclose(metrics);
  int64_t expected_end = -1;
  double best = std::numeric_limits<double>::infinity();
  int since = 0;
  for (const auto& [step, loss] : valid) {
    if (loss < best) {
      best = loss;
      since = 0;
    } else if (++since == 2) {
      expected_end = step + 1;
      break;
    }
  }
  ASSERT_GT(expected_end, 0) << "the validation loss never rose twice";
  EXPECT_TRUE(sum->early_stopped);
  EXPECT_FALSE(sum->stopped);
  EXPECT_EQ(sum->steps, expected_end);
  EXPECT_LT(sum->steps, 300);
  EXPECT_EQ(valid.back().first, expected_end);  // the final validation
  EXPECT_EQ(t.server.version(), expected_end);
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// data.train, valid and test are read whole into their splits, whatever the
// hash would say; the vocabularies come from the training file alone, and a
// split without a file is empty.
TEST(TaskDataTest, SplitFilesAreReadWhole) {
  testing::TempDir dir;
  // By hash, "zebra" and "testing" train, "hello" is valid and "a" test:
  // here "hello" trains and "zebra" is tested.
  write_file(dir.file("train"), "hello HH AH0 L OW1\ntesting T EH1 S T IH0 NG\na AH0\n");
  write_file(dir.file("valid"), "testing T EH1 S T IH0 NG\nquiz K W IH1 Z\n");
  write_file(dir.file("test"), "zebra\tZ IY B R AH\n");  // another format, detected per file
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"),
                         {"data.max_examples=0", "data.train=" + dir.file("train"), "data.valid=" + dir.file("valid"),
                          "data.test=" + dir.file("test")});
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok()) << data.status().to_string();
  ASSERT_EQ(data->g2p->train.size(), 3u);
  EXPECT_EQ(data->g2p->train[0].word, "hello");
  ASSERT_EQ(data->g2p->valid.size(), 2u);
  EXPECT_EQ(data->g2p->valid[1].word, "quiz");
  ASSERT_EQ(data->g2p->test.size(), 1u);
  EXPECT_EQ(data->g2p->test[0].word, "zebra");
  EXPECT_EQ(data->g2p->letters.id("q"), Vocabulary::kUnk);  // only in valid
  EXPECT_NE(data->g2p->letters.id("h"), Vocabulary::kUnk);
  EXPECT_EQ(data->g2p->phones.id("Z"), Vocabulary::kUnk);  // TSV phones are as written
  EXPECT_EQ(data_source(*job).find("data.train '" + dir.file("train") + "'"), 0u) << data_source(*job);

  // Without data.test its split is empty; training data must come as one of
  // data.path or data.train.
  auto no_test = load_config(testing::source_path("configs/g2p-tiny.toml"), {"data.train=" + dir.file("train")});
  ASSERT_TRUE(no_test.ok());
  auto d2 = load_task_data(*no_test);
  ASSERT_TRUE(d2.ok()) << d2.status().to_string();
  EXPECT_EQ(d2->test->size(), 0);
  EXPECT_EQ(d2->valid->size(), 0);
  auto both = load_config(testing::source_path("configs/g2p-tiny.toml"),
                          {"data.path=" + dir.file("train"), "data.train=" + dir.file("train")});
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("set one"), std::string::npos) << both.status().message();
  auto orphan = load_config(testing::source_path("configs/g2p-tiny.toml"), {"data.test=" + dir.file("test")});
  ASSERT_FALSE(orphan.ok());
  EXPECT_NE(orphan.status().message().find("need data.train"), std::string::npos) << orphan.status().message();

  // Text: every byte of each file in its split.
  write_file(dir.file("t.txt"), std::string(10000, 'x'));
  write_file(dir.file("v.txt"), std::string(3000, 'y'));
  auto lm = load_config(testing::source_path("configs/lm-fortunes.toml"),
                        {"data.train=" + dir.file("t.txt"), "data.valid=" + dir.file("v.txt"), "data.seq_len=64"});
  ASSERT_TRUE(lm.ok()) << lm.status().to_string();
  auto text = load_task_data(*lm);
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  EXPECT_EQ(text->text->train.size(), 10000u);
  EXPECT_EQ(text->text->valid, std::vector<uint8_t>(3000, 'y'));
  EXPECT_TRUE(text->text->test.empty());
}

// A lexicon with no training word is an error for training, not for
// evaluating it (pst eval --data).
TEST(TaskDataTest, NoTrainingWordFailsOnlyTraining) {
  testing::TempDir dir;
  write_file(dir.file("lex"), "hello HH AH0 L OW1\na AH0\n");  // valid and test by hash
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {"data.path=" + dir.file("lex")});
  ASSERT_TRUE(job.ok());
  auto train = load_task_data(*job);
  ASSERT_FALSE(train.ok());
  EXPECT_NE(train.status().message().find("no word falls in the training split"), std::string::npos)
      << train.status().message();
  auto eval = load_task_data(*job, DataUse::kEvaluate);
  ASSERT_TRUE(eval.ok()) << eval.status().to_string();
  EXPECT_EQ(eval->valid->size() + eval->test->size(), 2);
}

// Evaluations of the three splits merge into that of their union: the
// union's figures are recomputed by evaluating one dataset holding every
// word (data.test = the whole file).
TEST(TrainTest, MergedSplitsEqualTheirUnion) {
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {});
  ASSERT_TRUE(job.ok());
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok());
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, be.get());
  model.init_weights(7);
  std::vector<EvalResult> parts;
  for (Split s : {Split::kTrain, Split::kValid, Split::kTest}) parts.push_back(evaluate(model, *data, s, 16, 30));
  const EvalResult merged = merge_evals(parts);
  // The union: the same words as one split, with the same vocabularies.
  G2PCorpus all;
  all.letters = data->g2p->letters;
  all.phones = data->g2p->phones;
  for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
    for (size_t i = 0; i < 30; ++i) all.test.push_back(data->g2p->split(s)[i]);
  TaskData whole;
  whole.task = Task::kG2P;
  whole.g2p = std::make_unique<G2PCorpus>(std::move(all));
  whole.train = std::make_unique<G2PDataset>(whole.g2p.get(), Split::kTrain);
  whole.valid = std::make_unique<G2PDataset>(whole.g2p.get(), Split::kValid);
  whole.test = std::make_unique<G2PDataset>(whole.g2p.get(), Split::kTest);
  const EvalResult u = evaluate(model, whole, Split::kTest, 16, 0);
  EXPECT_EQ(merged.words, 90);
  EXPECT_EQ(merged.words, u.words);
  EXPECT_EQ(merged.examples, u.examples);
  EXPECT_EQ(merged.tokens, u.tokens);
  EXPECT_EQ(merged.correct, u.correct);
  EXPECT_DOUBLE_EQ(merged.wer, u.wer);
  EXPECT_DOUBLE_EQ(merged.per, u.per);
  EXPECT_NEAR(merged.loss, u.loss, 1e-5 * u.loss);
  EXPECT_NEAR(merged.loss,
              (parts[0].loss_sum + parts[1].loss_sum + parts[2].loss_sum) /
                  static_cast<double>(parts[0].tokens + parts[1].tokens + parts[2].tokens),
              1e-12);
}

}  // namespace
}  // namespace pst
