#include "worker/model_file.h"

#include <cstring>
#include <sstream>

#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include "core/cpus.h"
#include "core/files.h"
#include "core/safetensors.h"

namespace pst {

namespace {

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kBase64[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kBase64[(acc << (6 - bits)) & 63]);
  while (out.size() % 4) out.push_back('=');
  return out;
}

Result<std::string> base64_decode(const std::string& in, const std::string& what) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < in.size() && in[i] != '='; ++i) {
    const char* p = std::strchr(kBase64, in[i]);
    if (!p || in[i] == '\0') return data_loss("{}: not base64 (character {} of {})", what, i, in.size());
    acc = (acc << 6) | static_cast<uint32_t>(p - kBase64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 255));
    }
  }
  for (; i < in.size(); ++i)
    if (in[i] != '=') return data_loss("{}: not base64 (data after the padding)", what);
  return out;
}

}  // namespace

Status save_model(const std::string& path, const JobConfig& job, Transformer& model, const Vocabulary* letters,
                  const Vocabulary* phones, const Tokenizer* tokenizer) {
  std::vector<float> w(static_cast<size_t>(model.num_params()));
  model.get_weights(w.data());
  SafetensorsFile f;
  for (const ParamSpec& p : model.table().params()) f.add_f32(p.name, p.shape, w.data() + p.offset);
  f.set_metadata("format", "pst-model-1");
  f.set_metadata("config", to_toml(job));
  if (letters) f.set_metadata("letters", nlohmann::json(letters->tokens()).dump());
  if (phones) f.set_metadata("phones", nlohmann::json(phones->tokens()).dump());
  if (tokenizer && !tokenizer->is_bytes()) f.set_metadata("sentencepiece", base64_encode(tokenizer->serialized()));
  return f.write(path);
}

namespace {

Status write_json(const std::string& path, const nlohmann::json& j) { return write_atomic(path, j.dump(2) + "\n"); }

}  // namespace

Status write_model_card(const std::string& dir, const JobConfig& job, const Transformer& model,
                        const Vocabulary* letters, const Vocabulary* phones, const Tokenizer* tokenizer) {
  // The model section, as the job file writes it, in JSON.
  const toml::table full = toml::parse(to_toml(job));
  std::ostringstream model_json;
  model_json << toml::json_formatter{*full["model"].as_table()};
  nlohmann::json card;
  card["format"] = "pst-model-1";
  card["task"] = to_string(job.data.task);
  card["model"] = nlohmann::json::parse(model_json.str());
  card["model"]["kv_heads"] = kv_heads(job.model);  // resolved: 0 means heads
  card["src_vocab_size"] = model.src_vocab();
  card["tgt_vocab_size"] = model.tgt_vocab();
  card["parameters"] = model.num_params();
  if (job.data.task == Task::kLM && tokenizer && !tokenizer->is_bytes()) {
    card["tokenizer"] = {{"kind", "sentencepiece"},
                         {"model", "tokenizer.model"},
                         {"note", "encoded line by line; a line break is the piece \"\\n\""}};
    PST_RETURN_IF_ERROR(write_atomic(dir + "/tokenizer.model", tokenizer->serialized()));
  } else if (job.data.task == Task::kLM) {
    card["tokenizer"] = {{"kind", "bytes"}, {"note", "token id = byte value (0-255) of the UTF-8 text"}};
  } else {
    card["tokenizer"] = {{"kind", "symbols"}, {"vocab", "vocab.json"}};
    card["special_tokens"] = {{"<pad>", Vocabulary::kPad},
                              {"<s>", Vocabulary::kBos},
                              {"</s>", Vocabulary::kEos},
                              {"<unk>", Vocabulary::kUnk}};
  }
  card["tied_output"] =
      job.model.tie_embeddings ? (job.model.kind == ModelKind::kDecoderOnly ? "embed.weight" : "tgt_embed.weight") : "";
  card["weights"] = "model.safetensors";
  card["pytorch"] = "tests/reference/pst_torch.py: pst_torch.load(\"model.safetensors\")";
  PST_RETURN_IF_ERROR(write_json(dir + "/config.json", card));
  if (letters && phones) {
    PST_RETURN_IF_ERROR(
        write_json(dir + "/vocab.json", {{"letters", letters->tokens()}, {"phones", phones->tokens()}}));
  }
  return Status();
}

