#include "kiln/runtime/op_specs_parallel.h"

#include <string>

#include "kiln/runtime/parallel.h"

namespace kiln {
namespace spec {
namespace {

ParallelGroups& groupsOf(OpBinding& b) {
  if (!b.facts().parallel) b.fail("is an op of tensor/pipeline-parallel engines, and this engine's header has no mapping of more than one rank");
  return *b.facts().parallel;
}

int64_t maxRowsOf(const OpBinding& b, const ValueRef& v) {
  return v.rows == RowsKind::Tokens ? b.facts().maxNumTokens : b.facts().maxLogitRows;
}

}  // namespace

AllReduce allReduce(OpBinding& b) {
  b.expectArity(1, 1);
  ParallelGroups& groups = groupsOf(b);
  const ValueRef& x = b.input(0);
  const ValueRef& y = b.output(0);
  b.expectRows(y, x.rows, "output 0");
  b.expectCols(y, x.cols, "output 0");
  return {x, y, maxRowsOf(b, x), &groups.tensorParallel()};
}

AllGather allGather(OpBinding& b) {
  b.expectArity(1, 1);
  ParallelGroups& groups = groupsOf(b);
  const ValueRef& x = b.input(0);
  const ValueRef& y = b.output(0);
  b.expectRows(y, x.rows, "output 0");
  b.expectCols(y, x.cols * groups.mapping().tpSize, "output 0");
  return {x, y, maxRowsOf(b, x), &groups.tensorParallel()};
}

VocabParallelEmbedding vocabParallelEmbedding(OpBinding& b) {
  b.expectArity(0, 1);
  groupsOf(b);
  const WeightRef& table = b.weight("table");
  if (table.shape.size() != 2) b.fail("weight \"table\" (\"" + table.name + "\") must be 2-D [rows, hidden]");
  const int64_t rows = table.shape[0];
  const int64_t hidden = table.shape[1];
  const int64_t vocabStart = b.attrInt("vocabStart", 0, b.facts().vocabSize - 1);
  if (vocabStart + rows > b.facts().vocabSize) {
    b.fail("rows [" + std::to_string(vocabStart) + ", " + std::to_string(vocabStart + rows) + ") of weight \"table\" (\"" +
           table.name + "\") pass model.vocabSize " + std::to_string(b.facts().vocabSize));
  }
  const ValueRef& out = b.output(0);
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, hidden, "output 0");
  return {out, table.data, table.dtype, rows, hidden, vocabStart, static_cast<float>(b.attrNumber("scale", 1.0))};
}

namespace {

PeerTransfer peerTransfer(OpBinding& b, const ValueRef& value) {
  ParallelGroups& groups = groupsOf(b);
  const int world = groups.mapping().worldSize();
  const int peer = static_cast<int>(b.attrInt("peer", 0, world - 1));
  if (peer == groups.mapping().rank) b.fail("attribute \"peer\" = " + std::to_string(peer) + " is this rank itself");
  return {value, maxRowsOf(b, value), peer, &groups.pipeline()};
}

}  // namespace

PeerTransfer send(OpBinding& b) {
  b.expectArity(1, 0);
  return peerTransfer(b, b.input(0));
}

PeerTransfer recv(OpBinding& b) {
  b.expectArity(0, 1);
  return peerTransfer(b, b.output(0));
}

}  // namespace spec
}  // namespace kiln
