// libFuzzer target: any bytes as a study's journal.jsonl through
// read_journal (each line JSON, its event, trial numbers and rungs integers
// in range, parameters the space has, a torn last line dropped). The space
// has a range and a choice, as a real study's; the seeds are journals of
// both events' kinds.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include <toml++/toml.h>

#include "tune/study.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const pst::SearchSpace space = [] {
    const toml::table t = toml::parse(
        "\"optim.lr\" = { type = \"log_uniform\", low = 1e-4, high = 1e-2 }\n"
        "\"model.encoder_layers\" = { type = \"int\", low = 1, high = 4 }\n"
        "\"schedule.kind\" = { type = \"choice\", values = [\"constant\", \"cosine\"] }\n");
    return *pst::parse_space(t, "fuzz");
  }();
  static const std::string path = "/dev/shm/pst-fuzz-journal-" + std::to_string(::getpid()) + ".jsonl";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  (void)pst::read_journal(path, space);
  std::remove(path.c_str());  // (as fuzz_safetensors does: nothing is left in /dev/shm)
  return 0;
}
