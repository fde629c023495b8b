// One parameter server (DESIGN.md §3): it receives the workers' pushes and
// pulls on its Router and keeps its chunks of the shard plan in a
// ShardOptimizer.
//  - BSP: once every worker has pushed step v it reduces, agrees on the
//    global gradient statistics with the other servers, clips, applies
//    Adam/AdamW and answers the pulls waiting for v+1.
//  - ASP: it applies each push on its own, in arrival order (the workers clip
//    their gradients), and answers a pull as soon as its version exists.
//  - SSP(s): as ASP, but a worker that has pushed c times gets weights only
//    while the slowest live worker has pushed at least c - s times.
//
// The update runs on its own thread; the receive thread keeps validating and
// answering messages meanwhile (pulls of the current version are served from
// a snapshot of the weights, so they never see a half-applied step). Bad
// messages get an Error reply and count as rejected; they never stop the
// server or touch the optimizer.
//
// Thread safety: serve() runs on one thread; rejected() may be read from any.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "comm/layout.h"
#include "comm/message.h"
#include "comm/shard_plan.h"
#include "comm/socket.h"
#include "ps/server.h"
#include "ps/stats_reducer.h"

namespace pst {

struct ShardServerOptions {
  uint64_t job_id = 0;
  int server = 0;         // index among the servers, 0..S-1
  JobLayout layout;
  double timeout_s = 60;  // longest wait without progress (pushes of a round, statistics)
  Consistency consistency = Consistency::kBsp;
  int64_t staleness = 0;  // SSP's bound
};

class ShardServer {
 public:
  // table, plan and reducer must outlive the server; initial holds the flat
  // initial weights. device: as ShardOptimizer's.
  ShardServer(const JobConfig& job, const ParamTable& table, const ShardPlan& plan, const float* initial,
              GradStatsReducer* reducer, zmq::context_t& context, std::unique_ptr<Router> router,
              ShardServerOptions options, Backend* device = nullptr);
  ~ShardServer();
  ShardServer(const ShardServer&) = delete;
  ShardServer& operator=(const ShardServer&) = delete;

  // Serves until every worker has sent Shutdown (OK) or a wait passes its
  // deadline or a peer fails (the error names whom and what for).
  Status serve();

  const std::string& endpoint() const { return router_->endpoint(); }
  int64_t rejected() const { return rejected_.load(); }
  int64_t version() const { return version_; }
  // Instruments of the consistency modes, read after serve() returns: the
  // largest lead (pushes of the pulling worker less those of the slowest
  // live worker) at which a pull was answered, and the largest staleness
  // (versions applied since the weights a push was computed on).
  int64_t max_clock_lead() const { return max_lead_; }
  int64_t max_staleness() const { return max_staleness_; }

 private:
  struct PendingPull {
    zmq::message_t route;
    uint64_t request_id = 0;
    int64_t min_version = 0;
    int worker = 0;
  };

  Status serve_until_done();
  // Handles one message; true when it was progress (a push or a shutdown).
  bool handle(Routed msg);
  Status reject(const zmq::message_t& route, const Rejection& why, const InMessage* m);
  Status on_push(const zmq::message_t& route, std::unique_ptr<InMessage> m);
  // Maps a push's chunks to the owned ranges; false (and *why) when the set
  // of chunks is not exactly the server's.
  bool push_ranges(const InMessage& m, std::vector<const float*>* ranges, Rejection* why) const;
  bool pull_allowed(int64_t min_version, int worker) const;
  // Pushes of the slowest worker that has not finished; INT64_MAX when all have.
  int64_t slowest_live_clock() const;
  Status answer_ready_pulls();
  void start_next_async();
  Status on_pull(zmq::message_t route, const InMessage& m);
  Status answer_pull(const zmq::message_t& route, uint64_t request_id, int worker);
  void start_update();
  void update_loop();
  Status finish_update();
  void take_snapshot();

  const ParamTable& table_;
  const ShardPlan& plan_;
  GradStatsReducer* reducer_;
  ShardServerOptions options_;
  ShardOptimizer opt_;
  std::unique_ptr<Router> router_;
  zmq::socket_t notify_recv_, notify_send_;  // update thread -> receive loop
  std::unordered_map<uint64_t, size_t> range_of_key_;  // (tensor << 32 | chunk) -> owned range index
  std::vector<Chunk> owned_chunks_;

  // Receive-thread state.
  int64_t version_ = 0;
  std::vector<bool> pushed_;  // per worker, this round
  int pushes_ = 0;
  int shutdowns_ = 0;
  bool updating_ = false;
  std::vector<PendingPull> pending_;
  std::vector<int64_t> clocks_;               // pushes received per worker
  std::vector<bool> finished_;                // workers that sent Shutdown
  std::vector<std::unique_ptr<InMessage>> queued_;  // ASP/SSP pushes waiting for the update thread
  int64_t max_lead_ = 0;
  int64_t max_staleness_ = 0;
  std::shared_ptr<std::vector<float>> snapshot_;  // weights of version_, local order
  StepReport last_;
  Status error_;
  std::atomic<int64_t> rejected_{0};

  // Update thread; mu_ guards the fields below it.
  std::thread update_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool update_requested_ = false;
  bool stop_ = false;
  Status update_status_;
  StepReport update_report_;
};

}  // namespace pst
