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
std::map<void*, CurveKeys> g_keys;  // context handle -> its keys

bool is_z85_key(const std::string& k) {
  if (k.size() != 40) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, k.c_str()) != nullptr;
}

}  // namespace

Result<CurveKeys> make_curve_keys() {
  if (!zmq_has("curve")) return failed_precondition("this libzmq was built without CURVE (security.curve needs it)");
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) return io_error("zmq_curve_keypair: {}", zmq_strerror(zmq_errno()));
  return CurveKeys{pub, sec};
}

Status write_curve_keys(const std::string& path, const CurveKeys& keys) {
  const std::string tmp = path + ".tmp";
  {
    const mode_t old = ::umask(077);
    std::ofstream out(tmp, std::ios::trunc);
    ::umask(old);
    out << "# pst CURVE key pair of a job (security.key_file); keep it secret\n"
        << "public-key " << keys.public_key << "\nsecret-key " << keys.secret_key << "\n";
    if (!out.flush()) return io_error("cannot write the key file {}", tmp);
  }
  ::chmod(tmp.c_str(), 0600);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return io_error("cannot rename {} to {}: {}", tmp, path, ec.message());
  return Status();
}

Result<CurveKeys> read_curve_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found("security.key_file '{}' cannot be opened (make one with pst keygen --out FILE)", path);
  CurveKeys keys;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    // '#' is a Z85 character: only a line that starts with it is a comment.
    std::istringstream fields(line);
    std::string name, value, extra;
    if (!(fields >> name) || name.starts_with('#')) continue;
    fields >> value >> extra;
    if (!extra.empty() || (name != "public-key" && name != "secret-key"))
      return invalid_argument("{}:{}: expected 'public-key Z85' or 'secret-key Z85'", path, number);
    if (!is_z85_key(value))
      return invalid_argument("{}:{}: {} must be 40 Z85 characters (pst keygen writes them)", path, number, name);
    (name == "public-key" ? keys.public_key : keys.secret_key) = value;
  }
  if (keys.public_key.empty() || keys.secret_key.empty())
    return invalid_argument("{}: needs both a public-key and a secret-key line", path);
  char derived[41] = {};
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0 || keys.public_key != derived)
    return invalid_argument("{}: the public key is not the one of the secret key", path);
  return keys;
}

CurveSecurity::CurveSecurity(zmq::context_t& context, const CurveKeys& keys)
    : context_handle_(context.handle()), zap_(context, zmq::socket_type::rep) {
  public_key_binary_.resize(32);
  zmq_z85_decode(reinterpret_cast<uint8_t*>(public_key_binary_.data()), keys.public_key.c_str());
}

Result<std::unique_ptr<CurveSecurity>> CurveSecurity::enable(zmq::context_t& context, const CurveKeys& keys) {
  if (!zmq_has("curve")) return failed_precondition("this libzmq was built without CURVE (security.curve needs it)");
  if (!is_z85_key(keys.public_key) || !is_z85_key(keys.secret_key))
    return invalid_argument("CURVE keys must be 40 Z85 characters each");
  std::unique_ptr<CurveSecurity> s(new CurveSecurity(context, keys));
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_keys.count(s->context_handle_)) return failed_precondition("CURVE is already on for this ZeroMQ context");
    try {
      // The handler is bound before any socket uses CURVE: without one,
      // libzmq would admit every client.
      s->zap_.set(zmq::sockopt::linger, 0);
      s->zap_.bind("inproc://zeromq.zap.01");
    } catch (const zmq::error_t& e) {
      return io_error("cannot bind the ZAP handler: {}", e.what());
    }
    g_keys[s->context_handle_] = keys;
  }
  s->thread_ = std::thread([p = s.get()] { p->serve(); });
  return s;
}

CurveSecurity::~CurveSecurity() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_keys.erase(context_handle_);
  }
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void CurveSecurity::serve() {
  // ZAP (ZeroMQ RFC 27): a request is version, request id, domain, address,
  // routing id, mechanism and credentials (CURVE: the client's 32-byte
  // public key); the reply is version, request id, status code and text,
  // user id and metadata.
  while (!stop_) {
    zmq::pollitem_t item{zap_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(zap_, std::back_inserter(request))) continue;
      const bool well_formed = request.size() >= 7 && request[0].to_string() == "1.0";
      const bool ok = well_formed && request[5].to_string() == "CURVE" && request[6].size() == 32 &&
                      request[6].to_string() == public_key_binary_;
      if (ok) {
        ++admitted_;
      } else if (refused_++ < 10) {
        spdlog::warn("refused a connection from {}: it does not hold the job's CURVE key pair (security.key_file)",
                     well_formed ? request[3].to_string() : "a peer");
      }
      std::vector<zmq::message_t> reply;
      reply.emplace_back(std::string("1.0"));
      reply.emplace_back(well_formed ? request[1].to_string() : std::string());
      reply.emplace_back(std::string(ok ? "200" : "400"));
      reply.emplace_back(std::string(ok ? "OK" : "not the job's key"));
      reply.emplace_back(std::string(ok ? "pst" : ""));
      reply.emplace_back(std::string());
      zmq::send_multipart(zap_, reply);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::warn("ZAP handler: {}", e.what());
    }
  }
}

std::optional<CurveKeys> curve_keys_of(zmq::context_t& context) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_keys.find(context.handle());
  if (it == g_keys.end()) return std::nullopt;
  return it->second;
}

}  // namespace pst
