// A hostile peer for tests/integration/attack_test.sh: it connects to a live
// job's scheduler and servers and, for a bounded time, sends what an
// outsider or a stale process holding the job's keys could send: random
// bytes, truncated and damaged headers, other job ids, messages in the name
// of other ranks (pushes with huge gradients, pulls, shutdowns, gradient
// statistics, barriers), late registrations, and a flood it never reads the
// answers to. It prints what it sent and what it got back, one line per
// kind, so the test can say what reached the job.
//
// Usage: attacker --job-id HEX --seconds S [--key-file F --mode secret|curve]
//                 ENDPOINT...  (the scheduler's first, then the servers')
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "comm/message.h"
#include "comm/security.h"
#include "comm/socket.h"

namespace {

using namespace pst;

struct Tally {
  int64_t sent = 0, answers = 0, errors = 0, leaked_job_id = 0;
};

// One raw DEALER with a routing id of its own (another process, for the
// receivers), with the job's keys when given.
zmq::socket_t raw_dealer(zmq::context_t& ctx, const std::string& endpoint, const std::optional<SocketSecurity>& sec,
                         std::mt19937_64& rng) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, 100000);
  std::string id(20, '\0');
  for (char& c : id) c = static_cast<char>(rng() & 0xff);
  id[0] = 'x';
  s.set(zmq::sockopt::routing_id, id);
  if (sec && sec->mode == SecurityMode::kSecret) {
    s.set(zmq::sockopt::plain_username, "pst");
    s.set(zmq::sockopt::plain_password, sec->keys.secret);
  } else if (sec) {
    s.set(zmq::sockopt::curve_serverkey, sec->keys.public_key);
    s.set(zmq::sockopt::curve_publickey, sec->keys.public_key);
    s.set(zmq::sockopt::curve_secretkey, sec->keys.secret_key);
  }
  s.connect(endpoint);
  return s;
}

void send(zmq::socket_t& s, Frames frames, Tally& t) {
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto flags =
        (i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none) | zmq::send_flags::dontwait;
    try {
      if (!s.send(frames[i], flags)) return;
    } catch (const zmq::error_t&) {
      return;
    }
  }
  ++t.sent;
}

// Reads what came back; counts Error replies and those that carry a job id
// the attacker did not send (the job's, learnt from a reply).
void drain(zmq::socket_t& s, uint64_t job_id, Tally& t) {
  while (true) {
    Frames frames;
    try {
      if (!zmq::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
    } catch (const zmq::error_t&) {
      return;
    }
    ++t.answers;
    Rejection why;
    auto m = InMessage::parse(std::move(frames), &why);
    if (!m) continue;
    if (m->header().getKind() == wire::Kind::ERROR) ++t.errors;
    const uint64_t id = m->header().getJobId();
    if (id != 0 && id != job_id && id != (job_id ^ 1)) ++t.leaked_job_id;
  }
}

Frames random_frames(std::mt19937_64& rng) {
  Frames f;
  const int n = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < n; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
    f.emplace_back(bytes.data(), bytes.size());
  }
  return f;
}

