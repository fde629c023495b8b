// `pst tune`'s loop (tune/study.h): launches trials, follows their
// metrics.jsonl, prunes with ASHA, keeps the journal.
#include "tune/study.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/cpus.h"
#include "core/files.h"
#include "core/json_fields.h"
#include "core/stop.h"
#include "core/timer.h"
#include "monitoring/metrics.h"
#include "tune/asha.h"
#include "tune/report.h"

extern char** environ;

namespace pst {
namespace fs = std::filesystem;
namespace {

// A trial's process runs this long after SIGTERM before SIGKILL ends its
// process group (a graceful stop finishes a step and may write a checkpoint;
// 3x a slow step on a busy machine).
constexpr double kGraceSeconds = 60;

std::string trial_dir(const StudyConfig& s, int64_t n) { return fmt::format("{}/trials/{:04d}", s.dir, n); }

bool has_key(const std::vector<std::string>& sets, const std::string& key) {
  return std::any_of(sets.begin(), sets.end(), [&](const std::string& a) { return a.starts_with(key + "="); });
}

// The journal, appended to line by line, each line fsynced before the
// tuner acts on it.
class JournalWriter {
 public:
  static Result<JournalWriter> open(const std::string& path) {
    JournalWriter w;
    w.fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w.fd_ < 0) return io_error("cannot append to {}: {}", path, std::strerror(errno));
    w.path_ = path;
    return w;
  }
  JournalWriter() = default;
  JournalWriter(JournalWriter&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}
  ~JournalWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status append(const nlohmann::json& j) {
    if (const int err = write_all(fd_, j.dump() + "\n"); err != 0)
      return io_error("cannot write {}: {}", path_, std::strerror(err));
    if (::fsync(fd_) != 0) return io_error("cannot fsync {}: {}", path_, std::strerror(errno));
    return Status();
  }

 private:
  int fd_ = -1;
  std::string path_;
};

struct Running {
  int64_t number = 0;
  pid_t pid = -1;
  Stopwatch clock;
  size_t read_offset = 0;  // into its metrics.jsonl
  int64_t last_valid_step = -1;
  double last_value = 0;
  bool has_value = false;
  bool pruning = false;  // SIGTERM sent by the pruner
  double term_at = -1;   // clock time of the SIGTERM, for the SIGKILL after the grace
};

// This binary's path, for the trials. A pst rebuilt or upgraded while the
// study runs leaves "PATH (deleted)" in /proc/self/exe: the trials then run
// the binary now at PATH.
std::string self_exe() {
  std::error_code ec;
  std::string p = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) return "pst";
  const std::string deleted = " (deleted)";
  if (p.ends_with(deleted)) p.resize(p.size() - deleted.size());
  return p;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// argv[0] as execve wants it: a path with a '/' as it is, else the first
// executable of that name on PATH.
Result<std::string> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t at = 0; at <= dirs.size();) {
    const size_t colon = std::min(dirs.find(':', at), dirs.size());
    const std::string dir = dirs.substr(at, colon - at);
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    at = colon + 1;
  }
  return not_found("cannot start a trial: {} is not on PATH", name);
}

// Starts the trial's job with its output to log.txt, in a process group of
// its own (a terminal's Ctrl-C reaches the tuner only, which ends the trials
// by their PIDs), with default signal handling, and with SIGTERM as its
// parent-death signal: a tuner that dies at once (a second SIGINT, SIGKILL)
// takes its trials with it.
Result<pid_t> spawn_trial(const StudyConfig& s, const JobConfig& job, const std::string& dir) {
  const std::string config = dir + "/config.toml", pst = self_exe();
  const int64_t np = 1 + job.cluster.servers + job.cluster.workers;
  std::vector<std::string> argv;
  const std::vector<std::string> train = {pst, "train", "--config", config, "--no-progress"};
  if (s.launch == Launch::kProcess) {
    argv = train;
  } else if (s.launch == Launch::kMpirun) {
    argv.push_back("mpirun");
    argv.insert(argv.end(), s.mpirun_args.begin(), s.mpirun_args.end());
    argv.push_back("-np");
    argv.push_back(std::to_string(np));
    argv.insert(argv.end(), train.begin(), train.end());
  } else {
    for (const std::string& a : s.command)
      argv.push_back(replace_all(
          replace_all(replace_all(replace_all(a, "{pst}", pst), "{config}", config), "{np}", std::to_string(np)),
          "{dir}", dir));
  }
  PST_ASSIGN_OR_RETURN(const std::string program, find_program(argv[0]));
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const std::string log = dir + "/log.txt";
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return io_error("cannot write {}: {}", log, std::strerror(errno));
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: async-signal-safe calls only, up to execve.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the tuner died before the prctl
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP, SIGPIPE}) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (in >= 0) ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execve(program.c_str(), cargv.data(), environ);
    ::_exit(127);
  }
  ::close(out);
  if (in >= 0) ::close(in);
  if (pid < 0) return io_error("cannot start {}: fork: {}", program, std::strerror(errno));
  return pid;
}

