// train.epochs (job/cluster.h, resolve_epochs): train.steps becomes epochs x
// ceil(batches per epoch / (workers x accumulate)), the batches counted
// here from the examples (one bucketing window holds them all) and checked
// against the iterator's own count.
#include <gtest/gtest.h>

#include "job/cluster.h"
#include "tests/test_util.h"
#include "worker/task_data.h"

namespace pst {
namespace {

TEST(EpochsTest, EpochsSetTheSteps) {
  auto job =
      load_config(testing::source_path("configs/g2p-tiny.toml"),
                  {"data.batch_size=10", "train.epochs=3", "cluster.workers=2", "train.accumulate=2", "train.steps=1"});
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok());
  const int64_t examples = data->train->size();  // 64 words, some with several pronunciations
  ASSERT_GE(examples, 64);
  ASSERT_LE(examples, 64 * 10);  // one window of 64 batches
  const int64_t batches = (examples + 9) / 10;
  EXPECT_EQ(BatchIterator(data->train.get(), 10, 1).batches_per_epoch(), batches);
  resolve_epochs(*job, *data->train);
  EXPECT_EQ(job->train.steps, 3 * ((batches + 3) / 4));
  // Without epochs, train.steps stays.
  job->train.epochs = 0;
  job->train.steps = 7;
  resolve_epochs(*job, *data->train);
  EXPECT_EQ(job->train.steps, 7);
}

}  // namespace
}  // namespace pst
