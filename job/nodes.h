// The three roles of a job of several processes, whichever bootstrap made
// their Cluster (job/cluster.h). Each returns when its node is done, with
// the error that ended it. Logging names the node; the caller reports the
// Status.
#pragma once

#include <cstdio>
#include <memory>

#include <zmq.hpp>

#include "comm/socket.h"
#include "job/cluster.h"
#include "model/backend.h"
#include "worker/trainer.h"

namespace pst {

// Server k = layout.server_index(rank): its shards (resumed when
// checkpoint.resume), served on `router` until every worker has shut down.
Status run_server(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, std::unique_ptr<Router> router,
                  const Cluster& cluster);
// Worker w = layout.worker_index(rank): trains on its shard of the data;
// worker 0 also evaluates and writes train.output.
Status run_worker(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, const Cluster& cluster);
// The scheduler on `router`: the rendezvous (when `rendezvous`: roles
// started on their own), liveness, statistics, the end of the job.
Status run_scheduler(const JobConfig& job, Router& router, const Cluster& cluster, bool rendezvous);
// The trainer options of worker w of a job of several processes or threads.
TrainerOptions worker_trainer_options(const JobConfig& job, const JobLayout& layout, int w, const Backend& backend,
                                      std::FILE* metrics);

}  // namespace pst
