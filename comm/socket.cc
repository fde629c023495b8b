#include "comm/socket.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <zmq_addon.hpp>

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "comm/message.h"
#include "comm/security.h"

namespace pst {
namespace {

// What went wrong binding or connecting to `endpoint`; a Unix socket's path
// that is too long says how long one may be.
std::string endpoint_error(const std::string& endpoint, const zmq::error_t& e) {
  if (e.num() == ENAMETOOLONG && endpoint.rfind("ipc://", 0) == 0)
    return fmt::format("{} (the path of an ipc:// endpoint holds at most {} bytes; this one has {})", e.what(),
                       sizeof(sockaddr_un::sun_path) - 1, endpoint.size() - 6);
  return e.what();
}

// Waits until the socket can take (POLLOUT) or give (POLLIN) a message.
// False when the deadline passes first, or `interrupt` (may be null) is raised.
bool wait_for(zmq::socket_t& s, short events, Deadline deadline, const Interrupt* interrupt) {
  zmq::pollitem_t item{s.handle(), 0, events, 0};
  while (true) {
    if (interrupt && interrupt->raised()) return false;
    const long ms = wait_slice_ms(deadline, interrupt);
    int n = 0;
    try {
      n = zmq::poll(&item, 1, std::chrono::milliseconds(ms));
    } catch (const zmq::error_t& e) {
      // A signal handled by this thread (pst blocks its own, core/stop.h;
      // a host program may not) interrupts the wait: wait again.
      if (e.num() != EINTR) throw;
    }
    if (n > 0 && (item.revents & events)) return true;
    if (deadline.expired()) return false;
  }
}

Status send_frames(zmq::socket_t& s, const zmq::message_t* route, Frames& frames, Deadline deadline,
                   const std::string& to, const Interrupt* interrupt = nullptr) {
  const size_t parts = frames.size() + (route ? 1 : 0);
  size_t sent = 0;
  auto send_one = [&](zmq::message_t& msg) -> Status {
    const bool last = ++sent == parts;
    const zmq::send_flags flags = (last ? zmq::send_flags::none : zmq::send_flags::sndmore) | zmq::send_flags::dontwait;
    while (true) {
      try {
        if (s.send(msg, flags)) return Status();
      } catch (const zmq::error_t& e) {
        if (e.num() == EHOSTUNREACH) return io_error("send to {}: the peer is not connected", to);
        return io_error("send to {}: {}", to, e.what());
      }
      if (interrupt && interrupt->raised()) return interrupt->why();
      if (deadline.expired())
        return deadline_exceeded("send to {}: not accepted before the deadline (the peer is not reading)", to);
      if (route) {
        // A ROUTER polls writable while any peer has room; this one has
        // none (ZMQ_ROUTER_MANDATORY said EAGAIN), so retry, not poll.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      } else if (!wait_for(s, ZMQ_POLLOUT, deadline, interrupt)) {
        if (interrupt && interrupt->raised()) return interrupt->why();
        return deadline_exceeded("send to {}: not accepted before the deadline (the peer is not reading)", to);
      }
    }
  };
  if (route) {
    zmq::message_t copy;
    copy.copy(*const_cast<zmq::message_t*>(route));
    PST_RETURN_IF_ERROR(send_one(copy));
  }
  for (zmq::message_t& f : frames) PST_RETURN_IF_ERROR(send_one(f));
  return Status();
}

Result<Frames> receive_frames(zmq::socket_t& s, Deadline deadline, const std::string& from,
                              const std::string& waiting_for, const Interrupt* interrupt = nullptr) {
  // A receive that blocks under ZeroMQ's own timeout (ZMQ_RCVTIMEO, set
  // here: it lives in the socket's options, no system call) takes a message
  // already queued without any system call, and waits with about half the
  // calls of zmq_poll followed by a receive (docs/design.md, Streaming).
  while (true) {
    if (interrupt && interrupt->raised()) return interrupt->why();
    const long ms = wait_slice_ms(deadline, interrupt);
    Frames frames;
    try {
      s.set(zmq::sockopt::rcvtimeo, static_cast<int>(ms));
      // The parts of a message arrive together: only the first one waits.
      if (zmq::recv_multipart(s, std::back_inserter(frames))) return frames;
    } catch (const zmq::error_t& e) {
      // A signal handled by this thread (pst blocks its own, core/stop.h;
      // a host program may not) interrupts the wait: wait again.
      if (e.num() != EINTR || !frames.empty()) return io_error("receive from {}: {}", from, e.what());
    }
    if (interrupt && interrupt->raised()) return interrupt->why();
    if (deadline.expired())
      return deadline_exceeded("no message from {} before the deadline, waiting for {}", from, waiting_for);
  }
}

// The job's security on a socket of a context that has it (comm/security.h),
// except inproc ones.
void secure(zmq::context_t& context, zmq::socket_t& s, const std::string& endpoint, bool server) {
  if (endpoint.starts_with("inproc://")) return;
  const auto security = security_of(context);
  if (!security) return;
  const JobKeys& keys = security->keys;
  if (server) s.set(zmq::sockopt::zap_domain, "pst");
  if (security->mode == SecurityMode::kSecret) {
    if (server) {
      s.set(zmq::sockopt::plain_server, 1);
    } else {
      s.set(zmq::sockopt::plain_username, "pst");
      s.set(zmq::sockopt::plain_password, keys.secret);
    }
  } else if (server) {
    s.set(zmq::sockopt::curve_server, 1);
    s.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  } else {
    s.set(zmq::sockopt::curve_serverkey, keys.public_key);
    s.set(zmq::sockopt::curve_publickey, keys.public_key);
    s.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  }
}

constexpr size_t kIdentityBytes = 16;

// This process's identity: random, drawn once; the first byte is not zero
// (ZeroMQ keeps routing ids that start with zero for the ones it makes).
const std::string& process_identity() {
  static const std::string identity = [] {
    std::random_device random;
    std::string id(kIdentityBytes, '\0');
    for (char& c : id) c = static_cast<char>(random() & 0xff);
    id[0] = static_cast<char>(1 + (static_cast<unsigned char>(id[0]) % 255));
    return id;
  }();
  return identity;
}

}  // namespace

uint64_t this_process() {
  uint64_t id = 0;
  std::memcpy(&id, process_identity().data(), sizeof(id));
  return id;
}

namespace {

// A routing id for the next Dealer of this process: the identity and a
// counter, so that every socket's id is unique and all name one process.
std::string next_routing_id() {
  static std::atomic<uint32_t> counter{0};
  const uint32_t n = counter++;
  std::string id = process_identity();
  id.append(reinterpret_cast<const char*>(&n), sizeof(n));
  return id;
}

}  // namespace

std::string peer_identity(const zmq::message_t& route) {
  const std::string id = route.to_string();
  const bool ours = id.size() == kIdentityBytes + sizeof(uint32_t) && id[0] != 0;
  return ours ? id.substr(0, kIdentityBytes) : id;
}

std::string peer_identity_text(const std::string& identity) {
  std::string hex;
  for (size_t i = 0; i < std::min<size_t>(identity.size(), 4); ++i)
    hex += fmt::format("{:02x}", static_cast<unsigned char>(identity[i]));
  return hex;
}

Result<std::string> resolve_host(const std::string& host, const std::string& interface) {
  if (host != "auto") {
    in_addr a{};
    if (::inet_pton(AF_INET, host.c_str(), &a) == 1) return host;
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (rc != 0 || !found)
      return not_found(
          "cluster.host = \"{}\": not an IPv4 address, and the name does not resolve ({}); allowed: an "
          "address, a host name or auto",
          host, ::gai_strerror(rc));
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr, text, sizeof(text));
    ::freeaddrinfo(found);
    return std::string(text);
  }
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0)
    return io_error("cluster.host = auto: cannot list the interfaces: {}", std::strerror(errno));
  std::string address, names;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    names += (names.empty() ? "" : ", ") + std::string(i->ifa_name);
    const bool wanted = interface.empty() ? !(i->ifa_flags & IFF_LOOPBACK) : interface == i->ifa_name;
    if (!wanted || !address.empty()) continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text));
    address = text;
  }
  ::freeifaddrs(list);
  if (!address.empty()) return address;
  if (!interface.empty())
    return not_found("cluster.interface = \"{}\": no such interface with an IPv4 address that is up (there are: {})",
                     interface, names);
  return std::string("127.0.0.1");  // a host with loopback only
}