// The last line of log.txt that reports an error, for a failed trial.
std::string last_error(const std::string& dir) {
  std::ifstream in(dir + "/log.txt");
  std::string line, found;
  while (std::getline(in, line))
    if (line.find("error") != std::string::npos || line.find("Error") != std::string::npos) found = line;
  if (found.size() > 300) found = found.substr(0, 300) + "...";
  return found.empty() ? "no error in log.txt" : found;
}

// Cuts a journal back to its last whole line (read_journal has dropped a
// torn one), so that the next entry starts a line of its own.
Status drop_torn_line(const std::string& path) {
  auto read = read_all(path);
  if (!read.ok()) return Status();  // (no journal yet)
  const std::string& all = *read;
  if (all.empty() || all.back() == '\n') return Status();
  const size_t keep = all.rfind('\n') == std::string::npos ? 0 : all.rfind('\n') + 1;
  if (::truncate(path.c_str(), static_cast<off_t>(keep)) != 0)
    return io_error("cannot cut the torn last line of {}: {}", path, std::strerror(errno));
  return Status();
}

class Tuner {
 public:
  Tuner(const StudyConfig& s, std::vector<TrialRecord> trials, JournalWriter journal)
      : s_(s), trials_(std::move(trials)), journal_(std::move(journal)) {}

