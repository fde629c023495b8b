// One parameter server (docs/design.md, One BSP step): it receives the workers' pushes and
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
// A worker's push may come in parts (as its backward finishes layers); it
// counts once every owned chunk has arrived, exactly once. A pull is
// answered in parts in flat order: in BSP, the parts of version v+1 go out
// while the update is still applying AdamW to later chunks, so the worker's
// forward starts on the first layers early (docs/design.md, Streaming).
//
// The update runs on its own thread; the receive thread keeps validating and
// answering messages meanwhile (pulls of the current version are served from
// a snapshot of the weights, so they never see a half-applied step; the
// update writes the next snapshot range by range). A BSP shard no larger
// than stream_bytes on a server that needs no other's statistics is updated
// on the receive thread instead, which is faster than the hand-off. Bad
// messages get an Error reply and count as rejected; they never stop the
// server or touch the optimizer.
//
// Membership (docs/design.md, Membership): remove_workers() takes workers
// out of the job (the scheduler took them as dead). In BSP the round then
// completes with the workers that pushed; the servers agree on which pushes
// count through the reduction (a removed worker may have reached one server
// and not another), and the batches of the epoch order go to the workers
// that remain (data/data_cursor.h), each pull saying which batch comes next.
// A removed worker's messages are refused. ASP and SSP stop waiting for it.
// A worker that joins (BSP) is admitted by every server at the step the
// reduction names it (GradStats::joined); its first pull waits for that.
//
// Thread safety: serve() runs on one thread; rejected() may be read from
// any; remove_workers() may be called from any thread, before or during serve().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "comm/grad_stats.h"
#include "comm/layout.h"
#include "comm/message.h"
#include "comm/note_queue.h"
#include "comm/rejecter.h"
#include "comm/shard_plan.h"
#include "comm/socket.h"
#include "data/data_cursor.h"
#include "monitoring/metrics.h"
#include "ps/checkpoint.h"
#include "ps/shard_optimizer.h"

namespace pst {

struct ShardServerOptions {
  uint64_t job_id = 0;
  int server = 0;  // index among the servers, 0..S-1
  JobLayout layout;
  double timeout_s = 60;  // longest wait without progress (pushes of a round, statistics)
  Consistency consistency = Consistency::kBsp;
  int64_t staleness = 0;  // SSP's bound
  // BSP: an update lets the waiting pulls have its chunks after at least
  // this many bytes, so parts are neither one per small tensor nor the
  // whole shard.
  int64_t stream_bytes = 256 << 10;
  ServerMetrics* metrics = nullptr;  // Prometheus series of this server, if any
  // BSP checkpoints: after every `checkpoint_every` versions, at the first
  // version done `checkpoint_minutes` after the last checkpoint, and at a
  // graceful stop, each server writes its file under checkpoint_root/step-N;
  // server 0 writes the manifest once every server's file is there, and
  // prunes to keep. The servers agree on the version through the
  // reduction of the gradient statistics (GradStats' flags). An empty root:
  // none.
  std::string checkpoint_root = "";
  int64_t checkpoint_every = 0;
  double checkpoint_minutes = 0;
  int64_t checkpoint_keep = 3;
  // checkpoint.on_failure = stop: a checkpoint this server could not
  // complete stops the job after the next step (with one more try at a
  // checkpoint); otherwise training goes on and the previous checkpoint
  // stays the latest.
  bool stop_on_checkpoint_failure = false;
  // A checkpoint of this version too, when checkpoints are on (the job's
  // last step, written before its final evaluation); 0: none.
  int64_t final_step = 0;
  // train.max_minutes: after this long from serve(), the servers stop the
  // job after the step in progress, as a signal would (with a checkpoint
  // in BSP); 0: no limit.
  double max_minutes = 0;
  // The workers the job starts with: places 0..start_workers-1 (0: every
  // place of the layout); the others are free until a worker joins.
  int start_workers = 0;
  // cluster.wire = bf16: pushes carry bfloat16 gradients, and pulls may ask
  // for bfloat16 weights (kept beside the float32 ones in each snapshot).
  // Otherwise both are float32 only, and a bfloat16 push or pull is refused.
  bool bf16_wire = false;
};

// checkpoint.dir, or its default under train.output.
std::string checkpoint_root(const JobConfig& job);
// The options of server k of a job from its [cluster] and [checkpoint] settings.
ShardServerOptions shard_server_options(const JobConfig& job, uint64_t job_id, int server, JobLayout layout);

class ShardServer {
 public:
  // table, plan and reducer must outlive the server; initial holds the flat
  // initial weights. device: as ShardOptimizer's.
  ShardServer(const JobConfig& job, const ParamTable& table, const ShardPlan& plan, const float* initial,
              GradStatsReducer* reducer, std::unique_ptr<Router> router, ShardServerOptions options,
              Backend* device = nullptr);
  ~ShardServer();
  ShardServer(const ShardServer&) = delete;
  ShardServer& operator=(const ShardServer&) = delete;

