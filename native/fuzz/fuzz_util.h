#pragma once
// Shared by the libFuzzer targets: the readers under test take a path (they map the file), so each
// input is written to one temporary file per process, in /dev/shm when there is one.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace kiln_fuzz {

inline const std::string& scratchPath(const char* name) {
  static const std::string path = [name] {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/kiln-fuzz-" + name + "-" + std::to_string(getpid());
  }();
  return path;
}

inline void writeFile(const std::string& path, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

}  // namespace kiln_fuzz
