#include "core/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <type_traits>

#include <toml++/toml.h>

#include "core/philox.h"

namespace pst {
namespace {

template <typename E>
struct EnumNames;

#define PST_ENUM_NAMES(E, ...)                                                \
  template <>                                                                 \
  struct EnumNames<E> {                                                       \
    static const std::vector<std::pair<E, const char*>>& get() {              \
      static const std::vector<std::pair<E, const char*>> names{__VA_ARGS__}; \
      return names;                                                           \
    }                                                                         \
  };

PST_ENUM_NAMES(ModelKind, {ModelKind::kEncoderDecoder, "encoder_decoder"}, {ModelKind::kDecoderOnly, "decoder_only"})
PST_ENUM_NAMES(NormPlacement, {NormPlacement::kPre, "pre"}, {NormPlacement::kPost, "post"},
               {NormPlacement::kDeepNorm, "deepnorm"})
PST_ENUM_NAMES(Activation, {Activation::kRelu, "relu"}, {Activation::kGelu, "gelu"},
               {Activation::kGeluTanh, "gelu_tanh"}, {Activation::kSwiGLU, "swiglu"})
PST_ENUM_NAMES(Positions, {Positions::kSinusoidal, "sinusoidal"}, {Positions::kLearned, "learned"},
               {Positions::kRope, "rope"})
PST_ENUM_NAMES(NormType, {NormType::kLayerNorm, "layernorm"}, {NormType::kRmsNorm, "rmsnorm"})
PST_ENUM_NAMES(TokenizerKind, {TokenizerKind::kBytes, "bytes"}, {TokenizerKind::kSentencePiece, "sentencepiece"})
PST_ENUM_NAMES(InitScheme, {InitScheme::kXavierUniform, "xavier_uniform"},
               {InitScheme::kKaimingNormal, "kaiming_normal"}, {InitScheme::kNormal, "normal"},
               {InitScheme::kDeepNet, "deepnet"})
PST_ENUM_NAMES(Task, {Task::kG2P, "g2p"}, {Task::kLM, "lm"})
PST_ENUM_NAMES(LexiconFormat, {LexiconFormat::kAuto, "auto"}, {LexiconFormat::kFestival, "festival"},
               {LexiconFormat::kCmudict, "cmudict"}, {LexiconFormat::kTsv, "tsv"})
PST_ENUM_NAMES(OptimizerKind, {OptimizerKind::kAdamW, "adamw"}, {OptimizerKind::kAdam, "adam"})
PST_ENUM_NAMES(ScheduleKind, {ScheduleKind::kConstant, "constant"}, {ScheduleKind::kLinear, "linear"},
               {ScheduleKind::kCosine, "cosine"}, {ScheduleKind::kStep, "step"},
               {ScheduleKind::kExponential, "exponential"}, {ScheduleKind::kInverseSqrt, "inverse_sqrt"})
PST_ENUM_NAMES(Consistency, {Consistency::kBsp, "bsp"}, {Consistency::kAsp, "asp"}, {Consistency::kSsp, "ssp"})
PST_ENUM_NAMES(InProcess, {InProcess::kThreads, "threads"}, {InProcess::kSequential, "sequential"})
PST_ENUM_NAMES(Overlap, {Overlap::kAuto, "auto"}, {Overlap::kOn, "on"}, {Overlap::kOff, "off"})
PST_ENUM_NAMES(Transport, {Transport::kZmq, "zmq"}, {Transport::kMpi, "mpi"})
PST_ENUM_NAMES(WireFormat, {WireFormat::kFp32, "fp32"}, {WireFormat::kBf16, "bf16"})
PST_ENUM_NAMES(WireRounding, {WireRounding::kNearest, "nearest"}, {WireRounding::kStochastic, "stochastic"})
PST_ENUM_NAMES(SecurityMode, {SecurityMode::kSecret, "secret"}, {SecurityMode::kCurve, "curve"},
               {SecurityMode::kNone, "none"})
PST_ENUM_NAMES(CheckpointFailure, {CheckpointFailure::kContinue, "continue"}, {CheckpointFailure::kStop, "stop"})
PST_ENUM_NAMES(MatmulPrecision, {MatmulPrecision::kFp32, "fp32"}, {MatmulPrecision::kTf32, "tf32"},
               {MatmulPrecision::kBf16, "bf16"})
PST_ENUM_NAMES(CpuBlas, {CpuBlas::kOpenBlas, "openblas"}, {CpuBlas::kOneDnn, "onednn"})

template <typename E>
const char* enum_name(E v) {
  for (const auto& [e, n] : EnumNames<E>::get())
    if (e == v) return n;
  return "?";
}

template <typename E>
std::string enum_choices() {
  std::string s;
  for (const auto& [e, n] : EnumNames<E>::get()) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

// One configurable field: how to set it from TOML or from a string, and how
// to print it. The list is built over a JobConfig instance.
struct Field {
  std::string section;
  std::string key;
  std::function<Status(const toml::node&)> set_toml;
  std::function<Status(const std::string&)> set_text;
  std::function<std::string()> get;
};

const char* toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    default: return "a date or time";
  }
}

std::string qualified(const std::string& s, const std::string& k) { return s + "." + k; }

template <typename T>
Field make_field(const std::string& section, const std::string& key, T* target) {
  const std::string name = qualified(section, key);
  Field f{section, key, {}, {}, {}};
  if constexpr (std::is_same_v<T, int64_t>) {
    f.set_toml = [=](const toml::node& n) -> Status {
      if (auto v = n.as_integer()) {
        *target = v->get();
        return Status();
      }
      return invalid_argument("{}: expected an integer, got {}", name, toml_type_name(n));
    };
    f.set_text = [=](const std::string& s) -> Status {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || p != s.data() + s.size())
        return invalid_argument("{}: expected an integer, got '{}'", name, s);
      *target = v;
      return Status();
    };
    f.get = [=] { return std::to_string(*target); };
  } else if constexpr (std::is_same_v<T, double>) {
    f.set_toml = [=](const toml::node& n) -> Status {
      if (auto v = n.as_floating_point()) {
        *target = v->get();
      } else if (auto i = n.as_integer()) {
        *target = static_cast<double>(i->get());
      } else {
        return invalid_argument("{}: expected a number, got {}", name, toml_type_name(n));
      }
      if (!std::isfinite(*target)) return invalid_argument("{}: must be finite", name);
      return Status();
    };
    f.set_text = [=](const std::string& s) -> Status {
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
        return invalid_argument("{}: expected a finite number, got '{}'", name, s);
      *target = v;
      return Status();
    };
    f.get = [=] {
      std::ostringstream os;
      os.precision(17);
      os << *target;
      std::string s = os.str();
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
      return s;
    };
  } else if constexpr (std::is_same_v<T, bool>) {
    f.set_toml = [=](const toml::node& n) -> Status {
      if (auto v = n.as_boolean()) {
        *target = v->get();
        return Status();
      }
      return invalid_argument("{}: expected true or false, got {}", name, toml_type_name(n));
    };
    f.set_text = [=](const std::string& s) -> Status {
      if (s == "true" || s == "false") {
        *target = s == "true";
        return Status();
      }
      return invalid_argument("{}: expected true or false, got '{}'", name, s);
    };
    f.get = [=] { return std::string(*target ? "true" : "false"); };
  } else if constexpr (std::is_same_v<T, std::string>) {
    f.set_toml = [=](const toml::node& n) -> Status {
      if (auto v = n.as_string()) {
        *target = v->get();
        return Status();
      }
      return invalid_argument("{}: expected a string, got {}", name, toml_type_name(n));
    };
    f.set_text = [=](const std::string& s) -> Status {
      *target = s;
      return Status();
    };
    f.get = [=] { return "\"" + *target + "\""; };
  } else {
    static_assert(std::is_enum_v<T>);
    f.set_text = [=](const std::string& s) -> Status {
      for (const auto& [e, n] : EnumNames<T>::get()) {
        if (s == n) {
          *target = e;
          return Status();
        }
      }
      return invalid_argument("{}: '{}' is not one of: {}", name, s, enum_choices<T>());
    };
    auto text = f.set_text;
    f.set_toml = [=](const toml::node& n) -> Status {
      if (auto v = n.as_string()) return text(v->get());
      return invalid_argument("{}: expected a string (one of: {})", name, enum_choices<T>());
    };
    f.get = [=] { return "\"" + std::string(enum_name(*target)) + "\""; };
  }
  return f;
}

