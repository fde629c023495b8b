#include "monitoring/process.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/files.h"

namespace pst {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;

// The boot time, Unix seconds: /proc/stat's btime line.
Result<double> boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double t = 0;
      if (in >> t) return t;
      break;
    }
    in.ignore(1 << 20, '\n');
  }
  return data_loss("/proc/stat: no btime line");
}

// Open descriptors, not counting the one this count itself holds.
int64_t count_open_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  const int own = ::dirfd(dir);
  int64_t n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    if (std::atoi(e->d_name) != own) ++n;
  }
  ::closedir(dir);
  return n;
}

}  // namespace

Result<ProcessStats> read_process_stats() {
  PST_ASSIGN_OR_RETURN(const std::string stat, read_all("/proc/self/stat"));
  // The command name (field 2) is in parentheses and may hold spaces: the
  // fields to read follow its last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return data_loss("/proc/self/stat: no ')' after the command name");
  std::istringstream rest(stat.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string s; rest >> s;) f.push_back(s);
  if (f.size() < 22)
    return data_loss("/proc/self/stat: {} fields after the command name, expected at least 22", f.size());
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const auto field = [&f](int n) { return std::stod(f[static_cast<size_t>(n - 3)]); };
  ProcessStats s;
  s.cpu_seconds = (field(14) + field(15)) / ticks;  // utime + stime
  // The boot time does not change: /proc/stat (a line per CPU and the
  // interrupt counts) is read once, not at every scrape.
  static const Result<double> booted = boot_time();
  PST_ASSIGN_OR_RETURN(const double boot, booted);
  s.start_time = boot + field(22) / ticks;
  s.virtual_bytes = static_cast<int64_t>(field(23));
  s.resident_bytes = static_cast<int64_t>(field(24)) * ::sysconf(_SC_PAGESIZE);
  s.open_fds = count_open_fds();
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0)
    s.max_fds = limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<int64_t>(limit.rlim_cur);
  return s;
}

ProcessMetrics::ProcessMetrics(prometheus::Registry& r)
    : cpu_(BuildCounter()
               .Name("process_cpu_seconds_total")
               .Help("Total user and system CPU time spent in seconds")
               .Register(r)
               .Add({})),
      start_(BuildGauge()
                 .Name("process_start_time_seconds")
                 .Help("Start time of the process since unix epoch in seconds")
                 .Register(r)
                 .Add({})),
      resident_(
          BuildGauge().Name("process_resident_memory_bytes").Help("Resident memory size in bytes").Register(r).Add({})),
      virtual_(
          BuildGauge().Name("process_virtual_memory_bytes").Help("Virtual memory size in bytes").Register(r).Add({})),
      open_fds_(BuildGauge().Name("process_open_fds").Help("Number of open file descriptors").Register(r).Add({})),
      max_fds_(
          BuildGauge().Name("process_max_fds").Help("Maximum number of open file descriptors").Register(r).Add({})) {
  update();
}

void ProcessMetrics::update() {
  auto s = read_process_stats();
  if (!s.ok()) return;  // the series keep their last values
  if (s->cpu_seconds > cpu_counted_) {
    cpu_.Increment(s->cpu_seconds - cpu_counted_);
    cpu_counted_ = s->cpu_seconds;
  }
  start_.Set(s->start_time);
  resident_.Set(static_cast<double>(s->resident_bytes));
  virtual_.Set(static_cast<double>(s->virtual_bytes));
  open_fds_.Set(static_cast<double>(s->open_fds));
  max_fds_.Set(static_cast<double>(s->max_fds));
}

}  // namespace pst
