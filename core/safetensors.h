// Reading and writing the safetensors format (an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then
// the raw bytes). pst uses it for trained weights and for `pst debug grads`;
// PyTorch code reads the same files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"

namespace pst {

struct StoredTensor {
  std::string dtype;  // "F32" or "I32"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  // Copies of the data; PST_CHECK that the dtype matches.
  std::vector<float> to_f32() const;
  std::vector<int32_t> to_i32() const;
};

class SafetensorsFile {
 public:
  void add_f32(const std::string& name, std::vector<int64_t> shape, const float* data);
  void add_i32(const std::string& name, std::vector<int64_t> shape, const int32_t* data);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  // nullptr when absent.
  const StoredTensor* find(const std::string& name) const;
  const std::map<std::string, StoredTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Writes to path + ".tmp", fsyncs and renames, so a crash never leaves a
  // half-written file under the final name.
  Status write(const std::string& path) const;
  // Reads and validates a whole file: header bounds, JSON, dtypes, that every
  // byte range lies inside the file and matches its shape.
  static Result<SafetensorsFile> read(const std::string& path);

 private:
  std::map<std::string, StoredTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace pst
