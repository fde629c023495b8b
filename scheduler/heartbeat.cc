#include "scheduler/heartbeat.h"

#include <algorithm>

#include <kj/exception.h>
#include <spdlog/spdlog.h>

#include "comm/message.h"
#include "comm/socket.h"

namespace pst {

Heartbeat::Heartbeat(zmq::context_t& context, const std::string& scheduler_endpoint, uint64_t job_id, int32_t rank,
                     double interval_s, OnMembership on_membership, double lost_after_s, OnLost on_lost,
                     OnReform on_reform)
    : context_(context),
      endpoint_(scheduler_endpoint),
      job_id_(job_id),
      rank_(rank),
      interval_s_(interval_s),
      on_membership_(std::move(on_membership)),
      lost_after_s_(lost_after_s),
      on_lost_(std::move(on_lost)),
      on_reform_(std::move(on_reform)) {
  if (!endpoint_.empty()) thread_ = std::thread([this] { run(); });
}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Heartbeat::watch() {
  std::lock_guard<std::mutex> lock(mu_);
  if (watched_ == std::chrono::steady_clock::time_point::min()) watched_ = std::chrono::steady_clock::now();
}

void Heartbeat::finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Heartbeat::run() {
  auto dealer = Dealer::connect(context_, endpoint_, "the scheduler (" + endpoint_ + ")");
  if (!dealer.ok()) {
    spdlog::error("heartbeat: {}", dealer.status().message());
    return;
  }
  // The final Shutdown may still be queued when the socket closes: let it out.
  (*dealer)->socket().set(zmq::sockopt::linger, 2000);
  uint64_t request = 1;
  heard_ = std::chrono::steady_clock::time_point::min();  // nothing yet
  bool lost = false;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    const bool stopping = stop_, finished = finished_;
    lock.unlock();
    OutMessage m(stopping && finished ? wire::Kind::SHUTDOWN : wire::Kind::HEARTBEAT, job_id_, rank_, 0, request++);
    if (!stopping || finished) {
      const Status s = (*dealer)->send(m.finish(), Deadline::after(interval_s_));
      if (!s.ok()) spdlog::warn("heartbeat: {}", s.message());
    }
    if (stopping) return;
    // Until the next beat: what the scheduler says, in slices short enough
    // that finish() is not kept waiting.
    const Deadline beat = Deadline::after(interval_s_);
    lock.lock();
    while (!stop_ && !beat.expired()) {
      const auto watched = watched_;
      lock.unlock();
      zmq::pollitem_t item{(*dealer)->socket().handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(std::min<int64_t>(50, beat.remaining_ms())));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
      if (item.revents & ZMQ_POLLIN) read_messages(**dealer);
      // Counted from the last acknowledgement or the watch's start: before
      // its watch begins (an mpirun job's scheduler waits for every rank at
      // MPI's barrier) the scheduler answers nothing.
      const auto since = std::max(heard_, watched);
      const bool counting = since != std::chrono::steady_clock::time_point::min();
      const double silent =
          counting ? std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count() : 0.0;
      // (A job that re-forms answers no more beats on this line.)
      if (!lost && !reformed_ && lost_after_s_ > 0 && silent > lost_after_s_) {
        lost = true;
        spdlog::error("heartbeat: the scheduler ({}) has acknowledged no heartbeat for {:.1f} s; it is taken as gone",
                      endpoint_, silent);
        if (on_lost_) on_lost_(silent);
      }
      lock.lock();
    }
  }
}

void Heartbeat::read_messages(Dealer& dealer) {
  zmq::message_t part;
  while (true) {
    Frames frames;
    bool more = true;
    while (more) {
      if (!dealer.socket().recv(part, zmq::recv_flags::dontwait)) return;
      more = part.more();
      frames.push_back(std::move(part));
    }
    Rejection why;
    auto m = InMessage::parse(std::move(frames), &why);
    if (!m) {
      spdlog::warn("heartbeat: an unreadable message from the scheduler: {}", why.message);
      continue;
    }
    try {
      const auto h = m->header();
      if (h.getJobId() != job_id_ || h.getSender() != 0) continue;
      heard_ = std::chrono::steady_clock::now();
      if (h.getKind() == wire::Kind::ERROR && h.which() == wire::Header::ERROR &&
          h.getError().getCode() == wire::ErrorCode::REFORM) {
        if (!reformed_ && on_reform_) on_reform_(h.getError().getMessage().cStr());
        reformed_ = true;
      } else if (h.getKind() == wire::Kind::ERROR) {
        spdlog::warn("heartbeat: the scheduler says: {}", h.getError().getMessage().cStr());
      } else if (h.getKind() == wire::Kind::MEMBERSHIP && h.which() == wire::Header::DEPARTED && on_membership_) {
        std::vector<int32_t> removed;
        std::vector<uint64_t> processes;
        for (int32_t r : h.getDeparted()) removed.push_back(r);
        for (uint64_t p : h.getDepartedProcesses()) processes.push_back(p);
        processes.resize(removed.size(), 0);
        on_membership_(removed, processes);
      }
    } catch (const kj::Exception& e) {
      spdlog::warn("heartbeat: a message from the scheduler that cannot be read: {}", e.getDescription().cStr());
    }
  }
}

}  // namespace pst
