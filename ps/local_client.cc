#include "ps/local_client.h"

#include "core/stop.h"

namespace pst {

Status LocalParameterClient::push(int64_t version, int64_t tokens, double loss_sum, const float* grads) {
  if (version != server_->version())
    return failed_precondition("push: gradient for version {} but the server is at version {}", version,
                               server_->version());
  if (device_buffers_) {
    server_->add_push_device(grads, tokens, loss_sum);
  } else {
    // A round of one push ends within this call, before the caller may touch
    // its buffer again: the optimizer reads it where it is. With more, the
    // caller reuses its buffer for the next push of the round (one process
    // playing several workers), so each is copied.
    server_->add_push(grads, tokens, loss_sum,
                      pushes_per_round_ == 1 ? ShardOptimizer::Lend::kYes : ShardOptimizer::Lend::kNo);
  }
  if (server_->pushes() < pushes_per_round_) return Status();
  GradStats stats = server_->reduce();
  stats.control.stop = stop_wanted();
  last_ = server_->apply(stats);
  last_.stop = stats.control.stop;
  return Status();
}

Result<StepReport> LocalParameterClient::pull(int64_t min_version, float* weights) {
  if (server_->version() < min_version)
    return failed_precondition("pull: version {} requested but the server is at {} (no push pending)", min_version,
                               server_->version());
  if (device_buffers_) {
    server_->copy_weights_device(weights);
  } else {
    server_->copy_weights(weights);
  }
  StepReport info = last_;
  info.version = server_->version();
  return info;
}

}  // namespace pst
