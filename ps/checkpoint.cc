#include "ps/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/json_fields.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;

namespace pst {
namespace {

// Format 2 adds the manifest's own checksum (manifest_xxh3); format 1
// checkpoints (without it) still load.
constexpr int kFormat = 2;
constexpr int kFormatWithoutChecksum = 1;
const char* const kKinds[3] = {"param", "exp_avg", "exp_avg_sq"};

// XXH3-64 of a manifest's JSON without its manifest_xxh3 field, in the
// compact form of sorted keys (nlohmann::json keeps object keys sorted).
std::string manifest_checksum(nlohmann::json j) {
  j.erase("manifest_xxh3");
  const std::string canonical = j.dump();
  return fmt::format("{:016x}", XXH3_64bits(canonical.data(), canonical.size()));
}

// Where a server that could not write its part of a checkpoint says why.
std::string failure_file_name(int server) { return fmt::format("server-{}.failed", server); }

std::string first_line(const std::string& text) { return text.substr(0, std::min<size_t>(text.find('\n'), 500)); }

uint64_t xxh3_of(const std::string& bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// "step-000000123" -> 123; -1 for other names.
int64_t step_of(const std::string& name) {
  if (name.size() != 14 || name.rfind("step-", 0) != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const int64_t s = step_of(e.path().filename().string());
    if (s >= 0 && e.is_directory()) out.emplace_back(s, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<CheckpointFile> checkpoint_file(const std::string& dir, const std::string& name) {
  PST_ASSIGN_OR_RETURN(std::string bytes, read_all(dir + "/" + name));
  return CheckpointFile{name, static_cast<int64_t>(bytes.size()), xxh3_of(bytes)};
}

std::string shard_file_name(int server) { return fmt::format("server-{}.safetensors", server); }

std::string checkpoint_dir(const std::string& root, int64_t step) { return fmt::format("{}/step-{:09d}", root, step); }

Result<CheckpointFile> write_shard(const std::string& dir, int server, const ParamTable& table,
                                   const ShardState& state) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error("{}: cannot create the checkpoint directory: {}", dir, ec.message());
  SafetensorsFile f;
  const std::vector<float>* parts[3] = {&state.weights, &state.exp_avg, &state.exp_avg_sq};
  int64_t local = 0;
  for (const ChunkRange& r : state.ranges) {
    const ParamSpec& p = table[r.tensor];
    for (int k = 0; k < 3; ++k)
      f.add_f32(fmt::format("{}/{}@{}", kKinds[k], p.name, r.begin - p.offset), {r.length}, parts[k]->data() + local);
    local += r.length;
  }
  PST_CHECK_MSG(static_cast<size_t>(local) == state.weights.size(), "shard state of {} floats for ranges of {}",
                state.weights.size(), local);
  f.set_metadata("format", std::to_string(kFormat));
  f.set_metadata("server", std::to_string(server));
  const std::string name = shard_file_name(server);
  PST_RETURN_IF_ERROR(f.write(dir + "/" + name));
  return checkpoint_file(dir, name);
}

DataPool Manifest::data_pool(int64_t workers) const {
  if (data_next < 0) return DataPool{step * workers, {}};  // every worker trained every step
  return DataPool{data_next, data_holes};
}

Manifest step_manifest(const std::string& config, uint64_t seed, const ParamTable& table, int64_t servers,
                       int64_t chunk_bytes, const StepReport& report) {
  Manifest m;
  m.step = report.version;
  m.applied_steps = report.applied_steps;
  m.skipped_steps = report.version - report.applied_steps;
  m.loss = report.tokens > 0 ? report.loss_sum / static_cast<double>(report.tokens) : 0.0;
  m.config = config;
  m.seed = seed;
  m.servers = servers;
  m.chunk_bytes = chunk_bytes;
  for (const ParamSpec& p : table.params()) m.params.emplace_back(p.name, p.shape);
  return m;
}

Result<int64_t> write_checkpoint_part(const std::string& root, const std::string& dir, int server,
                                      const ParamTable& table, const ShardState& state,
                                      std::optional<Manifest> manifest, int64_t keep, Deadline deadline,
                                      const std::atomic<bool>* cancel) {
  // A marker of this step left by an earlier run (one that failed here and
  // was resumed from before) is not about this checkpoint.
  std::error_code ignored;
  fs::remove(dir + "/" + failure_file_name(server), ignored);
  const auto begun = fs::file_time_type::clock::now();
  auto written = write_shard(dir, server, table, state);
  if (!written.ok()) {
    // The manifest's holder stops waiting for this file when it sees the
    // reason (a few bytes: they fit where the file did not, most times).
    (void)write_atomic(dir + "/" + failure_file_name(server), written.status().message() + "\n");
    return written.status();
  }
  const CheckpointFile mine = *written;
  if (!manifest) return mine.bytes;
  Manifest& m = *manifest;
  m.files.clear();
  int64_t bytes = 0;
  for (int k = 0; k < m.servers; ++k) {
    CheckpointFile f = mine;
    if (k != server) {
      const std::string failed = dir + "/" + failure_file_name(k);
      while (!fs::exists(dir + "/" + shard_file_name(k)) && !deadline.expired()) {
        // A marker written since this checkpoint began (the servers start
        // it after the same step, seconds apart at most); an older one is
        // another run's, about to be removed by its server.
        std::error_code ec;
        const auto when = fs::last_write_time(failed, ec);
        if (!ec && when >= begun - std::chrono::seconds(60)) {
          auto why = read_all(failed);
          return io_error("server {} could not write its part: {}", k,
                          why.ok() ? first_line(*why) : std::string("(its reason cannot be read)"));
        }
        if (cancel && cancel->load())
          return failed_precondition("server {}'s part of {} did not come before the job re-formed", k, dir);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      PST_ASSIGN_OR_RETURN(f, checkpoint_file(dir, shard_file_name(k)));
    }
    m.files.push_back(f);
    bytes += f.bytes;
  }
  PST_RETURN_IF_ERROR(write_manifest(dir, m));
  PST_RETURN_IF_ERROR(prune_checkpoints(root, keep, m.step));
  return bytes;
}

Status write_manifest(const std::string& dir, const Manifest& m) {
  for (const CheckpointFile& f : m.files) {
    PST_ASSIGN_OR_RETURN(CheckpointFile on_disk, checkpoint_file(dir, f.name));
    if (on_disk.bytes != f.bytes || on_disk.xxh3 != f.xxh3)
      return data_loss("{}/{}: {} bytes with checksum {:016x} on disk; the writer reported {} bytes, {:016x}", dir,
                       f.name, on_disk.bytes, on_disk.xxh3, f.bytes, f.xxh3);
  }
  nlohmann::json j;
  j["format"] = kFormat;
  j["step"] = m.step;
  j["applied_steps"] = m.applied_steps;
  j["skipped_steps"] = m.skipped_steps;
  j["loss"] = m.loss;
  j["config"] = m.config;
  j["seed"] = m.seed;
  j["data_position"] = {{"step", m.step}, {"seed", m.seed}};
  if (m.data_next >= 0) {
    j["data_position"]["next"] = m.data_next;
    j["data_position"]["holes"] = m.data_holes;
  }
  j["servers"] = m.servers;
  j["chunk_bytes"] = m.chunk_bytes;
  j["params"] = nlohmann::json::array();
  for (const auto& [name, shape] : m.params) j["params"].push_back({{"name", name}, {"shape", shape}});
  j["files"] = nlohmann::json::array();
  for (const CheckpointFile& f : m.files)
    j["files"].push_back({{"name", f.name}, {"bytes", f.bytes}, {"xxh3", fmt::format("{:016x}", f.xxh3)}});
  j["manifest_xxh3"] = manifest_checksum(j);
  return write_atomic(dir + "/manifest.json", j.dump(2) + "\n");
}

// Every number of a manifest within what a job can write: a damaged or
// crafted one must not resume "happily" at step -5 with 0 servers.
static Status check_manifest_fields(const std::string& path, const std::string& dir, const Manifest& m) {
  auto bad = [&](const char* field, auto value, const char* allowed) {
    return data_loss("{}: {} = {}: must be {}", path, field, value, allowed);
  };
  if (m.step < 0) return bad("step", m.step, ">= 0");
  const std::string name = fs::path(dir).filename().string();
  if (name.starts_with("step-") && name != fs::path(checkpoint_dir("", m.step)).filename().string())
    return data_loss("{}: step = {}, but the directory is {}", path, m.step, name);
  if (m.applied_steps < 0 || m.applied_steps > m.step) return bad("applied_steps", m.applied_steps, "in [0, step]");
  if (m.skipped_steps < 0 || m.skipped_steps > m.step) return bad("skipped_steps", m.skipped_steps, "in [0, step]");
  if (m.servers < 1 || m.servers > 1024) return bad("servers", m.servers, "in [1, 1024]");
  if (m.chunk_bytes < 4 || m.chunk_bytes % 4 != 0 || m.chunk_bytes > (int64_t{1} << 31))
    return bad("chunk_bytes", m.chunk_bytes, "a multiple of 4 in [4, 2^31]");
  if (static_cast<int64_t>(m.files.size()) != m.servers)
    return data_loss("{}: lists {} files for {} servers", path, m.files.size(), m.servers);
  if (m.params.empty()) return data_loss("{}: lists no parameters", path);
  // Shapes of counts whose elements, all tensors together, int64 holds
  // (inspect and average sum them).
  int64_t total = 0;
  for (const auto& [name, shape] : m.params) {
    int64_t n = 1;
    for (int64_t d : shape)
      if (d < 0 || __builtin_mul_overflow(n, d, &n))
        return data_loss(
            "{}: parameter {} has shape [{}]: each dimension must be >= 0 and all elements fewer than 2^63", path, name,
            fmt::join(shape, ","));
    if (__builtin_add_overflow(total, n, &total))
      return data_loss("{}: the parameters have more elements than 2^63 (at {})", path, name);
  }
  for (const CheckpointFile& f : m.files)
    if (f.bytes < 0) return data_loss("{}: {} has {} bytes", path, f.name, f.bytes);
  if (m.data_next < -1) return bad("data_position.next", m.data_next, ">= 0");
  std::vector<int64_t> holes = m.data_holes;
  std::sort(holes.begin(), holes.end());
  for (size_t i = 0; i < holes.size(); ++i)
    if (holes[i] < 0 || holes[i] >= m.data_next || (i > 0 && holes[i] == holes[i - 1]))
      return data_loss("{}: data_position.holes: {} is not a batch before next = {}, or is listed twice", path,
                       holes[i], m.data_next);
  return Status();
}

Result<Manifest> read_checkpoint(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  if (!fs::exists(path)) return not_found("{}: no manifest.json (not a complete checkpoint)", dir);
  PST_ASSIGN_OR_RETURN(std::string text, read_all(path));
  Manifest m;
  try {
    const auto j = nlohmann::json::parse(text);
    const int format = json_integer<int>(j.at("format"), "format");
    if (format != kFormat && format != kFormatWithoutChecksum)
      return data_loss("{}: checkpoint format {}; this pst reads formats {} and {}", path, format,
                       kFormatWithoutChecksum, kFormat);
    // The manifest's own checksum: a damaged manifest (a changed number, a
    // lost line) is named as such before any of its fields is believed.
    if (format == kFormat) {
      const std::string stored = j.at("manifest_xxh3").get<std::string>();
      const std::string computed = manifest_checksum(j);
      if (stored != computed)
        return data_loss(
            "{}: the manifest's checksum is {}, its contents hash to {} (the manifest is damaged or was "
            "edited)",
            path, stored, computed);
    }
    m.step = json_integer<int64_t>(j.at("step"), "step");
    m.applied_steps = json_integer<int64_t>(j.at("applied_steps"), "applied_steps");
    m.skipped_steps = json_integer<int64_t>(j.at("skipped_steps"), "skipped_steps");
    m.loss = j.at("loss").get<double>();
    m.config = j.at("config").get<std::string>();
    m.seed = json_integer<uint64_t>(j.at("seed"), "seed");
    if (j.contains("data_position") && j["data_position"].contains("next")) {
      m.data_next = json_integer<int64_t>(j["data_position"].at("next"), "data_position.next");
      m.data_holes = json_integers(j["data_position"].at("holes"), "data_position.holes");
    }
    m.servers = json_integer<int64_t>(j.at("servers"), "servers");
    m.chunk_bytes = json_integer<int64_t>(j.at("chunk_bytes"), "chunk_bytes");
    for (const auto& p : j.at("params")) m.params.emplace_back(p.at("name"), json_integers(p.at("shape"), "a shape"));
    for (const auto& f : j.at("files")) {
      CheckpointFile cf;
      cf.name = f.at("name").get<std::string>();
      cf.bytes = json_integer<int64_t>(f.at("bytes"), "a file's bytes");
      cf.xxh3 = std::stoull(f.at("xxh3").get<std::string>(), nullptr, 16);
      if (cf.name.find('/') != std::string::npos || cf.name.empty())
        return data_loss("{}: file name '{}' is not a plain name", path, cf.name);
      m.files.push_back(cf);
    }
  } catch (const nlohmann::json::exception& e) {
    return data_loss("{}: not a valid manifest: {}", path, e.what());
  } catch (const std::logic_error& e) {  // json_integer's, std::stoull's: a damaged field, not a failure of pst
    return data_loss("{}: not a valid manifest: {}", path, e.what());
  }
  if (m.files.empty()) return data_loss("{}: lists no files", path);
  PST_RETURN_IF_ERROR(check_manifest_fields(path, dir, m));
  for (const CheckpointFile& f : m.files) {
    auto on_disk = checkpoint_file(dir, f.name);
    if (!on_disk.ok()) return data_loss("{}: {} is missing: {}", dir, f.name, on_disk.status().message());
    if (on_disk->bytes != f.bytes)
      return data_loss("{}/{}: {} bytes; the manifest says {} (truncated or replaced)", dir, f.name, on_disk->bytes,
                       f.bytes);
    if (on_disk->xxh3 != f.xxh3)
      return data_loss("{}/{}: checksum {:016x}; the manifest says {:016x} (the file is corrupt)", dir, f.name,
                       on_disk->xxh3, f.xxh3);
  }
  return m;
}

std::vector<std::string> newest_checkpoints(const std::string& root, int64_t count) {
  std::vector<std::string> out;
  const auto dirs = step_dirs(root);
  for (auto it = dirs.rbegin(); it != dirs.rend() && static_cast<int64_t>(out.size()) < count; ++it) {
    auto m = read_checkpoint(it->second);
    if (m.ok())
      out.push_back(it->second);
    else
      spdlog::warn("skipping {}: {}", it->second, m.status().message());
  }
  return out;
}

Result<std::string> latest_checkpoint(const std::string& root) {
  auto newest = newest_checkpoints(root, 1);
  if (newest.empty())
    return not_found("{}: no complete checkpoint (step-NNNNNNNNN directories with a valid manifest.json)", root);
  return newest[0];
}

Status check_model(const Manifest& m, const ParamTable& table) {
  const size_t n = std::min(m.params.size(), static_cast<size_t>(table.size()));
  for (size_t i = 0; i < n; ++i) {
    const ParamSpec& p = table[static_cast<int64_t>(i)];
    if (m.params[i].first != p.name || m.params[i].second != p.shape)
      return failed_precondition(
          "the checkpoint's parameter {} is {} {}; this model's is {} {} (a different "
          "model config)",
          i, m.params[i].first, fmt::format("{}", fmt::join(m.params[i].second, "x")), p.name,
          fmt::format("{}", fmt::join(p.shape, "x")));
  }
  if (m.params.size() != static_cast<size_t>(table.size()))
    return failed_precondition("the checkpoint has {} parameters; this model has {} (a different model config)",
                               m.params.size(), table.size());
  return Status();
}

Result<ShardState> load_shard(const std::string& dir, const Manifest& m, const ParamTable& table,
                              const std::vector<ChunkRange>& ranges) {
  PST_RETURN_IF_ERROR(check_model(m, table));
  // Every stored piece: (kind, tensor name) -> offset in the tensor -> data.
  std::map<std::pair<int, std::string>, std::map<int64_t, std::vector<float>>> pieces;
  for (const CheckpointFile& f : m.files) {
    PST_ASSIGN_OR_RETURN(SafetensorsFile st, SafetensorsFile::read(dir + "/" + f.name));
    for (const auto& [key, t] : st.tensors()) {
      const auto slash = key.find('/'), at = key.rfind('@');
      int kind = -1;
      for (int k = 0; k < 3; ++k)
        if (key.compare(0, slash, kKinds[k]) == 0) kind = k;
      // KIND/TENSOR@OFFSET, the offset in decimal digits.
      int64_t offset = -1;
      if (at != std::string::npos) {
        const char* const end = key.data() + key.size();
        const auto [p, ec] = std::from_chars(key.data() + at + 1, end, offset);
        if (ec != std::errc() || p != end) offset = -1;
      }
      if (slash == std::string::npos || at == std::string::npos || at < slash || kind < 0 || offset < 0 ||
          t.dtype != "F32" || t.shape.size() != 1)
        return data_loss("{}/{}: unexpected tensor '{}' (a shard file holds KIND/TENSOR@OFFSET, float32, 1-D)", dir,
                         f.name, key);
      pieces[{kind, key.substr(slash + 1, at - slash - 1)}][offset] = t.to_f32();
    }
  }
  ShardState s;
  s.ranges = ranges;
  std::vector<float>* out[3] = {&s.weights, &s.exp_avg, &s.exp_avg_sq};
  for (const ChunkRange& r : ranges) {
    const ParamSpec& p = table[r.tensor];
    for (int k = 0; k < 3; ++k) {
      const auto it = pieces.find({k, p.name});
      if (it == pieces.end()) return data_loss("{}: no {} of {}", dir, kKinds[k], p.name);
      // Copy [r.begin, r.begin + r.length) of the tensor from the pieces covering it.
      int64_t pos = r.begin - p.offset;
      const int64_t end = pos + r.length;
      while (pos < end) {
        auto piece = it->second.upper_bound(pos);
        if (piece == it->second.begin()) return data_loss("{}: {} of {} lacks offset {}", dir, kKinds[k], p.name, pos);
        --piece;
        const int64_t from = pos - piece->first;
        const int64_t have = static_cast<int64_t>(piece->second.size()) - from;
        if (have <= 0) return data_loss("{}: {} of {} lacks offset {}", dir, kKinds[k], p.name, pos);
        const int64_t take = std::min(have, end - pos);
        out[k]->insert(out[k]->end(), piece->second.begin() + from, piece->second.begin() + from + take);
        pos += take;
      }
    }
  }
  return s;
}

Status prune_checkpoints(const std::string& root, int64_t keep, int64_t written) {
  auto dirs = step_dirs(root);
  std::erase_if(dirs, [&](const auto& d) { return d.first > written; });
  std::vector<std::string> complete;
  int64_t newest_complete = -1;
  for (const auto& [step, dir] : dirs)
    if (fs::exists(dir + "/manifest.json")) {
      complete.push_back(dir);
      newest_complete = step;
    }
  std::error_code ec;
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(keep, 1)) < complete.size(); ++i) {
    // The manifest goes first: a prune cut short leaves an incomplete
    // directory, never one that claims to be complete with files missing.
    fs::remove(complete[i] + "/manifest.json", ec);
    if (!ec) fs::remove_all(complete[i], ec);
    if (ec) return io_error("{}: cannot remove: {}", complete[i], ec.message());
  }
  for (const auto& [step, dir] : dirs)
    if (step < newest_complete && !fs::exists(dir + "/manifest.json")) fs::remove_all(dir, ec);
  return Status();
}

}  // namespace pst