std::vector<Field> fields_of(JobConfig& c) {
  std::vector<Field> f;
  auto& m = c.model;
  f.push_back(make_field("model", "kind", &m.kind));
  f.push_back(make_field("model", "d_model", &m.d_model));
  f.push_back(make_field("model", "heads", &m.heads));
  f.push_back(make_field("model", "ffn_dim", &m.ffn_dim));
  f.push_back(make_field("model", "encoder_layers", &m.encoder_layers));
  f.push_back(make_field("model", "decoder_layers", &m.decoder_layers));
  f.push_back(make_field("model", "norm", &m.norm));
  f.push_back(make_field("model", "norm_type", &m.norm_type));
  f.push_back(make_field("model", "activation", &m.activation));
  f.push_back(make_field("model", "positions", &m.positions));
  f.push_back(make_field("model", "rope_theta", &m.rope_theta));
  f.push_back(make_field("model", "kv_heads", &m.kv_heads));
  f.push_back(make_field("model", "max_len", &m.max_len));
  f.push_back(make_field("model", "tie_embeddings", &m.tie_embeddings));
  f.push_back(make_field("model", "bias", &m.bias));
  f.push_back(make_field("model", "scale_embeddings", &m.scale_embeddings));
  f.push_back(make_field("model", "dropout", &m.dropout));
  f.push_back(make_field("model", "attention_dropout", &m.attention_dropout));
  f.push_back(make_field("model", "embedding_dropout", &m.embedding_dropout));
  f.push_back(make_field("model", "layernorm_eps", &m.layernorm_eps));
  f.push_back(make_field("model", "init", &m.init));
  f.push_back(make_field("model", "init_std", &m.init_std));
  auto& d = c.data;
  f.push_back(make_field("data", "task", &d.task));
  f.push_back(make_field("data", "path", &d.path));
  f.push_back(make_field("data", "train", &d.train));
  f.push_back(make_field("data", "valid", &d.valid));
  f.push_back(make_field("data", "test", &d.test));
  f.push_back(make_field("data", "format", &d.format));
  f.push_back(make_field("data", "batch_size", &d.batch_size));
  f.push_back(make_field("data", "seq_len", &d.seq_len));
  f.push_back(make_field("data", "tokenizer", &d.tokenizer));
  f.push_back(make_field("data", "tokenizer_model", &d.tokenizer_model));
  f.push_back(make_field("data", "max_examples", &d.max_examples));
  f.push_back(make_field("data", "eval_max_examples", &d.eval_max_examples));
  f.push_back(make_field("data", "test_max_examples", &d.test_max_examples));
  auto& o = c.optim;
  f.push_back(make_field("optim", "algorithm", &o.algorithm));
  f.push_back(make_field("optim", "lr", &o.lr));
  f.push_back(make_field("optim", "beta1", &o.beta1));
  f.push_back(make_field("optim", "beta2", &o.beta2));
  f.push_back(make_field("optim", "eps", &o.eps));
  f.push_back(make_field("optim", "weight_decay", &o.weight_decay));
  f.push_back(make_field("optim", "decay_embeddings", &o.decay_embeddings));
  f.push_back(make_field("optim", "clip_norm", &o.clip_norm));
  auto& s = c.schedule;
  f.push_back(make_field("schedule", "kind", &s.kind));
  f.push_back(make_field("schedule", "warmup_steps", &s.warmup_steps));
  f.push_back(make_field("schedule", "min_lr", &s.min_lr));
  f.push_back(make_field("schedule", "total_steps", &s.total_steps));
  f.push_back(make_field("schedule", "cycle_steps", &s.cycle_steps));
  f.push_back(make_field("schedule", "cycle_mult", &s.cycle_mult));
  f.push_back(make_field("schedule", "step_size", &s.step_size));
  f.push_back(make_field("schedule", "gamma", &s.gamma));
  f.push_back(make_field("schedule", "decay_rate", &s.decay_rate));
  auto& t = c.train;
  f.push_back(make_field("train", "steps", &t.steps));
  f.push_back(make_field("train", "epochs", &t.epochs));
  f.push_back(make_field("train", "accumulate", &t.accumulate));
  f.push_back(make_field("train", "seed", &t.seed));
  f.push_back(make_field("train", "threads", &t.threads));
  f.push_back(make_field("train", "label_smoothing", &t.label_smoothing));
  f.push_back(make_field("train", "log_every", &t.log_every));
  f.push_back(make_field("train", "eval_every", &t.eval_every));
  f.push_back(make_field("train", "max_minutes", &t.max_minutes));
  f.push_back(make_field("train", "patience", &t.patience));
  f.push_back(make_field("train", "keep_best", &t.keep_best));
  f.push_back(make_field("train", "best_metric", &t.best_metric));
  f.push_back(make_field("train", "output", &t.output));
  f.push_back(make_field("train", "test_at_end", &t.test_at_end));
  f.push_back(make_field("train", "device", &t.device));
  f.push_back(make_field("train", "matmul", &t.matmul));
  f.push_back(make_field("train", "blas", &t.blas));
  f.push_back(make_field("train", "log_level", &t.log_level));
  f.push_back(make_field("train", "overwrite", &t.overwrite));
  auto& k = c.cluster;
  f.push_back(make_field("cluster", "servers", &k.servers));
  f.push_back(make_field("cluster", "workers", &k.workers));
  f.push_back(make_field("cluster", "chunk_bytes", &k.chunk_bytes));
  f.push_back(make_field("cluster", "overlap", &k.overlap));
  f.push_back(make_field("cluster", "stream_bytes", &k.stream_bytes));
  f.push_back(make_field("cluster", "timeout_s", &k.timeout_s));
  f.push_back(make_field("cluster", "start_timeout_s", &k.start_timeout_s));
  f.push_back(make_field("cluster", "heartbeat_s", &k.heartbeat_s));
  f.push_back(make_field("cluster", "heartbeat_misses", &k.heartbeat_misses));
  f.push_back(make_field("cluster", "min_workers", &k.min_workers));
  f.push_back(make_field("cluster", "max_workers", &k.max_workers));
  f.push_back(make_field("cluster", "max_restarts", &k.max_restarts));
  f.push_back(make_field("cluster", "host", &k.host));
  f.push_back(make_field("cluster", "consistency", &k.consistency));
  f.push_back(make_field("cluster", "staleness", &k.staleness));
  f.push_back(make_field("cluster", "in_process", &k.in_process));
  f.push_back(make_field("cluster", "interface", &k.interface));
  f.push_back(make_field("cluster", "port_range", &k.port_range));
  f.push_back(make_field("cluster", "transport", &k.transport));
  f.push_back(make_field("cluster", "wire", &k.wire));
  f.push_back(make_field("cluster", "wire_rounding", &k.wire_rounding));
  auto& mc = c.metrics;
  f.push_back(make_field("metrics", "enabled", &mc.enabled));
  f.push_back(make_field("metrics", "bind", &mc.bind));
  f.push_back(make_field("metrics", "port", &mc.port));
  f.push_back(make_field("metrics", "file_sd", &mc.file_sd));
  f.push_back(make_field("metrics", "linger_s", &mc.linger_s));
  auto& ck = c.checkpoint;
  f.push_back(make_field("checkpoint", "every_steps", &ck.every_steps));
  f.push_back(make_field("checkpoint", "every_minutes", &ck.every_minutes));
  f.push_back(make_field("checkpoint", "dir", &ck.dir));
  f.push_back(make_field("checkpoint", "keep", &ck.keep));
  f.push_back(make_field("checkpoint", "on_failure", &ck.on_failure));
  f.push_back(make_field("checkpoint", "resume", &ck.resume));
  auto& sc = c.security;
  f.push_back(make_field("security", "mode", &sc.mode));
  f.push_back(make_field("security", "key_file", &sc.key_file));
  return f;
}

