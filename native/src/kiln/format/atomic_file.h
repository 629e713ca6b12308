#pragma once
// Writes a file under a temporary name (`<path>.tmp-<pid>`) and renames it into place on commit(), so
// readers never see a half-written file. Destroyed without commit() (an error was thrown), it removes
// the temporary file.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kiln {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void writeZeros(size_t size);
  uint64_t bytesWritten() const { return written_; }
  // Flushes, syncs and renames onto the final path. Throws naming the path on failure.
  void commit();

  const std::string& tempPath() const { return tempPath_; }

 private:
  void fail(const char* what, int err);
  std::string path_;
  std::string tempPath_;
  std::FILE* file_ = nullptr;
  uint64_t written_ = 0;
  bool committed_ = false;
};

}  // namespace kiln
