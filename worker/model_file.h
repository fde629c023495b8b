// A trained model in one safetensors file: every parameter under its table
// name, plus metadata holding the resolved job config (TOML) and, for G2P,
// the letter and phone vocabularies, so `pst predict` needs nothing else.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"
#include "data/tokenizer.h"
#include "data/vocab.h"
#include "model/transformer.h"

namespace pst {

// A SentencePiece tokenizer goes into the metadata too (base64 of its
// .model bytes), so that eval and predict need nothing but the file.
Status save_model(const std::string& path, const JobConfig& job, Transformer& model, const Vocabulary* letters,
                  const Vocabulary* phones, const Tokenizer* tokenizer = nullptr);

// Writes config.json (and, for G2P, vocab.json) into `dir`, beside the
// model's safetensors files, for tools outside pst: the model section of the
// job config as JSON, the task, the vocabulary sizes, the special ids, the
// tokenizer, and how tied weights are stored (docs/design.md, Export).
// A SentencePiece tokenizer is written there as tokenizer.model.
Status write_model_card(const std::string& dir, const JobConfig& job, const Transformer& model,
                        const Vocabulary* letters, const Vocabulary* phones, const Tokenizer* tokenizer = nullptr);

struct LoadedModel {
  JobConfig job;
  Vocabulary letters, phones;  // empty (specials only) for lm
  Tokenizer tokenizer;         // lm
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Transformer> model;
};

// Reads a model file, checks that every tensor of the config's parameter
// table is present with its shape, and builds the model on a CPU backend.
Result<LoadedModel> load_model(const std::string& path, int threads);

}  // namespace pst