  Status run() {
    PST_ASSIGN_OR_RETURN(sampler_, make_sampler(s_.sampler, s_.space, s_.seed, s_.tpe));
    PST_ASSIGN_OR_RETURN(base_, load_config(s_.base, s_.sets));
    if (s_.min_steps > 0) {
      asha_ = std::make_unique<Asha>(s_.min_steps, s_.reduction, base_.train.steps);
      for (const TrialRecord& t : trials_)
        for (const auto& [rung, v] : t.rungs) asha_->report(rung, t.number, rung_folded(v));
    }
    if (s_.metrics.enabled) {
      PST_ASSIGN_OR_RETURN(prom_, MetricsServer::start(s_.metrics, 0, "cpu"));
      prom_->set_ready();
      spdlog::info("pst tune: /metrics at http://{}/metrics", prom_->endpoint());
    }
    int64_t budget = s_.trials;
    if (sampler_->size() >= 0 && sampler_->size() < budget) {
      spdlog::info("the grid has {} points: the study runs {} trials", sampler_->size(), sampler_->size());
      budget = sampler_->size();
    }
    for (const TrialRecord& t : trials_)
      if (t.state == "running") rerun_.push_back(t.number);
    if (!rerun_.empty()) spdlog::info("{} trials that did not finish run again from their start", rerun_.size());
    int64_t next = 0;
    for (const TrialRecord& t : trials_) next = std::max(next, t.number + 1);
    Stopwatch wall;
    publish();
    Status failure;
    while (true) {
      const bool time_up = s_.minutes > 0 && wall.seconds() > s_.minutes * 60;
      const bool stopping = stop_requested();
      while (!stopping && !time_up && failure.ok() && static_cast<int64_t>(running_.size()) < s_.parallel) {
        int64_t number;
        if (!rerun_.empty()) {
          number = rerun_.front();
          rerun_.erase(rerun_.begin());
        } else if (next < budget) {
          number = next++;
        } else {
          break;
        }
        failure = start(number);
      }
      if (running_.empty()) break;
      if (stopping || !failure.ok()) terminate_all();
      poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    PST_RETURN_IF_ERROR(failure);
    if (stop_requested())
      spdlog::warn("pst tune stopped: `pst tune --resume {}` continues (unfinished trials run again)", s_.dir);
    else if (s_.minutes > 0 && wall.seconds() > s_.minutes * 60)
      spdlog::info("pst tune: {} minutes are up; no more trials start", s_.minutes);
    return Status();
  }

  const std::vector<TrialRecord>& trials() const { return trials_; }

 private:
  double folded(double v) const { return s_.maximize ? -v : v; }
  double rung_folded(double v) const { return s_.rung_maximize ? -v : v; }

  TrialRecord* find(int64_t n) {
    for (TrialRecord& t : trials_)
      if (t.number == n) return &t;
    return nullptr;
  }

  Status start(int64_t number) {
    TrialRecord* existing = find(number);
    Point point;
    if (existing) {
      point = existing->point;
    } else if (number == 0 && s_.baseline) {
      point = *s_.baseline;
    } else {
      point = sampler_->suggest(number, observations(trials_, s_.maximize));
    }
    const std::string dir = trial_dir(s_, number);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return io_error("cannot create {}: {}", dir, ec.message());
    TrialRecord t;
    t.number = number;
    t.point = point;
    PST_RETURN_IF_ERROR(
        journal_.append({{"event", "start"}, {"trial", number}, {"params", params_json(s_.space, point)}}));
    if (existing)
      *existing = t;
    else
      trials_.push_back(t);
    std::vector<std::string> sets = point_sets(s_, point);
    sets.push_back("train.output=" + dir);
    sets.push_back("train.overwrite=true");  // a rerun replaces what an interrupted run left
    if (!has_key(sets, "train.threads") && s_.launch == Launch::kProcess)
      sets.push_back(fmt::format("train.threads={}", std::max<int64_t>(1, cpu_budget().cpus / s_.parallel)));
    if (!has_key(sets, "train.test_at_end")) sets.push_back("train.test_at_end=false");
    if (asha_ && !has_key(sets, "train.eval_every")) sets.push_back(fmt::format("train.eval_every={}", s_.min_steps));
    auto job = load_config(s_.base, sets);
    if (job.ok()) {
      Status w = write_atomic(dir + "/config.toml", to_toml(*job));
      if (!w.ok()) return w;
      auto pid = spawn_trial(s_, *job, dir);
      if (pid.ok()) {
        Running r;
        r.number = number;
        r.pid = *pid;
        spdlog::info("trial {} started{}: {}", number, number == 0 && s_.baseline ? " (the baseline)" : "",
                     describe(point));
        running_.push_back(std::move(r));
        publish();
        return Status();
      }
      return end_trial(number, "failed", std::nullopt, 0, 0, pid.status().message());
    }
    // A point the job file refuses (heads that do not divide d_model ...): a
    // failed trial, and the study goes on.
    return end_trial(number, "failed", std::nullopt, 0, 0, job.status().message());
  }

  std::string describe(const Point& p) const {
    std::string out;
    for (size_t i = 0; i < s_.space.size(); ++i)
      if (p[i])
        out += fmt::format("{}{}={}", out.empty() ? "" : " ", s_.space.params[i].key,
                           value_text(s_.space.params[i], *p[i]));
    return out;
  }

  Status end_trial(int64_t number, const std::string& state, std::optional<double> value, int64_t step, double seconds,
                   const std::string& error) {
    nlohmann::json j = {{"event", "end"},
                        {"trial", number},
                        {"state", state},
                        {"step", step},
                        {"seconds", std::round(seconds * 100) / 100}};
    j["value"] = value ? nlohmann::json(*value) : nlohmann::json(nullptr);
    if (!error.empty()) j["error"] = error;
    PST_RETURN_IF_ERROR(journal_.append(j));
    TrialRecord* t = find(number);
    t->state = state;
    t->has_value = value.has_value();
    t->value = value.value_or(0);
    t->step = step;
    t->seconds = seconds;
    t->error = error;
    if (state == "failed")
      spdlog::warn("trial {} failed: {}", number, error);
    else
      spdlog::info("trial {} {}: {} {:.6g} at step {} ({:.0f} s)", number, state, s_.metric, value.value_or(NAN), step,
                   seconds);
    print_best();
    publish();
    return Status();
  }

  // Reads the trial's new metrics.jsonl rows; the pruner judges each
  // validation that passes a rung.
  Status follow(Running& r) {
    const std::string path = trial_dir(s_, r.number) + "/metrics.jsonl";
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status();
    in.seekg(static_cast<std::streamoff>(r.read_offset));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a row still being written: read it whole next time
      r.read_offset += line.size() + 1;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // A row that is not a validation with numbers where they belong is not one to judge by.
      if (!j.is_object() || !j.contains("kind") || j["kind"] != "valid" || !j.contains(s_.metric) ||
          !j[s_.metric].is_number() || !j.contains("step") || !json_integer_fits<int64_t>(j["step"]))
        continue;
      const int64_t step = j["step"].get<int64_t>();
      const double v = j[s_.metric].get<double>();
      if (!std::isfinite(v)) continue;
      const bool has_rv = asha_ && j.contains(s_.rung_metric) && j[s_.rung_metric].is_number();
      double rv = has_rv ? j[s_.rung_metric].get<double>() : v;
      if (!std::isfinite(rv)) rv = s_.rung_maximize ? -1e300 : 1e300;  // (a diverged trial: the worst)
      if (r.pruning) continue;                                         // (its figure is the one it was judged by)
      const int64_t previous = r.last_valid_step;
      r.last_valid_step = step, r.last_value = v, r.has_value = true;
      if (!asha_) continue;
      for (int rung : asha_->passed(previous, step)) {
        PST_RETURN_IF_ERROR(
            journal_.append({{"event", "report"}, {"trial", r.number}, {"rung", rung}, {"step", step}, {"value", rv}}));
        find(r.number)->rungs.emplace_back(rung, rv);
        const bool goes_on = asha_->report(rung, r.number, rung_folded(rv));
        if (!goes_on && !(s_.baseline && r.number == 0)) {  // (the baseline runs to its end: the reference)
          spdlog::info("trial {} pruned at step {} (rung {}: {} {:.6g})", r.number, step,
                       asha_->rungs()[static_cast<size_t>(rung)], s_.rung_metric, rv);
          r.pruning = true;
          r.term_at = r.clock.seconds();
          ::kill(r.pid, SIGTERM);
          break;
        }
      }
    }
    return Status();
  }

