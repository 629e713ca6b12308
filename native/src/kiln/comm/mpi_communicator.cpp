// comm::Communicator over MPI (Open MPI from Debian's openmpi-bin libopenmpi-dev in CI). Errors are
// fatal to the job (MPI's default handler, MPI_ERRORS_ARE_FATAL): a collective that fails because a
// peer died ends every rank rather than leaving one waiting.
#include "kiln/comm/mpi_communicator.h"

#include "kiln/comm/world.h"

#include <dlfcn.h>
#include <mpi.h>

#include <climits>
#include <cstring>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

namespace kiln {
namespace comm {
namespace {

// MPI counts are int: larger buffers are sent in pieces of at most this many elements.
constexpr size_t kMaxChunk = static_cast<size_t>(INT_MAX) / 2;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }

  const char* transport() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool deviceBuffers() const override { return false; }

  void allReduceSum(const void* send, void* recv, size_t count, DType dtype) override {
    // CPU ranks compute in float32; MPI has no 16-bit float type to sum.
    if (dtype != DType::F32) throw std::runtime_error(std::string("MPI all-reduce of ") + dtypeName(dtype) + " is not supported");
    float* p = static_cast<float*>(recv);
    if (send != recv) std::memcpy(p, send, count * sizeof(float));
    for (size_t done = 0; done < count; done += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, count - done));
      MPI_Allreduce(MPI_IN_PLACE, p + done, n, MPI_FLOAT, MPI_SUM, comm_);
    }
  }

  void allGather(const void* send, void* recv, size_t bytes) override {
    if (bytes > kMaxChunk) throw std::runtime_error("MPI all-gather of " + std::to_string(bytes) + " bytes per rank is too large");
    MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE, comm_);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    uint8_t* p = static_cast<uint8_t*>(data);
    for (size_t done = 0; done < bytes; done += kMaxChunk) {
      MPI_Bcast(p + done, static_cast<int>(std::min(kMaxChunk, bytes - done)), MPI_BYTE, root, comm_);
    }
  }

  void send(const void* data, size_t bytes, int peer) override {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    for (size_t done = 0; done < bytes; done += kMaxChunk) {
      MPI_Send(p + done, static_cast<int>(std::min(kMaxChunk, bytes - done)), MPI_BYTE, peer, 0, comm_);
    }
  }

  void recv(void* data, size_t bytes, int peer) override {
    uint8_t* p = static_cast<uint8_t*>(data);
    for (size_t done = 0; done < bytes; done += kMaxChunk) {
      MPI_Recv(p + done, static_cast<int>(std::min(kMaxChunk, bytes - done)), MPI_BYTE, peer, 0, comm_, MPI_STATUS_IGNORE);
    }
  }

  int64_t allReduceMin(int64_t value) override {
    long long v = value, out = 0;
    MPI_Allreduce(&v, &out, 1, MPI_LONG_LONG, MPI_MIN, comm_);
    return out;
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(comm_, color, key, &sub);
    return std::make_unique<MpiCommunicator>(sub, true);
  }

 private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
};

void finalizeAtExit() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    runExitHooks();
    MPI_Finalize();
  }
}

// Node loads the addon (and with it libmpi) with local symbol scope; Open MPI's plugins, which it
// dlopens itself, expect libmpi's symbols to be global ("undefined symbol: ompi_..." otherwise).
// Re-opening the already loaded library with RTLD_GLOBAL makes them so.
void promoteMpiSymbols() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) != 0 && info.dli_fname) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

}  // namespace

Communicator& mpiWorld() {
  static std::once_flag once;
  static std::unique_ptr<MpiCommunicator> world;
  std::call_once(once, [] {
    promoteMpiSymbols();
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
      throw std::runtime_error("MPI_Init_thread failed");
    }
    if (provided < MPI_THREAD_SERIALIZED) {
      throw std::runtime_error("this MPI library gives thread level " + std::to_string(provided) +
                               ", below MPI_THREAD_SERIALIZED, which Kiln's executor thread needs");
    }
    std::atexit(finalizeAtExit);
    world = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, false);
  });
  return *world;
}

void mpiAbort(int code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace comm
}  // namespace kiln
