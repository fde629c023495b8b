// The server-side step: non-finite gradients skip the step without advancing
// the schedule; pushes from several workers, weighted by tokens, give the
// step of one process on the concatenated batch; tensors split across two
// servers give the weights of one server; state kept on a backend device
// (where a GPU server runs the fused update) gives the host's bits.
#include "ps/shard_optimizer.h"

#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "comm/shard_plan.h"
#include "model/transformer.h"
#include "ps/local_client.h"
#include "tests/ps/fixtures.h"
#include "tests/test_backend.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using testing::gradient;
using testing::make_batch;
using testing::tiny_job;

// The tiny model these tests train, initialised from a seed, and its weights.
struct TinyModel {
  explicit TinyModel(uint64_t seed) : m(job.model, 10, 12, be.get()) {
    m.init_weights(seed);
    w0.resize(m.num_params());
    m.get_weights(w0.data());
  }
  JobConfig job = tiny_job();
  std::unique_ptr<Backend> be = make_cpu_backend(1);
  Transformer m;
  std::vector<float> w0;
};

TEST(ServerTest, NonFiniteGradientSkipsStepAndSchedule) {
  TinyModel t(1);
  const JobConfig& job = t.job;
  Transformer& m = t.m;
  const std::vector<float>& w0 = t.w0;
  std::vector<float> w(m.num_params());
  ShardOptimizer server(job, m.table(), whole_tensors(m.table()), w0.data());
  LocalParameterClient client(&server);
  std::vector<float> g(m.num_params(), 0.01f);
  g[17] = std::nanf("");
  ASSERT_TRUE(client.push(0, 5, 1.0, g.data()).ok());
  auto info = client.pull(1, w.data());
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->applied);
  EXPECT_EQ(info->applied_steps, 0);
  EXPECT_EQ(info->version, 1);
  EXPECT_EQ(w, w0) << "a skipped step must not touch the weights";
  g[17] = 0.01f;
  ASSERT_TRUE(client.push(1, 5, 1.0, g.data()).ok());
  info = client.pull(2, w.data());
  ASSERT_TRUE(info->applied);
  EXPECT_EQ(info->applied_steps, 1);
  EXPECT_DOUBLE_EQ(info->lr, 1e-2 / 3) << "the first applied step uses the schedule's first value";
  EXPECT_NE(w, w0);
  // A push for a stale version is refused.
  EXPECT_FALSE(client.push(0, 5, 1.0, g.data()).ok());
}

TEST(ServerTest, TokenWeightedPushesEqualTheConcatenatedBatch) {
  TinyModel t(2);
  const JobConfig& job = t.job;
  Transformer& m = t.m;
  const std::vector<float>& w0 = t.w0;
  const std::vector<std::vector<int32_t>> srcA{{4, 5, 6, 2}, {7, 2}}, tgtA{{4, 5}, {9, 10, 11}};
  const std::vector<std::vector<int32_t>> srcB{{8, 9, 4, 5, 2}}, tgtB{{6}};
  auto all_src = srcA, all_tgt = tgtA;
  all_src.insert(all_src.end(), srcB.begin(), srcB.end());
  all_tgt.insert(all_tgt.end(), tgtB.begin(), tgtB.end());
  const Batch A = make_batch(srcA, tgtA), B = make_batch(srcB, tgtB), AB = make_batch(all_src, all_tgt);
  ASSERT_NE(A.tokens(), B.tokens());

  ShardOptimizer one(job, m.table(), whole_tensors(m.table()), w0.data());
  const std::vector<float> g_ab = gradient(m, AB, 0.1f);
  one.add_push(g_ab.data(), AB.tokens(), 0);
  one.apply(one.reduce());

  ShardOptimizer two(job, m.table(), whole_tensors(m.table()), w0.data());
  two.add_push(gradient(m, A, 0.1f).data(), A.tokens(), 0);
  two.add_push(gradient(m, B, 0.1f).data(), B.tokens(), 0);
  two.apply(two.reduce());

  std::vector<float> w1(m.num_params()), w2(m.num_params());
  one.copy_weights(w1.data());
  two.copy_weights(w2.data());
  EXPECT_TRUE(testing::adam_weights_close(m.table(), w2.data(), w1.data(), g_ab.data(), w0.data(), job.optim.lr / 3));
}

