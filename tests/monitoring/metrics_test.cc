// The /metrics endpoint: a real HTTP GET over loopback returns the series
// with the values set through WorkerMetrics/ServerMetrics/SchedulerMetrics,
// labelled role/rank/shard; the file_sd file lists the targets.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/version.h"
#include "monitoring/metrics.h"
#include "tests/test_util.h"

namespace pst {
namespace {

// GET http://endpoint/path; the body ("" on failure).
std::string http_get(const std::string& endpoint, const std::string& path) {
  auto a = pst::http_get(endpoint, path, 10);
  return a.ok() ? a->body : "";
}

// What `command` prints on stdout.
std::string output_of(const std::string& command) {
  std::string out;
  if (FILE* p = ::popen(command.c_str(), "r")) {
    char buf[256];
    while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

// The value of the series whose line starts with `series` (name and labels).
double value_of(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(MetricsTest, ServesTheSeriesOverHttp) {
  MetricsConfig config;
  auto server = MetricsServer::start(config, 3, "cpu");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::string ep = (*server)->endpoint();
  EXPECT_EQ(ep.rfind("127.0.0.1:", 0), 0u) << ep;
  WorkerMetrics w((*server)->families(), 3);
  ServerMetrics s((*server)->families(), 1, 0);
  SchedulerMetrics sch((*server)->families(), 0);
  w.step_done(120, 0.25, 1e-3, 2.5);
  w.step_done(80, 0.5, 2e-3, 1.5);
  w.set_train_loss(3.25);
  w.observe_phase(WorkerMetrics::kForward, 0.1);
  s.update_done(0.01, true, true);
  s.update_done(0.02, false, false);
  s.bytes_in(4096);
  s.rejected("badJob");
  s.rejected("badJob");
  sch.set_members("worker", 2);
  sch.failure("server");
  const std::string text = "\n" + http_get(ep, "/metrics");
  EXPECT_EQ(value_of(text, "pst_tokens_total{rank=\"3\",role=\"worker\"}"), 200) << text;
  EXPECT_EQ(value_of(text, "pst_worker_steps_total{rank=\"3\",role=\"worker\"}"), 2);
  EXPECT_EQ(value_of(text, "pst_train_loss{rank=\"3\",role=\"worker\"}"), 3.25);
  EXPECT_EQ(value_of(text, "pst_learning_rate{rank=\"3\",role=\"worker\"}"), 2e-3);
  EXPECT_EQ(value_of(text, "pst_step_duration_seconds_count{rank=\"3\",role=\"worker\"}"), 2);
  EXPECT_EQ(value_of(text, "pst_step_duration_seconds_sum{rank=\"3\",role=\"worker\"}"), 0.75);
  EXPECT_EQ(value_of(text, "pst_phase_duration_seconds_count{phase=\"forward\",rank=\"3\",role=\"worker\"}"), 1);
  EXPECT_EQ(value_of(text, "pst_optimizer_steps_total{rank=\"1\",role=\"server\",shard=\"0\"}"), 1);
  EXPECT_EQ(value_of(text, "pst_skipped_steps_total{rank=\"1\",reason=\"nonfinite\",role=\"server\",shard=\"0\"}"), 1);
  EXPECT_EQ(value_of(text, "pst_grad_clipped_steps_total{rank=\"1\",role=\"server\",shard=\"0\"}"), 1);
  EXPECT_EQ(value_of(text, "pst_transport_bytes_total{direction=\"in\",rank=\"1\",role=\"server\",shard=\"0\"}"), 4096);
  EXPECT_EQ(value_of(text, "pst_messages_rejected_total{rank=\"1\",reason=\"badJob\",role=\"server\",shard=\"0\"}"), 2);
  EXPECT_EQ(value_of(text, "pst_cluster_members{node_role=\"worker\",rank=\"0\",role=\"scheduler\"}"), 2);
  EXPECT_EQ(value_of(text, "pst_node_failures_total{node_role=\"server\",rank=\"0\",role=\"scheduler\"}"), 1);
  EXPECT_NE(text.find(fmt::format("pst_build_info{{backend=\"cpu\",commit=\"{}\",version=\"{}\"}} 1", git_commit(),
                                  version())),
            std::string::npos)
      << text;
  // The last step's timestamp is now, in seconds.
  const double ts = value_of(text, "pst_last_step_timestamp_seconds{rank=\"3\",role=\"worker\"}");
  EXPECT_NEAR(ts, static_cast<double>(time(nullptr)), 60);
}

// A client that sends one byte and stalls and 70 that connect and send
// nothing: a scrape and a health check still get their answer at once (one
// connection at a time, with 2 s to read each, made them wait for minutes).
TEST(MetricsTest, SlowAndIdleClientsDoNotHoldUpAScrape) {
  MetricsConfig config;
  auto server = MetricsServer::start(config, 0, "cpu");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::string ep = (*server)->endpoint();
  const int port = std::stoi(ep.substr(ep.rfind(':') + 1));
  auto connect_to = [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  };
  std::vector<int> idle;
  const int slow = connect_to();
  ASSERT_EQ(::send(slow, "G", 1, 0), 1);
  for (int i = 0; i < 70; ++i) idle.push_back(connect_to());
  auto scrape = pst::http_get(ep, "/metrics", 10);
  ASSERT_TRUE(scrape.ok()) << scrape.status().to_string();
  EXPECT_EQ(scrape->status, 200);
  EXPECT_NE(scrape->body.find("pst_build_info"), std::string::npos);
  auto health = pst::http_get(ep, "/healthz", 10);
  ASSERT_TRUE(health.ok()) << health.status().to_string();
  EXPECT_EQ(health->status, 503);
  ::close(slow);
  for (int fd : idle) ::close(fd);
}

TEST(MetricsTest, HealthzIsReadyOnlyAfterSetReady) {
  MetricsConfig config;
  auto server = MetricsServer::start(config, 0, "cpu");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::string ep = (*server)->endpoint();
  auto before = pst::http_get(ep, "/healthz", 10);
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  EXPECT_EQ(before->status, 503);
  EXPECT_NE(before->body.find("rendezvous"), std::string::npos) << before->body;
  (*server)->set_ready();
  auto after = pst::http_get(ep, "/healthz", 10);
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(after->body, "ok\n");
  auto other = pst::http_get(ep, "/nothing", 10);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->status, 404);
  // Nothing listens on a port just released: an error, not a hang.
  std::string closed_ep;
  {
    auto tmp = MetricsServer::start(config, 0, "cpu");
    ASSERT_TRUE(tmp.ok());
    closed_ep = (*tmp)->endpoint();
  }
  EXPECT_FALSE(pst::http_get(closed_ep, "/healthz", 5).ok());
  EXPECT_FALSE(pst::http_get("no-port", "/healthz", 5).ok());
}

// A peer that answers a GET with more than kMaxHttpAnswerBytes (here 24 MiB,
// then it closes): an error that says so, not the whole answer in memory.
TEST(MetricsTest, AnEndlessAnswerIsCutOff) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string ep = fmt::format("127.0.0.1:{}", ntohs(a.sin_port));
  std::thread peer([listener] {
    const int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0) return;
    char request[1024];
    (void)::recv(fd, request, sizeof(request), 0);
    const std::string head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    const std::string body(1 << 16, 'x');
    bool open = ::send(fd, head.data(), head.size(), MSG_NOSIGNAL) > 0;
    for (int i = 0; open && i < 24 * 16; ++i) open = ::send(fd, body.data(), body.size(), MSG_NOSIGNAL) > 0;
    ::close(fd);
  });
  auto answer = pst::http_get(ep, "/metrics", 60);
  peer.join();
  ::close(listener);
  ASSERT_FALSE(answer.ok()) << "an answer of " << answer->body.size() << " bytes was taken";
  EXPECT_NE(answer.status().message().find("the answer exceeds 16 MiB"), std::string::npos)
      << answer.status().message();
}

TEST(MetricsTest, AdvertisedAddressNamesTheEndpoint) {
  MetricsConfig config;
  config.bind = "0.0.0.0";
  auto server = MetricsServer::start(config, 0, "cpu", "127.0.0.1");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  EXPECT_EQ((*server)->endpoint().rfind("127.0.0.1:", 0), 0u) << (*server)->endpoint();
  (*server)->set_ready();
  auto a = pst::http_get((*server)->endpoint(), "/healthz", 10);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->status, 200);
}

TEST(MetricsTest, FixedPortsAreBasePlusRankAndABusyPortIsAnError) {
  MetricsConfig config;
  auto first = MetricsServer::start(config, 0, "cpu");
  ASSERT_TRUE(first.ok());
  const int busy = std::stoi((*first)->endpoint().substr((*first)->endpoint().rfind(':') + 1));
  config.port = busy - 2;
  auto clash = MetricsServer::start(config, 2, "cpu");
  ASSERT_FALSE(clash.ok());
  EXPECT_NE(clash.status().message().find("metrics.port + rank 2"), std::string::npos) << clash.status().message();
}

TEST(MetricsTest, AnEphemeralPortComesFromThePortRange) {
  MetricsConfig config;
  auto first = MetricsServer::start(config, 0, "cpu");
  ASSERT_TRUE(first.ok());
  const int busy = std::stoi((*first)->endpoint().substr((*first)->endpoint().rfind(':') + 1));
  // A range whose first port is taken: the next free one of it.
  const int last = std::min(busy + 40, 65535);
  ASSERT_GT(last, busy) << "the ephemeral port is the last one there is";
  auto ranged = MetricsServer::start(config, 0, "cpu", "", PortRange{busy, last});
  ASSERT_TRUE(ranged.ok()) << ranged.status().to_string();
  const int port = std::stoi((*ranged)->endpoint().substr((*ranged)->endpoint().rfind(':') + 1));
  EXPECT_GT(port, busy);
  EXPECT_LE(port, last);
  EXPECT_EQ(pst::http_get((*ranged)->endpoint(), "/healthz", 10)->status, 503);
  // A range of one port that is taken: an error naming the range.
  auto full = MetricsServer::start(config, 0, "cpu", "", PortRange{busy, busy});
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find(fmt::format("cluster.port_range = \"{}-{}\" is in use", busy, busy)),
            std::string::npos)
      << full.status().message();
}

