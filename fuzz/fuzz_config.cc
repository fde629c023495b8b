// libFuzzer target: any text as a job's TOML config through parse_config
// (TOML, every field's type and range, the cross-field checks) and, when it
// is valid, to_toml and job_id, which every process computes.
#include <cstdint>
#include <string>

#include "core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto job = pst::parse_config(text, "fuzz.toml", {});
  if (job.ok()) {
    const std::string again = pst::to_toml(*job);
    auto back = pst::parse_config(again, "fuzz-again.toml", {});
    // What to_toml writes must read back as the same job.
    if (!back.ok() || pst::job_id(*back) != pst::job_id(*job)) __builtin_trap();
  }
  return 0;
}
