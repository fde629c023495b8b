// Job security over real TCP sockets on loopback (comm/security.h): with
// mode curve a Dealer with the job's key pair reaches the Router and the
// bytes on the wire (seen by a recording TCP relay between them) do not
// contain the payload, which they do in the other modes; with mode secret a
// Dealer that proves the job's secret gets in. A Dealer with another secret,
// another key pair, another mechanism or none is refused by the ZAP handler
// and nothing reaches the Router. Every Dealer of a process names the same
// identity. Key files round-trip, and damaged ones get errors that name the
// line. cluster.host resolution: addresses, names, auto with an interface.
#include "comm/security.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "comm/socket.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 5;
const std::string kSecretText = "the-plain-text-that-must-not-be-on-the-wire";

// A TCP relay on 127.0.0.1 to `target_port` that records what the client sends.
class Relay {
 public:
  explicit Relay(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  std::string seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return seen_;
  }

 private:
  void run() {
    pollfd l{listen_fd_, POLLIN, 0};
    while (!stop_ && ::poll(&l, 1, 50) <= 0) {
    }
    if (stop_) return;
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    const int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) stop_ = true;
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
        const ssize_t n = ::recv(p[i].fd, buf, sizeof(buf), 0);
        if (n <= 0) {
          stop_ = true;
          break;
        }
        if (i == 0) {
          std::lock_guard<std::mutex> lock(mutex_);
          seen_.append(buf, static_cast<size_t>(n));
        }
        (void)::send(i == 0 ? server : client, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
      }
    }
    ::close(client);
    ::close(server);
  }

  int target_port_, port_ = 0, listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::string seen_;
  std::thread thread_;
};

int port_of(const std::string& endpoint) { return std::stoi(endpoint.substr(endpoint.rfind(':') + 1)); }

// A Report message carrying `text` as its error message, sent through a
// Dealer on `ctx` to `endpoint`; true if the Router got it within `seconds`.
bool send_through(zmq::context_t& ctx, const std::string& endpoint, Router& router, double seconds) {
  auto dealer = Dealer::connect(ctx, endpoint, "the router");
  EXPECT_TRUE(dealer.ok()) << dealer.status().to_string();
  OutMessage m(wire::Kind::ERROR, kJob, 1, 0, 1);
  m.header().initError().setMessage(kSecretText);
  EXPECT_TRUE((*dealer)->send(m.finish(), Deadline::after(seconds)).ok());
  auto got = router.receive(Deadline::after(seconds), "the message");
  if (!got.ok()) return false;
  Rejection why;
  auto in = InMessage::parse(std::move(got->frames), &why);
  return in && in->header().getError().getMessage().cStr() == kSecretText;
}

// What a message sent through a Dealer with `mode` puts on the wire (the
// relay's record); the ZAP handler admitted that one connection.
std::string wire_of_one_message(SecurityMode mode) {
  auto keys = make_job_keys();
  EXPECT_TRUE(keys.ok()) << keys.status().to_string();
  zmq::context_t ctx;
  auto security = JobSecurity::enable(ctx, mode, *keys);
  EXPECT_TRUE(security.ok()) << security.status().to_string();
  auto router = Router::bind(ctx, "tcp://127.0.0.1:0");
  EXPECT_TRUE(router.ok());
  Relay relay(port_of((*router)->endpoint()));
  EXPECT_TRUE(send_through(ctx, relay.endpoint(), **router, 20));
  if (*security) {
    EXPECT_EQ((*security)->admitted(), 1u);
    EXPECT_EQ((*security)->refused(), 0u);
  }
  return relay.seen();
}

TEST(CurveTest, TheJobsKeyPairGetsThroughEncrypted) {
  const std::string wire = wire_of_one_message(SecurityMode::kCurve);
  EXPECT_GT(wire.size(), kSecretText.size());
  EXPECT_EQ(wire.find(kSecretText), std::string::npos) << "the payload is on the wire in plain text";
  EXPECT_NE(wire.find("CURVE"), std::string::npos) << "the greeting names the mechanism";
}

TEST(CurveTest, WithoutCurveThePayloadIsPlainOnTheWire) {
  // The control for the test above: the relay does see plain payloads.
  EXPECT_NE(wire_of_one_message(SecurityMode::kNone).find(kSecretText), std::string::npos);
}