Result<std::unique_ptr<Router>> Router::bind(zmq::context_t& context, const std::string& endpoint,
                                             int64_t max_message_bytes, int* error) {
  std::unique_ptr<Router> r(new Router(context));
  try {
    r->socket_.set(zmq::sockopt::linger, 0);
    r->socket_.set(zmq::sockopt::router_mandatory, 1);
    // A peer that reconnects with its routing id takes its place back (the
    // old connection may not have been noticed dead yet).
    r->socket_.set(zmq::sockopt::router_handover, 1);
    if (max_message_bytes > 0) r->socket_.set(zmq::sockopt::maxmsgsize, max_message_bytes);
    secure(context, r->socket_, endpoint, /*server=*/true);
    r->socket_.bind(endpoint);
    r->endpoint_ = r->socket_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    if (error) *error = e.num();
    return io_error("bind {}: {}", endpoint, endpoint_error(endpoint, e));
  }
  return r;
}

Status Router::bind_also(const std::string& endpoint) {
  try {
    socket_.bind(endpoint);
  } catch (const zmq::error_t& e) {
    return io_error("bind {}: {}", endpoint, endpoint_error(endpoint, e));
  }
  return Status();
}

Result<Routed> Router::receive(Deadline deadline, const std::string& waiting_for) {
  PST_ASSIGN_OR_RETURN(Frames frames, receive_frames(socket_, deadline, "peers of " + endpoint_, waiting_for));
  if (frames.size() < 2) return data_loss("{}: a message without a route and a header", endpoint_);
  Routed r;
  r.route = std::move(frames.front());
  r.frames.assign(std::make_move_iterator(frames.begin() + 1), std::make_move_iterator(frames.end()));
  return r;
}