TEST(ServerTest, TensorsSplitAcrossServersGiveTheSameStep) {
  TinyModel t(3);
  const JobConfig& job = t.job;
  Transformer& m = t.m;
  const std::vector<float>& w0 = t.w0;
  const Batch b = make_batch({{4, 5, 6, 2}}, {{7, 8, 9}});
  const std::vector<float> g = gradient(m, b);
  const auto all = whole_tensors(m.table());
  std::vector<ChunkRange> even, odd;
  for (size_t i = 0; i < all.size(); ++i) (i % 2 ? odd : even).push_back(all[i]);
  ShardOptimizer single(job, m.table(), all, w0.data());
  ShardOptimizer s0(job, m.table(), even, w0.data()), s1(job, m.table(), odd, w0.data());
  std::vector<float> w_single(m.num_params()), w_split(m.num_params());
  for (int step = 0; step < 3; ++step) {
    single.add_push(g.data(), b.tokens(), 0);
    single.apply(single.reduce());
    s0.add_push(g.data(), b.tokens(), 0);
    s1.add_push(g.data(), b.tokens(), 0);
    const GradStats total = sum_over_servers({s0.reduce(), s1.reduce()});
    const StepReport r0 = s0.apply(total), r1 = s1.apply(total);
    EXPECT_EQ(r0.grad_norm, r1.grad_norm);
    EXPECT_LT(r0.clip_coef, 1.0) << "clipping must be active in this test";
  }
  single.copy_weights(w_single.data());
  s0.copy_weights(w_split.data());
  s1.copy_weights(w_split.data());
  EXPECT_TRUE(testing::all_close(w_split.data(), w_single.data(), w_single.size(), 1e-7, 1e-6, "weights"));
}

// A server's update writes the next snapshot (apply's next, two buffers
// taking turns): the weights and moments equal an update in place, step by
// step, through pushes of two workers and a skipped step, and progress()
// finds each updated range in the buffer.
TEST(ServerTest, UpdateIntoTheNextSnapshotEqualsTheUpdateInPlace) {
  TinyModel t(5);
  const JobConfig& job = t.job;
  Transformer& m = t.m;
  const std::vector<float>& w0 = t.w0;
  const Batch a = make_batch({{4, 5, 6, 2}}, {{7, 8, 9}}), b = make_batch({{8, 9, 2}}, {{4, 5}});
  const std::vector<float> ga = gradient(m, a), gb = gradient(m, b);
  std::vector<float> bad = ga;
  bad[3] = std::nanf("");
  const auto all = whole_tensors(m.table());
  ShardOptimizer in_place(job, m.table(), all, w0.data()), turns(job, m.table(), all, w0.data());
  const size_t n = static_cast<size_t>(turns.local_size());
  std::vector<float> snapshots[2] = {std::vector<float>(n, -1.0f), std::vector<float>(n, -1.0f)};
  std::vector<float> want(n), got(n), want_m, want_v, got_w, got_m, got_v, unused;
  for (int step = 0; step < 4; ++step) {
    const bool skipped = step == 2;
    for (ShardOptimizer* o : {&in_place, &turns}) {
      o->add_push(skipped ? bad.data() : ga.data(), a.tokens(), 0);
      o->add_push(gb.data(), b.tokens(), 0);
    }
    const StepReport r0 = in_place.apply(in_place.reduce());
    std::vector<float>& next = snapshots[step % 2];
    size_t seen = 0;
    const StepReport r1 = turns.apply(
        turns.reduce(), true,
        [&](const StepReport&, size_t done) {
          // The ranges updated so far are in the buffer already.
          const size_t end = done < all.size() ? static_cast<size_t>(turns.local_offset(done)) : n;
          in_place.copy_local_weights(want.data());
          for (size_t i = seen; i < end; ++i) ASSERT_EQ(next[i], want[i]) << "step " << step << " float " << i;
          seen = end;
        },
        next.data());
    EXPECT_EQ(r0.applied, !skipped);
    EXPECT_EQ(r1.applied, !skipped);
    if (skipped) {
      EXPECT_TRUE(std::isnan(r1.grad_norm));
    } else {
      EXPECT_EQ(r1.grad_norm, r0.grad_norm) << "step " << step;
      EXPECT_EQ(seen, n);
    }
    in_place.copy_local_weights(want.data());
    EXPECT_EQ(next, want) << "step " << step;
    turns.copy_local_weights(got.data());
    EXPECT_EQ(got, want);
    turns.copy_local_weights(next.data());  // onto the buffer that holds them: nothing to copy
    EXPECT_EQ(next, want);
    in_place.export_state(&unused, &want_m, &want_v);
    turns.export_state(&got_w, &got_m, &got_v);
    EXPECT_EQ(got_w, want);
    EXPECT_EQ(got_m, want_m);
    EXPECT_EQ(got_v, want_v);
  }
  EXPECT_EQ(turns.applied_steps(), 3);
}

