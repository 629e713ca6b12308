#pragma once
// The process's place among the ranks `mpirun` launched. A process that mpirun did not launch (or that
// it launched alone) is rank 0 of 1 and never touches MPI: single-process use needs no MPI library at
// run time and behaves exactly as before.
#include <functional>
#include <string>

#include "kiln/comm/communicator.h"

namespace kiln {
namespace comm {

struct WorldInfo {
  int rank = 0;
  int size = 1;
  // This process's rank among the ranks on its machine (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID;
  // the world rank when the launcher does not say): a CUDA rank's GPU.
  int localRank = 0;
  bool launchedByMpirun = false;  // an Open MPI / PMIx / Hydra launcher set this process's rank
  bool mpiCompiled = false;       // this build has the MPI communicator (KILN_MPI)
};

// What the launcher's environment says (no MPI call): OMPI_COMM_WORLD_RANK/SIZE, PMIX_RANK,
// PMI_RANK/PMI_SIZE.
WorldInfo worldInfo();

// The communicator of every rank, initializing MPI on first use. Throws std::runtime_error with the
// fix (rebuild with MPI, run under mpirun) when this process cannot have one.
Communicator& worldCommunicator();

// Work to do before MPI ends at process exit: rank 0 of a tp/pp engine that was never disposed still
// tells the other ranks to stop, so that they exit instead of waiting forever. Returns an id for
// removeExitHook. Hooks run once, in the order they were added, from MPI's exit handler.
int addExitHook(std::function<void()> hook);
void removeExitHook(int id);
void runExitHooks();

// Prints "kiln: rank R: <message>" to stderr and ends every rank of the job with exit code 1 (MPI_Abort):
// a rank that fails while the others wait in a collective must not leave them hanging.
[[noreturn]] void abortWorld(const std::string& message);

}  // namespace comm
}  // namespace kiln