std::string keys_of(const std::vector<Field>& fields, const std::string& section) {
  std::string s;
  for (const auto& f : fields)
    if (f.section == section) s += (s.empty() ? "" : ", ") + f.key;
  return s;
}

const std::vector<std::string> kSections{"model",   "data",    "optim",      "schedule", "train",
                                         "cluster", "metrics", "checkpoint", "security"};

std::string sections_list() {
  std::string s;
  for (const auto& x : kSections) s += (s.empty() ? "" : ", ") + x;
  return s;
}

Field* find_field(std::vector<Field>& fields, const std::string& section, const std::string& key) {
  for (auto& f : fields)
    if (f.section == section && f.key == key) return &f;
  return nullptr;
}

}  // namespace

const char* to_string(ModelKind v) { return enum_name(v); }
const char* to_string(NormPlacement v) { return enum_name(v); }
const char* to_string(Activation v) { return enum_name(v); }
const char* to_string(Positions v) { return enum_name(v); }
const char* to_string(NormType v) { return enum_name(v); }
const char* to_string(TokenizerKind v) { return enum_name(v); }
const char* to_string(InitScheme v) { return enum_name(v); }
const char* to_string(Task v) { return enum_name(v); }
const char* to_string(LexiconFormat v) { return enum_name(v); }
const char* to_string(MatmulPrecision v) { return enum_name(v); }
const char* to_string(CpuBlas v) { return enum_name(v); }
const char* to_string(Consistency v) { return enum_name(v); }
const char* to_string(InProcess v) { return enum_name(v); }
const char* to_string(Overlap v) { return enum_name(v); }
const char* to_string(Transport v) { return enum_name(v); }
const char* to_string(WireFormat v) { return enum_name(v); }
const char* to_string(WireRounding v) { return enum_name(v); }
const char* to_string(SecurityMode v) { return enum_name(v); }
const char* to_string(CheckpointFailure v) { return enum_name(v); }

