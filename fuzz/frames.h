// The fuzz inputs that stand for a ZeroMQ multipart: frames back to back,
// each a 4-byte little-endian length and that many bytes (a length past the
// end takes what is left). The seeds (fuzz/seeds.cc) are real messages in
// this form, so the fuzzer starts from what peers really send.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/message.h"
#include "comm/shard_plan.h"
#include "comm/socket.h"
#include "core/config.h"
#include "model/param_table.h"
#include "model/transformer.h"
#include "tests/ps/fixtures.h"

namespace pst::fuzz {

inline Frames split_frames(const uint8_t* data, size_t size, size_t max_frames = 64) {
  Frames frames;
  size_t at = 0;
  while (at + 4 <= size && frames.size() < max_frames) {
    uint32_t n = 0;
    std::memcpy(&n, data + at, 4);
    at += 4;
    const size_t take = std::min<size_t>(n, size - at);
    frames.emplace_back(data + at, take);
    at += take;
  }
  if (frames.empty()) frames.emplace_back(data, size);
  return frames;
}

inline std::string join_frames(const Frames& frames) {
  std::string out;
  for (const zmq::message_t& f : frames) {
    const uint32_t n = static_cast<uint32_t>(f.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out.append(static_cast<const char*>(f.data()), f.size());
  }
  return out;
}

// Sends one input through `dealer` to a live server or scheduler and waits
// until handled() has moved past its value before the send, or stopped()
// says the receiver has returned; 10 s without either is a hang (a trap,
// which libFuzzer reports with the input). Then drains the answers so the
// Dealer's queue never fills.
template <typename Handled, typename Stopped>
void deliver(Dealer& dealer, Frames frames, Handled handled, Stopped stopped) {
  const int64_t before = handled();
  if (!dealer.send(std::move(frames), Deadline::after(10)).ok()) __builtin_trap();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (handled() == before && !stopped()) {
    if (std::chrono::steady_clock::now() > give_up) __builtin_trap();
    std::this_thread::yield();
  }
  while (dealer.receive(Deadline::after(0), "answers").ok()) {
  }
}

// The small job every target serves (the server suites' tiny model): a
// 1-server, 2-worker layout cut into chunks of 256 bytes.
inline JobConfig fuzz_job() {
  JobConfig job = testing::tiny_job();
  job.train.steps = 1000000;
  return job;
}
constexpr uint64_t kFuzzJob = 0x5eed;
constexpr int64_t kFuzzChunkBytes = 256;

}  // namespace pst::fuzz
