/* The GPU suite's cases, reference and checked exchanges (suite.h). */
#include "suite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*------------------------------------------------------------------------
 * Cases.
 *----------------------------------------------------------------------*/
static refFloatType refTypeOf(ulyssesDataType_t type) {
  return type == ulyssesTypeFloat16 ? REF_FLOAT16 : type == ulyssesTypeBfloat16 ? REF_BFLOAT16 : REF_FLOAT32;
}

void caseInit(Case* c, int nTensors, const ulyssesLayout_t* layouts, const int64_t* lengths,
                     const int64_t* slots, int capacity) {
  memset(c, 0, sizeof *c);
  c->nTensors = nTensors;
  c->capacity = capacity;
  c->slotTotal = 0;
  for (int r = 0; r < gRanks; r++) {
    c->lengths[r] = lengths[r];
    c->slots[r] = slots[r];
    c->slotTotal += slots[r];
  }
  for (int t = 0; t < nTensors; t++) {
    c->layouts[t] = layouts[t];
    refShape* s = &c->shapes[t];
    s->nRanks = gRanks;
    s->lengths = c->lengths; /* follows c->lengths when a phase changes them */
    s->batch = layouts[t].batch;
    s->heads = layouts[t].heads;
    s->headDim = layouts[t].headDim;
    s->elementSize = layouts[t].elementSize;
    s->packed = layouts[t].packed;
    s->sbhd = layouts[t].order == ulyssesOrderSBHD;
    c->isGqa[t] = layouts[t].queryHeads > 0;
    c->gqa[t].kv = *s;
    c->gqa[t].queryHeads = layouts[t].queryHeads;
    c->gqa[t].type = refTypeOf(layouts[t].dataType);
  }
}

static size_t rowBytes(const ulyssesLayout_t* l, int64_t heads) {
  return (size_t)(l->packed * heads * l->headDim * l->elementSize);
}

Side inputSide(ulyssesOp_t op) { return op == ulyssesOpHeadToSeq ? SIDE_HEAD : SIDE_SEQ; }
Side outputSide(ulyssesOp_t op) {
  return op == ulyssesOpSeqToHead ? SIDE_HEAD : op == ulyssesOpHeadToSeq ? SIDE_SEQ : SIDE_GATHER;
}

sideRows caseMap(const Case* c, int t, Side side, int rank) {
  const ulyssesLayout_t* l = &c->layouts[t];
  const refShape* s = &c->shapes[t];
  sideRows m;
  m.batch = l->batch;
  m.sequenceFirst = l->order == ulyssesOrderSBHD;
  if (side == SIDE_SEQ) {
    m.rowBytes = rowBytes(l, l->heads);
    m.realRows = c->lengths[rank];
    m.slotRows = c->slots[rank];
  } else {
    int64_t heads = side == SIDE_GATHER ? l->heads
                    : c->isGqa[t]       ? refKvCount(&c->gqa[t], rank)
                                        : refHeadCount(s, rank);
    m.rowBytes = rowBytes(l, heads);
    m.realRows = refTotalLength(s);
    m.slotRows = c->slotTotal;
  }
  return m;
}

/* The bytes of tensor t's sendbuff or recvbuff for op, from
 * ulyssesGetBufferSizes, which must agree with the layout's own count
 * (B * slot rows of that side); a disagreement ends the rank, as the buffers
 * could not be built. */
size_t planBytes(ulyssesPlan_t plan, const Case* c, ulyssesOp_t op, int t, int isSend) {
  size_t sendBytes = 0, recvBytes = 0, alone = 0;
  ULY_CHECK(ulyssesGetBufferSizes(plan, op, t, &sendBytes, &recvBytes));
  /* Either pointer may be NULL. */
  if (isSend)
    ULY_CHECK(ulyssesGetBufferSizes(plan, op, t, &alone, NULL));
  else
    ULY_CHECK(ulyssesGetBufferSizes(plan, op, t, NULL, &alone));
  sideRows sendMap = caseMap(c, t, inputSide(op), gRank);
  sideRows recvMap = caseMap(c, t, outputSide(op), gRank);
  size_t got = isSend ? sendBytes : recvBytes;
  size_t want = sideRowsBufferBytes(isSend ? &sendMap : &recvMap);
  gChecks += 2;
  if (alone != got)
    reportFailure("ulyssesGetBufferSizes(op %d, tensor %d) gives %zu %s bytes with both pointers, "
                  "%zu with the other NULL", (int)op, t, got, isSend ? "send" : "recv", alone);
  if (sendBytes != sideRowsBufferBytes(&sendMap) || recvBytes != sideRowsBufferBytes(&recvMap)) {
    printf("rank %d: scenario %s: ulyssesGetBufferSizes(op %d, tensor %d) gives send %zu, recv "
           "%zu bytes; the layout needs send %zu, recv %zu\n",
           gRank, gScenario, (int)op, t, sendBytes, recvBytes, sideRowsBufferBytes(&sendMap),
           sideRowsBufferBytes(&recvMap));
    fflush(stdout);
    _exit(2);
  }
  return want;
}

