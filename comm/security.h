// ZeroMQ CURVE for a job (DESIGN.md §8, config [security]).
//
// A job has one key pair. Every Router is a CURVE server with its secret
// key; every Dealer is a CURVE client that expects that public key and
// presents the same pair. The ZAP handler of the context admits a
// connection only when the client proved it holds the job's key pair, so a
// process without the key file (or the MPI broadcast) cannot register, push
// or pull, and everything on the wire is encrypted. inproc:// sockets stay
// plain: their messages never leave the process.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "core/status.h"

namespace pst {

struct CurveKeys {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// A fresh key pair (zmq_curve_keypair). An error if libzmq lacks CURVE.
Result<CurveKeys> make_curve_keys();
// The key file: "public-key Z85" and "secret-key Z85" lines (a line that
// starts with '#' is a comment; '#' is also a Z85 character). Written with mode 0600, through a temp file and a rename.
Status write_curve_keys(const std::string& path, const CurveKeys& keys);
Result<CurveKeys> read_curve_keys(const std::string& path);

// Turns CURVE on for the sockets that Router::bind and Dealer::connect make
// on `context` from now on (tcp:// and ipc://), and runs the context's ZAP
// handler. Keep the object until those sockets are closed; declare it after
// the context so that it goes first.
class CurveSecurity {
 public:
  static Result<std::unique_ptr<CurveSecurity>> enable(zmq::context_t& context, const CurveKeys& keys);
  ~CurveSecurity();
  CurveSecurity(const CurveSecurity&) = delete;
  CurveSecurity& operator=(const CurveSecurity&) = delete;

  // Connections the ZAP handler admitted and refused so far.
  uint64_t admitted() const { return admitted_; }
  uint64_t refused() const { return refused_; }

 private:
  CurveSecurity(zmq::context_t& context, const CurveKeys& keys);
  void serve();

  void* context_handle_;
  zmq::socket_t zap_;
  std::string public_key_binary_;  // 32 bytes
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> admitted_{0}, refused_{0};
  std::thread thread_;
};

// The keys CURVE uses on `context`'s sockets; none when they are plain. For
// comm/socket.cc.
std::optional<CurveKeys> curve_keys_of(zmq::context_t& context);

}  // namespace pst
