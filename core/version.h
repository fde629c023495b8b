// What this binary is: pst's version (CMakeLists.txt's project version) and
// the git commit it was built from ("<hash>" or "<hash>-dirty"; "unknown"
// when built outside a git checkout). `pst --version` prints both, and
// pst_build_info carries them as labels.
#pragma once

namespace pst {

const char* version();
const char* git_commit();

}  // namespace pst