TEST(PortRangeTest, ParsesFirstDashLastAndNamesWhatIsAllowed) {
  auto r = parse_port_range("30000-30100");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, 30000);
  EXPECT_EQ(r->last, 30100);
  EXPECT_EQ(r->to_string(), "30000-30100");
  EXPECT_TRUE(parse_port_range("")->any());
  EXPECT_EQ(parse_port_range("5-5")->last, 5);
  for (const char* bad : {"30000", "-5", "5-", "0-10", "10-5", "1-65536", "a-b", "1-2-3", " 1-2", "1 -2"}) {
    auto b = parse_port_range(bad);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find("FIRST-LAST with 1 <= FIRST <= LAST <= 65535"), std::string::npos)
        << b.status().message();
  }
}

TEST(ProcessMetricsTest, FiguresAgreeWithTheKernelsOtherAccounts) {
  auto before = read_process_stats();
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  // Open descriptors: 8 more files open are 8 more.
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) fds.push_back(::open("/proc/self/stat", O_RDONLY | O_CLOEXEC));
  auto opened = read_process_stats();
  EXPECT_EQ(opened->open_fds, before->open_fds + 8);
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(read_process_stats()->open_fds, before->open_fds);
  // Resident memory: 64 MiB written are resident.
  std::vector<char> block(64 << 20);
  for (size_t i = 0; i < block.size(); i += 4096) block[i] = static_cast<char>(i);
  auto grown = read_process_stats();
  EXPECT_GE(grown->resident_bytes - before->resident_bytes, 60 << 20);
  EXPECT_GE(grown->virtual_bytes, grown->resident_bytes);
  // CPU time: getrusage's count, in clock ticks (1/100 s) of it.
  volatile double sink = 0;
  for (int i = 0; i < 30000000; ++i) sink = sink + 1e-9 * i;
  rusage u{};
  ASSERT_EQ(::getrusage(RUSAGE_SELF, &u), 0);
  auto busy = read_process_stats();
  const double rusage_s = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
                          1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  EXPECT_NEAR(busy->cpu_seconds, rusage_s, 0.05);
  EXPECT_GT(busy->cpu_seconds, before->cpu_seconds);
  // Start time: ps's elapsed seconds of this process, subtracted from now.
  const std::string etimes = output_of(fmt::format("ps -o etimes= -p {}", ::getpid()));
  const double now = static_cast<double>(::time(nullptr));
  EXPECT_NEAR(busy->start_time, now - std::stod(etimes), 2.0) << etimes;
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(busy->max_fds, static_cast<int64_t>(limit.rlim_cur));
}

