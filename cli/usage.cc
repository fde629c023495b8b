// What the pst command says about itself: its settings (pst config) and
// the names of its subcommands.
#include <cstdio>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/config.h"

namespace pst {

int run_config_defaults() {
  std::fputs(to_documented_toml(JobConfig{}).c_str(), stdout);
  return 0;
}

int run_config_show(const ConfigArgs& args) {
  auto job = load_config(args.config, args.sets);
  if (!job.ok()) {
    spdlog::error("{}", job.status().message());
    return 2;
  }
  std::fputs(to_documented_toml(*job).c_str(), stdout);
  return 0;
}

namespace {

std::vector<std::string> letters(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

}  // namespace

int check_command_names(const CLI::App& app, int argc, char** argv) {
  const CLI::App* at = &app;
  std::string path = "pst";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.starts_with("-")) {
      if (at == &app) continue;  // --version, --help before any command word
      return 0;                  // a command's own options: CLI11 checks them
    }
    const auto subs = at->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty()) return 0;
    const CLI::App* next = nullptr;
    for (const CLI::App* s : subs)
      if (s->get_name() == word) next = s;
    if (next == nullptr) {
      std::string nearest, names;
      int64_t best = 1 << 30;
      for (const CLI::App* s : subs) {
        const int64_t d = edit_distance(letters(word), letters(s->get_name()));
        if (d < best) best = d, nearest = s->get_name();
        names += (names.empty() ? "" : ", ") + s->get_name();
      }
      // A suggestion only for a slip of a letter or two, not for any word.
      const std::string hint = best <= std::max<int64_t>(2, static_cast<int64_t>(word.size()) / 3)
                                   ? fmt::format("; did you mean '{}'?", nearest)
                                   : std::string();
      std::fprintf(stderr, "%s: unknown command '%s'%s\nCommands: %s (%s --help says more)\n", path.c_str(),
                   word.c_str(), hint.c_str(), names.c_str(), path.c_str());
      return 2;
    }
    at = next;
    path += " " + word;
  }
  return 0;
}

}  // namespace pst
