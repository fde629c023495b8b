// The in-process ParameterClient: one worker, one server, no network. push()
// runs the whole BSP step on the calling thread (aggregate, clip, update), so
// pull() never waits. With device_buffers, push() and pull() take device
// pointers of the server's device (the worker's model on the same GPU).
#pragma once

#include "comm/parameter_client.h"
#include "ps/shard_optimizer.h"

namespace pst {

class LocalParameterClient final : public ParameterClient {
 public:
  // The optimizer must outlive the client.
  // pushes_per_round: the pushes that make one step (the workers a single
  // process plays); the step is applied when the last of them arrives.
  explicit LocalParameterClient(ShardOptimizer* server, bool device_buffers = false, int pushes_per_round = 1)
      : server_(server), device_buffers_(device_buffers), pushes_per_round_(pushes_per_round) {}

  Status push(int64_t version, int64_t tokens, double loss_sum, const float* grads) override;
  Result<StepReport> pull(int64_t min_version, float* weights) override;
  bool device_buffers() const override { return device_buffers_; }

 private:
  ShardOptimizer* server_;
  bool device_buffers_;
  int pushes_per_round_;
  StepReport last_{.applied = true};  // version 0 counts as applied, as a server answers it
};

}  // namespace pst