// Applies the round's pushes on both optimizers and expects the same step:
// the global norm, and the weights and both moments bit for bit.
void apply_both_and_compare(ShardOptimizer& want_from, ShardOptimizer& got_from, int step) {
  const StepReport want = want_from.apply(want_from.reduce());
  const StepReport got = got_from.apply(got_from.reduce());
  ASSERT_TRUE(want.applied);
  EXPECT_TRUE(got.applied) << "step " << step;
  EXPECT_EQ(got.grad_norm, want.grad_norm) << "step " << step;
  std::vector<float> ww, wm, wv, gw, gm, gv;
  want_from.export_state(&ww, &wm, &wv);
  got_from.export_state(&gw, &gm, &gv);
  EXPECT_EQ(gw, ww) << "step " << step;
  EXPECT_EQ(gm, wm) << "step " << step;
  EXPECT_EQ(gv, wv) << "step " << step;
}

// Pushes lent range by range (a server's received frames) are read where
// they lie: a range written after add_push_ranges() is what the step uses,
// while a range not aligned for float is copied at once (writing it
// afterwards changes nothing). The steps, with one push and with two, equal
// those of pushes copied whole.
TEST(ServerTest, LentPushesAreReadWhereTheyLie) {
  TinyModel t(6);
  Transformer& m = t.m;
  const auto all = whole_tensors(m.table());
  ShardOptimizer copied(t.job, m.table(), all, t.w0.data()), lent(t.job, m.table(), all, t.w0.data());
  const Batch a = make_batch({{4, 5, 6, 2}}, {{7, 8, 9}}), b = make_batch({{8, 9, 2}}, {{4, 5}});
  const std::vector<float> grads[2] = {gradient(m, a), gradient(m, b)};
  const int64_t tokens[2] = {a.tokens(), b.tokens()};
  ASSERT_GE(all.size(), 2u);
  for (int step = 0; step < 3; ++step) {
    const int pushes = step == 0 ? 1 : 2;
    // Each push's ranges in buffers of their own; range 0 one byte into its
    // buffer, so not aligned for float.
    std::vector<std::vector<std::vector<char>>> frames(static_cast<size_t>(pushes));
    for (int w = 0; w < pushes; ++w) {
      const std::vector<float>& g = grads[w];
      std::vector<WireValues> ranges;
      for (size_t i = 0; i < all.size(); ++i) {
        const size_t bytes = static_cast<size_t>(all[i].length) * sizeof(float), skew = i == 0 ? 1 : 0;
        std::vector<char>& f = frames[static_cast<size_t>(w)].emplace_back(bytes + skew + sizeof(float), char{0});
        if (i == 0) std::memcpy(f.data() + skew, g.data() + all[i].begin, bytes);  // copied at once
        ranges.push_back({f.data() + skew, false});
      }
      lent.add_push_ranges(ranges, tokens[w], 0.0, w, ShardOptimizer::Lend::kYes);
      copied.add_push(g.data(), tokens[w], 0.0);
      // The aligned ranges are read only now; range 0 was taken before.
      for (size_t i = 0; i < all.size(); ++i) {
        std::vector<char>& f = frames[static_cast<size_t>(w)][i];
        const size_t bytes = static_cast<size_t>(all[i].length) * sizeof(float);
        if (i == 0) {
          const float junk = std::nanf("");
          for (size_t k = 0; k < bytes; k += sizeof(float)) std::memcpy(f.data() + 1 + k, &junk, sizeof(float));
        } else {
          std::memcpy(f.data(), g.data() + all[i].begin, bytes);
        }
      }
    }
    // The lent optimizer holds copies of range 0 only, one per push slot.
    EXPECT_EQ(lent.host_push_floats(), (step == 0 ? 1 : 2) * all[0].length) << "step " << step;
    EXPECT_EQ(copied.host_push_floats(), (step == 0 ? 1 : 2) * copied.local_size());
    apply_both_and_compare(copied, lent, step);
  }
  EXPECT_EQ(lent.applied_steps(), 3);
}

