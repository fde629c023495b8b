#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "core/files.h"

#include <fstream>
#include <iterator>

namespace pst {

Tokenizer::Tokenizer() = default;

Result<Tokenizer> Tokenizer::sentencepiece(const std::string& serialized, const std::string& what) {
  Tokenizer t;
  t.sp_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
  const auto st = t.sp_->LoadFromSerializedProto(serialized);
  if (!st.ok()) return data_loss("{}: not a SentencePiece model: {}", what, st.ToString());
  t.serialized_ = serialized;
  t.newline_ = t.sp_->PieceToId("\n");
  if (t.newline_ == t.sp_->unk_id())
    return invalid_argument("{}: the SentencePiece model has no line-break piece; train it with `pst tokenizer train`",
                            what);
  return t;
}

Result<Tokenizer> Tokenizer::sentencepiece_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("tokenizer model '{}' cannot be opened", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  return sentencepiece(bytes, fmt::format("tokenizer model '{}'", path));
}

int64_t Tokenizer::vocab_size() const { return is_bytes() ? 256 : sp_->GetPieceSize(); }

void Tokenizer::encode(std::string_view text, std::vector<int32_t>* ids, std::vector<int32_t>* bytes) const {
  if (is_bytes()) {
    for (char c : text) {
      ids->push_back(static_cast<unsigned char>(c));
      if (bytes) bytes->push_back(1);
    }
    return;
  }
  size_t start = 0;
  while (start <= text.size()) {
    const size_t nl = text.find('\n', start);
    const size_t end = nl == std::string_view::npos ? text.size() : nl;
    if (end > start) {
      const auto spt = sp_->EncodeAsImmutableProto(text.substr(start, end - start));
      for (const auto& piece : spt.pieces()) {
        ids->push_back(static_cast<int32_t>(piece.id()));
        if (bytes) bytes->push_back(static_cast<int32_t>(piece.end() - piece.begin()));
      }
    }
    if (nl == std::string_view::npos) break;
    ids->push_back(newline_);
    if (bytes) bytes->push_back(1);
    start = nl + 1;
  }
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  if (is_bytes()) {
    std::string s;
    for (int32_t id : ids) s.push_back(static_cast<char>(id));
    return s;
  }
  // Line by line, as encode() cut it.
  std::string out;
  std::vector<int> line;
  auto flush = [&] {
    std::string text;
    if (!line.empty()) sp_->Decode(line, &text).IgnoreError();
    out += text;
    line.clear();
  };
  for (int32_t id : ids) {
    if (id == newline_) {
      flush();
      out.push_back('\n');
    } else {
      line.push_back(id);
    }
  }
  flush();
  return out;
}

namespace {

// The lines of a text, for the trainer.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<uint8_t>& text) : text_(text) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    while (pos_ < text_.size()) {
      size_t end = pos_;
      while (end < text_.size() && text_[end] != '\n') ++end;
      line_.assign(reinterpret_cast<const char*>(text_.data()) + pos_, end - pos_);
      pos_ = end + 1;
      if (!line_.empty()) return;
    }
    done_ = true;
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const std::vector<uint8_t>& text_;
  size_t pos_ = 0;
  std::string line_;
  bool done_ = false;
};

}  // namespace

Status train_sentencepiece(const std::vector<uint8_t>& text, const TokenizerTraining& t, const std::string& out) {
  LineIterator lines(text);
  if (lines.done()) return invalid_argument("tokenizer training: the text has no line to learn from");
  const std::unordered_map<std::string, std::string> args{
      {"model_type", t.kind == SentencePieceKind::kBpe ? "bpe" : "unigram"},
      {"vocab_size", std::to_string(t.vocab)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9995"},
      {"user_defined_symbols", "\n"},
      {"max_sentence_length", "1000000"},
      {"num_threads", std::to_string(t.threads)},
      {"minloglevel", "1"},
      // pst's LM adds no <s> or </s>: every id is text.
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"unk_id", "0"},
  };
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  if (!st.ok()) return invalid_argument("tokenizer training failed: {}", st.ToString());
  PST_RETURN_IF_ERROR(write_atomic(out, model));
  return Status();
}

}  // namespace pst
