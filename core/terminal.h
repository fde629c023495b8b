// What a process shows a person at a terminal: colour in log lines and a
// redrawn progress bar. Both only where stdout is a terminal of this
// process's own: never in a rank of an mpirun job (Open MPI gives each rank
// a pseudo-terminal, and the lines of all ranks are interleaved), never
// when TERM is "dumb"; colour not with NO_COLOR set (no-color.org), the bar
// not after disable_progress() (`--no-progress`).
#pragma once

namespace pst {

// True when this process was started by mpirun (Open MPI, MPICH or Slurm's PMI).
bool launched_by_mpirun();

bool color_allowed();
bool progress_allowed();
void disable_progress();

}  // namespace pst
