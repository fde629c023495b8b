// A trained model in one safetensors file: every parameter under its table
// name, plus metadata holding the resolved job config (TOML) and, for G2P,
// the letter and phone vocabularies, so `pst predict` needs nothing else.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"
#include "data/vocab.h"
#include "model/transformer.h"

namespace pst {

Status save_model(const std::string& path, const JobConfig& job, Transformer& model, const Vocabulary* letters,
                  const Vocabulary* phones);

struct LoadedModel {
  JobConfig job;
  Vocabulary letters, phones;  // empty (specials only) for lm
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Transformer> model;
};

// Reads a model file, checks that every tensor of the config's parameter
// table is present with its shape, and builds the model on a CPU backend.
Result<LoadedModel> load_model(const std::string& path, int threads);

}  // namespace pst
