// The in-process ParameterClient: one worker, one server, no network. push()
// runs the whole BSP step on the calling thread (aggregate, clip, update), so
// pull() never waits. With device_buffers, push() and pull() take device
// pointers of the server's device (the worker's model on the same GPU).
#pragma once

#include "comm/parameter_client.h"
#include "ps/server.h"

namespace pst {

class LocalParameterClient final : public ParameterClient {
 public:
  // The optimizer must outlive the client.
  explicit LocalParameterClient(ShardOptimizer* server, bool device_buffers = false)
      : server_(server), device_buffers_(device_buffers) {}

  Status push(int64_t version, int64_t tokens, double loss_sum, const float* grads) override;
  Result<PullInfo> pull(int64_t min_version, float* weights) override;
  bool device_buffers() const override { return device_buffers_; }

 private:
  ShardOptimizer* server_;
  bool device_buffers_;
  PullInfo last_;
};

}  // namespace pst