Status Router::send(const zmq::message_t& route, Frames frames, Deadline deadline) {
  return send_frames(socket_, &route, frames, deadline, "a peer of " + endpoint_);
}

Result<std::unique_ptr<Dealer>> Dealer::connect(zmq::context_t& context, const std::string& endpoint,
                                                std::string peer) {
  std::unique_ptr<Dealer> d(new Dealer(context));
  d->peer_ = std::move(peer);
  try {
    d->socket_.set(zmq::sockopt::linger, 0);
    d->socket_.set(zmq::sockopt::routing_id, next_routing_id());
    secure(context, d->socket_, endpoint, /*server=*/false);
    d->socket_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return io_error("connect to {} at {}: {}", d->peer_, endpoint, endpoint_error(endpoint, e));
  }
  return d;
}

Status Dealer::send(Frames frames, Deadline deadline) {
  if (interrupt_ && interrupt_->raised()) return interrupt_->why();
  return send_frames(socket_, nullptr, frames, deadline, peer_, interrupt_);
}

Result<Frames> Dealer::receive(Deadline deadline, const std::string& waiting_for) {
  return receive_frames(socket_, deadline, peer_, waiting_for, interrupt_);
}

long wait_slice_ms(Deadline deadline, const Interrupt* interrupt) {
  const long ms = deadline.remaining_ms();
  if (!interrupt) return ms;
  return ms < 0 ? 50 : std::min<long>(ms, 50);
}

void Interrupt::raise(Status why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (raised_.load()) return;
  why_ = std::move(why);
  raised_ = true;
}

Status Interrupt::why() const {
  std::lock_guard<std::mutex> lock(mu_);
  return why_;
}

}  // namespace pst
