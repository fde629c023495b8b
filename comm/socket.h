// Deadline-bounded ZeroMQ sockets for pst's multipart messages.
//
// A node binds one Router where it receives requests (servers: pushes and
// pulls; the scheduler: registrations, barriers, heartbeats) and answers
// through it, possibly later (a pull waits for its version). It reaches each
// peer through a Dealer connected to that peer's Router. Endpoints are
// ZeroMQ's: tcp://HOST:PORT (PORT 0 picks a free one; endpoint() then tells
// which), ipc://PATH, inproc://NAME (one process, one context).
//
// Every receive takes a Deadline; when it passes the call returns an error
// that names the peer and what was waited for. Sends never block forever
// either. Sockets close with linger 0, so a dead peer cannot hang shutdown.
//
// With security on for the context (comm/security.h), tcp:// and ipc://
// Routers admit only peers that prove the job's secret or key pair, and
// Dealers prove it.
//
// Every Dealer of a process presents a routing id that starts with the
// process's random identity (peer_identity() reads it back from a route):
// a receiver binds a rank to the identity it first heard that rank from and
// drops what other processes send in that rank's name (comm/rejecter.h).
//
// Thread safety: like ZeroMQ sockets, each object is used by one thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <zmq.hpp>

#include "comm/message.h"
#include "core/deadline.h"
#include "core/status.h"

namespace pst {

// The IPv4 address cluster.host names: an address as it is, the first IPv4
// address of a host name, or for "auto" the address of `interface` (empty:
// of the first interface that is up and not loopback; 127.0.0.1 on a host
// with loopback alone). Errors name the value and what is allowed.
Result<std::string> resolve_host(const std::string& host, const std::string& interface);

// A message received by a Router, with the route to answer it.
struct Routed {
  zmq::message_t route;  // the sending Dealer's routing id
  Frames frames;
};

// The process behind a route: the identity part of a pst Dealer's routing
// id, or the whole id of any other peer.
std::string peer_identity(const zmq::message_t& route);
// The first bytes of an identity in hex, for log lines.
std::string peer_identity_text(const std::string& identity);

// Ends, from any thread, the waits of the Dealers that watch it: once
// raised, their sends and receives return its Status within 50 ms (a worker
// told that its job re-forms stops waiting for a server that is gone).
class Interrupt {
 public:
  void raise(Status why);
  bool raised() const { return raised_.load(); }
  Status why() const;  // OK until raised

 private:
  std::atomic<bool> raised_{false};
  mutable std::mutex mu_;
  Status why_;  // guarded by mu_
};

// How long one wait may take, in milliseconds (-1: no limit): until the
// deadline, and at most 50 ms when an interrupt (may be null) must be looked at.
long wait_slice_ms(Deadline deadline, const Interrupt* interrupt);

class Router {
 public:
  // max_message_bytes > 0: ZeroMQ drops the connection of a peer that sends
  // a larger frame (ZMQ_MAXMSGSIZE; tcp and ipc), before it is buffered.
  // A failed bind sets *error (when given) to ZeroMQ's errno, e.g.
  // EADDRINUSE (core/ports.h, bind_in_range).
  static Result<std::unique_ptr<Router>> bind(zmq::context_t& context, const std::string& endpoint,
                                              int64_t max_message_bytes = -1, int* error = nullptr);

  // The bound endpoint, with the port ZeroMQ chose for tcp port 0.
  const std::string& endpoint() const { return endpoint_; }
  // The next message; an error once `deadline` passes ("waiting_for" says
  // what for, e.g. "pushes of step 12").
  Result<Routed> receive(Deadline deadline, const std::string& waiting_for);
  // Sends frames to the peer behind `route`. An error (not a silent drop)
  // when that peer is no longer connected, or when its queue stays full
  // (it does not read) until `deadline`; other peers never wait for it.
  Status send(const zmq::message_t& route, Frames frames, Deadline deadline);
  zmq::socket_t& socket() { return socket_; }
  // Listens at another endpoint too (an inproc:// one for comm/mpi_transport.h).
  Status bind_also(const std::string& endpoint);

 private:
  explicit Router(zmq::context_t& context) : socket_(context, zmq::socket_type::router) {}
  zmq::socket_t socket_;
  std::string endpoint_;
};

// One node's line to one peer: what a worker reaches a server through. A
// Dealer (ZeroMQ), or MPI point-to-point messages (comm/mpi_transport.h).
class Channel {
 public:
  virtual ~Channel() = default;
  // How errors name the other side, e.g. "server 1 (tcp://10.0.0.2:5601)".
  virtual const std::string& peer() const = 0;
  // An error once `deadline` passes with the frames not yet handed over.
  virtual Status send(Frames frames, Deadline deadline) = 0;
  virtual Result<Frames> receive(Deadline deadline, const std::string& waiting_for) = 0;
  // Sends and receives end early once `interrupt` (which outlives this) is raised.
  virtual void watch(const Interrupt* interrupt) = 0;
  // Gives up the frames it still holds where the transport can (a Dealer
  // drops them; MPI cannot cancel a send); sends fail afterwards.
  virtual void close() = 0;
};

class Dealer final : public Channel {
 public:
  static Result<std::unique_ptr<Dealer>> connect(zmq::context_t& context, const std::string& endpoint,
                                                 std::string peer);

  const std::string& peer() const override { return peer_; }
  Status send(Frames frames, Deadline deadline) override;
  Result<Frames> receive(Deadline deadline, const std::string& waiting_for) override;
  zmq::socket_t& socket() { return socket_; }
  void watch(const Interrupt* interrupt) override { interrupt_ = interrupt; }
  void close() override { socket_.close(); }

 private:
  explicit Dealer(zmq::context_t& context) : socket_(context, zmq::socket_type::dealer) {}
  zmq::socket_t socket_;
  std::string peer_;
  const Interrupt* interrupt_ = nullptr;
};

}  // namespace pst
