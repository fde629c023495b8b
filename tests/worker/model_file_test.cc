// A model file is checked whole before its model is built: a crafted
// embedded config of an enormous model with no tensors to match is an error
// naming the first missing tensor, not an allocation of its buffers (which
// aborted with "out of memory").
#include "worker/model_file.h"

#include <gtest/gtest.h>

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

TEST(ModelFileTest, ADirectoryIsNotASafetensorsFile) {
  testing::TempDir dir;
  auto f = SafetensorsFile::read(dir.path());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("is not a regular file"), std::string::npos) << f.status().message();
}

}  // namespace
}  // namespace pst
