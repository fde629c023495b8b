#include "core/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/json_fields.h"

namespace pst {
namespace {

int64_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  return 0;
}

}  // namespace

int64_t StoredTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> StoredTensor::to_f32() const {
  PST_CHECK_MSG(dtype == "F32", "tensor has dtype {}, not F32", dtype);
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<int32_t> StoredTensor::to_i32() const {
  PST_CHECK_MSG(dtype == "I32", "tensor has dtype {}, not I32", dtype);
  std::vector<int32_t> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

void SafetensorsFile::add_f32(const std::string& name, std::vector<int64_t> shape, const float* data) {
  StoredTensor t{"F32", std::move(shape), {}};
  t.bytes.resize(static_cast<size_t>(t.numel()) * 4);
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  tensors_[name] = std::move(t);
}

void SafetensorsFile::add_i32(const std::string& name, std::vector<int64_t> shape, const int32_t* data) {
  StoredTensor t{"I32", std::move(shape), {}};
  t.bytes.resize(static_cast<size_t>(t.numel()) * 4);
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  tensors_[name] = std::move(t);
}

const StoredTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Status SafetensorsFile::write(const std::string& path) const {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // aligns the data section
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return io_error("write '{}': cannot create: {}", tmp, std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& [name, t] : tensors_) {
    if (!ok) break;
    ok = t.bytes.empty() || std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size();
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    return io_error("write '{}': {}", tmp, std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return io_error("rename '{}' to '{}': {}", tmp, path, std::strerror(errno));
  return Status();
}

Result<SafetensorsFile> SafetensorsFile::read(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    return invalid_argument("'{}' is not a regular file (a safetensors file is expected)", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("safetensors file '{}' cannot be opened", path);
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  in.seekg(0);
  if (size < 8) return data_loss("'{}': {} bytes, too short for a safetensors header", path, size);
  uint8_t len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len_bytes[i]) << (8 * i);
  // A file of another kind (a config, a log) lands here: its first 8 bytes
  // read as a length far beyond the file.
  if (header_len > static_cast<uint64_t>(size - 8) || header_len > (100u << 20))
    return data_loss(
        "'{}' is not a safetensors file: its first 8 bytes give a header length of {}, which exceeds the file "
        "({} bytes; a safetensors file starts with its JSON header's length, then the header)",
        path, header_len, size);
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return data_loss("'{}': header is not valid JSON: {}", path, e.what());
  }
  if (!header.is_object()) return data_loss("'{}': header is not a JSON object", path);
  const uint64_t data_size = static_cast<uint64_t>(size) - 8 - header_len;
  std::vector<uint8_t> data(data_size);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data_size));
  if (!in) return io_error("'{}': read failed", path);

  SafetensorsFile file;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return data_loss("'{}': __metadata__ is not an object", path);
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return data_loss("'{}': metadata '{}' is not a string", path, k);
        file.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      return data_loss("'{}': tensor '{}' needs dtype, shape and data_offsets [begin, end]", path, name);
    StoredTensor t;
    t.dtype = entry["dtype"].get<std::string>();
    const int64_t esize = dtype_size(t.dtype);
    if (esize == 0) return data_loss("'{}': tensor '{}' has dtype {}; pst reads F32 and I32", path, name, t.dtype);
    // Each dimension a count in int64's range, and their product (in bytes)
    // too: a shape of 2^32 x 2^32 would wrap to 0 elements.
    int64_t bytes = esize;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned() || !json_integer_fits<int64_t>(d))
        return data_loss("'{}': tensor '{}' has a bad shape entry {} (allowed: integers in [0, {}])", path, name,
                         d.dump(), std::numeric_limits<int64_t>::max());
      t.shape.push_back(d.get<int64_t>());
      if (__builtin_mul_overflow(bytes, t.shape.back(), &bytes))
        return data_loss("'{}': tensor '{}' of shape {} has more elements than 2^63 bytes hold", path, name,
                         entry["shape"].dump());
    }
    const auto& off = entry["data_offsets"];
    if (!json_integer_fits<uint64_t>(off[0]) || !json_integer_fits<uint64_t>(off[1]))
      return data_loss("'{}': tensor '{}' has bad data_offsets", path, name);
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      return data_loss("'{}': tensor '{}' bytes [{}, {}) lie outside the {} data bytes", path, name, begin, end,
                       data_size);
    if (static_cast<uint64_t>(bytes) != end - begin)
      return data_loss("'{}': tensor '{}' has {} bytes but its shape needs {}", path, name, end - begin, bytes);
    t.bytes.assign(data.begin() + static_cast<int64_t>(begin), data.begin() + static_cast<int64_t>(end));
    file.tensors_[name] = std::move(t);
  }
  return file;
}

}  // namespace pst
