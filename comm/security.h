// Who may talk to a job's sockets (config [security]; docs/design.md and
// docs/operations.md, "Security").
//
// A job has keys: a secret (32 random bytes, Z85) and a CURVE key pair.
// With security.mode = secret every Router admits a connection only when the
// client proves the secret in ZeroMQ's PLAIN handshake; with curve only a
// client that holds the key pair, and everything on the wire is encrypted.
// The context's ZAP handler decides in both cases, once per connection, so a
// message costs nothing more. A process without the keys cannot register,
// push, pull or read anything; it does not even learn the job's id. inproc://
// sockets stay open: their messages never leave the process.
//
// PLAIN sends the secret in the clear when a connection starts: it keeps out
// whoever can reach a port, not whoever can read the network; curve does both.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "core/config.h"
#include "core/status.h"

namespace pst {

struct JobKeys {
  std::string secret;      // Z85, 40 characters: what security.mode = secret proves
  std::string public_key;  // Z85, 40 characters: the CURVE pair of security.mode = curve
  std::string secret_key;  // Z85, 40 characters
};

// Fresh keys (zmq_curve_keypair's randomness). An error if libzmq lacks CURVE.
Result<JobKeys> make_job_keys();
// The key file: "job-secret Z85", "public-key Z85" and "secret-key Z85"
// lines (a line that starts with '#' is a comment; '#' is also a Z85
// character). Written with mode 0600, through a temp file and a rename.
Status write_job_keys(const std::string& path, const JobKeys& keys);
// A file may hold the secret, the pair or both; `mode` says which the job
// needs, and the error names the missing line.
Result<JobKeys> read_job_keys(const std::string& path, SecurityMode mode);
// What security.mode needs of `keys` (Z85 keys of 40 characters, a pair that
// belongs together), or an error that names the missing or bad part.
Status check_job_keys(const JobKeys& keys, SecurityMode mode);

// Turns `mode` on for the sockets that Router::bind and Dealer::connect make
// on `context` from now on (tcp:// and ipc://), and runs the context's ZAP
// handler. Keep the object until those sockets are closed; declare it after
// the context so that it goes first. Mode none: nothing to enable (null).
class JobSecurity {
 public:
  static Result<std::unique_ptr<JobSecurity>> enable(zmq::context_t& context, SecurityMode mode, const JobKeys& keys);
  ~JobSecurity();
  JobSecurity(const JobSecurity&) = delete;
  JobSecurity& operator=(const JobSecurity&) = delete;

  // Connections the ZAP handler admitted and refused so far.
  uint64_t admitted() const { return admitted_; }
  uint64_t refused() const { return refused_; }

 private:
  JobSecurity(zmq::context_t& context, SecurityMode mode, const JobKeys& keys);
  void serve();
  bool admits(const std::vector<zmq::message_t>& request) const;

  void* context_handle_;
  SecurityMode mode_;
  zmq::socket_t zap_;
  std::string expected_;  // secret: the Z85 secret; curve: the 32-byte public key
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> admitted_{0}, refused_{0};
  std::thread thread_;
};

// The mode and keys of `context`'s sockets; none when they are open. For
// comm/socket.cc.
struct SocketSecurity {
  SecurityMode mode;
  JobKeys keys;
};
std::optional<SocketSecurity> security_of(zmq::context_t& context);

}  // namespace pst