Result<DeviceSpec> parse_device(const std::string& text) {
  DeviceSpec d;
  if (text == "auto") return d;
  if (text == "cpu") {
    d.kind = DeviceKind::kCpu;
    return d;
  }
  if (text == "cuda") {
    d.kind = DeviceKind::kCuda;
    return d;
  }
  if (text.starts_with("cuda:")) {
    const auto index = parse_count(std::string_view(text).substr(5));
    if (index && *index <= std::numeric_limits<int>::max()) {
      d.kind = DeviceKind::kCuda;
      d.index = static_cast<int>(*index);
      return d;
    }
  }
  return invalid_argument("train.device = \"{}\": allowed are auto, cpu, cuda and cuda:N (N >= 0)", text);
}

std::optional<int64_t> parse_count(std::string_view text) {
  if (text.empty() || text.front() == '-' || text.front() == '+') return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

Status apply_override(JobConfig& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  const auto dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq)
    return invalid_argument("--set '{}': expected section.key=value", assignment);
  const std::string section = assignment.substr(0, dot);
  const std::string key = assignment.substr(dot + 1, eq - dot - 1);
  std::string value = assignment.substr(eq + 1);
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
  auto fields = fields_of(config);
  if (std::find(kSections.begin(), kSections.end(), section) == kSections.end())
    return invalid_argument("--set '{}': unknown section '{}' (allowed: {})", assignment, section, sections_list());
  Field* f = find_field(fields, section, key);
  if (!f)
    return invalid_argument("--set '{}': unknown key '{}' in [{}] (allowed: {})", assignment, key, section,
                            keys_of(fields, section));
  return f->set_text(value);
}

