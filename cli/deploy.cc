// `pst keygen` and `pst health`: what a deployment needs beside training (a
// job's keys for security.key_file; a health probe for a container's
// HEALTHCHECK that needs no curl in the image).
#include <cstdio>
#include <string>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "comm/security.h"
#include "monitoring/metrics.h"

namespace pst {

int run_keygen(const std::string& out) {
  auto keys = make_job_keys();
  Status s = keys.status();
  if (s.ok()) s = write_job_keys(out, *keys);
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  std::printf("wrote the job's keys to %s (mode 0600: a secret and a CURVE key pair); public key %s\n", out.c_str(),
              keys->public_key.c_str());
  return 0;
}

int run_health(const std::string& endpoint, double timeout_s) {
  auto answer = http_get(endpoint, "/healthz", timeout_s);
  if (!answer.ok()) {
    std::printf("unhealthy: %s\n", answer.status().message().c_str());
    return 1;
  }
  const bool ok = answer->status == 200;
  std::printf("%s (HTTP %d): %s", ok ? "healthy" : "unhealthy", answer->status,
              answer->body.empty() ? "(no body)\n" : answer->body.c_str());
  return ok ? 0 : 1;
}

}  // namespace pst
