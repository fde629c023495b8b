// A model file is checked whole before its model is built: a crafted
// embedded config of an enormous model with no tensors to match is an error
// naming the first missing tensor, not an allocation of its buffers (which
// aborted with "out of memory").
#include "worker/model_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/safetensors.h"
#include "model/param_table.h"
#include "tests/ps/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

JobConfig enormous_lm() {
  JobConfig job;
  job.model.kind = ModelKind::kDecoderOnly;
  job.data.task = Task::kLM;
  job.model.d_model = 65536;
  job.model.heads = 1024;
  job.model.ffn_dim = int64_t{1} << 20;
  job.model.decoder_layers = 1024;
  job.data.seq_len = 32;
  return job;
}

TEST(ModelFileTest, AnEnormousConfigWithoutItsTensorsIsRefusedBeforeAllocating) {
  const JobConfig job = enormous_lm();
  ASSERT_TRUE(validate(job).ok()) << validate(job).to_string();
  testing::TempDir dir;
  SafetensorsFile f;
  f.set_metadata("config", to_toml(job));
  const std::string path = dir.file("crafted.safetensors");
  ASSERT_TRUE(f.write(path).ok());
  auto m = load_model(path, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("is missing"), std::string::npos) << m.status().message();
}

TEST(ModelFileTest, AModelLargerThanMemoryIsNamedBeforeAllocating) {
  const JobConfig job = enormous_lm();
  const ParamTable table = build_param_table(job.model, 0, 256);
  EXPECT_GT(table.total_numel(), int64_t{1} << 40);
  const Status s = check_fits_in_memory(table, 4);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("GiB of memory"), std::string::npos) << s.message();
  EXPECT_TRUE(check_fits_in_memory(build_param_table(testing::tiny_job().model, 12, 12), 4).ok());
}

// A SentencePiece LM's file carries its tokenizer: load_model gives back the
// same model bytes, and a file whose tokenizer is missing or damaged is an
// error that says so.
TEST(ModelFileTest, ASentencePieceModelTravelsInTheFile) {
  testing::TempDir dir;
  std::string text;
  for (int i = 0; i < 300; ++i) text += i % 3 ? "some words of text\n" : "other words, other text\n";
  TokenizerTraining t;
  t.vocab = 280;
  ASSERT_TRUE(train_sentencepiece(std::vector<uint8_t>(text.begin(), text.end()), t, dir.file("m.model")).ok());
  auto tok = Tokenizer::sentencepiece_file(dir.file("m.model"));
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  JobConfig job;
  job.model.kind = ModelKind::kDecoderOnly;
  job.model.d_model = 8;
  job.model.heads = 2;
  job.model.ffn_dim = 8;
  job.model.decoder_layers = 1;
  job.data.task = Task::kLM;
  job.data.seq_len = 16;
  job.data.tokenizer = TokenizerKind::kSentencePiece;
  job.data.tokenizer_model = dir.file("m.model");
  auto be = make_cpu_backend(1);
  Transformer model(job.model, 0, tok->vocab_size(), be.get());
  model.init_weights(1);
  ASSERT_TRUE(save_model(dir.file("lm.safetensors"), job, model, nullptr, nullptr, &*tok).ok());
  std::filesystem::remove(dir.file("m.model"));  // the file alone must do
  auto loaded = load_model(dir.file("lm.safetensors"), 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->tokenizer.serialized(), tok->serialized());
  EXPECT_EQ(loaded->model->tgt_vocab(), 280);

  auto f = SafetensorsFile::read(dir.file("lm.safetensors"));
  ASSERT_TRUE(f.ok());
  std::string damaged = f->metadata().at("sentencepiece");
  damaged[10] = '*';
  f->set_metadata("sentencepiece", damaged);
  ASSERT_TRUE(f->write(dir.file("damaged.safetensors")).ok());
  auto bad = load_model(dir.file("damaged.safetensors"), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not base64"), std::string::npos) << bad.status().message();
  f->set_metadata("sentencepiece", "QUJD");  // base64 of "ABC": no model
  ASSERT_TRUE(f->write(dir.file("junk.safetensors")).ok());
  bad = load_model(dir.file("junk.safetensors"), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not a SentencePiece model"), std::string::npos) << bad.status().message();
  SafetensorsFile none;
  none.set_metadata("config", f->metadata().at("config"));
  ASSERT_TRUE(none.write(dir.file("none.safetensors")).ok());
  bad = load_model(dir.file("none.safetensors"), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("holds none"), std::string::npos) << bad.status().message();
}

TEST(ModelFileTest, ADirectoryIsNotASafetensorsFile) {
  testing::TempDir dir;
  auto f = SafetensorsFile::read(dir.path());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("is not a regular file"), std::string::npos) << f.status().message();
}

}  // namespace
}  // namespace pst
