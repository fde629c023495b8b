// Graceful stop (docs/design.md, Checkpoints): SIGTERM, SIGINT and SIGUSR1 ask the job to
// finish the step in progress, write a checkpoint of it and end; nothing is
// lost. A second SIGTERM or SIGINT ends the process at once (exit status
// 128 + the signal).
//
// Under mpirun, SIGUSR1 is the one to send to mpirun: it forwards it to
// every rank, whereas SIGTERM and SIGINT make mpirun kill the job.
//
// install_stop_handlers() must run first thing in main(), before any thread
// is started: it blocks the signals in the calling thread (so every later
// thread inherits the mask and no poll() or read is interrupted) and starts
// one thread that waits for them. A handler covers threads started before
// main() (a BLAS pool) that still take them.
#pragma once

namespace pst {

void install_stop_handlers();
// True once a stop was asked for, by a signal or by request_stop().
bool stop_requested();
// The signal that asked (0 for request_stop()).
int stop_signal();
// As a signal would; tests clear it again with clear_stop_request().
void request_stop();
void clear_stop_request();

}  // namespace pst
