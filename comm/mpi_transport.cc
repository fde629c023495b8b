#include "comm/mpi_transport.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace pst {
namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<size_t>(std::max(length, 0)));
}

// Waits between polls: yields for a while after the last progress, then
// sleeps growing to 200 us, so a waiting process answers within
// microseconds while traffic flows and leaves the cores to computing
// processes when it does not. While its own sends are under way (`hurry`)
// a process yields for 50 ms: a large message moves in fragments (Open MPI's
// shared memory copies 32 KiB at a time) only as fast as both sides call MPI.
class Backoff {
 public:
  void reset() {
    since_ = std::chrono::steady_clock::now();
    sleeps_ = 0;
  }
  void wait(bool hurry = false) {
    const auto idle = std::chrono::steady_clock::now() - since_;
    if (idle < (hurry ? std::chrono::microseconds(50000) : std::chrono::microseconds(200))) {
      std::this_thread::yield();
      return;
    }
    sleeps_ = std::min(sleeps_ + 1, 20);
    std::this_thread::sleep_for(std::chrono::microseconds(10 * sleeps_));
  }

 private:
  std::chrono::steady_clock::time_point since_ = std::chrono::steady_clock::now();
  int sleeps_ = 0;
};

// Its size in bytes of a message MPI_Improbe matched.
int matched_bytes(const MPI_Status& status) {
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  return std::max(count, 0);
}

// Takes a matched message off the line and drops it. (A truncating receive
// would not need the buffer, but Open MPI 4.1 crashes on one of a large
// message; the sender is a rank of the job, so its frames are as large as
// its memory allows at most.)
void discard(MPI_Message* message, const MPI_Status& status) {
  const int count = matched_bytes(status);
  std::vector<char> scratch(static_cast<size_t>(std::max(count, 1)));
  MPI_Mrecv(scratch.data(), count, MPI_BYTE, message, MPI_STATUS_IGNORE);
}

}  // namespace

Status MpiSends::post(MPI_Comm comm, int rank, const std::string& to) {
  requests.assign(frames.size(), MPI_REQUEST_NULL);
  for (size_t i = 0; i < frames.size(); ++i) {
    const int tag = i + 1 == frames.size() ? kLastFrame : kMoreFrames;
    const int rc =
        MPI_Isend(frames[i].data(), static_cast<int>(frames[i].size()), MPI_BYTE, rank, tag, comm, &requests[i]);
    if (rc != MPI_SUCCESS) return io_error("send to {} over MPI: {}", to, mpi_error_text(rc));
  }
  return Status();
}

bool MpiSends::done() {
  int all = 0;
  MPI_Testall(static_cast<int>(requests.size()), requests.data(), &all, MPI_STATUSES_IGNORE);
  return all != 0;
}

Result<zmq::message_t> receive_matched_frame(MPI_Message* message, const MPI_Status& status, int64_t max_bytes) {
  const int count = matched_bytes(status);
  if (max_bytes > 0 && count > max_bytes) {
    discard(message, status);
    return data_loss("a frame of {} bytes over MPI from rank {}, over the limit of {}", count, status.MPI_SOURCE,
                     max_bytes);
  }
  zmq::message_t frame(static_cast<size_t>(count));
  const int rc = MPI_Mrecv(frame.data(), count, MPI_BYTE, message, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS) return io_error("receive from rank {} over MPI: {}", status.MPI_SOURCE, mpi_error_text(rc));
  return frame;
}

MpiChannel::MpiChannel(MPI_Comm comm, int peer_rank, std::string peer, int64_t max_frame_bytes)
    : comm_(comm), rank_(peer_rank), peer_(std::move(peer)), max_frame_bytes_(max_frame_bytes) {}

MpiChannel::~MpiChannel() {
  // MPI may still read a stranded send's buffers: keep them if it does.
  for (MpiSends& s : stranded_)
    if (!s.done()) (void)new Frames(std::move(s.frames));
}

void MpiChannel::close() { closed_ = true; }

Status MpiChannel::send(Frames frames, Deadline deadline) {
  if (closed_) return failed_precondition("send to {}: its channel is closed", peer_);
  if (interrupt_ && interrupt_->raised()) return interrupt_->why();
  std::erase_if(stranded_, [](MpiSends& s) { return s.done(); });
  MpiSends sends{std::move(frames), {}};
  Status posted = sends.post(comm_, rank_, peer_);
  Backoff backoff;
  while (posted.ok()) {
    if (sends.done()) return Status();
    if (interrupt_ && interrupt_->raised()) {
      posted = interrupt_->why();
    } else if (deadline.expired()) {
      posted = deadline_exceeded("send to {}: not taken before the deadline (the peer is not reading)", peer_);
    } else {
      backoff.wait(/*hurry=*/true);
    }
  }
  stranded_.push_back(std::move(sends));
  return posted;
}

Result<Frames> MpiChannel::receive(Deadline deadline, const std::string& waiting_for) {
  Frames frames;
  Status bad;
  Backoff backoff;
  while (true) {
    int found = 0;
    MPI_Message message;
    MPI_Status status;
    const int rc = MPI_Improbe(rank_, MPI_ANY_TAG, comm_, &found, &message, &status);
    if (rc != MPI_SUCCESS) return io_error("receive from {} over MPI: {}", peer_, mpi_error_text(rc));
    if (found) {
      auto frame = receive_matched_frame(&message, status, max_frame_bytes_);
      if (!frame.ok()) {
        if (bad.ok()) bad = frame.status().with_context(peer_);
      } else {
        frames.push_back(std::move(*frame));
      }
      if (status.MPI_TAG == kLastFrame) {
        if (!bad.ok()) return bad;
        return frames;
      }
      backoff.reset();
      continue;
    }
    if (interrupt_ && interrupt_->raised()) return interrupt_->why();
    if (deadline.expired())
      return deadline_exceeded("no message from {} before the deadline, waiting for {}", peer_, waiting_for);
    backoff.wait();
  }
}