  // Serves until every worker has sent Shutdown (OK) or a wait passes its
  // deadline or a peer fails (the error names whom and what for). A
  // checkpoint begun is complete (or has failed) when it returns.
  Status serve();

  const std::string& endpoint() const { return router_->endpoint(); }
  // Before serve(): the state of a checkpoint (owned ranges in owned order),
  // its version and optimizer-step count, and its data pool.
  void restore(const ShardState& state, int64_t version, int64_t applied_steps, const DataPool& pool);
  // Takes the workers of these ranks out of the job (ranks that are not
  // workers are ignored): each only if the process given beside it (0: any)
  // is the one that speaks for the rank, so that a late list does not
  // remove a worker that has joined in a removed one's place; any thread.
  void remove_workers(const std::vector<int32_t>& ranks, const std::vector<uint64_t>& processes = {});
  // The scheduler (through which the servers agree) is gone: the step in
  // progress completes only if another server has the scheduler's sum of
  // it (the reducer asks them). A BSP server with checkpoints writes one of
  // its last complete step and serve() ends with an error that says so; any
  // thread.
  void scheduler_lost(const std::string& why);
  // The job re-forms (another server was lost; cluster.max_restarts): the
  // step in progress is given up, no checkpoint waits for a part that has
  // not come, and serve() ends with kAborted, having told the workers it
  // was waiting for (ErrorCode REFORM); any thread.
  void reform(const std::string& why);
  int64_t rejected() const { return rejecter_.count(); }
  std::string rejected_reasons() const { return rejecter_.reasons(); }
  // Messages taken off the socket so far (valid or not).
  int64_t received() const { return received_.load(); }
  int64_t version() const { return version_; }
  // Instruments of the consistency modes, read after serve() returns: the
  // largest lead (pushes of the pulling worker less those of the slowest
  // live worker) at which a pull was answered, and the largest staleness
  // (versions applied since the weights a push was computed on).
  int64_t max_clock_lead() const { return max_lead_; }
  int64_t max_staleness() const { return max_staleness_; }
  // Pull parts sent while an update was still running (BSP streaming), and
  // pulls waiting now; readable from any thread.
  int64_t streamed_parts() const { return streamed_parts_.load(); }
  int64_t waiting_pulls() const { return waiting_pulls_.load(); }
  // Updates applied and the seconds they took on the update thread
  // (aggregation, statistics, clipping, Adam/AdamW, the next snapshot).
  int64_t updates() const { return updates_.load(); }
  // The version the job stopped at (a graceful stop), or -1; after serve().
  int64_t stopped_at() const { return stopped_at_; }
  double update_seconds() const { return static_cast<double>(update_ns_.load()) * 1e-9; }
  // The seconds those updates waited for the other servers' statistics (BSP).
  double reduce_wait_seconds() const { return static_cast<double>(reduce_wait_ns_.load()) * 1e-9; }

 private:
  struct PendingPull {
    zmq::message_t route;
    uint64_t request_id = 0;
    int64_t min_version = 0;
    int worker = 0;
    size_t sent = 0;    // owned chunks already sent (streamed during an update)
    bool gone = false;  // a send to the worker failed: it has gone
    bool bf16 = false;  // the answer carries bfloat16 weights (the pull's dtype)
    std::chrono::steady_clock::time_point arrived = std::chrono::steady_clock::now();
  };
  // A worker's push of one step, part by part.
  struct PartialPush {
    int worker = 0;
    int64_t step = 0, tokens = 0;
    double loss_sum = 0.0;
    std::vector<std::unique_ptr<InMessage>> parts;
    std::vector<WireValues> ranges;  // per owned chunk; data null until it arrives
    size_t received = 0;
  };
  // The weights of one version in local order: float32, and with a bf16
  // wire the same rounded to bfloat16, for the pulls that ask for them.
  struct Weights {
    std::vector<float> fp32;
    std::vector<uint16_t> bf16;
  };
  using Snapshot = std::shared_ptr<Weights>;
  Snapshot new_snapshot() const;
  // Writes owned ranges [first, last) of the optimizer's weights into s
  // (update thread, or the receive thread while no update runs). On the
  // host the update has written them there (ShardOptimizer::apply's next):
  // only the bfloat16 copy is made.
  void fill_snapshot(Weights& s, size_t first, size_t last) const;
  // A pull as it waits for its answer.
  static PendingPull pending_pull(zmq::message_t route, const InMessage& m, int worker);
  // False (and *why) when a push's chunks or a pull's answer are not in a
  // format this job's wire uses.
  bool wire_format_ok(const InMessage& m, Rejection* why) const;
  // Parses frames into *m and checks them against the job (header, keys,
  // wire format): false with *why set when they are not a message this
  // server takes (*m stays null when they could not be parsed at all).
  bool read_valid(Frames frames, std::unique_ptr<InMessage>* m, Rejection* why) const;

