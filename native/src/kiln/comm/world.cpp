#include "kiln/comm/world.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <cstdlib>
#include <stdexcept>

#ifdef KILN_WITH_MPI
#include "kiln/comm/mpi_communicator.h"
#endif

namespace kiln {
namespace comm {
namespace {

// A launcher variable as a small non-negative integer, or -1 when absent or malformed.
int envInt(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 0 || n > 1 << 20) return -1;
  return static_cast<int>(n);
}

std::mutex hooksMutex;
std::map<int, std::function<void()>> hooks;
int nextHookId = 1;

}  // namespace

int addExitHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(hooksMutex);
  hooks.emplace(nextHookId, std::move(hook));
  return nextHookId++;
}

void removeExitHook(int id) {
  std::lock_guard<std::mutex> lock(hooksMutex);
  hooks.erase(id);
}

void runExitHooks() {
  std::map<int, std::function<void()>> pending;
  {
    std::lock_guard<std::mutex> lock(hooksMutex);
    pending.swap(hooks);
  }
  for (auto& entry : pending) entry.second();
}

WorldInfo worldInfo() {
  WorldInfo w;
#ifdef KILN_WITH_MPI
  w.mpiCompiled = true;
#endif
  // Open MPI (mpirun), then PMIx and MPICH's Hydra.
  const char* const rankVars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
  const char* const sizeVars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_SIZE"};
  for (int i = 0; i < 3; ++i) {
    const int rank = envInt(rankVars[i]);
    const int size = envInt(sizeVars[i]);
    if (rank >= 0 && size >= 1 && rank < size) {
      w.rank = rank;
      w.size = size;
      w.launchedByMpirun = true;
      break;
    }
  }
  w.localRank = w.rank;
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"}) {
    const int local = envInt(name);
    if (w.launchedByMpirun && local >= 0 && local <= w.rank) {
      w.localRank = local;
      break;
    }
  }
  return w;
}

Communicator& worldCommunicator() {
  const WorldInfo w = worldInfo();
#ifdef KILN_WITH_MPI
  if (w.launchedByMpirun) return mpiWorld();
  throw std::runtime_error("this engine has more than one rank: run it under `mpirun -n <ranks>`");
#else
  throw std::runtime_error(
      "this engine has more than one rank, and this build of @kiln/native has no MPI communicator: install an MPI "
      "library (Debian: apt-get install openmpi-bin libopenmpi-dev) and rebuild (npm run build:native)");
#endif
}

void abortWorld(const std::string& message) {
  const WorldInfo w = worldInfo();
  std::fprintf(stderr, "kiln: rank %d of %d: %s\n", w.rank, w.size, message.c_str());
  std::fflush(stderr);
#ifdef KILN_WITH_MPI
  if (w.launchedByMpirun) mpiAbort(1);
#endif
  std::_Exit(1);
}

}  // namespace comm
}  // namespace kiln
