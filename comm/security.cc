#include "comm/security.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <spdlog/spdlog.h>
#include <zmq_addon.hpp>

namespace pst {
namespace {

std::mutex g_mutex;
std::map<void*, SocketSecurity> g_security;  // context handle -> its mode and keys

bool is_z85_key(const std::string& k) {
  if (k.size() != 40) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, k.c_str()) != nullptr;
}

// Equal in time that does not depend on where the strings differ.
bool same_bytes(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

Result<JobKeys> make_job_keys() {
  if (!zmq_has("curve")) return failed_precondition("this libzmq was built without CURVE (pst keygen needs it)");
  char pub[41] = {}, sec[41] = {}, secret_pub[41] = {}, secret[41] = {};
  // The secret is the private half of a second key pair: 32 bytes from
  // libzmq's random source, in Z85.
  if (zmq_curve_keypair(pub, sec) != 0 || zmq_curve_keypair(secret_pub, secret) != 0)
    return io_error("zmq_curve_keypair: {}", zmq_strerror(zmq_errno()));
  return JobKeys{secret, pub, sec};
}

Status write_job_keys(const std::string& path, const JobKeys& keys) {
  const std::string tmp = path + ".tmp";
  {
    const mode_t old = ::umask(077);
    std::ofstream out(tmp, std::ios::trunc);
    ::umask(old);
    out << "# pst keys of a job (security.key_file); keep them secret\n";
    if (!keys.secret.empty()) out << "job-secret " << keys.secret << "\n";
    if (!keys.public_key.empty()) out << "public-key " << keys.public_key << "\nsecret-key " << keys.secret_key << "\n";
    if (!out.flush()) return io_error("cannot write the key file {}", tmp);
  }
  ::chmod(tmp.c_str(), 0600);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return io_error("cannot rename {} to {}: {}", tmp, path, ec.message());
  return Status();
}

Status check_job_keys(const JobKeys& keys, SecurityMode mode) {
  if (mode == SecurityMode::kSecret && !is_z85_key(keys.secret))
    return invalid_argument(
        "security.mode = secret needs the job's secret: 40 Z85 characters (a 'job-secret' line "
        "of the key file that pst keygen writes)");
  if (mode == SecurityMode::kCurve) {
    if (!is_z85_key(keys.public_key) || !is_z85_key(keys.secret_key))
      return invalid_argument(
          "security.mode = curve needs the job's CURVE key pair: 40 Z85 characters each "
          "('public-key' and 'secret-key' lines of the key file that pst keygen writes)");
    char derived[41] = {};
    if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0 || keys.public_key != derived)
      return invalid_argument("the CURVE public key is not the one of the secret key");
  }
  return Status();
}

Result<JobKeys> read_job_keys(const std::string& path, SecurityMode mode) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return not_found("security.key_file '{}' is not a readable file (make one with pst keygen --out FILE)", path);
  std::ifstream in(path);
  if (!in) return not_found("security.key_file '{}' cannot be opened (make one with pst keygen --out FILE)", path);
  JobKeys keys;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (number > 1000) return invalid_argument("{}: more than 1000 lines; not a pst key file", path);
    // '#' is a Z85 character: only a line that starts with it is a comment.
    std::istringstream fields(line);
    std::string name, value, extra;
    if (!(fields >> name) || name.starts_with('#')) continue;
    fields >> value >> extra;
    if (!extra.empty() || (name != "public-key" && name != "secret-key" && name != "job-secret"))
      return invalid_argument("{}:{}: expected 'job-secret Z85', 'public-key Z85' or 'secret-key Z85'", path, number);
    if (!is_z85_key(value))
      return invalid_argument("{}:{}: {} must be 40 Z85 characters (pst keygen writes them)", path, number, name);
    (name == "public-key" ? keys.public_key : name == "secret-key" ? keys.secret_key : keys.secret) = value;
  }
  if (keys.public_key.empty() != keys.secret_key.empty())
    return invalid_argument("{}: a public-key line needs its secret-key line and the other way round", path);
  if (keys.public_key.empty() && keys.secret.empty())
    return invalid_argument("{}: no keys (expected job-secret, public-key and secret-key lines)", path);
  if (const Status s = check_job_keys(keys, mode); !s.ok()) return invalid_argument("{}: {}", path, s.message());
  if (!keys.public_key.empty())
    if (const Status s = check_job_keys(keys, SecurityMode::kCurve); !s.ok())
      return invalid_argument("{}: {}", path, s.message());
  return keys;
}

