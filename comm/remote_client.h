// The ParameterClient of a worker whose servers are other threads or
// processes: push() sends each server the chunks it owns (the tensor bytes
// leave without a copy) and waits for every acknowledgement; pull() asks
// every server for its chunks of a weights version and assembles the flat
// buffer. Every wait has the configured deadline; an error names the server
// and what was waited for, and an Error reply from a server is returned with
// that server's message.
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
};

class RemoteParameterClient final : public ParameterClient {
 public:
  // server_endpoints[k] is server k's Router. The plan must outlive the client.
  static Result<std::unique_ptr<RemoteParameterClient>> connect(zmq::context_t& context, const ShardPlan& plan,
                                                                const std::vector<std::string>& server_endpoints,
                                                                RemoteClientOptions options);

  Status push(int64_t version, int64_t tokens, double loss_sum, const float* grads) override;
  Result<PullInfo> pull(int64_t min_version, float* weights) override;
  // Tells every server this worker is done.
  Status shutdown();

 private:
  RemoteParameterClient(const ShardPlan& plan, RemoteClientOptions options) : plan_(plan), options_(options) {}
  // The next reply from server k with this request id; an Error reply
  // becomes an error status.
  Result<std::unique_ptr<InMessage>> await_reply(int k, uint64_t request_id, wire::Kind kind, const std::string& what);

  const ShardPlan& plan_;
  RemoteClientOptions options_;
  std::vector<std::unique_ptr<Dealer>> servers_;
  uint64_t next_request_ = 1;
};

}  // namespace pst
