#include "exchange_run.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define OUTPUT_PREFILL 0x5A

size_t exchangeBufferBytes(const scenario* s, ulyssesOp_t op, int t, int r, int isSend,
                           const int64_t* lengths) {
  refShape shape = shapeOf(s, t, lengths);
  if (rowsOnSequenceSide(op, isSend)) return refSeqBytes(&shape, r);
  if (op == ulyssesOpAllGather) return refGatherBytes(&shape);
  if (isKvTensor(s, t)) {
    refGqaShape kvShape = kvShapeOf(s, t, lengths);
    return refGqaHeadSideBytes(&kvShape, r);
  }
  return refHeadSideBytes(&shape, r);
}

void exchangeSetup(exchangeRun* run, const scenario* s, ulyssesOp_t op, uint64_t seed) {
  memset(run, 0, sizeof *run);
  run->s = s;
  run->op = op;
  run->world = simCreate(s->nRanks);
  const int64_t* slots = s->capacityMode ? s->capacities : s->lengths;
  for (int r = 0; r < s->nRanks; r++) {
    run->deviceLengths[r] = s->lengths[r];
    simCommInit(&run->comms[r], s->nRanks, r);
    ulyssesResult_t created =
        s->capacityMode
            ? ulyssesPlanCreateCapacity(&run->plans[r], s->nRanks, r, s->capacities,
                                        &run->deviceLengths[r], s->nTensors, s->layouts)
            : ulyssesPlanCreateExact(&run->plans[r], s->nRanks, r, s->lengths, s->nTensors,
                                     s->layouts);
    if (created != ulyssesSuccess) fail_msg("plan for rank %d: %s", r, ulyssesGetLastError());
    assert_int_equal(ulyssesGetWorkspaceSize(run->plans[r], op, &run->workspaceBytes[r]),
                     ulyssesSuccess);
    guardedAlloc(&run->workspace[r], run->workspaceBytes[r], 0);
    for (int t = 0; t < s->nTensors; t++) {
      /* Misaligned user buffers on purpose, to exercise every vector width. */
      size_t misalignment = (size_t)((seed + (uint64_t)(r * 7 + t * 3)) % 5) * 4 % 16;
      guardedBuffer* in = &run->send[r][t];
      guardedBuffer* out = &run->recv[r][t];
      size_t sendBytes, recvBytes;
      assert_int_equal(ulyssesGetBufferSizes(run->plans[r], op, t, &sendBytes, &recvBytes),
                       ulyssesSuccess);
      assert_int_equal(sendBytes, exchangeBufferBytes(s, op, t, r, 1, slots));
      assert_int_equal(recvBytes, exchangeBufferBytes(s, op, t, r, 0, slots));
      guardedAlloc(in, sendBytes, misalignment);
      guardedAlloc(out, recvBytes, misalignment / 2);
      uint64_t fillSeed = seed * 1000003u + (uint64_t)(r * 31 + t);
      if (isKvTensor(s, t)) {
        /* Finite values: head -> seq sums them. */
        refGqaShape kvShape = kvShapeOf(s, t, s->lengths);
        refFillFloats(in->data, in->bytes / (size_t)s->layouts[t].elementSize, kvShape.type, fillSeed);
      } else {
        refFillPattern(in->data, in->bytes, fillSeed);
      }
      memset(out->data, OUTPUT_PREFILL, out->bytes);
    }
  }
}

void exchangeTeardown(exchangeRun* run) {
  for (int r = 0; r < run->s->nRanks; r++) {
    ulyssesPlanDestroy(run->plans[r]);
    guardedFree(&run->workspace[r]);
    for (int t = 0; t < run->s->nTensors; t++) {
      guardedFree(&run->send[r][t]);
      guardedFree(&run->recv[r][t]);
    }
  }
  simDestroy(run->world);
}

ulyssesCall exchangeCallOf(exchangeRun* run, int r) {
  for (int t = 0; t < run->s->nTensors; t++) {
    run->sendbuffs[r][t] = run->send[r][t].data;
    run->recvbuffs[r][t] = run->recv[r][t].data;
  }
  ulyssesCall call = {.plan = run->plans[r],
                      .op = run->op,
                      .nTensors = run->s->nTensors,
                      .sendbuffs = run->sendbuffs[r],
                      .recvbuffs = run->recvbuffs[r],
                      .workspace = run->workspace[r].data,
                      .workspaceSize = run->workspaceBytes[r],
                      .deviceStatus = &run->status[r],
                      .comm = &run->comms[r].comm};
  return call;
}

ulyssesCall exchangeStageCallOf(exchangeRun* run, int r, const int64_t* deviceLengths) {
  ulyssesCall call = exchangeCallOf(run, r);
  call.comm = NULL;
  call.deviceLengths = run->s->capacityMode ? deviceLengths : NULL;
  call.deviceStatus = run->s->capacityMode ? &run->status[r] : NULL;
  return call;
}

void exchangeExecute(exchangeRun* run) {
  const scenario* s = run->s;
  for (int r = 0; r < s->nRanks; r++) {
    ulyssesCall call = exchangeCallOf(run, r);
    ulyssesBackend backend = simBackendOf(run->world, r);
    ulyssesResult_t result = ulyssesEnqueueExchange(&call, &backend);
    if (result != ulyssesSuccess)
      fail_msg("rank %d: %s: %s", r, ulyssesGetErrorString(result), ulyssesGetLastError());
  }
  char message[256];
  if (simExecute(run->world, message, sizeof message)) fail_msg("%s", message);
}

