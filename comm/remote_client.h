// The ParameterClient of a worker whose servers are other threads or
// processes. A push sends each server the chunks it owns (the tensor bytes
// leave without a copy), in parts as backward announces layers final; the
// servers acknowledge every part, and the pull that follows (sent without
// waiting for them) takes those acknowledgements before its weights, so a
// push and a pull cost one round trip. A pull asks every server for
// its chunks of a weights version and copies them into the flat buffer as
// they arrive, first layers first, so forward can start on them. Every wait
// has the configured deadline; an error names the server and what was waited
// for, and an Error reply from a server is returned with its message.
//
// Thread safety: one thread uses a client (ZeroMQ sockets are single-threaded).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/layout.h"
#include "comm/parameter_client.h"
#include "comm/shard_plan.h"
#include "comm/socket.h"

namespace pst {

struct RemoteClientOptions {
  uint64_t job_id = 0;
  int worker = 0;  // index among the workers
  JobLayout layout;
  double timeout_s = 60;
  // Ends every wait on the servers once raised (the job re-forms); may be null.
  const Interrupt* interrupt = nullptr;
  // cluster.wire = bf16: pushes send bfloat16 gradients and pulls ask for
  // bfloat16 weights (pull_exact() for float32 ones).
  bool bf16_wire = false;
  // cluster.wire_rounding = stochastic: the pushed gradients are rounded
  // stochastically with the bits of (rounding_seed, the step, this worker)
  // (core/bf16.h), not to nearest.
  bool stochastic_rounding = false;
  uint64_t rounding_seed = 0;
};

class RemoteParameterClient final : public ParameterClient {
 public:
  // server_endpoints[k] is server k's Router. The plan must outlive the client.
  static Result<std::unique_ptr<RemoteParameterClient>> connect(zmq::context_t& context, const ShardPlan& plan,
                                                                const std::vector<std::string>& server_endpoints,
                                                                RemoteClientOptions options);
  // servers[k] reaches server k (a Dealer, or an MpiChannel).
  static Result<std::unique_ptr<RemoteParameterClient>> connect(const ShardPlan& plan,
                                                                std::vector<std::unique_ptr<Channel>> servers,
                                                                RemoteClientOptions options);
  ~RemoteParameterClient() override;

  Status push(int64_t version, int64_t tokens, double loss_sum, const float* grads) override;
  Result<StepReport> pull(int64_t min_version, float* weights) override;
  bool streams() const override { return true; }
  bool lossy_pulls() const override { return options_.bf16_wire; }
  Result<StepReport> pull_exact(int64_t min_version, float* weights) override;
  Status begin_push(int64_t version, int64_t tokens, double loss_sum, const float* grads) override;
  Status push_final(int64_t begin) override;
  Status finish_push() override;
  Result<StepReport> begin_pull(int64_t min_version, float* weights) override;
  Status await_weights(int64_t end) override;
  // Tells every server this worker is done.
  Status shutdown();

 private:
  RemoteParameterClient(const ShardPlan& plan, RemoteClientOptions options);
  // The next reply from server k with this request id; an Error reply
  // becomes an error status.
  Result<std::unique_ptr<InMessage>> await_reply(int k, uint64_t request_id, wire::Kind kind, const std::string& what);
  // Sends server k its chunks [first, push_unsent_[k]) of the push in progress.
  Status send_part(int k, size_t first);
  // Ends a push that failed (why) once the transport holds none of its
  // frames, which point at the caller's gradient; returns why.
  Status abandon_push(Status why);
  // Waits for the acknowledgements of the last push that have not come yet
  // (an Error reply instead: that error).
  Status take_acks();
  // Receives the next part of server k's pull reply and copies its chunks.
  Status receive_pull_part(int k, StepReport* info);

  const ShardPlan& plan_;
  RemoteClientOptions options_;
  std::vector<std::unique_ptr<Channel>> servers_;
  std::vector<std::vector<Chunk>> owned_;  // per server, in flat order
  int64_t flat_size_ = 0;                  // floats of the flat buffers
  uint64_t next_request_ = 1;

  // The push in progress: chunks [0, push_unsent_[k]) of server k are unsent;
  // push_parts_[k] parts went to it. The token rides on every frame that
  // points into the caller's gradient (a float32 wire).
  struct PushState;
  std::unique_ptr<PushState> push_;
  // bfloat16 copies of pushed gradients (flat), which the frames of a push
  // keep alive; reused once the transport has let go of them.
  std::shared_ptr<std::vector<uint16_t>> push_bf16_;
  // The finished push whose acknowledgements have not all come: its request,
  // step and, per server, the parts not acknowledged yet.
  struct Unacked {
    uint64_t request = 0;  // 0: none
    int64_t version = 0;
    std::vector<int> parts;
  };
  Unacked unacked_;
  // The pull in progress: chunks [0, pull_next_[k]) of server k have arrived.
  float* pull_weights_ = nullptr;
  bool pull_bf16_ = false;  // asked for bfloat16 weights
  bool exact_ = false;      // in pull_exact()
  uint64_t pull_request_ = 0;
  int64_t pull_min_version_ = 0;
  std::vector<size_t> pull_next_;
  std::vector<int64_t> pull_versions_;  // per server, from its first part
};

}  // namespace pst