// A whole flat gradient lent to a host optimizer (add_push with Lend::kYes,
// what an in-process server's client does when a round is one push) is read
// where it lies, at each owned range's flat offset: a buffer filled only
// after add_push() gives the step of the gradient copied in, and the
// optimizer holds no copy of it. Owning every other tensor, so that the flat
// offsets are not the local ones.
TEST(ServerTest, LentWholePushIsReadWhereItLies) {
  TinyModel t(7);
  Transformer& m = t.m;
  const auto all = whole_tensors(m.table());
  std::vector<ChunkRange> odd;
  for (size_t i = 1; i < all.size(); i += 2) odd.push_back(all[i]);
  for (const std::vector<ChunkRange>& owned : {all, odd}) {
    ShardOptimizer copied(t.job, m.table(), owned, t.w0.data()), lent(t.job, m.table(), owned, t.w0.data());
    const Batch a = make_batch({{4, 5, 6, 2}}, {{7, 8, 9}});
    const std::vector<float> g = gradient(m, a);
    std::vector<float> buffer(g.size(), std::nanf(""));
    for (int step = 0; step < 2; ++step) {
      copied.add_push(g.data(), a.tokens(), 0.0);
      lent.add_push(buffer.data(), a.tokens(), 0.0, ShardOptimizer::Lend::kYes);
      buffer = g;  // written after the push: a lent buffer is read only now
      EXPECT_EQ(lent.host_push_floats(), 0);
      apply_both_and_compare(copied, lent, step);
      std::fill(buffer.begin(), buffer.end(), std::nanf(""));
    }
  }
}

// The in-process client lends a push to its server only when the push ends
// the round: with two pushes a round (one process playing two workers, which
// reuses its gradient buffer for the second), each is copied, and the step
// is that of the two gradients, not of the last one twice. With one push a
// round the server keeps no copy.
TEST(ServerTest, LocalClientCopiesThePushesOfARoundOfSeveral) {
  TinyModel t(8);
  Transformer& m = t.m;
  const auto all = whole_tensors(m.table());
  const Batch a = make_batch({{4, 5, 6, 2}}, {{7, 8, 9}}), b = make_batch({{8, 9, 2}}, {{4, 5}});
  const std::vector<float> ga = gradient(m, a), gb = gradient(m, b);
  ASSERT_NE(ga, gb);
  ShardOptimizer want(t.job, m.table(), all, t.w0.data()), two(t.job, m.table(), all, t.w0.data());
  want.add_push(ga.data(), a.tokens(), 0.0);
  want.add_push(gb.data(), b.tokens(), 0.0);
  want.apply(want.reduce());
  std::vector<float> w_want(m.num_params()), w_got(m.num_params());
  want.copy_weights(w_want.data());
  {
    ShardOptimizer server(t.job, m.table(), all, t.w0.data());
    LocalParameterClient client(&server, /*device_buffers=*/false, /*pushes_per_round=*/2);
    std::vector<float> buffer = ga;  // one buffer, reused as the trainer does
    ASSERT_TRUE(client.push(0, a.tokens(), 0.0, buffer.data()).ok());
    buffer = gb;
    ASSERT_TRUE(client.push(0, b.tokens(), 0.0, buffer.data()).ok());
    std::fill(buffer.begin(), buffer.end(), 0.0f);
    ASSERT_TRUE(client.pull(1, w_got.data()).ok());
    EXPECT_EQ(w_got, w_want);
    EXPECT_EQ(server.host_push_floats(), 2 * server.local_size());
  }
  ShardOptimizer server(t.job, m.table(), all, t.w0.data());
  LocalParameterClient one(&server);
  ASSERT_TRUE(one.push(0, a.tokens(), 0.0, ga.data()).ok());
  EXPECT_EQ(server.host_push_floats(), 0);
}

// Tensors cut into chunks of 64 bytes spread over S servers by the shard
// plan: the servers' partial statistics add up to the global norm, and the
// weights equal those of one server owning everything.
TEST(ServerTest, ChunkedShardsGiveTheSameStep) {
  TinyModel t(5);
  const JobConfig& job = t.job;
  Transformer& m = t.m;
  const std::vector<float>& w0 = t.w0;
  const Batch b = make_batch({{4, 5, 6, 2}, {3, 9}}, {{7, 8, 9}, {4, 4}});
  const std::vector<float> g = gradient(m, b);
  ShardOptimizer single(job, m.table(), whole_tensors(m.table()), w0.data());
  std::vector<float> want(w0.size());
  for (int step = 0; step < 3; ++step) {
    single.add_push(g.data(), b.tokens(), 0);
    single.apply(single.reduce());
  }
  single.copy_weights(want.data());
  for (int servers : {2, 3}) {
    auto plan = ShardPlan::make(m.table().numels(), servers, 64);
    ASSERT_TRUE(plan.ok());
    std::vector<std::unique_ptr<ShardOptimizer>> shards;
    for (int k = 0; k < servers; ++k)
      shards.push_back(std::make_unique<ShardOptimizer>(job, m.table(), plan->owned(k), w0.data()));
    for (int step = 0; step < 3; ++step) {
      std::vector<GradStats> parts;
      for (auto& s : shards) {
        s->add_push(g.data(), b.tokens(), 0);
        parts.push_back(s->reduce());
      }
      const GradStats total = sum_over_servers(parts);
      for (auto& s : shards) EXPECT_LT(s->apply(total).clip_coef, 1.0);
    }
    std::vector<float> got(w0.size(), 0.0f);
    for (auto& s : shards) s->copy_weights(got.data());
    EXPECT_TRUE(testing::all_close(got.data(), want.data(), want.size(), 1e-7, 1e-6, "weights"))
        << servers << " servers";
  }
}