// Sends one message through a raw socket that `configure` sets up; true if
// the Router got anything within `seconds`.
template <typename Configure>
bool raw_gets_through(Router& router, Configure configure, double seconds) {
  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  configure(dealer);
  dealer.connect(router.endpoint());
  OutMessage m(wire::Kind::ERROR, kJob, 1, 0, 1);
  m.header().initError().setMessage(kSecretText);
  Frames frames = m.finish();
  for (size_t i = 0; i < frames.size(); ++i)
    (void)dealer.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                                       : zmq::send_flags::dontwait);
  return router.receive(Deadline::after(seconds), "nothing").ok();
}

TEST(CurveTest, AnotherKeyPairOrNoCurveIsRefused) {
  auto keys = make_job_keys();
  auto other = make_job_keys();
  ASSERT_TRUE(keys.ok() && other.ok());
  zmq::context_t server_ctx;
  auto security = JobSecurity::enable(server_ctx, SecurityMode::kCurve, *keys);
  ASSERT_TRUE(security.ok());
  auto router = Router::bind(server_ctx, "tcp://127.0.0.1:0");
  ASSERT_TRUE(router.ok());
  // A client that knows the job's public key (which is no secret) but holds
  // another key pair: the handshake gets as far as ZAP, which refuses it.
  EXPECT_FALSE(raw_gets_through(
      **router,
      [&](zmq::socket_t& d) {
        d.set(zmq::sockopt::curve_serverkey, keys->public_key);
        d.set(zmq::sockopt::curve_publickey, other->public_key);
        d.set(zmq::sockopt::curve_secretkey, other->secret_key);
      },
      2));
  EXPECT_EQ((*security)->admitted(), 0u);
  EXPECT_GE((*security)->refused(), 1u);
  {
    // No CURVE at all: the handshake fails, nothing arrives.
    zmq::context_t plain;
    EXPECT_FALSE(send_through(plain, (*router)->endpoint(), **router, 2));
  }
  EXPECT_EQ((*security)->admitted(), 0u);
  // The job's own key pair still gets in.
  EXPECT_TRUE(send_through(server_ctx, (*router)->endpoint(), **router, 20));
  EXPECT_EQ((*security)->admitted(), 1u);
}

TEST(SecretTest, TheJobsSecretGetsInButIsNotEncryption) {
  const std::string wire = wire_of_one_message(SecurityMode::kSecret);
  EXPECT_NE(wire.find("PLAIN"), std::string::npos) << "the greeting names the mechanism";
  EXPECT_NE(wire.find(kSecretText), std::string::npos) << "mode secret authenticates; it does not encrypt";
}

TEST(SecretTest, AnotherSecretAnotherMechanismOrNoneIsRefused) {
  auto keys = make_job_keys();
  auto other = make_job_keys();
  ASSERT_TRUE(keys.ok() && other.ok());
  zmq::context_t server_ctx;
  auto security = JobSecurity::enable(server_ctx, SecurityMode::kSecret, *keys);
  ASSERT_TRUE(security.ok());
  auto router = Router::bind(server_ctx, "tcp://127.0.0.1:0");
  ASSERT_TRUE(router.ok());
  Router& r = **router;
  EXPECT_FALSE(raw_gets_through(
      r,
      [&](zmq::socket_t& d) {
        d.set(zmq::sockopt::plain_username, "pst");
        d.set(zmq::sockopt::plain_password, other->secret);
      },
      2))
      << "another job's secret";
  EXPECT_FALSE(raw_gets_through(
      r,
      [&](zmq::socket_t& d) {
        d.set(zmq::sockopt::plain_username, "admin");
        d.set(zmq::sockopt::plain_password, keys->secret);
      },
      2))
      << "the secret under another user name";
  EXPECT_FALSE(raw_gets_through(
      r,
      [&](zmq::socket_t& d) {
        d.set(zmq::sockopt::plain_username, "pst");
        d.set(zmq::sockopt::plain_password, keys->secret.substr(0, 39));
      },
      2))
      << "a prefix of the secret";
  EXPECT_FALSE(raw_gets_through(
      r, [](zmq::socket_t&) {}, 2))
      << "no security at all";
  EXPECT_FALSE(raw_gets_through(
      r,
      [&](zmq::socket_t& d) {
        d.set(zmq::sockopt::curve_serverkey, keys->public_key);
        d.set(zmq::sockopt::curve_publickey, keys->public_key);
        d.set(zmq::sockopt::curve_secretkey, keys->secret_key);
      },
      2))
      << "CURVE with the job's pair, where the job asks for its secret";
  EXPECT_EQ((*security)->admitted(), 0u);
  EXPECT_GE((*security)->refused(), 3u) << "the PLAIN attempts reach the ZAP handler";
  // The job's own secret still gets in.
  EXPECT_TRUE(raw_gets_through(
      r,
      [&](zmq::socket_t& d) {
        d.set(zmq::sockopt::plain_username, "pst");
        d.set(zmq::sockopt::plain_password, keys->secret);
      },
      20));
  EXPECT_EQ((*security)->admitted(), 1u);
}

