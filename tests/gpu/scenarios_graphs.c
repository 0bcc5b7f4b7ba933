/* The GPU suite's graphs group: a CUDA graph of one seq->head call replayed
 * with new data (and new lengths in capacity mode), the no-hidden-sync check
 * (the call returns while a spin kernel holds the stream), and what a capture
 * refuses and allows. */
#include "suite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* spin_kernel.cu */
cudaError_t ulyssesTestLaunchSpin(const volatile unsigned int* flag, volatile unsigned int* result,
                                  unsigned long long timeoutNs, cudaStream_t stream);

#define SPIN_TIMEOUT_NS 10000000000ull

/* Replays: both run phases of one plan and one set of buffers: phase 0
 * eager, later phases with new data in the same input buffer (capacity mode:
 * new lengths in the same device int64 too). */
enum { REPLAY_GRAPH = 0, REPLAY_NO_HIDDEN_SYNC = 1 };
enum { REPLAY_PHASES = 3 };

static void replayLengths(int capacity, int phase, int64_t* lengths, int64_t* capacities) {
  for (int r = 0; r < gRanks; r++) {
    capacities[r] = 2 * r + 3;
    if (!capacity || phase == 0) lengths[r] = r + 1;
    else if (phase == 1) lengths[r] = capacities[r] - r % 2; /* at or just below capacity */
    else lengths[r] = r % 2; /* zeros and ones */
  }
}

typedef struct {
  Case c;
  int64_t* deviceLength;
  ulyssesPlan_t plan;
  DevBuf send, recv, ws;
  unsigned char** seqIn;
  unsigned char** toHead;
} Replay;

/* Phase `phase`: new lengths and data; uploads them and sets the expectation. */
static void replayPrepare(Replay* x, int capacity, int phase, uint64_t seed) {
  int64_t lengths[MAX_RANKS], capacities[MAX_RANKS];
  replayLengths(capacity, phase, lengths, capacities);
  memcpy(x->c.lengths, lengths, sizeof(int64_t) * (size_t)gRanks);
  freePerRank(x->seqIn);
  freePerRank(x->toHead);
  x->seqIn = allocSide(&x->c, 0, SIDE_SEQ);
  fillSide(&x->c, 0, SIDE_SEQ, x->seqIn, mixSeed(seed, 10 + (uint64_t)phase));
  x->toHead = allocSide(&x->c, 0, SIDE_HEAD);
  refExchange(&x->c, 0, ulyssesOpSeqToHead, x->seqIn, x->toHead);
  /* The input's image: this phase's rows in their places (they move with the
   * lengths in capacity mode), junk in the padding. */
  sideRows in = caseMap(&x->c, 0, SIDE_SEQ, gRank), out = caseMap(&x->c, 0, SIDE_HEAD, gRank);
  bufSetInput(&x->send, &in, x->seqIn[gRank], mixSeed(seed, 20 + (uint64_t)phase));
  /* The output's image: the fill, then this phase's expectation. */
  memset(x->recv.image + x->recv.before, OUTPUT_FILL, x->recv.bytes);
  bufUpload(&x->send);
  bufUpload(&x->recv);
  bufUpload(&x->ws);
  if (capacity) deviceLengthSet(x->deviceLength, lengths[gRank]);
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  bufScatterRows(&x->recv, &out, x->toHead[gRank]);
}

static void replayCheck(Replay* x, const char* label) {
  sideRows out = caseMap(&x->c, 0, SIDE_HEAD, gRank);
  checkCall(label, 1, &x->send, &x->recv, &out, &x->ws);
}