// A real message of the job with some of its bytes changed or cut.
Frames damaged(Frames good, std::mt19937_64& rng) {
  std::string h(static_cast<const char*>(good[0].data()), good[0].size());
  if (rng() % 2 && h.size() > 8) {
    h.resize(h.size() - 1 - rng() % (h.size() / 2));
  } else {
    for (int i = 0; i < 4; ++i) h[rng() % h.size()] = static_cast<char>(rng() & 0xff);
  }
  good[0] = zmq::message_t(h.data(), h.size());
  if (good.size() > 1 && rng() % 2) good.pop_back();  // a data frame short
  return good;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t job_id = 0;
  double seconds = 5;
  std::string key_file;
  SecurityMode mode = SecurityMode::kSecret;
  std::vector<std::string> endpoints;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--job-id" && i + 1 < argc) {
      job_id = std::stoull(argv[++i], nullptr, 16);
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = std::stod(argv[++i]);
    } else if (a == "--key-file" && i + 1 < argc) {
      key_file = argv[++i];
    } else if (a == "--mode" && i + 1 < argc) {
      mode = std::string(argv[++i]) == "curve" ? SecurityMode::kCurve : SecurityMode::kSecret;
    } else {
      endpoints.push_back(a);
    }
  }
  if (endpoints.empty()) {
    std::fprintf(stderr, "usage: attacker --job-id HEX --seconds S [--key-file F --mode M] SCHEDULER SERVER...\n");
    return 2;
  }
  std::optional<SocketSecurity> sec;
  if (!key_file.empty()) {
    auto keys = read_job_keys(key_file, mode);
    if (!keys.ok()) {
      std::fprintf(stderr, "%s\n", keys.status().to_string().c_str());
      return 2;
    }
    sec = SocketSecurity{mode, *keys};
  }
  std::mt19937_64 rng(42);
  // The gradients of the forged pushes travel without copies: they must
  // outlive the context, whose I/O threads may still be sending them.
  const std::vector<float> huge(1 << 16, 1e6f);
  zmq::context_t ctx;
  std::vector<zmq::socket_t> peers;
  for (const std::string& e : endpoints) peers.push_back(raw_dealer(ctx, e, sec, rng));
  // The flooder: one socket per server that never reads (its receive queue
  // holds one message).
  std::vector<zmq::socket_t> flooders;
  for (size_t k = 1; k < endpoints.size(); ++k) {
    flooders.push_back(raw_dealer(ctx, endpoints[k], sec, rng));
    flooders.back().set(zmq::sockopt::rcvhwm, 1);
  }
  Tally random_t, damaged_t, other_job_t, spoofed_t, late_t, flood_t;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int64_t round = 0;
  while (std::chrono::steady_clock::now() < end) {
    ++round;
    for (size_t p = 0; p < peers.size(); ++p) {
      zmq::socket_t& s = peers[p];
      const bool scheduler = p == 0;
      send(s, random_frames(rng), random_t);
      // In the name of ranks 0..7 (the job's and beyond), each kind a
      // receiver takes.
      const int32_t rank = static_cast<int32_t>(rng() % 8);
      const int64_t step = static_cast<int64_t>(rng() % 1000);
      {
        OutMessage m(wire::Kind::PUSH, job_id, rank, step, rng());
        m.header().initPush().setTokens(100);
        m.add_chunk({0, 0}, huge.data(), 1 + static_cast<int64_t>(rng() % 64), nullptr);
        send(s, damaged(m.finish(), rng), damaged_t);
      }
      {
        OutMessage m(wire::Kind::PUSH, job_id, rank, step, rng());
        m.header().initPush().setTokens(100);
        m.add_chunk({0, 0}, huge.data(), 64, nullptr);
        send(s, m.finish(), spoofed_t);
      }
      for (wire::Kind k : {wire::Kind::PULL, wire::Kind::SHUTDOWN, wire::Kind::BARRIER, wire::Kind::HEARTBEAT}) {
        OutMessage m(k, job_id, rank, step, rng());
        send(s, m.finish(), spoofed_t);
      }
      {
        OutMessage m(wire::Kind::REPORT, job_id, rank, step, rng());
        auto st = m.header().initStats();
        st.setSumSquares(1e30);
        st.setStop(true);
        st.setCheckpoint(true);
        send(s, m.finish(), spoofed_t);
      }
      {
        OutMessage m(wire::Kind::SHUTDOWN, job_id ^ 1, rank, step, rng());
        send(s, m.finish(), other_job_t);
      }
      if (scheduler) {
        OutMessage m(wire::Kind::REGISTER, job_id, -1, 0, rng());
        auto n = m.header().initNode();
        n.setRole(rng() % 2 ? wire::Role::SERVER : wire::Role::WORKER);
        n.setEndpoint("tcp://127.0.0.1:1");
        n.setHost("intruder");
        send(s, m.finish(), late_t);
      }
      drain(s, job_id, random_t);
    }
    for (zmq::socket_t& f : flooders)
      for (int i = 0; i < 200; ++i) {
        Frames junk;
        junk.emplace_back("junk", 4);
        send(f, std::move(junk), flood_t);
      }
  }
  auto line = [](const char* what, const Tally& t) {
    std::printf("attacker: %-10s sent %lld\n", what, static_cast<long long>(t.sent));
  };
  line("random", random_t);
  line("damaged", damaged_t);
  line("other-job", other_job_t);
  line("spoofed", spoofed_t);
  line("late", late_t);
  line("flood", flood_t);
  std::printf("attacker: rounds %lld answers %lld errors %lld replies-with-another-job-id %lld\n",
              static_cast<long long>(round), static_cast<long long>(random_t.answers),
              static_cast<long long>(random_t.errors), static_cast<long long>(random_t.leaked_job_id));
  return 0;
}
