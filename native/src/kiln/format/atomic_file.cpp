#include "kiln/format/atomic_file.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <unistd.h>

namespace kiln {

AtomicFileWriter::AtomicFileWriter(const std::string& path)
    : path_(path), tempPath_(path + ".tmp-" + std::to_string(::getpid())) {
  file_ = std::fopen(tempPath_.c_str(), "wb");
  if (!file_) throw std::runtime_error(path_ + ": cannot create " + tempPath_ + " (" + std::strerror(errno) + ")");
  // Large sequential writes: a bigger stdio buffer means fewer syscalls.
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_) std::fclose(file_);
  if (!committed_) std::remove(tempPath_.c_str());
}

void AtomicFileWriter::fail(const char* what, int err) {
  throw std::runtime_error(path_ + ": " + what + " " + tempPath_ + " (" + std::strerror(err) + ")");
}

void AtomicFileWriter::write(const void* data, size_t size) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size) fail("cannot write", errno);
  written_ += size;
}

void AtomicFileWriter::writeZeros(size_t size) {
  static const uint8_t zeros[4096] = {};
  while (size > 0) {
    const size_t n = size < sizeof zeros ? size : sizeof zeros;
    write(zeros, n);
    size -= n;
  }
}

void AtomicFileWriter::commit() {
  // Errors such as a full disk may only surface at flush or close: check both before renaming.
  if (std::fflush(file_) != 0) fail("cannot write", errno);
  if (::fsync(fileno(file_)) != 0) fail("cannot sync", errno);
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) fail("cannot close", errno);
  if (std::rename(tempPath_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    throw std::runtime_error(path_ + ": cannot rename " + tempPath_ + " into place (" + std::strerror(err) + ")");
  }
  committed_ = true;
}

}  // namespace kiln