/* argument: kind * 2 + capacity */
static void runReplayScenario(const Suite* suite, int argument) {
  int kind = argument / 2, capacity = argument % 2;
  ulyssesComm_t comm = suite->comm;
  setScenario("%s (%s)", kind == REPLAY_GRAPH ? "CUDA graph" : "no hidden sync",
              capacity ? "capacity" : "exact");
  double started = nowMs();
  const ulyssesLayout_t layout = kind == REPLAY_GRAPH ? (ulyssesLayout_t)LAYOUT(2, 8, 64, 2, 1, BSHD)
                                                      : (ulyssesLayout_t)LAYOUT(1, 4, 64, 4, 1, BSHD);
  int64_t lengths[MAX_RANKS], capacities[MAX_RANKS];
  replayLengths(capacity, 0, lengths, capacities);
  Replay x;
  memset(&x, 0, sizeof x);
  caseInit(&x.c, 1, &layout, lengths, capacity ? capacities : lengths, capacity);
  x.deviceLength = capacity ? deviceLengthCreate(lengths[gRank]) : NULL;
  x.plan = makePlan(&x.c, x.deviceLength);
  bufCreate(&x.send, planBytes(x.plan, &x.c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
  bufCreate(&x.recv, planBytes(x.plan, &x.c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0,
            OUTPUT_FILL);
  workspaceCreate(&x.ws, x.plan, ulyssesOpSeqToHead);
  uint64_t seed = mixSeed(1000 + (uint64_t)kind, (uint64_t)capacity);

  /* Phase 0, eager: also lets NCCL connect its peers before a capture. */
  replayPrepare(&x, capacity, 0, seed);
  ULY_CHECK(ulyssesSeqToHead(x.plan, x.send.user, x.recv.user, x.ws.user, x.ws.bytes, comm, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  replayCheck(&x, "eager seq->head");

  if (kind == REPLAY_GRAPH) {
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    CUDA_CHECK(cudaStreamBeginCapture(gStream, cudaStreamCaptureModeThreadLocal));
    ulyssesResult_t captured =
        ulyssesSeqToHead(x.plan, x.send.user, x.recv.user, x.ws.user, x.ws.bytes, comm, gStream);
    cudaError_t ended = cudaStreamEndCapture(gStream, &graph); /* always leave capture mode */
    ULY_CHECK(captured);
    CUDA_CHECK(ended);
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int phase = 1; phase < REPLAY_PHASES; phase++) {
      replayPrepare(&x, capacity, phase, seed);
      CUDA_CHECK(cudaGraphLaunch(exec, gStream));
      CUDA_CHECK(cudaStreamSynchronize(gStream));
      char label[64];
      snprintf(label, sizeof label, "graph replay %d (new data%s)", phase,
               capacity ? ", new lengths" : "");
      replayCheck(&x, label);
    }
    /* Before the communicators go: ncclCommDestroy was seen to hang after a
     * capture whose graph was never destroyed. */
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
  } else {
    unsigned int *hostFlag = NULL, *hostResult = NULL, *deviceFlag = NULL, *deviceResult = NULL;
    CUDA_CHECK(cudaHostAlloc((void**)&hostFlag, sizeof(unsigned int), cudaHostAllocMapped));
    CUDA_CHECK(cudaHostAlloc((void**)&hostResult, sizeof(unsigned int), cudaHostAllocMapped));
    CUDA_CHECK(cudaHostGetDevicePointer((void**)&deviceFlag, hostFlag, 0));
    CUDA_CHECK(cudaHostGetDevicePointer((void**)&deviceResult, hostResult, 0));
    replayPrepare(&x, capacity, 1, seed);
    __atomic_store_n(hostFlag, 0u, __ATOMIC_SEQ_CST);
    __atomic_store_n(hostResult, 0u, __ATOMIC_SEQ_CST);
    CUDA_CHECK(ulyssesTestLaunchSpin(deviceFlag, deviceResult, SPIN_TIMEOUT_NS, gStream));
    double callStart = nowMs();
    ulyssesResult_t called =
        ulyssesSeqToHead(x.plan, x.send.user, x.recv.user, x.ws.user, x.ws.bytes, comm, gStream);
    double callMs = nowMs() - callStart;
    cudaError_t query = cudaStreamQuery(gStream);
    __atomic_store_n(hostFlag, 1u, __ATOMIC_SEQ_CST); /* release the stream in every case */
    ULY_CHECK(called);
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    unsigned int spin = __atomic_load_n(hostResult, __ATOMIC_SEQ_CST);
    gChecks += 2;
    if (query != cudaErrorNotReady)
      reportFailure("cudaStreamQuery right after ulyssesSeqToHead returned %s, not "
                    "cudaErrorNotReady: the call waited for the stream (it took %.0f ms)",
                    cudaGetErrorName(query), callMs);
    if (spin != 1u)
      reportFailure("the spin kernel %s: the call waited for the stream (it took %.0f ms)",
                    spin == 2u ? "timed out before the host set its flag" : "never finished",
                    callMs);
    replayCheck(&x, "seq->head behind the spin kernel");
    CUDA_CHECK(cudaFreeHost(hostFlag));
    CUDA_CHECK(cudaFreeHost(hostResult));
  }
  checkNoAsyncError(comm);
  bufFree(&x.send);
  bufFree(&x.recv);
  bufFree(&x.ws);
  freePerRank(x.seqIn);
  freePerRank(x.toHead);
  ULY_CHECK(ulyssesPlanDestroy(x.plan));
  if (x.deviceLength != NULL) CUDA_CHECK(cudaFree(x.deviceLength));
  if (gRank == 0) printf("rank 0: scenario %s: done in %.0f ms\n", gScenario, nowMs() - started);
}

/*------------------------------------------------------------------------
 * Under capture, what would wait for the stream is refused before it
 * enqueues anything, and the capture survives: ulyssesGatherLengthsHost, and
 * the plan check of a plan that never passed it eagerly. After an eager,
 * checked run, the same plan is captured without the check and its replay
 * writes what the eager run wrote.
 *----------------------------------------------------------------------*/
static void runCaptureScenario(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  setScenario("capture: refusals");
  double started = nowMs();
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.checkPlans = 1;
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, &config));
  const ulyssesLayout_t layout = LAYOUT(2, 4, 8, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = r % 3 + 1;
  Case c;
  caseInit(&c, 1, &layout, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  DevBuf send, recv, ws;
  bufCreate(&send, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
  refFillPattern(send.image + send.before, send.bytes, mixSeed(4000, (uint64_t)gRank));
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
  workspaceCreate(&ws, plan, ulyssesOpSeqToHead);
  bufUpload(&send);
  bufUpload(&recv);
  CUDA_CHECK(cudaStreamSynchronize(gStream));

  int64_t hostLengths[MAX_RANKS];
  cudaGraph_t graph = NULL;
  CUDA_CHECK(cudaStreamBeginCapture(gStream, cudaStreamCaptureModeThreadLocal));
  ulyssesResult_t gathered = ulyssesGatherLengthsHost(1, hostLengths, comm, gStream);
  ulyssesResult_t unchecked =
      ulyssesSeqToHead(plan, send.user, recv.user, ws.user, ws.bytes, comm, gStream);
  cudaError_t ended = cudaStreamEndCapture(gStream, &graph); /* always leave capture mode */
  gChecks += 3;
  if (gathered != ulyssesErrorInvalidUsage)
    reportFailure(
        "ulyssesGatherLengthsHost under capture returned %s, not ulyssesErrorInvalidUsage",
        ulyssesGetErrorString(gathered));
  if (unchecked != ulyssesErrorInvalidUsage)
    reportFailure(
        "an exchange whose plan was never checked returned %s under capture, not "
        "ulyssesErrorInvalidUsage",
        ulyssesGetErrorString(unchecked));
  if (ended != cudaSuccess)
    reportFailure("the refusals broke the capture: cudaStreamEndCapture returned %s",
                  cudaGetErrorName(ended));
  if (graph != NULL) {
    size_t nodes = 0;
    CUDA_CHECK(cudaGraphGetNodes(graph, NULL, &nodes));
    gChecks++;
    if (nodes != 0) reportFailure("the refused calls enqueued %zu graph node(s)", nodes);
    CUDA_CHECK(cudaGraphDestroy(graph));
  }

  setScenario("capture: a plan checked eagerly first");
  ULY_CHECK(ulyssesSeqToHead(plan, send.user, recv.user, ws.user, ws.bytes, comm, gStream));
  bufDownload(&recv);
  unsigned char* eager = xmalloc(bufTotal(&recv));
  memcpy(eager, recv.actual, bufTotal(&recv));
  bufUpload(&recv); /* back to the fill */
  graph = NULL;
  cudaGraphExec_t exec = NULL;
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  CUDA_CHECK(cudaStreamBeginCapture(gStream, cudaStreamCaptureModeThreadLocal));
  ulyssesResult_t captured =
      ulyssesSeqToHead(plan, send.user, recv.user, ws.user, ws.bytes, comm, gStream);
  ended = cudaStreamEndCapture(gStream, &graph);
  ULY_CHECK(captured);
  CUDA_CHECK(ended);
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, gStream));
  bufDownload(&recv);
  gChecks++;
  if (memcmp(recv.actual, eager, bufTotal(&recv)) != 0)
    reportFailure("the replay of the captured exchange differs from the eager run");
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  checkNoAsyncError(comm);
  free(eager);
  bufFree(&send);
  bufFree(&recv);
  bufFree(&ws);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  ULY_CHECK(ulyssesCommDestroy(comm));
  if (gRank == 0) printf("rank 0: scenario capture: done in %.0f ms\n", nowMs() - started);
}


void addGraphScenarios(ScenarioList* list) {
  for (int capacity = 0; capacity <= 1; capacity++) {
    const char* mode = capacity ? "capacity" : "exact";
    scenarioAdd(list, "graphs", runReplayScenario, 2 * REPLAY_GRAPH + capacity, 0, "graph-%s",
                mode);
    scenarioAdd(list, "graphs", runReplayScenario, 2 * REPLAY_NO_HIDDEN_SYNC + capacity, 0,
                "no-hidden-sync-%s", mode);
  }
  scenarioAdd(list, "graphs", runCaptureScenario, 0, 0, "capture");
}
