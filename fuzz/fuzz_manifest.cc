// libFuzzer target: any bytes as a checkpoint's manifest.json through
// read_checkpoint (JSON, its own checksum, every field's range, the files
// it names). The seeds are real manifests of both formats: format 1 has no
// checksum, so mutations of it reach the field checks.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz/scratch.h"
#include "ps/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = pst::fuzz::scratch_dir("manifest") + "/step-000000010";
    std::filesystem::create_directories(d);
    return d;
  }();
  {
    std::ofstream out(dir + "/manifest.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  (void)pst::read_checkpoint(dir);
  return 0;
}