JobSecurity::JobSecurity(zmq::context_t& context, SecurityMode mode, const JobKeys& keys)
    : context_handle_(context.handle()), mode_(mode), zap_(context, zmq::socket_type::rep) {
  if (mode == SecurityMode::kCurve) {
    expected_.resize(32);
    zmq_z85_decode(reinterpret_cast<uint8_t*>(expected_.data()), keys.public_key.c_str());
  } else {
    expected_ = keys.secret;
  }
}

Result<std::unique_ptr<JobSecurity>> JobSecurity::enable(zmq::context_t& context, SecurityMode mode,
                                                         const JobKeys& keys) {
  if (mode == SecurityMode::kNone) return std::unique_ptr<JobSecurity>();
  if (mode == SecurityMode::kCurve && !zmq_has("curve"))
    return failed_precondition("this libzmq was built without CURVE (security.mode = curve needs it)");
  PST_RETURN_IF_ERROR(check_job_keys(keys, mode));
  std::unique_ptr<JobSecurity> s(new JobSecurity(context, mode, keys));
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_security.count(s->context_handle_))
      return failed_precondition("security is already on for this ZeroMQ context");
    try {
      // The handler is bound before any socket asks for it: without one,
      // libzmq would admit every client.
      s->zap_.set(zmq::sockopt::linger, 0);
      s->zap_.bind("inproc://zeromq.zap.01");
    } catch (const zmq::error_t& e) {
      return io_error("cannot bind the ZAP handler: {}", e.what());
    }
    g_security[s->context_handle_] = SocketSecurity{mode, keys};
  }
  s->thread_ = std::thread([p = s.get()] { p->serve(); });
  return s;
}

JobSecurity::~JobSecurity() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_security.erase(context_handle_);
  }
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

bool JobSecurity::admits(const std::vector<zmq::message_t>& request) const {
  // ZAP (ZeroMQ RFC 27): version, request id, domain, address, routing id,
  // mechanism, then the credentials: CURVE the client's 32-byte public key,
  // PLAIN a user name and a password.
  if (request.size() < 7 || request[0].to_string() != "1.0") return false;
  const std::string mechanism = request[5].to_string();
  if (mode_ == SecurityMode::kCurve) return mechanism == "CURVE" && same_bytes(request[6].to_string(), expected_);
  return mechanism == "PLAIN" && request.size() == 8 && request[6].to_string() == "pst" &&
         same_bytes(request[7].to_string(), expected_);
}

void JobSecurity::serve() {
  const char* wanted = mode_ == SecurityMode::kCurve ? "the job's CURVE key pair" : "the job's secret";
  while (!stop_) {
    zmq::pollitem_t item{zap_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(zap_, std::back_inserter(request))) continue;
      const bool well_formed = request.size() >= 6 && request[0].to_string() == "1.0";
      const bool ok = admits(request);
      if (ok) {
        ++admitted_;
      } else if (refused_++ < 10) {
        spdlog::warn("refused a connection from {}: it does not prove {} (security.key_file)",
                     well_formed ? request[3].to_string() : "a peer", wanted);
      } else if (refused_ % 1000 == 0) {
        spdlog::warn("refused {} connections so far that did not prove {}", refused_.load(), wanted);
      }
      // The reply: version, request id, status code and text, user id and
      // metadata.
      std::vector<zmq::message_t> reply;
      reply.emplace_back(std::string("1.0"));
      reply.emplace_back(well_formed ? request[1].to_string() : std::string());
      reply.emplace_back(std::string(ok ? "200" : "400"));
      reply.emplace_back(std::string(ok ? "OK" : "not a member of the job"));
      reply.emplace_back(std::string(ok ? "pst" : ""));
      reply.emplace_back(std::string());
      zmq::send_multipart(zap_, reply);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::warn("ZAP handler: {}", e.what());
    }
  }
}

std::optional<SocketSecurity> security_of(zmq::context_t& context) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_security.find(context.handle());
  if (it == g_security.end()) return std::nullopt;
  return it->second;
}

}  // namespace pst
