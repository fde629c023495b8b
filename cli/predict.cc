// `pst predict` and `pst eval`: a trained model file (pst train's
// model.safetensors, or pst checkpoint export's) on words or a data split.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/stop.h"
#include "data/g2p.h"
#include "data/vocab.h"
#include "worker/evaluate.h"
#include "worker/model_file.h"
#include "worker/task_data.h"

namespace pst {
namespace {

Status check_decode(const DecodeOptions& d) {
  if (d.beam < 1 || d.beam > 1024)
    return invalid_argument("--beam {}: must be in [1, 1024] (1: greedy decoding)", d.beam);
  if (!(d.length_penalty >= 0))
    return invalid_argument("--length-penalty {}: must be >= 0 (0: none; 1: log-probability per token)",
                            d.length_penalty);
  return Status();
}

Status check_sampling(const Sampling& s) {
  if (!(s.temperature >= 0 && s.temperature <= 100))
    return invalid_argument("--temperature {}: must be in [0, 100] (0: greedy)", s.temperature);
  if (s.top_k < 0) return invalid_argument("--top-k {}: must be >= 0 (0: every byte)", s.top_k);
  if (!(s.top_p > 0 && s.top_p <= 1)) return invalid_argument("--top-p {}: must be in (0, 1]", s.top_p);
  if ((s.top_k != 0 || s.top_p != 1.0) && s.temperature == 0)
    return invalid_argument(
        "--top-k and --top-p filter sampling: give --temperature too (1: the model's own "
        "probabilities)");
  return Status();
}

std::string join_phones(const Vocabulary& phones, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + phones.token(id);
  return s;
}

}  // namespace

Status read_lines(const std::string& path, std::vector<std::string>* lines) {
  std::ifstream file;
  if (path != "-") {
    file.open(path);
    if (!file) return not_found("--input '{}' cannot be opened", path);
  }
  std::istream& in = path == "-" ? std::cin : file;
  std::string line;
  for (bool first = true; std::getline(in, line); first = false) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (first) strip_utf8_bom(&line);
    if (!line.empty()) lines->push_back(line);
  }
  if (in.bad()) return io_error("--input '{}': read error", path);
  return Status();
}

int run_predict(const std::string& model_path, const std::vector<std::string>& inputs, int64_t bytes, int threads,
                const DecodeOptions& decode, const Sampling& sampling) {
  Status ok = check_decode(decode);
  if (ok.ok()) ok = check_sampling(sampling);
  if (!ok.ok()) {
    spdlog::error("{}", ok.message());
    return 2;
  }
  auto loaded = load_model(model_path, threads);
  if (!loaded.ok()) {
    spdlog::error("{}", loaded.status().message());
    return 2;
  }
  Transformer& model = *loaded->model;
  // (check_sampling allows --top-k and --top-p only with a temperature.)
  if (loaded->job.data.task == Task::kG2P && sampling.temperature > 0) {
    spdlog::error(
        "--temperature, --top-k and --top-p sample a language model's bytes; G2P decodes greedily or "
        "with --beam");
    return 2;
  }
  if (loaded->job.data.task == Task::kG2P) {
    std::vector<std::vector<int32_t>> srcs;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string& raw = inputs[i];
      if (raw.empty()) {
        // (an unset shell variable, say; --input skips blank lines)
        spdlog::error("word {} of {} is empty: there is nothing to pronounce", i + 1, inputs.size());
        return 2;
      }
      std::string w = raw;
      for (char& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::vector<std::string> letters;
      if (!utf8_symbols(w, &letters)) {
        spdlog::error("word '{}' is not valid UTF-8", raw);
        return 2;
      }
      if (static_cast<int64_t>(letters.size()) + 1 > model.config().max_len) {
        spdlog::error("word '{}' is longer than the model's max_len - 1 = {} letters", raw, model.config().max_len - 1);
        return 2;
      }
      for (const std::string& l : letters)
        if (loaded->letters.id(l) == Vocabulary::kUnk)
          spdlog::warn("word '{}': '{}' is not among the model's {} letters; it is read as <unk>", raw, l,
                       loaded->letters.size() - 4);
      srcs.push_back(encode_letters(loaded->letters, w));
    }
    const std::vector<int64_t> max_out = g2p_output_limits(srcs);
    if (decode.beam == 1) {
      const auto out = greedy_decode(model, srcs, max_out, decode.cache);
      for (size_t i = 0; i < inputs.size(); ++i)
        std::printf("%s\t%s\n", inputs[i].c_str(), join_phones(loaded->phones, out[i]).c_str());
    } else {
      const auto out = beam_decode(model, srcs, max_out, decode);
      for (size_t i = 0; i < inputs.size(); ++i)
        std::printf("%s\t%s\t%.4f\n", inputs[i].c_str(), join_phones(loaded->phones, out[i].ids).c_str(), out[i].score);
    }
  } else {
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string& prompt = inputs[i];
      Sampling s = sampling;
      s.stream = i;  // each prompt its own draws
      const std::string gen = generate_text(model, loaded->tokenizer, prompt, bytes, decode.cache, s);
      std::printf("%s%s\n", prompt.c_str(), gen.c_str());
    }
  }
  return 0;
}