TEST(ProcessMetricsTest, ServedWithTheStandardNames) {
  // Some CPU time to show (the kernel counts it in 10 ms ticks).
  volatile double sink = 0;
  for (int i = 0; read_process_stats()->cpu_seconds < 0.05; ++i) sink = sink + 1e-9 * i;
  MetricsConfig config;
  auto server = MetricsServer::start(config, 0, "cpu");
  ASSERT_TRUE(server.ok());
  const std::string text = "\n" + http_get((*server)->endpoint(), "/metrics");
  for (const char* name : {"process_cpu_seconds_total", "process_start_time_seconds", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds"})
    EXPECT_GT(value_of(text, name), 0) << name << " in\n" << text;
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter"), std::string::npos);
  // A CPU worker has no GPU memory series.
  WorkerMetrics w((*server)->families(), 1);
  EXPECT_EQ(http_get((*server)->endpoint(), "/metrics").find("pst_gpu_memory_used_bytes{"), std::string::npos);
  w.set_gpu_memory(1, 3 << 20, 16 << 20);
  const std::string gpu = "\n" + http_get((*server)->endpoint(), "/metrics");
  EXPECT_EQ(value_of(gpu, "pst_gpu_memory_used_bytes{device=\"1\",rank=\"1\",role=\"worker\"}"), 3 << 20) << gpu;
  EXPECT_EQ(value_of(gpu, "pst_gpu_memory_total_bytes{device=\"1\",rank=\"1\",role=\"worker\"}"), 16 << 20);
}

TEST(MetricsTest, FileSdListsEveryTarget) {
  testing::TempDir dir;
  const std::string path = dir.file("sd/targets.json");
  ASSERT_TRUE(write_file_sd(
                  path, {{"127.0.0.1:9100", "scheduler", 0}, {"127.0.0.1:9101", "server", 1}, {"", "worker", 2}}, 0xabc)
                  .ok());
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j.size(), 2u) << "a process without metrics is not a target";
  EXPECT_EQ(j[1]["targets"][0], "127.0.0.1:9101");
  EXPECT_EQ(j[1]["labels"]["pst_node_role"], "server");
  EXPECT_EQ(j[1]["labels"]["pst_node_rank"], "1");
  EXPECT_EQ(j[0]["labels"]["pst_job"], "0000000000000abc");
}

}  // namespace
}  // namespace pst
