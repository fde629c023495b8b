// A worker of a real `pst train --role` job whose compute is a sleep: the
// process bench/scaling.sh starts W times beside a real scheduler and S real
// servers. It registers with the scheduler as `pst train --role worker`
// would, passes the start barrier, beats its heart, and then runs the BSP
// loop of worker/trainer.cc with forward and backward replaced by
// --compute-ms of sleep: pull, sleep, push the model's whole gradient (4
// bytes a parameter, in the parameter table's order), pull the next version.
// Every byte a real worker moves, it moves; the servers aggregate, reduce
// statistics through the scheduler, clip and apply AdamW as in any job.
//
//   scaling_worker --config JOB --scheduler ENDPOINT --compute-ms MS [--set section.key=value]...
//
// Prints one line per step, "step N seconds T push P pull Q" (T: the sleep,
// the push until it was sent, the pull until the new weights were in), and
// at the end "parameters P bytes B" (B: the bytes of its gradient on the
// wire, 4 or 2 a parameter as cluster.wire says).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "comm/remote_client.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/memory.h"
#include "core/timer.h"
#include "job/cluster.h"
#include "model/param_table.h"
#include "scheduler/client.h"
#include "scheduler/heartbeat.h"

using namespace pst;

namespace {

struct Args {
  std::string config, scheduler;
  std::vector<std::string> sets;
  double compute_ms = 0;
};

Status run(const Args& args) {
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(args.config, args.sets));
  init_logging(job.train.log_level, "scaling worker");
  const JobLayout layout{static_cast<int>(job.cluster.servers), static_cast<int>(job.cluster.workers)};
  const uint64_t id = job_id(job);
  zmq::context_t ctx;
  PST_ASSIGN_OR_RETURN(auto security, enable_security(job, ctx, std::nullopt));
  PST_ASSIGN_OR_RETURN(auto control, Dealer::connect(ctx, args.scheduler, "the scheduler"));
  const NodeRegistration me{wire::Role::WORKER, "", host_name(), "", false};
  PST_ASSIGN_OR_RETURN(NodeTable table, register_with_scheduler(*control, id, layout, me, job.cluster.start_timeout_s));
  // The vocabularies, hence the parameter table, come from the job's data.
  PST_ASSIGN_OR_RETURN(TaskData data, load_job_data(job));
  const ParamTable params = build_param_table(job.model, data.src_vocab, data.tgt_vocab);
  PST_ASSIGN_OR_RETURN(ShardPlan plan, ShardPlan::make(params.numels(), layout.servers, job.cluster.chunk_bytes));
  const int w = layout.worker_index(table.rank);
  const RemoteClientOptions options = worker_client_options(job, id, w, layout, nullptr);
  PST_ASSIGN_OR_RETURN(auto client, RemoteParameterClient::connect(ctx, plan, table.servers, options));
  Heartbeat heartbeat(ctx, args.scheduler, id, table.rank, job.cluster.heartbeat_s);
  PST_RETURN_IF_ERROR(
      pass_start_barrier(*control, id, table.rank, job.cluster.timeout_s, job.cluster.start_timeout_s).status());
  const size_t n = static_cast<size_t>(params.total_numel());
  std::vector<float> weights(n), grads(n);
  // A gradient of norm about 1 that differs between workers and steps.
  for (size_t i = 0; i < n; ++i)
    grads[i] = static_cast<float>((i * 2654435761u + static_cast<size_t>(w)) % 2001) * 1e-6f - 1e-3f;
  PST_ASSIGN_OR_RETURN(StepReport info, client->pull(0, weights.data()));
  int64_t version = info.version;
  const int64_t tokens = job.data.batch_size * 8;
  for (int64_t step = 0; step < job.train.steps; ++step) {
    Stopwatch clock;
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(args.compute_ms));
    grads[static_cast<size_t>(step) % n] += 1e-6f;
    const double slept = clock.seconds();
    PST_RETURN_IF_ERROR(client->push(version, tokens, 1.0 * static_cast<double>(tokens), grads.data()));
    const double pushed = clock.seconds();
    PST_ASSIGN_OR_RETURN(info, client->pull(version + 1, weights.data()));
    version = info.version;
    const double pulled = clock.seconds();
    std::printf("step %lld seconds %.6f push %.6f pull %.6f\n", static_cast<long long>(step + 1), pulled,
                pushed - slept, pulled - pushed);
    std::fflush(stdout);
  }
  PST_RETURN_IF_ERROR(client->shutdown());
  heartbeat.finish();
  const int64_t value_bytes = options.bf16_wire ? 2 : 4;  // cluster.wire
  std::printf("parameters %lld bytes %lld\n", static_cast<long long>(n), static_cast<long long>(value_bytes * n));
  return Status();
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();  // as pst does (core/memory.h)
  Args args;
  for (int i = 1; i < argc; ++i) {
    const bool has = i + 1 < argc;
    if (!std::strcmp(argv[i], "--config") && has)
      args.config = argv[++i];
    else if (!std::strcmp(argv[i], "--scheduler") && has)
      args.scheduler = argv[++i];
    else if (!std::strcmp(argv[i], "--set") && has)
      args.sets.emplace_back(argv[++i]);
    else if (!std::strcmp(argv[i], "--compute-ms") && has)
      args.compute_ms = std::atof(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: scaling_worker --config JOB --scheduler ENDPOINT --compute-ms MS [--set "
                   "section.key=value]...\n");
      return 2;
    }
  }
  if (args.config.empty() || args.scheduler.empty()) {
    std::fprintf(stderr, "scaling_worker: --config and --scheduler are needed\n");
    return 2;
  }
  const Status s = run(args);
  if (!s.ok()) {
    std::fprintf(stderr, "scaling_worker: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