namespace {

// Letters and phones of a corpus that a model's vocabularies lack, counted
// over its words (a user's data evaluated by a model trained on other data).
void warn_unseen(const G2PCorpus& corpus, const LoadedModel& model, const std::string& path) {
  std::set<std::string> letters, phones;
  std::vector<std::string> symbols;
  for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
    for (const G2PWord& w : corpus.split(s)) {
      utf8_symbols(w.word, &symbols);
      for (const std::string& l : symbols)
        if (model.letters.id(l) == Vocabulary::kUnk) letters.insert(l);
      for (const auto& pron : w.prons)
        for (const std::string& p : pron)
          if (model.phones.id(p) == Vocabulary::kUnk) phones.insert(p);
    }
  auto list = [](const std::set<std::string>& set) {
    std::string out;
    for (const std::string& x : set) out += (out.empty() ? "'" : ", '") + x + "'";
    return out;
  };
  if (!letters.empty())
    spdlog::warn("{}: {} letters are not among the model's ({}); they are read as <unk>", path, letters.size(),
                 list(letters));
  if (!phones.empty())
    spdlog::warn("{}: {} phones are not among the model's ({}); the model cannot produce them", path, phones.size(),
                 list(phones));
}

}  // namespace

int run_eval(const EvalArgs& args) {
  auto fail = [](const Status& s) {
    spdlog::error("{}", s.message());
    return 2;
  };
  Status s = check_decode(args.decode);
  if (!s.ok()) return fail(s);
  // A file of one's own is evaluated whole unless a split is named.
  const std::string which = !args.split.empty() ? args.split : (args.data.empty() ? "test" : "all");
  std::vector<Split> splits;
  for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
    if (which == "all" || which == to_string(s)) splits.push_back(s);
  if (splits.empty()) return fail(invalid_argument("--split {}: must be train, valid, test or all", args.split));
  auto loaded = load_model(args.model, args.threads);
  if (!loaded.ok()) return fail(loaded.status());
  JobConfig job = loaded->job;
  if (!args.data.empty()) {
    job.data.path = args.data;
    job.data.train = job.data.valid = job.data.test = "";
    job.data.max_examples = 0;
    job.data.format = LexiconFormat::kAuto;  // another file: its format from its first entry
  }
  // --data alone: the file as one set (read whole into the test split).
  const bool whole = !args.data.empty() && which == "all";
  if (whole) splits = {Split::kTest};
  // A language model's text is tokenized by the tokenizer the model file carries.
  auto data = load_task_data(job, whole ? DataUse::kEvaluateWhole : DataUse::kEvaluate, &loaded->tokenizer);
  if (!data.ok()) return fail(data.status());
  if (data->g2p && !args.data.empty()) {
    // Another lexicon is read with the model's letters and phones.
    warn_unseen(*data->g2p, *loaded, args.data);
    data->g2p->letters = loaded->letters;
    data->g2p->phones = loaded->phones;
  } else if (data->g2p && (data->g2p->letters.tokens() != loaded->letters.tokens() ||
                           data->g2p->phones.tokens() != loaded->phones.tokens())) {
    // The model's ids must mean what the data's mean.
    return fail(
        failed_precondition("{}: its letter and phone vocabularies differ from those of its data {}, which must "
                            "have changed; evaluate another lexicon with --data",
                            args.model, data_source(job)));
  }
  std::vector<std::string> lines;
  const bool write = !args.predictions.empty();
  if (write && data->task != Task::kG2P)
    return fail(invalid_argument("--predictions: only G2P models decode outputs (a language model is scored by loss)"));
  std::vector<EvalResult> parts;
  for (Split split : splits) {
    if (data->split(split).size() == 0) {
      if (splits.size() == 1)
        return fail(invalid_argument("{}: nothing to evaluate{}", whole ? data_path(job) : data_source(job),
                                     whole ? std::string(" (a language model needs data.seq_len + 1 bytes)")
                                           : fmt::format(" in its {} split", to_string(split))));
      continue;  // an empty split of --split all
    }
    const EvalResult r = evaluate(*loaded->model, *data, split, std::max<int64_t>(job.data.batch_size, 64),
                                  args.max_examples, write ? &lines : nullptr, args.decode);
    if (r.stopped) {
      spdlog::error("evaluation stopped by signal {}; no metrics", stop_signal());
      return 128 + stop_signal();
    }
    spdlog::info("{}: scoring took {:.2f} s{}", to_string(split), r.scoring_seconds,
                 data->task == Task::kG2P
                     ? fmt::format(", decoding {:.2f} s ({} of {} words decoded{})", r.decoding_seconds,
                                   r.words - r.shown_words, r.words,
                                   r.shown_words > 0 ? fmt::format("; the teacher-forced pass showed greedy's output "
                                                                   "of the other {}",
                                                                   r.shown_words)
                                                     : "")
                     : "");
    std::printf("%s %s: %s\n", args.model.c_str(), whole ? "all" : to_string(split),
                describe_eval(data->task, r).c_str());
    parts.push_back(r);
  }
  if (which == "all" && !whole)
    std::printf("%s all: %s\n", args.model.c_str(), describe_eval(data->task, merge_evals(parts)).c_str());
  if (write) {
    std::ofstream out(args.predictions);
    for (const std::string& l : lines) out << l << '\n';
    if (!out.good()) return fail(io_error("{}: cannot write the predictions", args.predictions));
    spdlog::info("{} predictions (word, tab, phones) in {}", lines.size(), args.predictions);
  }
  return 0;
}

}  // namespace pst
