// libFuzzer target: any bytes as a safetensors file (a model file, a
// checkpoint part) through SafetensorsFile::read and every tensor's view.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/pst-fuzz-safetensors-" + std::to_string(::getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto file = pst::SafetensorsFile::read(path);
  if (file.ok()) {
    for (const auto& [name, t] : file->tensors()) {
      // A valid file's tensors are whole: reading every element is in bounds.
      if (t.dtype == "F32") {
        float sum = 0;
        for (float v : t.to_f32()) sum += v;
        (void)sum;
      } else if (t.dtype == "I32") {
        int64_t sum = 0;
        for (int32_t v : t.to_i32()) sum += v;
        (void)sum;
      }
    }
  }
  std::remove(path.c_str());
  return 0;
}