const char* opName(ulyssesOp_t op) {
  switch (op) {
    case ulyssesOpSeqToHead: return "seq->head";
    case ulyssesOpHeadToSeq: return "head->seq";
    default: return "all-gather";
  }
}

void makeLengths(LengthPattern pattern, int64_t base, int64_t* lengths) {
  for (int r = 0; r < gRanks; r++) {
    switch (pattern) {
      case LENGTHS_EQUAL: lengths[r] = base; break;
      case LENGTHS_SKEWED: lengths[r] = (r + 1) * base; break;
      case LENGTHS_SOMEZERO: lengths[r] = r % 2 == 1 ? 0 : base + r; break;
      case LENGTHS_ONEZERO: lengths[r] = r == 0 ? 0 : base + r; break;
      default: lengths[r] = 0; break;
    }
  }
}

ulyssesPlan_t makePlan(const Case* c, const int64_t* deviceLength) {
  ulyssesPlan_t plan = NULL;
  if (c->capacity)
    ULY_CHECK(ulyssesPlanCreateCapacity(&plan, gRanks, gRank, c->slots, deviceLength, c->nTensors,
                                        c->layouts));
  else
    ULY_CHECK(ulyssesPlanCreateExact(&plan, gRanks, gRank, c->lengths, c->nTensors, c->layouts));
  return plan;
}