// The optimizer state on a backend's device, with gradients pushed from the
// host or from device memory, one or two pushes per round: the same steps as
// the host optimizer. On the CPU backend (what CI has) one push per round
// gives the host's bits; the CUDA backend (when a GPU is present) sums the
// squares in another order, and two pushes are combined with the backend's
// axpy, so those agree to rounding.
TEST(ServerTest, DeviceStateGivesTheHostSteps) {
  JobConfig job = tiny_job();
  job.optim.weight_decay = 0.1;
  auto cpu = make_cpu_backend(1);
  Transformer m(job.model, 10, 12, cpu.get());
  m.init_weights(4);
  std::vector<float> w0(m.num_params());
  m.get_weights(w0.data());
  const Batch b1 = make_batch({{4, 5, 6, 2}, {7, 3}}, {{7, 8, 9}, {5}});
  const Batch b2 = make_batch({{8, 3}}, {{6, 6, 7, 8}});
  const std::vector<float> g1 = gradient(m, b1), g2 = gradient(m, b2);
  const auto all = whole_tensors(m.table());
  std::vector<ChunkRange> odd;
  for (size_t i = 1; i < all.size(); i += 2) odd.push_back(all[i]);
  std::vector<std::unique_ptr<Backend>> devices;
  devices.push_back(make_cpu_backend(1));
  if (cuda_device_count() > 0) {
    auto cuda = make_cuda_backend(CudaOptions{});
    ASSERT_TRUE(cuda.ok()) << cuda.status().to_string();
    devices.push_back(std::move(*cuda));
  }
  for (int pushes : {1, 2}) {
    for (const auto& ranges : {all, odd}) {
      auto run = [&](ShardOptimizer& opt, Backend* dev) {
        float* dg1 = nullptr;
        float* dg2 = nullptr;
        if (dev) {
          dg1 = static_cast<float*>(dev->allocate(g1.size() * sizeof(float)));
          dg2 = static_cast<float*>(dev->allocate(g2.size() * sizeof(float)));
          dev->upload(dg1, g1.data(), g1.size() * sizeof(float));
          dev->upload(dg2, g2.data(), g2.size() * sizeof(float));
        }
        for (int step = 0; step < 3; ++step) {
          dev ? opt.add_push_device(dg1, b1.tokens(), 0) : opt.add_push(g1.data(), b1.tokens(), 0);
          if (pushes == 2) dev ? opt.add_push_device(dg2, b2.tokens(), 0) : opt.add_push(g2.data(), b2.tokens(), 0);
          const StepReport r = opt.apply(opt.reduce());
          EXPECT_TRUE(r.applied);
          EXPECT_LT(r.clip_coef, 1.0) << "clipping must be active in this test";
        }
        std::vector<float> w(w0.size(), 0.0f);
        opt.copy_weights(w.data());
        if (dev) {
          dev->deallocate(dg1);
          dev->deallocate(dg2);
        }
        return w;
      };
      ShardOptimizer host(job, m.table(), ranges, w0.data());
      const std::vector<float> want = run(host, nullptr);
      for (const auto& dev : devices) {
        for (bool device_push : {false, true}) {
          ShardOptimizer on_device(job, m.table(), ranges, w0.data(), dev.get());
          const std::vector<float> got = run(on_device, device_push ? dev.get() : nullptr);
          const std::string what = fmt::format("{}, {} pushes, {} ranges, {} push", dev->name(), pushes, ranges.size(),
                                               device_push ? "device" : "host");
          if (pushes == 1 && std::string(dev->name()) == "cpu") {
            EXPECT_EQ(got, want) << what;
          } else {
            EXPECT_TRUE(
                testing::adam_weights_close(m.table(), got.data(), want.data(), g1.data(), w0.data(), 3 * job.optim.lr))
                << what;
          }
          EXPECT_NE(got, w0) << what;
        }
      }
    }
  }
}

}  // namespace
}  // namespace pst