  void poll() {
    for (size_t i = 0; i < running_.size();) {
      Running& r = running_[i];
      const Status fs_status = follow(r);
      if (!fs_status.ok()) spdlog::warn("trial {}: {}", r.number, fs_status.message());
      if (r.term_at >= 0 && r.clock.seconds() - r.term_at > kGraceSeconds) {
        ::kill(-r.pid, SIGKILL);  // its process group, which the tuner made
        r.term_at = r.clock.seconds() + 1e9;
      }
      int status = 0;
      const pid_t w = ::waitpid(r.pid, &status, WNOHANG);
      if (w == 0) {
        ++i;
        continue;
      }
      (void)follow(r);  // rows written just before the exit
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      const double seconds = r.clock.seconds();
      Status s;
      if (r.pruning) {
        s = end_trial(r.number, "pruned", r.has_value ? std::optional<double>(r.last_value) : std::nullopt,
                      r.last_valid_step, seconds, "");
      } else if (interrupted_) {
        spdlog::info("trial {} ended by the stop; it runs again on --resume", r.number);
      } else if (ok && r.has_value) {
        s = end_trial(r.number, "complete", r.last_value, r.last_valid_step, seconds, "");
      } else {
        const std::string why =
            ok ? fmt::format("no validation figure '{}' in metrics.jsonl (does the data have a validation split?)",
                             s_.metric)
               : (WIFSIGNALED(status)
                      ? fmt::format("ended by signal {}; {}", WTERMSIG(status), last_error(trial_dir(s_, r.number)))
                      : fmt::format("exit status {}; {}", WEXITSTATUS(status), last_error(trial_dir(s_, r.number))));
        s = end_trial(r.number, "failed", std::nullopt, r.last_valid_step, seconds, why);
      }
      if (!s.ok()) spdlog::error("{}", s.message());
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      publish();
    }
  }

  // The stop: each running trial gets SIGTERM (and SIGKILL after the grace);
  // their journal entries stay open, so --resume runs them again.
  void terminate_all() {
    if (interrupted_) return;
    interrupted_ = true;
    for (Running& r : running_) {
      if (r.term_at < 0) {
        r.term_at = r.clock.seconds();
        ::kill(r.pid, SIGTERM);
      }
    }
  }

  void print_best() const {
    std::vector<const TrialRecord*> done;
    for (const TrialRecord& t : trials_)
      if (t.state == "complete" && t.has_value) done.push_back(&t);
    std::stable_sort(done.begin(), done.end(),
                     [&](const TrialRecord* a, const TrialRecord* b) { return folded(a->value) < folded(b->value); });
    const auto count = [&](const char* state) {
      return std::count_if(trials_.begin(), trials_.end(), [&](const TrialRecord& t) { return t.state == state; });
    };
    std::string table = fmt::format("best of {} complete trials ({} pruned, {} failed):\n", count("complete"),
                                    count("pruned"), count("failed"));
    table += fmt::format("  {:>5}  {:>10}  {}\n", "trial", s_.metric, "point");
    for (size_t k = 0; k < std::min<size_t>(5, done.size()); ++k)
      table += fmt::format("  {:>5}  {:>10.6g}  {}\n", done[k]->number, done[k]->value, describe(done[k]->point));
    std::fputs(table.c_str(), stdout);
    std::fflush(stdout);
  }