Result<std::vector<std::string>> env_overrides(const std::vector<std::string>& environment) {
  JobConfig defaults;
  auto fields = fields_of(defaults);
  std::vector<std::string> out;
  for (const std::string& entry : environment) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos || !entry.starts_with("PST_")) continue;
    const std::string name = entry.substr(0, eq);
    std::string rest = name.substr(4);
    std::transform(rest.begin(), rest.end(), rest.begin(), [](unsigned char ch) { return std::tolower(ch); });
    const auto under = rest.find('_');
    const std::string section = rest.substr(0, under);
    if (std::find(kSections.begin(), kSections.end(), section) == kSections.end()) continue;
    const std::string key = under == std::string::npos ? "" : rest.substr(under + 1);
    if (!find_field(fields, section, key))
      return invalid_argument(
          "environment variable {}: unknown key '{}' in [{}] (allowed: {}; PST_{}_KEY=VALUE "
          "means --set {}.key=VALUE)",
          name, key, section, keys_of(fields, section), name.substr(4, section.size()), section);
    out.push_back(section + "." + key + "=" + entry.substr(eq + 1));
  }
  return out;
}

Result<JobConfig> parse_config(const std::string& toml_text, const std::string& name,
                               const std::vector<std::string>& overrides) {
  JobConfig config;
  auto fields = fields_of(config);
  toml::table root;
  try {
    root = toml::parse(toml_text, name);
  } catch (const toml::parse_error& e) {
    return invalid_argument("{}:{}:{}: TOML syntax error: {}", name, e.source().begin.line, e.source().begin.column,
                            e.description());
  }
  for (const auto& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    if (std::find(kSections.begin(), kSections.end(), section) == kSections.end())
      return invalid_argument("{}:{}: unknown section [{}] (allowed: {})", name, section_node.source().begin.line,
                              section, sections_list());
    const toml::table* table = section_node.as_table();
    if (!table)
      return invalid_argument("{}:{}: '{}' must be a table ([{}])", name, section_node.source().begin.line, section,
                              section);
    for (const auto& [key_node, value] : *table) {
      const std::string key(key_node.str());
      Field* f = find_field(fields, section, key);
      if (!f)
        return invalid_argument("{}:{}: unknown key '{}' in [{}] (allowed: {})", name, value.source().begin.line, key,
                                section, keys_of(fields, section));
      Status s = f->set_toml(value);
      if (!s.ok()) return s.with_context(fmt::format("{}:{}", name, value.source().begin.line));
    }
  }
  for (const auto& o : overrides) PST_RETURN_IF_ERROR(apply_override(config, o));
  PST_RETURN_IF_ERROR(validate(config).with_context(name));
  return config;
}

