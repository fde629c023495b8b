// The scheduler (docs/design.md, Roles and launch). Under mpirun it only watches the job; when
// the roles start on their own (`pst train --role ... --scheduler ENDPOINT`,
// no MPI) it is also the rendezvous, the start barrier and the servers'
// reduction of gradient statistics:
//  1. Rendezvous: S servers and W workers send Register (servers with their
//     endpoint); once all have, each gets the node table and its rank
//     (servers 1..S, workers S+1..S+W, in order of arrival per role).
//  2. Start barrier: every node sends Barrier; all are answered once every
//     server has (a server sends it after its shards are initialised and its
//     socket bound), so no push reaches a server that is not ready.
//  3. Statistics: each server reports its partial sum of squares of round v;
//     when all have, each gets the sum, added in server order.
//  4. Heartbeats and Shutdowns: the job ends when every node has sent
//     Shutdown (or was removed); a node silent for longer than the liveness
//     window (heartbeat_s x heartbeat_misses) is taken as dead. A dead server
//     (and, under mpirun, any dead node) ends the job, and the error names
//     it. With the rendezvous, a dead worker is removed instead (docs/design.md,
//     Membership): one log line, a Membership message to every server on its
//     heartbeat line, its later messages refused; below min_workers the
//     statistics' answer stops the job after the next step, with a checkpoint,
//     and run_scheduler then returns an error that says so.
//  5. Joins (BSP, with the rendezvous): a worker that registers once the job
//     runs (or beyond cluster.workers during the rendezvous) gets a free
//     place and the node table; once it has passed its start barrier, the
//     next statistics' answer names it (GradStats::joined), every server
//     admits it at that step, and its barrier is answered with the step it
//     starts at.
//  6. Re-forms (max_restarts > 0): a server lost once the job runs ends the
//     round (every live node gets an error with code REFORM on its lines);
//     phase 1 runs again for the servers and the workers that remain, and
//     the job goes on from its newest complete checkpoint.
// With metrics, it keeps pst_cluster_members, pst_node_failures_total and
// pst_job_reforms_total, and
// writes the Prometheus file_sd file listing every process's /metrics
// (those it was given, and those the nodes registered).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comm/layout.h"
#include "comm/socket.h"
#include "core/status.h"
#include "monitoring/metrics.h"

namespace pst {

struct SchedulerOptions {
  uint64_t job_id = 0;
  JobLayout layout;
  double timeout_s = 120;  // a send to a node that takes no message
  double liveness_s = 5;   // a running job's node that sends nothing this long is dead
  int min_workers = 1;     // with the rendezvous: fewer live workers stop the job
  // With the rendezvous, the layout's workers are places (cluster.max_workers);
  // the job starts with this many (cluster.workers; 0: every place). When
  // `joins`, a worker that registers once the job runs takes a free place
  // (never filled, or a removed worker's) and joins at the next step.
  int start_workers = 0;
  bool joins = false;
  // With the rendezvous (BSP): how many times a lost server re-forms the job
  // instead of ending it (cluster.max_restarts). Every live node is told
  // (ErrorCode REFORM), a new rendezvous waits for the servers (a
  // replacement in the lost one's place) and the workers still in the job,
  // and they all resume from the newest complete checkpoint.
  int max_restarts = 0;
  double start_timeout_s = 600;  // the rendezvous, and a node's silence before the start barrier
  bool rendezvous = true;        // false under mpirun, where MPI gave out ranks and endpoints
  SchedulerMetrics* metrics = nullptr;
  std::string file_sd;                // where to write the scrape targets; empty: nowhere
  std::vector<ScrapeTarget> targets;  // known before the rendezvous (the scheduler's own; all under mpirun)
  std::function<void()> on_start;     // rendezvous: called when the start barrier releases the job
  // Counts every message taken off the socket, once handled (tests and
  // fuzz/fuzz_scheduler.cc wait on it); null: not counted.
  std::atomic<int64_t>* received = nullptr;
};

Status run_scheduler(Router& router, const SchedulerOptions& options);

}  // namespace pst