TEST(SecurityTest, ModeNoneEnablesNothingAndKeysAreChecked) {
  zmq::context_t ctx;
  auto none = JobSecurity::enable(ctx, SecurityMode::kNone, JobKeys{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->get(), nullptr);
  EXPECT_FALSE(security_of(ctx).has_value());
  auto no_secret = JobSecurity::enable(ctx, SecurityMode::kSecret, JobKeys{"", "", ""});
  ASSERT_FALSE(no_secret.ok());
  EXPECT_NE(no_secret.status().message().find("security.mode = secret needs the job's secret"), std::string::npos);
  auto keys = make_job_keys();
  ASSERT_TRUE(keys.ok());
  JobKeys mixed = *keys;
  mixed.public_key = make_job_keys()->public_key;
  EXPECT_FALSE(JobSecurity::enable(ctx, SecurityMode::kCurve, mixed).ok()) << "a pair that does not belong together";
}

TEST(SecurityTest, EveryDealerOfAProcessNamesOneIdentity) {
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "inproc://identity-test");
  ASSERT_TRUE(router.ok());
  std::vector<std::string> ids, routes;
  for (int i = 0; i < 3; ++i) {
    auto d = Dealer::connect(ctx, "inproc://identity-test", "the router");
    ASSERT_TRUE(d.ok());
    OutMessage m(wire::Kind::HEARTBEAT, kJob, 1, 0, 1);
    ASSERT_TRUE((*d)->send(m.finish(), Deadline::after(20)).ok());
    auto got = (*router)->receive(Deadline::after(20), "a heartbeat");
    ASSERT_TRUE(got.ok());
    ids.push_back(peer_identity(got->route));
    routes.push_back(got->route.to_string());
  }
  EXPECT_EQ(ids[0].size(), 16u);
  EXPECT_NE(ids[0][0], 0) << "ZeroMQ keeps ids that start with zero";
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(ids[1], ids[2]);
  EXPECT_NE(routes[0], routes[1]) << "each socket's routing id is its own";
  // A socket that is not a pst Dealer is an identity of its own.
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect("inproc://identity-test");
  OutMessage m(wire::Kind::HEARTBEAT, kJob, 1, 0, 1);
  Frames frames = m.finish();
  ASSERT_TRUE(raw.send(frames[0], zmq::send_flags::none));
  auto got = (*router)->receive(Deadline::after(20), "a heartbeat");
  ASSERT_TRUE(got.ok());
  EXPECT_NE(peer_identity(got->route), ids[0]);
  EXPECT_EQ(peer_identity(got->route), got->route.to_string());
}

TEST(SecurityTest, InprocStaysOpenAndWorks) {
  auto keys = make_job_keys();
  ASSERT_TRUE(keys.ok());
  zmq::context_t ctx;
  auto security = JobSecurity::enable(ctx, SecurityMode::kCurve, *keys);
  ASSERT_TRUE(security.ok());
  auto router = Router::bind(ctx, "inproc://curve-test");
  ASSERT_TRUE(router.ok());
  EXPECT_TRUE(send_through(ctx, "inproc://curve-test", **router, 20));
  EXPECT_EQ((*security)->admitted(), 0u) << "no ZAP for inproc";
  EXPECT_FALSE(JobSecurity::enable(ctx, SecurityMode::kCurve, *keys).ok()) << "once per context";
}