  Status serve_until_done();
  // Workers that sent Shutdown or were removed.
  int ended_workers() const;
  // BSP: every worker that has not been removed has pushed this round.
  bool round_complete() const;
  // Applies the removals remove_workers() queued (receive thread).
  Status take_removals();
  // What a removed worker is told when it speaks (or waits) again.
  Rejection removed_verdict(int worker) const;
  // Answers a waiting pull (route) with `why`: removed, not admitted, the
  // server failed. A send that does not go within `seconds` is dropped.
  void refuse(const zmq::message_t& route, const Rejection& why, double seconds);
  // Another server's question for a sum of statistics (the scheduler is
  // gone): the sum, or an error that says this server has none.
  void answer_server(const zmq::message_t& route, const InMessage& m);
  // After a step that failed for the scheduler's loss: answers the other
  // servers' questions until each has had a lasting answer about it.
  void answer_servers_after_loss(const Status& why);
  // The places of workers in the job (not removed, not free).
  std::vector<uint8_t> members() const;
  // A joiner the scheduler named that can be admitted: a worker's place and
  // a process.
  bool admissible(const Joiner& j) const { return options_.layout.is_worker(j.rank) && j.process != 0; }
  // Admits the workers the servers agreed on at this step (receive thread,
  // between updates): they are members from version_ on.
  void take_joins(const std::vector<Joiner>& joined);
  // A pull from a process that is not (yet) a member: kept until the worker
  // is admitted, refused after timeout_s.
  void hold_joining_pull(zmq::message_t route, const InMessage& m, int worker);
  // Handles one message; true when it was progress (a push or a shutdown).
  bool handle(Routed msg);
  Status reject(const zmq::message_t& route, const Rejection& why, const InMessage* m);
  Status on_push(const zmq::message_t& route, std::unique_ptr<InMessage> m);
  // Adds a part to the worker's push; false (and *why) when it does not fit
  // (another step, other tokens, a chunk it already sent, an empty part).
  bool add_part(PartialPush& push, std::unique_ptr<InMessage>& m, Rejection* why) const;
  // Hands a complete push to the optimizer as push slot `slot`, lending its
  // frames (lent_) where they are the server's.
  void add_to_round(PartialPush push, int64_t slot);
  bool pull_allowed(int64_t min_version, int worker) const;
  // Pushes of the slowest worker that has neither finished nor been removed;
  // INT64_MAX when none is left.
  int64_t slowest_live_clock() const;
  Status answer_ready_pulls();
  void start_next_async();
  Status on_pull(zmq::message_t route, const InMessage& m);
  // Sends chunks [p.sent, last) of `weights` (version `version`) to a pull.
  Status send_pull_part(PendingPull& p, const Snapshot& weights, int64_t version, const StepReport& report,
                        size_t last);
  Status answer_pull(PendingPull& p);
  // Hands the round to the update thread (here: the caller runs it).
  void start_update(bool here = false);
  void update_loop();
  // One update (update thread, or the receive thread when update_here()):
  // reduce, agree, apply, write the next snapshot; stream: tell the receive
  // loop every stream_bytes so that waiting pulls get parts early.
  void run_update(bool stream);
  // Posts to the receive loop: kUpdateDone, or the ranges done so far.
  void post(int64_t value);
  // BSP rounds of a shard no larger than stream_bytes, whose statistics
  // need no other server (GradStatsReducer::local), are updated on the
  // receive thread as the last push arrives: such an update takes less
  // time than handing it to the update thread and back.
  bool update_here() const;
  Status update_now();
  // BSP on the update thread: reduces over the round's pushes, agrees with
  // the other servers on the statistics and on whose pushes count (again,
  // over fewer, when they summed different workers), and hands the next
  // step's batches to the workers that counted.
  Result<GradStats> agree_on_round(int64_t* waited_ns);
  // This server's control flags for the step being reduced (update thread).
  StepControl local_control();
  Status finish_update();
  // Whether this server ends a step it cannot complete by keeping the last
  // one (BSP, the scheduler taken as gone, a checkpoint directory), and the
  // ending itself: a checkpoint of that step and an error that says so.
  bool keeps_last_step() const;
  Status keep_last_step(const Status& why);
  // The update has written owned chunks [0, done) of next_snapshot_.
  Status on_progress(size_t done);
  // After an update, when a checkpoint is due: a copy of this server's
  // state, written to its file (and, on server 0, the manifest after every
  // server's file) on checkpoint_thread_ while training goes on.
  void checkpoint_if_due(const StepReport& report);

