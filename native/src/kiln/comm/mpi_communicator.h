#pragma once
// The MPI implementation of comm::Communicator (host buffers), and MPI's start and end in this process.
#include <memory>

#include "kiln/comm/communicator.h"

namespace kiln {
namespace comm {

// MPI_Init_thread (MPI_THREAD_SERIALIZED at least: steps run on the executor's thread, loading on a
// worker thread, never two at once) on first call, MPI_Finalize at exit; the world communicator.
Communicator& mpiWorld();
[[noreturn]] void mpiAbort(int code);

}  // namespace comm
}  // namespace kiln
