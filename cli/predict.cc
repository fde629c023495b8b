#include <cstdio>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "data/g2p.h"
#include "worker/evaluate.h"
#include "worker/model_file.h"

namespace pst {

int run_predict(const std::string& model_path, const std::vector<std::string>& inputs,
                int64_t bytes, int threads) {
  auto loaded = load_model(model_path, threads);
  if (!loaded.ok()) {
    spdlog::error("{}", loaded.status().message());
    return 2;
  }
  Transformer& model = *loaded->model;
  if (loaded->job.data.task == Task::kG2P) {
    std::vector<std::vector<int32_t>> srcs;
    for (const std::string& raw : inputs) {
      std::string w = raw;
      for (char& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (static_cast<int64_t>(w.size()) + 1 > model.config().max_len) {
        spdlog::error("word '{}' is longer than the model's max_len - 1 = {}", raw, model.config().max_len - 1);
        return 2;
      }
      std::vector<int32_t> src;
      for (char c : w) src.push_back(loaded->letters.id(std::string(1, c)));
      src.push_back(Vocabulary::kEos);
      srcs.push_back(std::move(src));
    }
    const auto out = greedy_decode(model, srcs, model.config().max_len - 1);
    for (size_t i = 0; i < inputs.size(); ++i) {
      std::string phones;
      for (int32_t id : out[i]) phones += (phones.empty() ? "" : " ") + loaded->phones.token(id);
      std::printf("%s\t%s\n", inputs[i].c_str(), phones.c_str());
    }
  } else {
    for (const std::string& prompt : inputs) {
      const auto gen = generate_bytes(model, std::vector<uint8_t>(prompt.begin(), prompt.end()), bytes);
      std::printf("%s%s\n", prompt.c_str(), std::string(gen.begin(), gen.end()).c_str());
    }
  }
  return 0;
}

}  // namespace pst
