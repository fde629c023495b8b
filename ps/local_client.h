// The in-process ParameterClient: one worker, one server, no network. push()
// runs the whole BSP step on the calling thread (aggregate, clip, update), so
// pull() never waits.
#pragma once

#include "comm/parameter_client.h"
#include "ps/server.h"

namespace pst {

class LocalParameterClient final : public ParameterClient {
 public:
  // The optimizer must outlive the client.
  explicit LocalParameterClient(ShardOptimizer* server) : server_(server) {}

  Status push(int64_t version, int64_t tokens, double loss_sum, const float* grads) override;
  Result<PullInfo> pull(int64_t min_version, float* weights) override;

 private:
  ShardOptimizer* server_;
  PullInfo last_;
};

}  // namespace pst