Result<JobConfig> load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return invalid_argument("config file '{}' is a directory; --config takes a TOML job file", path);
  std::ifstream in(path);
  if (!in) return not_found("config file '{}' cannot be opened", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

static std::string toml_of(const JobConfig& config, bool with_docs) {
  JobConfig copy = config;
  auto fields = fields_of(copy);
  std::string out, section;
  for (const auto& f : fields) {
    if (f.section != section) {
      out += (section.empty() ? "" : "\n") + std::string("[") + f.section + "]\n";
      section = f.section;
    }
    if (with_docs)
      for (const ConfigDoc& d : config_docs())
        if (d.section == f.section && d.key == f.key) out += std::string("# ") + d.doc + "\n";
    out += f.key + " = " + f.get() + "\n";
  }
  return out;
}

std::string to_toml(const JobConfig& config) { return toml_of(config, false); }
std::string to_documented_toml(const JobConfig& config) { return toml_of(config, true); }

std::vector<std::string> config_keys() {
  JobConfig c;
  std::vector<std::string> keys;
  for (const auto& f : fields_of(c)) keys.push_back(qualified(f.section, f.key));
  return keys;
}

uint64_t job_id(const JobConfig& config) {
  JobConfig shared = config;
  const JobConfig defaults;
  shared.train.device = defaults.train.device;
  shared.train.threads = defaults.train.threads;
  shared.train.log_level = defaults.train.log_level;
  shared.cluster.host = defaults.cluster.host;
  shared.cluster.interface = defaults.cluster.interface;
  shared.cluster.port_range = defaults.cluster.port_range;
  shared.metrics = defaults.metrics;
  shared.security.key_file = defaults.security.key_file;
  return fnv1a64(to_toml(shared));
}

}  // namespace pst
