// libFuzzer target: the engine loader (kiln/format/engine_file.h, kiln/runtime/engine.cpp, op specs,
// the dataflow check) on fuzzed engine headers. The input is the header JSON; the harness wraps it in
// a well-formed container (magic, version, length, a data region sized for the weights table it
// declares, up to 8 MiB, and the XXH64 checksum), so that mutations reach the loader's checks rather
// than all dying at the checksum. An engine that loads then runs one step of one token. Headers whose
// arena exceeds 64 MiB are skipped: the arena size is the builder's to declare and is allocated as
// declared (a memory cap is not the loader's business).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "kiln/format/engine_file.h"
#include "kiln/format/json.h"
#include "kiln/runtime/engine.h"

namespace {

constexpr uint64_t kMaxData = 8ull << 20;
constexpr double kMaxArena = 64.0 * 1024 * 1024;

void putU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void putU64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > kiln::kEngineMaxHeaderBytes) return 0;
  uint64_t dataBytes = 0;
  try {
    const kiln::Json header = kiln::Json::parse(reinterpret_cast<const char*>(data), size);
    if (const kiln::Json* arena = header.find("arena")) {
      if (const kiln::Json* bytes = arena->find("bytes")) {
        if (bytes->isNumber() && bytes->asNumber() > kMaxArena) return 0;
      }
    }
    if (const kiln::Json* weights = header.find("weights")) {
      for (const kiln::Json& w : weights->items()) {
        const kiln::Json* offset = w.find("offset");
        const kiln::Json* length = w.find("byteLength");
        if (offset && length && offset->isNumber() && length->isNumber()) {
          const double end = offset->asNumber() + length->asNumber();
          if (end > 0 && end <= static_cast<double>(kMaxData)) dataBytes = std::max<uint64_t>(dataBytes, static_cast<uint64_t>(end));
        }
      }
    }
  } catch (const std::exception&) {
    // Not JSON: still wrapped and fed to the loader, which must refuse it.
  }
  std::vector<uint8_t> file(kiln::kEngineMagic, kiln::kEngineMagic + 8);
  putU32(file, kiln::kEngineFormatVersion);
  putU32(file, 0);
  putU64(file, size);
  file.insert(file.end(), data, data + size);
  while (file.size() % kiln::kEngineAlignment != 0) file.push_back(0);
  // Small finite float32 values (bytes 0x3c: about 0.0115), so that a step computes ordinary numbers.
  file.insert(file.end(), dataBytes, 0x3c);
  putU64(file, kiln::xxh64(file.data(), file.size()));
  const std::string& path = kiln_fuzz::scratchPath("engine");
  kiln_fuzz::writeFile(path, file.data(), file.size());

  kiln::EngineOptions options;
  options.numThreads = 1;
  options.kvCacheTokens = 64;
  try {
    kiln::Engine engine(path, options);
    const int32_t token = 0, position = 0, seq = 0, row = 0;
    std::vector<int32_t> blocks(static_cast<size_t>(engine.kvNumBlocks() > 0 ? 1 : 0), 0);
    const int32_t* tables[1] = {blocks.data()};
    kiln::StepContext step;
    step.numTokens = 1;
    step.tokenIds = &token;
    step.positions = &position;
    step.tokenSeq = &seq;
    step.numSeqs = 1;
    step.blockTables = tables;
    step.numLogitRows = 1;
    step.logitRows = &row;
    engine.runStep(step);
    volatile float sink = engine.logitsRow(0)[0];
    (void)sink;
  } catch (const std::exception&) {
  }
  return 0;
}