TEST(SecurityTest, KeyFilesRoundTripAndDamageIsNamed) {
  testing::TempDir dir;
  auto keys = make_job_keys();
  ASSERT_TRUE(keys.ok());
  const std::string path = dir.file("job.key");
  ASSERT_TRUE(write_job_keys(path, *keys).ok());
  auto back = read_job_keys(path, SecurityMode::kCurve);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->public_key, keys->public_key);
  EXPECT_EQ(back->secret_key, keys->secret_key);
  EXPECT_EQ(back->secret, keys->secret);
  EXPECT_NE(keys->secret, keys->secret_key);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto write = [&](const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
    return read_job_keys(path, SecurityMode::kCurve);
  };
  auto other = make_job_keys();
  ASSERT_TRUE(other.ok());
  auto r = write("public-key " + keys->public_key + "\n");
  EXPECT_NE(r.status().message().find("a public-key line needs its secret-key line"), std::string::npos)
      << r.status().to_string();
  r = write("public-key " + keys->public_key + "\nsecret-key " + keys->secret_key.substr(0, 39) + "\n");
  EXPECT_NE(r.status().message().find(":2: secret-key must be 40 Z85"), std::string::npos) << r.status().to_string();
  r = write("public-key " + other->public_key + "\nsecret-key " + keys->secret_key + "\n");
  EXPECT_NE(r.status().message().find("not the one of the secret key"), std::string::npos) << r.status().to_string();
  r = write("# comment\nprivate " + keys->secret_key + "\n");
  EXPECT_NE(r.status().message().find(":2: expected"), std::string::npos) << r.status().to_string();
  EXPECT_FALSE(read_job_keys(dir.file("missing.key"), SecurityMode::kSecret).ok());
  EXPECT_FALSE(read_job_keys(dir.path(), SecurityMode::kSecret).ok()) << "a directory is not a key file";
  // Each mode asks for its own lines.
  r = write("job-secret " + keys->secret + "\n");
  ASSERT_TRUE(r.status().message().find("security.mode = curve needs the job's CURVE key pair") != std::string::npos)
      << r.status().to_string();
  std::ofstream(path, std::ios::trunc) << "job-secret " << keys->secret << "\n";
  auto secret_only = read_job_keys(path, SecurityMode::kSecret);
  ASSERT_TRUE(secret_only.ok()) << secret_only.status().to_string();
  EXPECT_EQ(secret_only->secret, keys->secret);
  std::ofstream(path, std::ios::trunc) << "public-key " << keys->public_key << "\nsecret-key " << keys->secret_key
                                       << "\n";
  auto pair_only = read_job_keys(path, SecurityMode::kSecret);
  ASSERT_FALSE(pair_only.ok());
  EXPECT_NE(pair_only.status().message().find("'job-secret' line"), std::string::npos)
      << pair_only.status().to_string();
  // Z85 has '#': a key with one still reads back.
  for (int i = 0; i < 200; ++i) {
    auto k = make_job_keys();
    ASSERT_TRUE(k.ok());
    if (k->public_key.find('#') == std::string::npos && k->secret_key.find('#') == std::string::npos &&
        k->secret.find('#') == std::string::npos)
      continue;
    ASSERT_TRUE(write_job_keys(path, *k).ok());
    auto again = read_job_keys(path, SecurityMode::kCurve);
    ASSERT_TRUE(again.ok()) << again.status().to_string();
    EXPECT_EQ(again->secret_key, k->secret_key);
    EXPECT_EQ(again->secret, k->secret);
    break;
  }
}

TEST(ResolveHostTest, AddressesNamesAndAuto) {
  EXPECT_EQ(*resolve_host("127.0.0.1", ""), "127.0.0.1");
  EXPECT_EQ(*resolve_host("10.1.2.3", ""), "10.1.2.3");
  auto local = resolve_host("localhost", "");
  ASSERT_TRUE(local.ok()) << local.status().to_string();
  EXPECT_EQ(local->rfind("127.", 0), 0u) << *local;
  auto lo = resolve_host("auto", "lo");
  ASSERT_TRUE(lo.ok()) << lo.status().to_string();
  EXPECT_EQ(*lo, "127.0.0.1");
  auto any = resolve_host("auto", "");
  ASSERT_TRUE(any.ok()) << any.status().to_string();
  in_addr a{};
  EXPECT_EQ(::inet_pton(AF_INET, any->c_str(), &a), 1) << *any;
  auto missing = resolve_host("auto", "nosuchif0");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("cluster.interface = \"nosuchif0\""), std::string::npos);
  EXPECT_NE(missing.status().message().find("lo"), std::string::npos) << "lists the interfaces there are";
  auto bad = resolve_host("no-such-host.invalid", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cluster.host = \"no-such-host.invalid\""), std::string::npos);
}

}  // namespace
}  // namespace pst