namespace {

Result<Vocabulary> vocab_from(const SafetensorsFile& f, const std::string& key, const std::string& path) {
  Vocabulary v;
  auto it = f.metadata().find(key);
  if (it == f.metadata().end()) return data_loss("model '{}': metadata has no '{}' vocabulary", path, key);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    return data_loss("model '{}': vocabulary '{}' is not JSON: {}", path, key, e.what());
  }
  if (!j.is_array() || j.size() < 4) return data_loss("model '{}': vocabulary '{}' is not a list of tokens", path, key);
  for (size_t i = 4; i < j.size(); ++i) {
    if (!j[i].is_string()) return data_loss("model '{}': vocabulary '{}' entry {} is not a string", path, key, i);
    v.add(j[i].get<std::string>());
  }
  return v;
}

}  // namespace

Result<LoadedModel> load_model(const std::string& path, int threads) {
  PST_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::read(path));
  auto cfg = f.metadata().find("config");
  if (cfg == f.metadata().end()) return data_loss("model '{}': no 'config' metadata; not a pst model file", path);
  LoadedModel m;
  PST_ASSIGN_OR_RETURN(m.job, parse_config(cfg->second, path + " (embedded config)", {}));
  int64_t src_vocab = 0, tgt_vocab = 256;
  if (m.job.data.tokenizer == TokenizerKind::kSentencePiece) {
    auto sp = f.metadata().find("sentencepiece");
    if (sp == f.metadata().end())
      return data_loss("model '{}': its config names a SentencePiece tokenizer but the file holds none", path);
    PST_ASSIGN_OR_RETURN(const std::string bytes, base64_decode(sp->second, fmt::format("model '{}' tokenizer", path)));
    PST_ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::sentencepiece(bytes, fmt::format("model '{}' tokenizer", path)));
    tgt_vocab = m.tokenizer.vocab_size();
  }
  if (m.job.data.task == Task::kG2P) {
    PST_ASSIGN_OR_RETURN(m.letters, vocab_from(f, "letters", path));
    PST_ASSIGN_OR_RETURN(m.phones, vocab_from(f, "phones", path));
    src_vocab = m.letters.size();
    tgt_vocab = m.phones.size();
  }
  // The whole file is checked against the table of its embedded config
  // before anything of that size is allocated: a crafted config must not
  // make the model's buffers before its tensors are seen to match.
  const ParamTable table = build_param_table(m.job.model, src_vocab, tgt_vocab);
  for (const ParamSpec& p : table.params()) {
    const StoredTensor* t = f.find(p.name);
    if (!t) return data_loss("model '{}': tensor '{}' is missing", path, p.name);
    if (t->dtype != "F32" || t->shape != p.shape)
      return data_loss("model '{}': tensor '{}' has dtype {} and {} dims; expected F32 of the config's shape", path,
                       p.name, t->dtype, t->shape.size());
  }
  PST_RETURN_IF_ERROR(check_fits_in_memory(table, 3));
  m.backend = make_cpu_backend(threads > 0 ? threads : cpu_budget().cpus);
  m.model = std::make_unique<Transformer>(m.job.model, src_vocab, tgt_vocab, m.backend.get());
  std::vector<float> w(static_cast<size_t>(m.model->num_params()));
  for (const ParamSpec& p : m.model->table().params()) {
    const std::vector<float> data = f.find(p.name)->to_f32();
    std::copy(data.begin(), data.end(), w.begin() + p.offset);
  }
  m.model->set_weights(w.data());
  return m;
}

}  // namespace pst
