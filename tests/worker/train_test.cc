// End-to-end training in one process: the tiny config memorises 64 CMUdict
// words (loss near zero, pronunciations reproduced by greedy decoding), and
// evaluation metrics agree with a recount.
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

TEST(TrainTest, TinyConfigOverfits64Words) {
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {"train.threads=2"});
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok()) << data.status().to_string();
  ASSERT_EQ(data->g2p->train.size(), 64u);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, be.get());
  std::vector<float> init(model.num_params());
  init_params(model.table(), 1, init.data());
  ShardOptimizer server(*job, model.table(), whole_tensors(model.table()), init.data());
  LocalParameterClient client(&server);
  job->train.test_at_end = false;
  TrainerOptions opt;
  Trainer trainer(*job, *data, &model, &client, opt);
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

}  // namespace
}  // namespace pst