  void publish() {
    if (!prom_) return;
    MetricFamilies& f = prom_->families();
    double n[4] = {0, 0, 0, 0};
    double best = NAN;
    for (const TrialRecord& t : trials_) {
      if (t.state == "complete") ++n[1];
      if (t.state == "pruned") ++n[2];
      if (t.state == "failed") ++n[3];
      if (t.state == "complete" && t.has_value && (std::isnan(best) || folded(t.value) < folded(best))) best = t.value;
    }
    n[0] = static_cast<double>(running_.size());
    const char* states[] = {"running", "complete", "pruned", "failed"};
    for (int k = 0; k < 4; ++k) f.tune_trials.Add({{"state", states[k]}}).Set(n[k]);
    if (!std::isnan(best)) f.tune_best.Add({{"metric", s_.metric}}).Set(best);
  }

  const StudyConfig& s_;
  std::vector<TrialRecord> trials_;
  JournalWriter journal_;
  std::unique_ptr<Sampler> sampler_;
  std::unique_ptr<Asha> asha_;
  std::unique_ptr<MetricsServer> prom_;
  JobConfig base_;
  std::vector<Running> running_;
  std::vector<int64_t> rerun_;
  bool interrupted_ = false;
};

}  // namespace

nlohmann::json params_json(const SearchSpace& space, const Point& p) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < space.size(); ++i) {
    if (!p[i]) continue;
    const Param& q = space.params[i];
    if (q.kind == ParamKind::kChoice)
      j[q.key] = q.values[static_cast<size_t>(*p[i])];
    else if (q.kind == ParamKind::kInt)
      j[q.key] = static_cast<int64_t>(*p[i]);
    else
      j[q.key] = *p[i];
  }
  return j;
}

std::vector<std::string> point_sets(const StudyConfig& s, const Point& p) {
  std::vector<std::string> sets = s.sets;
  for (size_t i = 0; i < s.space.size(); ++i)
    if (p[i]) sets.push_back(to_override(s.space.params[i], *p[i]));
  return sets;
}

Status run_tune(const TuneArgs& args) {
  StudyConfig study;
  if (!args.resume.empty()) {
    const std::string file = args.resume + "/study.toml";
    PST_ASSIGN_OR_RETURN(study, load_study(file));
    if (fs::weakly_canonical(study.dir) != fs::weakly_canonical(args.resume))
      return invalid_argument("{}: its [study] dir is {}, not the folder it is in (was the folder moved?)", file,
                              study.dir);
  } else {
    PST_ASSIGN_OR_RETURN(study, load_study(args.study));
    if (fs::exists(study.dir + "/journal.jsonl"))
      return failed_precondition(
          "{} holds a study already: `pst tune --resume {}` continues it, or give [study] dir another folder",
          study.dir, study.dir);
    std::error_code ec;
    fs::create_directories(study.dir, ec);
    if (ec) return io_error("cannot create {}: {}", study.dir, ec.message());
    PST_RETURN_IF_ERROR(write_atomic(study.dir + "/study.toml", study.text));
  }
  if (args.trials > 0) study.trials = args.trials;
  if (args.parallel > 0) study.parallel = args.parallel;
  const std::string journal_path = study.dir + "/journal.jsonl";
  PST_ASSIGN_OR_RETURN(auto trials, read_journal(journal_path, study.space));
  PST_RETURN_IF_ERROR(drop_torn_line(journal_path));
  PST_ASSIGN_OR_RETURN(JournalWriter journal, JournalWriter::open(journal_path));
  if (args.resume.empty()) PST_RETURN_IF_ERROR(journal.append({{"event", "study"}, {"version", 1}}));
  spdlog::info("pst tune: study {} ({} sampler, {} trials, {} at a time, metric {} to {})", study.dir,
               to_string(study.sampler), study.trials, study.parallel, study.metric,
               study.maximize ? "maximize" : "minimize");
  Tuner tuner(study, std::move(trials), std::move(journal));
  const Status s = tuner.run();
  const Status r = write_study_report(study, tuner.trials());
  if (!r.ok()) spdlog::error("the study's report was not written: {}", r.message());
  PST_RETURN_IF_ERROR(s);
  return r;
}

}  // namespace pst
