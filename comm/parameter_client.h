// The seam between a worker's training loop and the parameter servers
// (docs/design.md, Modules). The loop pushes its gradient for the weights version it
// computed on and pulls the next version; it never knows whether the servers
// run in this process (ps/LocalParameterClient) or across the network.
#pragma once

#include <cstdint>

#include "comm/step_report.h"
#include "core/status.h"
#include "core/stop.h"

namespace pst {

// A pull answers with the StepReport of the step its weights reflect
// (comm/step_report.h).
//
// Thread safety: a client belongs to one worker thread, which makes every
// call; a push or pull in progress (begin_push .. finish_push, begin_pull ..
// await_weights(n)) is finished before the next begins. Implementations may
// run threads of their own behind it (comm/remote_client.h).
class ParameterClient {
 public:
  virtual ~ParameterClient() = default;

  // Pushes this worker's gradient (flat, in parameter-table order, the mean
  // over its `tokens` target tokens) computed on weights `version`. The
  // buffer may be reused as soon as push() returns. A client may return
  // before the servers have acknowledged the push: a refusal then comes as
  // the error of the next pull (or push).
  virtual Status push(int64_t version, int64_t tokens, double loss_sum, const float* grads) = 0;

  // Waits until weights of at least `min_version` exist (or the deadline
  // passes) and copies them, flat, into `weights`.
  virtual Result<StepReport> pull(int64_t min_version, float* weights) = 0;

  // True when push() and pull() take device pointers of the worker's backend
  // instead of host memory: a server in this process on the same device, so
  // gradients and weights never cross the bus. (Host memory is whatever the
  // caller has: a CPU model's own buffers, or host copies of a GPU model's.)
  virtual bool device_buffers() const { return false; }

  // True when pulls carry weights rounded on the way (cluster.wire = bf16:
  // the servers keep float32 weights, the wire carries bfloat16).
  virtual bool lossy_pulls() const { return false; }
  // A pull of the servers' float32 weights, exact whatever the wire, for
  // validation and the model file; as pull() otherwise.
  virtual Result<StepReport> pull_exact(int64_t min_version, float* weights) { return pull(min_version, weights); }

  // Streaming (docs/design.md, Streaming), so that communication overlaps compute.
  //
  // A push in parts: begin_push(), then push_final(begin) each time
  // grads[begin, n) is final (begin non-increasing, as backward finishes
  // layers from the last down), then finish_push(), which sends what is left
  // and returns when the buffer may be reused. grads stays untouched until then.
  //
  // A pull in layer order: begin_pull() asks every server and returns once
  // each has answered (the step info is known then); weights[0, end) are in
  // place after await_weights(end) (end non-decreasing, as forward reaches
  // later layers); await_weights(n) ends the pull, which must happen before
  // the next push or pull.
  //
  // These defaults do everything in finish_push() and begin_pull(); streams()
  // says whether a client does better.
  virtual bool streams() const { return false; }
  virtual Status begin_push(int64_t version, int64_t tokens, double loss_sum, const float* grads) {
    pending_ = {version, tokens, loss_sum, grads};
    return Status();
  }
  virtual Status push_final(int64_t /*begin*/) { return Status(); }
  virtual Status finish_push() { return push(pending_.version, pending_.tokens, pending_.loss_sum, pending_.grads); }
  virtual Result<StepReport> begin_pull(int64_t min_version, float* weights) { return pull(min_version, weights); }
  virtual Status await_weights(int64_t /*end*/) { return Status(); }

  // Asks the job to end after the step of the next push, as a stop signal
  // would, but for this worker's own reason (early stopping): the push
  // carries the request, the servers end the job after that step, and the
  // StepReport says stop.
  void ask_to_stop() { stop_asked_ = true; }

 protected:
  // What the next push says: stop after this step.
  bool stop_wanted() const { return stop_asked_ || stop_requested(); }

 private:
  bool stop_asked_ = false;
  struct PendingPush {
    int64_t version = 0, tokens = 0;
    double loss_sum = 0.0;
    const float* grads = nullptr;
  };
  PendingPush pending_;
};

}  // namespace pst