int64_t* deviceLengthCreate(int64_t value) {
  int64_t* deviceLength = NULL;
  CUDA_CHECK(cudaMalloc((void**)&deviceLength, sizeof(int64_t)));
  static int64_t hostValue;
  hostValue = value;
  CUDA_CHECK(cudaMemcpyAsync(deviceLength, &hostValue, sizeof hostValue, cudaMemcpyHostToDevice, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  return deviceLength;
}

void deviceLengthSet(int64_t* deviceLength, int64_t value) {
  static int64_t hostValue;
  CUDA_CHECK(cudaStreamSynchronize(gStream)); /* hostValue is free again */
  hostValue = value;
  CUDA_CHECK(cudaMemcpyAsync(deviceLength, &hostValue, sizeof hostValue, cudaMemcpyHostToDevice, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
}

static int64_t typeBytes(ulyssesDataType_t type) { return type == ulyssesTypeFloat32 ? 4 : 2; }

ulyssesLayout_t gqaLayout(int64_t batch, int64_t heads, int64_t headDim, ulyssesOrder_t order,
                          int64_t queryHeads, ulyssesDataType_t type) {
  ulyssesLayout_t l;
  memset(&l, 0, sizeof l);
  l.size = sizeof l;
  l.batch = batch;
  l.heads = heads;
  l.headDim = headDim;
  l.elementSize = typeBytes(type);
  l.packed = 1;
  l.order = order;
  l.queryHeads = queryHeads;
  l.dataType = type;
  return l;
}

/*------------------------------------------------------------------------
 * The reference.
 *----------------------------------------------------------------------*/
unsigned char** allocSide(const Case* c, int t, Side side) {
  unsigned char** buffers = xmalloc(sizeof(unsigned char*) * (size_t)gRanks);
  for (int r = 0; r < gRanks; r++) {
    sideRows m = caseMap(c, t, side, r);
    buffers[r] = xmalloc(sideRowsDenseBytes(&m));
  }
  return buffers;
}

void fillSide(const Case* c, int t, Side side, unsigned char** buffers, uint64_t seed) {
  const ulyssesLayout_t* l = &c->layouts[t];
  for (int r = 0; r < gRanks; r++) {
    sideRows m = caseMap(c, t, side, r);
    size_t bytes = sideRowsDenseBytes(&m);
    if (l->dataType == ulyssesTypeOpaque)
      refFillPattern(buffers[r], bytes, mixSeed(seed, (uint64_t)r));
    else
      refFillFloats(buffers[r], bytes / (size_t)l->elementSize, refTypeOf(l->dataType),
                    mixSeed(seed, (uint64_t)r));
  }
}

void refExchange(const Case* c, int t, ulyssesOp_t op, unsigned char* const* in,
                        unsigned char* const* out) {
  const void* const* inputs = (const void* const*)in;
  void* const* outputs = (void* const*)out;
  if (op == ulyssesOpAllGather) {
    refAllGather(&c->shapes[t], inputs, outputs);
  } else if (c->isGqa[t]) {
    if (op == ulyssesOpSeqToHead) refGqaSeqToHead(&c->gqa[t], inputs, outputs);
    else refGqaHeadToSeq(&c->gqa[t], inputs, outputs);
  } else {
    if (op == ulyssesOpSeqToHead) refSeqToHead(&c->shapes[t], inputs, outputs);
    else refHeadToSeq(&c->shapes[t], inputs, outputs);
  }
}

void freePerRank(unsigned char** buffers) {
  if (buffers == NULL) return;
  for (int r = 0; r < gRanks; r++) free(buffers[r]);
  free(buffers);
}

/*------------------------------------------------------------------------
 * Running and checking exchanges.
 *----------------------------------------------------------------------*/
void workspaceCreate(DevBuf* ws, ulyssesPlan_t plan, ulyssesOp_t op) {
  size_t bytes = 0;
  ULY_CHECK(ulyssesGetWorkspaceSize(plan, op, &bytes));
  bufCreate(ws, bytes, GUARD_BYTES, 1, WORKSPACE_FILL); /* 0 bytes: NULL */
}

ulyssesResult_t enqueueExchangeOn(const ExchangeCall* call, ulyssesComm_t comm,
                                  cudaStream_t stream) {
  const void* sends[MAX_TENSORS];
  void* recvs[MAX_TENSORS];
  for (int t = 0; t < call->nTensors; t++) {
    sends[t] = call->send[t].user;
    recvs[t] = call->recv[t].user;
  }
  ulyssesPlan_t plan = call->plan;
  const DevBuf* ws = call->ws;
  if (call->useMulti || call->nTensors > 1)
    return ulyssesExchangeMulti(plan, call->op, call->nTensors, sends, recvs, ws->user, ws->bytes,
                                comm, stream);
  switch (call->op) {
    case ulyssesOpSeqToHead:
      return ulyssesSeqToHead(plan, sends[0], recvs[0], ws->user, ws->bytes, comm, stream);
    case ulyssesOpHeadToSeq:
      return ulyssesHeadToSeq(plan, sends[0], recvs[0], ws->user, ws->bytes, comm, stream);
    default:
      return ulyssesAllGather(plan, sends[0], recvs[0], ws->user, ws->bytes, comm, stream);
  }
}

void compareCall(const char* label, int nTensors, const DevBuf* send, const DevBuf* recv,
                 const sideRows* outMaps, const DevBuf* ws) {
  char what[160];
  for (int t = 0; t < nTensors; t++) {
    snprintf(what, sizeof what, "%s: tensor %d: sendbuff (an input)", label, t);
    bufCompare(&send[t], what, CHECK_ALL);
    snprintf(what, sizeof what, "%s: tensor %d: recvbuff", label, t);
    bufCompareOutput(&recv[t], what, &outMaps[t]);
  }
  snprintf(what, sizeof what, "%s: workspace", label);
  bufCompare(ws, what, CHECK_GUARDS);
}

void checkCall(const char* label, int nTensors, DevBuf* send, DevBuf* recv, const sideRows* outMaps,
               DevBuf* ws) {
  for (int t = 0; t < nTensors; t++) {
    bufDownload(&send[t]);
    bufDownload(&recv[t]);
  }
  bufDownload(ws);
  compareCall(label, nTensors, send, recv, outMaps, ws);
}

void runAndCheck(ExchangeCall call, const char* label, unsigned char* const* expected,
                 const sideRows* outMaps, ulyssesComm_t comm) {
  DevBuf ws;
  workspaceCreate(&ws, call.plan, call.op);
  bufUpload(&ws);
  call.ws = &ws;
  for (int t = 0; t < call.nTensors; t++) {
    bufUpload(&call.send[t]);
    bufUpload(&call.recv[t]);
    bufScatterRows(&call.recv[t], &outMaps[t], expected[t]);
  }
  ULY_CHECK(enqueueExchangeOn(&call, comm, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  checkCall(label, call.nTensors, call.send, call.recv, outMaps, &ws);
  bufFree(&ws);
}

void checkNoAsyncError(ulyssesComm_t comm) {
  ulyssesResult_t asyncError = ulyssesSuccess;
  ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
  if (asyncError != ulyssesSuccess)
    reportFailure("ulyssesCommGetAsyncError reports %s (%s)", ulyssesGetErrorString(asyncError),
                  ulyssesGetLastError());
}

/*------------------------------------------------------------------------
 * One exchange of a case.
 *----------------------------------------------------------------------*/
void exchangePrepare(Exchange* x, const Case* c, ulyssesPlan_t plan, ulyssesOp_t op,
                     const BufferStyle* style, uint64_t seed) {
  memset(x, 0, sizeof *x);
  x->nTensors = c->nTensors;
  x->op = op;
  Side in = inputSide(op), out = outputSide(op);
  for (int t = 0; t < c->nTensors; t++) {
    x->inputs[t] = allocSide(c, t, in);
    fillSide(c, t, in, x->inputs[t], mixSeed(seed, (uint64_t)t));
    x->outputs[t] = allocSide(c, t, out);
    refExchange(c, t, op, x->inputs[t], x->outputs[t]);
    sideRows inMap = caseMap(c, t, in, gRank);
    x->outMaps[t] = caseMap(c, t, out, gRank);
    bufCreate(&x->send[t], planBytes(plan, c, op, t, 1), style->before, style->nullWhenEmpty, 0);
    bufSetInput(&x->send[t], &inMap, x->inputs[t][gRank], mixSeed(seed, 100 + (uint64_t)t));
    bufCreate(&x->recv[t], planBytes(plan, c, op, t, 0), style->before, style->nullWhenEmpty,
              OUTPUT_FILL);
  }
}

static void resetOutputs(Exchange* x) {
  for (int t = 0; t < x->nTensors; t++)
    memset(x->recv[t].image + x->recv[t].before, OUTPUT_FILL, x->recv[t].bytes);
}

void exchangeRun(Exchange* x, ulyssesPlan_t plan, const char* label, int useMulti,
                 ulyssesComm_t comm) {
  unsigned char* expected[MAX_TENSORS];
  for (int t = 0; t < x->nTensors; t++) expected[t] = x->outputs[t][gRank];
  resetOutputs(x);
  const ExchangeCall call = {plan, x->op, x->nTensors, useMulti, x->send, x->recv, NULL};
  runAndCheck(call, label, expected, x->outMaps, comm);
}

ulyssesResult_t exchangeRefused(Exchange* x, ulyssesPlan_t plan, const char* label,
                                ulyssesComm_t comm, char* message, size_t messageSize) {
  DevBuf ws;
  workspaceCreate(&ws, plan, x->op);
  bufUpload(&ws);
  resetOutputs(x);
  for (int t = 0; t < x->nTensors; t++) {
    bufUpload(&x->send[t]);
    bufUpload(&x->recv[t]);
  }
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  const ExchangeCall call = {plan, x->op, x->nTensors, 0, x->send, x->recv, &ws};
  ulyssesResult_t got = enqueueExchangeOn(&call, comm, gStream);
  snprintf(message, messageSize, "%s", ulyssesGetLastError());
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  gChecks++;
  if (got != ulyssesSuccess && message[0] == '\0')
    reportFailure("ulyssesGetLastError is empty after %s", ulyssesGetErrorString(got));
  /* Nothing enqueued, nothing written: every byte as uploaded. */
  char what[160];
  for (int t = 0; t < x->nTensors; t++) {
    snprintf(what, sizeof what, "%s: tensor %d: sendbuff (an input)", label, t);
    bufCheck(&x->send[t], what, CHECK_ALL);
    snprintf(what, sizeof what, "%s: tensor %d: recvbuff (must be untouched)", label, t);
    bufCheck(&x->recv[t], what, CHECK_ALL);
  }
  snprintf(what, sizeof what, "%s: workspace (must be untouched)", label);
  bufCheck(&ws, what, CHECK_ALL);
  bufFree(&ws);
  return got;
}

void exchangeFree(Exchange* x) {
  for (int t = 0; t < x->nTensors; t++) {
    bufFree(&x->send[t]);
    bufFree(&x->recv[t]);
    freePerRank(x->inputs[t]);
    freePerRank(x->outputs[t]);
  }
  memset(x, 0, sizeof *x);
}

void exchangeChecked(const Case* c, ulyssesPlan_t plan, ulyssesOp_t op, const char* label,
                     const BufferStyle* style, uint64_t seed, ulyssesComm_t comm) {
  Exchange x;
  exchangePrepare(&x, c, plan, op, style, seed);
  exchangeRun(&x, plan, label, 0, comm);
  exchangeFree(&x);
}

/* The round trip: the device's seq->head output (padding and all) back
 * through head->seq. That of a plain tensor gives its input back; that of a
 * kv tensor whose kv heads are shared gives each replica's sum (the
 * reference's head->seq of the seq->head output). */
static void runRoundTrip(const Case* c, ulyssesPlan_t plan, Exchange* toHead,
                         const BufferStyle* style, int useMulti, ulyssesComm_t comm) {
  DevBuf seqBack[MAX_TENSORS];
  unsigned char** roundTrip[MAX_TENSORS] = {0};
  unsigned char* expected[MAX_TENSORS];
  sideRows seqMaps[MAX_TENSORS];
  for (int t = 0; t < c->nTensors; t++) {
    bufAdopt(&toHead->recv[t]);
    planBytes(plan, c, ulyssesOpHeadToSeq, t, 1); /* checked: the size that buffer has */
    bufCreate(&seqBack[t], planBytes(plan, c, ulyssesOpHeadToSeq, t, 0), style->before,
              style->nullWhenEmpty, OUTPUT_FILL);
    seqMaps[t] = caseMap(c, t, SIDE_SEQ, gRank);
    if (c->isGqa[t]) {
      roundTrip[t] = allocSide(c, t, SIDE_SEQ);
      refExchange(c, t, ulyssesOpHeadToSeq, toHead->outputs[t], roundTrip[t]);
    }
    expected[t] = c->isGqa[t] ? roundTrip[t][gRank] : toHead->inputs[t][gRank];
  }
  const ExchangeCall call = {plan, ulyssesOpHeadToSeq, c->nTensors, useMulti, toHead->recv,
                            seqBack, NULL};
  runAndCheck(call, "round trip (head->seq of the seq->head output)", expected, seqMaps, comm);
  for (int t = 0; t < c->nTensors; t++) {
    bufFree(&seqBack[t]);
    freePerRank(roundTrip[t]);
  }
}

/* Each checked against the reference in the outputs' real rows, with
 * guards, and the inputs unchanged. */
void runCase(const Case* c, ulyssesPlan_t plan, uint64_t seed, const BufferStyle* style,
             int useMulti, int doGather, ulyssesComm_t comm) {
  Exchange toHead;
  exchangePrepare(&toHead, c, plan, ulyssesOpSeqToHead, style, mixSeed(seed, 100));
  exchangeRun(&toHead, plan, "seq->head", useMulti, comm);
  runRoundTrip(c, plan, &toHead, style, useMulti, comm);
  exchangeFree(&toHead);
  /* head->seq from independent data, then (doGather) the all-gather. */
  const ulyssesOp_t others[2] = {ulyssesOpHeadToSeq, ulyssesOpAllGather};
  for (int i = 0; i < (doGather ? 2 : 1); i++) {
    Exchange x;
    exchangePrepare(&x, c, plan, others[i], style, mixSeed(seed, 200 + 100 * (uint64_t)i));
    exchangeRun(&x, plan, opName(others[i]), useMulti, comm);
    exchangeFree(&x);
  }
  checkNoAsyncError(comm);
}
