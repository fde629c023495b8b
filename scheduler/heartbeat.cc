#include "scheduler/heartbeat.h"

#include <spdlog/spdlog.h>

#include "comm/socket.h"

namespace pst {

Heartbeat::Heartbeat(zmq::context_t& context, const std::string& scheduler_endpoint, uint64_t job_id, int32_t rank,
                     double interval_s)
    : context_(context), endpoint_(scheduler_endpoint), job_id_(job_id), rank_(rank), interval_s_(interval_s) {
  if (!endpoint_.empty()) thread_ = std::thread([this] { run(); });
}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Heartbeat::finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    stop_ = true;
  }
  cv_.notify_all();
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
    lock.lock();
    cv_.wait_for(lock, std::chrono::duration<double>(interval_s_), [&] { return stop_; });
  }
}

}  // namespace pst
