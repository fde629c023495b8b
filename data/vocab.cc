#include "data/vocab.h"

namespace pst {

Vocabulary::Vocabulary() {
  for (const char* s : {"<pad>", "<s>", "</s>", "<unk>"}) add(s);
}

int32_t Vocabulary::add(const std::string& token) {
  auto it = ids_.find(token);
  if (it != ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(tokens_.size());
  tokens_.push_back(token);
  ids_.emplace(token, id);
  return id;
}

int32_t Vocabulary::id(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? kUnk : it->second;
}

}  // namespace pst