Result<std::unique_ptr<MpiGateway>> MpiGateway::start(zmq::context_t& context, Router& router, MPI_Comm comm,
                                                      std::vector<int> worker_ranks, int64_t max_frame_bytes,
                                                      std::string name, int64_t max_queued_bytes) {
  static std::atomic<int> gateways{0};
  const std::string endpoint = fmt::format("inproc://pst-mpi-gateway-{}", gateways++);
  PST_RETURN_IF_ERROR(router.bind_also(endpoint));
  std::unique_ptr<MpiGateway> g(new MpiGateway(comm, max_frame_bytes, std::move(name), max_queued_bytes));
  for (int rank : worker_ranks) {
    Peer p;
    p.rank = rank;
    p.dealer = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    try {
      p.dealer->set(zmq::sockopt::linger, 0);
      // No high-water mark towards the Router: what MPI delivered is queued,
      // never dropped; the workers' protocol bounds it (a worker sends one
      // push and one pull, then waits for their answers). The other way the
      // usual one, so that the Router's send to a worker that does not read
      // fails at its deadline.
      p.dealer->set(zmq::sockopt::sndhwm, 0);
      // The Router tells the workers apart by this route (and binds each
      // worker rank to it, comm/rejecter.h).
      p.dealer->set(zmq::sockopt::routing_id, fmt::format("mpi rank {}", rank));
      p.dealer->connect(endpoint);
    } catch (const zmq::error_t& e) {
      return io_error("{}: connect the MPI gateway to {}: {}", g->name_, endpoint, e.what());
    }
    g->peers_.push_back(std::move(p));
  }
  MpiGateway* raw = g.get();
  g->thread_ = std::thread([raw] { raw->run(); });
  return g;
}

MpiGateway::~MpiGateway() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

MpiGateway::Peer* MpiGateway::peer_of(int rank) {
  for (Peer& p : peers_)
    if (p.rank == rank) return &p;
  return nullptr;
}

void MpiGateway::run() {
  Backoff backoff;
  while (!stop_) {
    if (pass()) {
      backoff.reset();
    } else {
      backoff.wait(/*hurry=*/sending());
    }
  }
  // The Router's last answers (to the workers' shutdowns) still go out.
  const Deadline drain = Deadline::after(10);
  while (!drain.expired()) {
    const bool moved = pass();
    if (!sending() && !moved) break;
    if (!moved) backoff.wait(/*hurry=*/true);
  }
}

bool MpiGateway::sending() const {
  return std::any_of(peers_.begin(), peers_.end(), [](const Peer& p) { return !p.sending.empty(); });
}

bool MpiGateway::pass() {
  bool moved = take_from_workers();
  for (Peer& p : peers_) {
    moved = take_from_router(p) || moved;
    moved = progress(p) || moved;
  }
  return moved;
}

bool MpiGateway::take_from_workers() {
  bool moved = false;
  for (int n = 0; n < 256; ++n) {
    int found = 0;
    MPI_Message message;
    MPI_Status status;
    if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &found, &message, &status) != MPI_SUCCESS || !found) break;
    moved = true;
    const bool last = status.MPI_TAG == kLastFrame;
    Peer* p = peer_of(status.MPI_SOURCE);
    if (p == nullptr) {
      discard(&message, status);
      if (last && ++dropped_ <= 10)
        spdlog::warn("{}: dropped a message over MPI from rank {}, which is no worker of the job", name_,
                     status.MPI_SOURCE);
      continue;
    }
    auto frame = receive_matched_frame(&message, status, max_frame_bytes_);
    if (frame.ok()) {
      p->partial.push_back(std::move(*frame));
    } else {
      p->oversize = true;
    }
    if (!last) continue;
    Frames frames = std::move(p->partial);
    p->partial.clear();
    if (std::exchange(p->oversize, false)) {
      const int64_t d = ++dropped_;
      if (d <= 10 || d % 1000 == 0)
        spdlog::warn("{}: dropped a message of rank {} with a frame over {} bytes ({} dropped)", name_, p->rank,
                     max_frame_bytes_, d);
      continue;
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      const auto flags = i + 1 == frames.size() ? zmq::send_flags::none : zmq::send_flags::sndmore;
      (void)p->dealer->send(frames[i], flags);  // no high-water mark: never refused
    }
  }
  return moved;
}

bool MpiGateway::take_from_router(Peer& p) {
  bool moved = false;
  while (p.queued_bytes < max_queued_bytes_) {
    Peer::Sending s;
    zmq::message_t part;
    if (!p.dealer->recv(part, zmq::recv_flags::dontwait)) break;
    bool more = part.more();
    s.frames.push_back(std::move(part));
    while (more) {  // the rest of a multipart message is there already
      zmq::message_t next;
      (void)p.dealer->recv(next, zmq::recv_flags::none);
      more = next.more();
      s.frames.push_back(std::move(next));
    }
    for (const zmq::message_t& f : s.frames) s.bytes += static_cast<int64_t>(f.size());
    const Status posted = s.post(comm_, p.rank, fmt::format("rank {}", p.rank));
    if (!posted.ok()) spdlog::warn("{}: {}", name_, posted.message());
    p.queued_bytes += s.bytes;
    p.sending.push_back(std::move(s));
    moved = true;
  }
  return moved;
}

bool MpiGateway::progress(Peer& p) {
  bool moved = false;
  while (!p.sending.empty() && p.sending.front().done()) {
    p.queued_bytes -= p.sending.front().bytes;
    p.sending.pop_front();
    moved = true;
  }
  return moved;
}

}  // namespace pst