sideRows exchangeSideRows(const exchangeRun* run, int t, int r, int isSend, const int64_t* lengths) {
  const scenario* s = run->s;
  const ulyssesLayout_t* layout = &s->layouts[t];
  const int64_t* slots = s->capacityMode ? s->capacities : s->lengths;
  int64_t headBytes = layout->headDim * layout->elementSize;
  int sequenceSide = rowsOnSequenceSide(run->op, isSend);
  sideRows side = {0, layout->batch, 0, 0, layout->order == ulyssesOrderSBHD};
  if (sequenceSide) {
    side.rowBytes = (size_t)(layout->packed * layout->heads * headBytes);
    side.realRows = lengths[r];
    side.slotRows = slots[r];
    return side;
  }
  int64_t begin;
  int64_t rowHeads = run->op == ulyssesOpAllGather
                         ? layout->heads
                         : ulyssesPeerHeads(layout->heads, layout->queryHeads, s->nRanks, r, &begin);
  side.rowBytes = (size_t)(layout->packed * rowHeads * headBytes);
  for (int q = 0; q < s->nRanks; q++) {
    side.realRows += lengths[q];
    side.slotRows += slots[q];
  }
  return side;
}

void expectSameRealRows(const sideRows* side, const void* a, const void* b, const char* what) {
  for (int64_t i = 0; i < side->batch * side->realRows; i++) {
    const unsigned char* rowA = (const unsigned char*)a + rowOffset(side, i);
    const unsigned char* rowB = (const unsigned char*)b + rowOffset(side, i);
    for (size_t k = 0; k < side->rowBytes; k++)
      if (rowA[k] != rowB[k])
        fail_msg("%s: real row %lld, byte %zu: 0x%02x, expected 0x%02x", what, (long long)i, k,
                 rowA[k], rowB[k]);
  }
}

void exchangeReference(const exchangeRun* run, int t, const int64_t* lengths, void** expected) {
  const scenario* s = run->s;
  refShape shape = shapeOf(s, t, lengths);
  const void* inputs[HARNESS_MAX_RANKS];
  void* denseInputs[HARNESS_MAX_RANKS];
  for (int r = 0; r < s->nRanks; r++) {
    sideRows in = exchangeSideRows(run, t, r, 1, lengths);
    denseInputs[r] = malloc(exchangeBufferBytes(s, run->op, t, r, 1, lengths) + 1);
    expected[r] = malloc(exchangeBufferBytes(s, run->op, t, r, 0, lengths) + 1);
    assert_non_null(denseInputs[r]);
    assert_non_null(expected[r]);
    densify(&in, run->send[r][t].data, denseInputs[r]);
    inputs[r] = denseInputs[r];
  }
  refGqaShape kvShape = kvShapeOf(s, t, lengths);
  if (run->op == ulyssesOpAllGather) refAllGather(&shape, inputs, expected);
  else if (isKvTensor(s, t) && run->op == ulyssesOpSeqToHead) refGqaSeqToHead(&kvShape, inputs, expected);
  else if (isKvTensor(s, t)) refGqaHeadToSeq(&kvShape, inputs, expected);
  else if (run->op == ulyssesOpSeqToHead) refSeqToHead(&shape, inputs, expected);
  else refHeadToSeq(&shape, inputs, expected);
  for (int r = 0; r < s->nRanks; r++) free(denseInputs[r]);
}

void exchangeCheck(const exchangeRun* run, const int64_t* lengths) {
  const scenario* s = run->s;
  for (int t = 0; t < s->nTensors; t++) {
    refShape shape = shapeOf(s, t, lengths);
    void* expected[HARNESS_MAX_RANKS];
    exchangeReference(run, t, lengths, expected);
    for (int r = 0; r < s->nRanks; r++) {
      sideRows out = exchangeSideRows(run, t, r, 0, lengths);
      const unsigned char* want = expected[r];
      for (int64_t i = 0; i < out.batch * out.realRows; i++) {
        const unsigned char* got = run->recv[r][t].data + rowOffset(&out, i);
        for (size_t k = 0; k < out.rowBytes; k++)
          if (got[k] != want[(size_t)i * out.rowBytes + k])
            fail_msg("op %d, %s mode, P=%d, rank %d, tensor %d (B=%lld H=%lld D=%lld E=%lld T=%d "
                     "%s): real row %lld byte %zu is 0x%02x, the reference says 0x%02x",
                     (int)run->op, s->capacityMode ? "capacity" : "exact", s->nRanks, r, t,
                     (long long)shape.batch, (long long)shape.heads, (long long)shape.headDim,
                     (long long)shape.elementSize, shape.packed, shape.sbhd ? "SBHD" : "BSHD",
                     (long long)i, k, got[k], want[(size_t)i * out.rowBytes + k]);
      }
      free(expected[r]);
      if (!guardsIntact(&run->recv[r][t]) || !guardsIntact(&run->send[r][t]))
        fail_msg("rank %d, tensor %d: a byte outside the caller's buffers changed", r, t);
    }
  }
  for (int r = 0; r < s->nRanks; r++)
    if (!guardsIntact(&run->workspace[r]))
      fail_msg("rank %d: a byte outside the workspace changed", r);
}
