// Pushes and pulls over MPI point-to-point messages (cluster.transport =
// mpi): for jobs that mpirun or srun launched on a cluster whose fast fabric
// (shared memory within a host, InfiniBand or Slingshot through UCX) MPI
// reaches and TCP sockets do not.
//
// The protocol is unchanged: the same multipart messages (a Cap'n Proto
// header and raw tensor frames), checked by the same code. Each frame is one
// MPI message on the transport's communicator, tagged kMoreFrames or
// kLastFrame; MPI keeps the messages of one sender in order, so a receiver
// takes frames from a sender until its last one. Frames go out and come in
// without a copy (MPI reads and writes the ZeroMQ messages' buffers).
//
// A worker reaches each server through an MpiChannel. A server keeps its
// Router and its loop: an MpiGateway thread hands every worker's messages to
// the Router over inproc, through one Dealer per worker rank (so the Router
// tells the workers apart by route, as over TCP), and sends the Router's
// answers back with MPI. A worker that stops reading holds up only its own
// answers: past a bound (256 MiB) the gateway stops taking that worker's
// answers from the Router, whose send to it then fails at its deadline.
//
// Deadlines hold as over ZeroMQ: waits poll MPI (MPI_Improbe, MPI_Testall),
// yielding while traffic flows and sleeping once it does not, so waiting
// processes leave the cores to those that compute. Needs
// MPI_THREAD_MULTIPLE (the gateway and a server's reduction call MPI from
// two threads).
#pragma once

#include <mpi.h>

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/socket.h"

namespace pst {

constexpr int kMoreFrames = 1;
constexpr int kLastFrame = 2;

// Receives one frame that MPI_Improbe matched. A frame larger than max_bytes
// (> 0) is taken off the line, dropped and reported as an error.
Result<zmq::message_t> receive_matched_frame(MPI_Message* message, const MPI_Status& status, int64_t max_bytes);

// A message's frames in MPI's hands: one MPI_Isend each, the last tagged
// kLastFrame. The frames live as long as MPI may read them.
struct MpiSends {
  Frames frames;
  std::vector<MPI_Request> requests;
  Status post(MPI_Comm comm, int rank, const std::string& to);
  bool done();  // MPI_Testall: every frame has left
};

class MpiChannel final : public Channel {
 public:
  // peer_rank: the other side's rank in comm; peer: how errors name it.
  MpiChannel(MPI_Comm comm, int peer_rank, std::string peer, int64_t max_frame_bytes);
  ~MpiChannel() override;

  const std::string& peer() const override { return peer_; }
  Status send(Frames frames, Deadline deadline) override;
  Result<Frames> receive(Deadline deadline, const std::string& waiting_for) override;
  void watch(const Interrupt* interrupt) override { interrupt_ = interrupt; }
  void close() override;

 private:
  MPI_Comm comm_;
  int rank_;
  std::string peer_;
  int64_t max_frame_bytes_;
  const Interrupt* interrupt_ = nullptr;
  bool closed_ = false;
  // Sends that missed their deadline: MPI may still read their buffers, so
  // they live until they complete (or the process ends).
  std::vector<MpiSends> stranded_;
};

class MpiGateway {
 public:
  static constexpr int64_t kMaxQueuedBytes = int64_t{256} << 20;

  // Bridges the workers at `worker_ranks` of comm to `router`, which it
  // makes listen at an inproc endpoint of `context` too. Past
  // max_queued_bytes of a worker's answers in MPI's hands, it takes no more
  // of that worker's answers from the Router.
  static Result<std::unique_ptr<MpiGateway>> start(zmq::context_t& context, Router& router, MPI_Comm comm,
                                                   std::vector<int> worker_ranks, int64_t max_frame_bytes,
                                                   std::string name, int64_t max_queued_bytes = kMaxQueuedBytes);
  // Hands over what the Router still answered (up to 10 s), then stops.
  ~MpiGateway();
  MpiGateway(const MpiGateway&) = delete;
  MpiGateway& operator=(const MpiGateway&) = delete;

  // Messages dropped: frames over the size limit, or from ranks that are no
  // workers of the job.
  int64_t dropped() const { return dropped_.load(); }

 private:
  struct Peer {
    int rank = 0;
    std::unique_ptr<zmq::socket_t> dealer;
    Frames partial;         // frames of a message still arriving
    bool oversize = false;  // one of them was over the limit: the message is dropped
    struct Sending : MpiSends {
      int64_t bytes = 0;
    };
    std::deque<Sending> sending;
    int64_t queued_bytes = 0;
  };
  MpiGateway(MPI_Comm comm, int64_t max_frame_bytes, std::string name, int64_t max_queued_bytes)
      : comm_(comm), max_frame_bytes_(max_frame_bytes), max_queued_bytes_(max_queued_bytes), name_(std::move(name)) {}
  void run();
  // One pass: MPI messages to the Router, the Router's answers to MPI, and
  // progress of sends. True when anything moved.
  bool pass();
  bool take_from_workers();
  bool take_from_router(Peer& p);
  bool progress(Peer& p);
  bool sending() const;  // some answer is still under way
  Peer* peer_of(int rank);

  MPI_Comm comm_;
  int64_t max_frame_bytes_;
  int64_t max_queued_bytes_;
  std::string name_;
  std::vector<Peer> peers_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace pst