  const ParamTable& table_;
  const ShardPlan& plan_;
  GradStatsReducer* reducer_;
  ShardServerOptions options_;
  ShardOptimizer opt_;
  std::unique_ptr<Router> router_;
  NoteQueue notes_;                                    // update thread, remove_workers(), reform() -> receive loop
  std::unordered_map<uint64_t, size_t> range_of_key_;  // (tensor << 32 | chunk) -> owned range index
  std::vector<Chunk> owned_chunks_;
  Rejecter rejecter_;    // reject() on the receive thread
  RankBinding senders_;  // which process speaks for each rank (receive thread)
  // By server index: the newest step another server was given a lasting
  // answer about (receive thread).
  std::vector<int64_t> told_;

  // Receive-thread state.
  int64_t version_ = 0;
  std::vector<bool> pushed_;          // per worker, this round (BSP)
  std::vector<PartialPush> partial_;  // per worker: the push arriving
  // The round's complete pushes, whose frames the optimizer reads where they
  // lie until the update has ended.
  std::vector<PartialPush> lent_;
  int shutdowns_ = 0;
  bool updating_ = false;
  std::vector<PendingPull> pending_;
  std::vector<int64_t> clocks_;     // pushes received per worker
  std::vector<bool> finished_;      // workers that sent Shutdown
  std::vector<bool> removed_;       // workers taken out of the job, and free places
  std::vector<uint64_t> process_;   // the process that speaks for each worker (0: not heard yet)
  std::vector<uint64_t> departed_;  // processes of removed workers (told so if they speak again)
  std::vector<bool> never_;         // places no worker has held yet
  struct JoiningPull {              // a pull of a worker not admitted yet
    PendingPull pull;
    uint64_t process = 0;
  };
  std::vector<JoiningPull> joining_;
  std::vector<int64_t> batches_;     // BSP: each worker's batch of step version_ (-1: none)
  std::vector<PartialPush> queued_;  // ASP/SSP pushes waiting for the update thread
  int64_t max_lead_ = 0;
  int64_t max_staleness_ = 0;
  Snapshot snapshot_;       // weights of version_, local order
  Snapshot next_snapshot_;  // the update's, written range by range
  Snapshot spare_;          // the one before, reused once ZeroMQ lets go of it
  StepReport last_;
  Status error_;
  std::atomic<int64_t> streamed_parts_{0};
  std::atomic<int64_t> received_{0};
  std::atomic<int64_t> waiting_pulls_{0};
  std::atomic<int64_t> updates_{0};
  std::atomic<int64_t> update_ns_{0};
  std::atomic<int64_t> reduce_wait_ns_{0};

  // Graceful stop: a worker's push asked for it (receive thread -> update thread).
  std::atomic<bool> stop_asked_{false};
  int64_t stopped_at_ = -1;  // receive thread
  // When the last checkpoint was written (or the server started), for
  // checkpoint_minutes; steady-clock nanoseconds.
  std::atomic<int64_t> last_checkpoint_ns_{0};
  std::atomic<int64_t> serve_started_ns_{0};  // for max_minutes
  std::atomic<bool> time_up_logged_{false};
  std::atomic<bool> checkpoint_failed_{false};  // checkpoint thread -> update thread
  std::atomic<bool> scheduler_lost_{false};     // scheduler_lost() -> receive thread
  std::atomic<bool> reform_{false};             // reform() -> receive and checkpoint threads
  std::string reform_why_;                      // guarded by removal_mu_
  std::string job_toml_;
  uint64_t seed_ = 0;
  std::thread checkpoint_thread_;

  // Update thread; mu_ guards the fields below it.
  std::thread update_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool update_requested_ = false;
  std::vector<uint8_t> round_pushed_;  // the round's complete pushes, per worker (set before the update starts)
  std::vector<int64_t> next_batches_;  // each worker's batch of step version_ + 1, once agreed
  std::vector<Joiner> next_joined_;    // workers that join at version_ + 1, once agreed
  // The data pool (update thread; read by the receive thread between updates).
  DataCursor cursor_;
  std::vector<uint8_t> last_contributors_;  // update thread: whose pushes the previous step took
  // remove_workers() -> receive thread.
  std::mutex removal_mu_;
  std::vector<int32_t> removals_;            // guarded by removal_mu_
  std::vector<uint64_t> removal_processes_;  // beside removals_ (0: any process)
  bool stop_ = false;
  Status update_status_;
  StepReport update_report_;    // final once the update is done
  StepReport progress_report_;  // the report the streamed parts carry
};

}  // namespace pst
