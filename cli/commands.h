// The `pst` subcommands. Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace pst {

struct ConfigArgs {
  std::string config;
  std::vector<std::string> sets;
};

int run_train(const ConfigArgs& args);
// `pst train --role scheduler|server|worker --scheduler ENDPOINT` (no MPI).
int run_train_role(const ConfigArgs& args, const std::string& role, const std::string& scheduler);
int run_params(const ConfigArgs& args, bool list_tensors);
int run_debug_grads(const ConfigArgs& args, int64_t seed, const std::string& out_dir,
                    int64_t batch_size);
int run_predict(const std::string& model_path, const std::vector<std::string>& inputs,
                int64_t bytes, int threads);

}  // namespace pst
