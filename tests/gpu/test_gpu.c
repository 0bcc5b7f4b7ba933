/*
 * The GPU test suite: every exchange of the library, run by P real rank
 * processes over NCCL, checked byte for byte against the CPU reference.
 *
 * One binary, two modes:
 *  - parent (no --rank): skips with exit code 77 when there is no CUDA device;
 *    otherwise one cmocka test per P in {1, 2, 3, 4, 8}, each starting P rank
 *    processes of this same binary through the launcher.
 *  - rank (--rank R --nranks P --id-file F): joins the NCCL communicator and
 *    runs every scenario. Every rank generates every rank's inputs from a seed,
 *    runs the reference for all ranks and compares its own outputs. A wrong
 *    byte prints one line and the rank goes on (so the peers are not left
 *    waiting in NCCL); a failed API call prints one line and ends the rank at
 *    once (the launcher then ends the others).
 *
 * The reference works on dense tensors (the real rows only). In capacity mode
 * every buffer has capacity rows: a rank's input is the dense reference input
 * scattered into that layout (junk in the padding rows), and only an output's
 * real rows are compared with the dense reference output; its padding rows are
 * scratch that the library may overwrite. Inputs must come back unchanged,
 * padding included, and the guard bytes around every buffer intact.
 *
 * Grouped-query attention (kv tensors: layout.queryHeads > 0) is checked
 * against reference_gqa.h: seq->head replicates kv heads to every rank whose
 * query heads read them, head->seq sums the replicas in fp32 in rank order,
 * so those inputs are finite floats of the layout's dataType.
 *
 * After the table: the plan check (ranks whose plans disagree all get
 * ulyssesErrorPlanMismatch), what a capture refuses (a call that would wait
 * for the stream) and allows (a plan checked eagerly), a non-blocking NCCL
 * communicator, a stress run of random exchanges on three streams, the
 * capacity-length errors (each cleared once seen) and, last of all,
 * ulyssesCommAbort on a communicator of its own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "launcher.h"
#include "reference.h"
#include "reference_gqa.h"
#include "ulysses.h"

/* spin_kernel.cu */
cudaError_t ulyssesTestLaunchSpin(const volatile unsigned int* flag, volatile unsigned int* result,
                                  unsigned long long timeoutNs, cudaStream_t stream);

enum {
  MAX_RANKS = 64,
  MAX_TENSORS = 3,
  RUN_TIMEOUT_SECONDS = 300, /* per P, parent side */
  RANK_ALARM_SECONDS = 280,  /* a rank's own last resort, below the launcher's limit */
  SOAK_MAX_SECONDS = 240,    /* a soak per rank count, inside the alarm with set-up */
  FAILURE_NOTICE_SECONDS = 60, /* the rank-failure test: how long the survivors may take */
  ID_FILE_TIMEOUT_SECONDS = 120,
  GUARD_BYTES = 256, /* before and after every buffer: keeps the user pointer 256-aligned */
};

#define GUARD_BYTE 0xC3u     /* around every buffer */
#define OUTPUT_FILL 0x5Eu    /* an output before the call */
#define WORKSPACE_FILL 0x77u /* the workspace before the call */
#define SPIN_TIMEOUT_NS 10000000000ull

/*------------------------------------------------------------------------
 * Rank state, failure reporting and the checking macros.
 *----------------------------------------------------------------------*/
static int gRank = -1;
static int gRanks = 0;
static long gChecks = 0;
static long gFailures = 0;
static char gScenario[256] = "start-up";
static cudaStream_t gStream = NULL;

static void setScenario(const char* format, ...) __attribute__((format(printf, 1, 2)));
static void setScenario(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(gScenario, sizeof gScenario, format, args);
  va_end(args);
}

/* One failed check: one line, and the rank goes on. */
static void reportFailure(const char* format, ...) __attribute__((format(printf, 1, 2)));
static void reportFailure(const char* format, ...) {
  char text[512];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof text, format, args);
  va_end(args);
  printf("rank %d: scenario %s: %s\n", gRank, gScenario, text);
  gFailures++;
}

/* A failed call: the rank cannot go on. No clean-up (it could hang in NCCL). */
static void fatal(const char* file, int line, const char* call, const char* error,
                  const char* detail) {
  printf("rank %d: scenario %s: %s:%d: %s failed: %s (%s); ulyssesGetLastError: \"%s\"\n", gRank,
         gScenario, file, line, call, error, detail, ulyssesGetLastError());
  fflush(stdout);
  fflush(stderr);
  _exit(2);
}

#define CUDA_CHECK(call)                                                                  \
  do {                                                                                    \
    cudaError_t cudaCheck_ = (call);                                                      \
    if (cudaCheck_ != cudaSuccess)                                                        \
      fatal(__FILE__, __LINE__, #call, cudaGetErrorName(cudaCheck_),                     \
            cudaGetErrorString(cudaCheck_));                                              \
  } while (0)

#define NCCL_CHECK(call)                                                                  \
  do {                                                                                    \
    ncclResult_t ncclCheck_ = (call);                                                     \
    if (ncclCheck_ != ncclSuccess)                                                        \
      fatal(__FILE__, __LINE__, #call, ncclGetErrorString(ncclCheck_), "NCCL");          \
  } while (0)

#define ULY_CHECK(call)                                                                   \
  do {                                                                                    \
    ulyssesResult_t ulyCheck_ = (call);                                                   \
    if (ulyCheck_ != ulyssesSuccess)                                                      \
      fatal(__FILE__, __LINE__, #call, ulyssesGetErrorString(ulyCheck_), "ulysses");     \
  } while (0)

static void* xmalloc(size_t bytes) {
  void* p = malloc(bytes > 0 ? bytes : 1);
  if (p == NULL) {
    printf("rank %d: out of host memory (%zu bytes)\n", gRank, bytes);
    fflush(stdout);
    _exit(2);
  }
  return p;
}

/* Last resort against a hang: name the scenario and die. Only
 * async-signal-safe calls; one write() so that the ranks' lines do not mix. */
static size_t appendText(char* line, size_t used, size_t size, const char* text) {
  while (*text != '\0' && used + 1 < size) line[used++] = *text++;
  line[used] = '\0';
  return used;
}

static void onAlarm(int signalNumber) {
  (void)signalNumber;
  char digits[16], reversed[16];
  int n = 0, r = gRank < 0 ? 0 : gRank;
  do {
    reversed[n++] = (char)('0' + r % 10);
    r /= 10;
  } while (r > 0 && n < 15);
  for (int i = 0; i < n; i++) digits[i] = reversed[n - 1 - i];
  digits[n] = '\0';
  char line[512];
  size_t used = 0;
  used = appendText(line, used, sizeof line, "rank ");
  used = appendText(line, used, sizeof line, digits);
  used = appendText(line, used, sizeof line,
                    ": alarm: still running after the rank's time limit (a hang?), in scenario ");
  used = appendText(line, used, sizeof line, gScenario);
  used = appendText(line, used, sizeof line, "\n");
  ssize_t ignored = write(STDOUT_FILENO, line, used);
  (void)ignored;
  _exit(3);
}

static double nowMs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static uint64_t mixSeed(uint64_t a, uint64_t b) {
  uint64_t state = a * UINT64_C(0x9E3779B97F4A7C15) ^ (b + UINT64_C(0x632BE59BD9B4E019));
  return refRandom(&state);
}

/*------------------------------------------------------------------------
 * Device buffers with guard bytes. `image` is what the whole allocation
 * (guard, user bytes, guard) must hold: uploaded before a call, compared
 * after it.
 *----------------------------------------------------------------------*/
typedef struct {
  unsigned char* device; /* the allocation */
  unsigned char* image;  /* host: the expected contents of the whole allocation */
  unsigned char* actual; /* host: the contents last downloaded */
  size_t before, bytes, after;
  void* user; /* what the library gets: device + before, or NULL for 0 bytes */
} DevBuf;

static size_t bufTotal(const DevBuf* b) { return b->before + b->bytes + b->after; }

static void bufCreate(DevBuf* b, size_t bytes, size_t before, int nullWhenEmpty, unsigned fill) {
  b->before = before;
  b->bytes = bytes;
  b->after = GUARD_BYTES;
  size_t total = bufTotal(b);
  CUDA_CHECK(cudaMalloc((void**)&b->device, total));
  b->image = xmalloc(total);
  b->actual = xmalloc(total);
  memset(b->image, GUARD_BYTE, before);
  memset(b->image + before, (int)fill, bytes);
  memset(b->image + before + bytes, GUARD_BYTE, b->after);
  b->user = bytes == 0 && nullWhenEmpty ? NULL : b->device + before;
}

static void bufFree(DevBuf* b) {
  if (b->device != NULL) CUDA_CHECK(cudaFree(b->device));
  free(b->image);
  free(b->actual);
  memset(b, 0, sizeof *b);
}

static void bufUpload(const DevBuf* b) {
  CUDA_CHECK(cudaMemcpyAsync(b->device, b->image, bufTotal(b), cudaMemcpyHostToDevice, gStream));
}

static void bufDownload(DevBuf* b) {
  CUDA_CHECK(cudaMemcpyAsync(b->actual, b->device, bufTotal(b), cudaMemcpyDeviceToHost, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
}

/* Takes what the device holds as the expectation (an output used as the
 * next call's input). */
static void bufAdopt(DevBuf* b) {
  bufDownload(b);
  memcpy(b->image, b->actual, bufTotal(b));
}

/* Compares bytes [lo, hi) of the allocation; one line for the first
 * difference. Returns 1 when they agree. */
static int compareRegion(const DevBuf* b, const char* what, const char* region, size_t lo,
                         size_t hi) {
  gChecks++;
  size_t differing = 0, first = 0;
  for (size_t i = lo; i < hi; i++)
    if (b->actual[i] != b->image[i]) {
      if (differing == 0) first = i;
      differing++;
    }
  if (differing == 0) return 1;
  reportFailure("%s: byte %lld differs (got 0x%02x, want 0x%02x); %zu of %zu bytes differ in the %s",
                what, (long long)first - (long long)b->before, b->actual[first], b->image[first],
                differing, hi - lo, region);
  return 0;
}

enum { CHECK_GUARDS = 0, CHECK_ALL = 1 };

/* An input (CHECK_ALL: every byte, padding and guards, as uploaded) or the
 * workspace (CHECK_GUARDS: its contents are the library's), as last
 * downloaded. */
static int bufCompare(const DevBuf* b, const char* what, int mode) {
  int ok = 1;
  size_t userEnd = b->before + b->bytes;
  ok &= compareRegion(b, what, "guard before the buffer", 0, b->before);
  if (mode == CHECK_ALL) ok &= compareRegion(b, what, "buffer", b->before, userEnd);
  ok &= compareRegion(b, what, "guard after the buffer", userEnd, bufTotal(b));
  return ok;
}

static int bufCheck(DevBuf* b, const char* what, int mode) {
  bufDownload(b);
  return bufCompare(b, what, mode);
}

/*------------------------------------------------------------------------
 * Row maps: where the rows of a dense reference tensor ([B, real, ...] or
 * [real, B, ...]) live in a buffer of the plan's layout ([B, slot, ...] or
 * [slot, B, ...]). Batch first: entry b's real rows are buffer rows
 * b * slot + s (s < real), the rest of the entry padding. Sequence first: the
 * real rows are the buffer's prefix. In exact mode slot == real and the map
 * is the identity.
 *----------------------------------------------------------------------*/
typedef struct {
  size_t rowBytes; /* T * heads * D * E of that side */
  int64_t batch;
  int64_t real; /* real rows per batch entry: L_r, or Ltot on the head side */
  int64_t slot; /* rows per batch entry in the buffer: C_r or Ctot (exact: real) */
  int sbhd;
} RowMap;

static size_t mapDenseBytes(const RowMap* m) { return (size_t)(m->batch * m->real) * m->rowBytes; }
static size_t mapBufferBytes(const RowMap* m) { return (size_t)(m->batch * m->slot) * m->rowBytes; }

/* The real rows as contiguous runs: one per batch entry (batch first) or one
 * in all (sequence first). */
static int64_t mapRunCount(const RowMap* m) { return m->sbhd ? 1 : m->batch; }

static void mapRun(const RowMap* m, int64_t run, size_t* bufferOffset, size_t* denseOffset,
                   size_t* bytes) {
  if (m->sbhd) {
    *bufferOffset = 0;
    *denseOffset = 0;
    *bytes = mapDenseBytes(m);
  } else {
    *bufferOffset = (size_t)(run * m->slot) * m->rowBytes;
    *denseOffset = (size_t)(run * m->real) * m->rowBytes;
    *bytes = (size_t)m->real * m->rowBytes;
  }
}

/* Writes the dense rows into their places in the image's user bytes. */
static void bufScatterRows(DevBuf* b, const RowMap* m, const unsigned char* dense) {
  for (int64_t run = 0; run < mapRunCount(m); run++) {
    size_t bufferOffset, denseOffset, bytes;
    mapRun(m, run, &bufferOffset, &denseOffset, &bytes);
    if (bytes > 0) memcpy(b->image + b->before + bufferOffset, dense + denseOffset, bytes);
  }
}

/* An input's image: junk everywhere (a kernel reading padding as data shows
 * in its output), then the dense rows in their places. */
static void bufSetInput(DevBuf* b, const RowMap* m, const unsigned char* dense, uint64_t junkSeed) {
  if (b->bytes > 0) refFillPattern(b->image + b->before, b->bytes, junkSeed);
  bufScatterRows(b, m, dense);
}

/* An output after the call, as last downloaded: its guards intact and its
 * real rows equal to the image's (set with bufScatterRows); its padding rows
 * are scratch. */
static int bufCompareOutput(const DevBuf* b, const char* what, const RowMap* m) {
  int ok = 1;
  size_t userEnd = b->before + b->bytes;
  ok &= compareRegion(b, what, "guard before the buffer", 0, b->before);
  gChecks++;
  size_t differing = 0, realBytes = 0, first = 0;
  for (int64_t run = 0; run < mapRunCount(m); run++) {
    size_t bufferOffset, denseOffset, bytes;
    mapRun(m, run, &bufferOffset, &denseOffset, &bytes);
    realBytes += bytes;
    for (size_t i = b->before + bufferOffset; i < b->before + bufferOffset + bytes; i++)
      if (b->actual[i] != b->image[i]) {
        if (differing == 0) first = i;
        differing++;
      }
  }
  if (differing > 0) {
    size_t offset = first - b->before, row = offset / m->rowBytes;
    reportFailure("%s: byte %zu (row %zu of the buffer: batch entry %lld, row %lld) differs (got "
                  "0x%02x, want 0x%02x); %zu of the %zu bytes of the real rows differ",
                  what, offset, row,
                  (long long)(m->sbhd ? (int64_t)row % m->batch : (int64_t)row / m->slot),
                  (long long)(m->sbhd ? (int64_t)row / m->batch : (int64_t)row % m->slot),
                  b->actual[first], b->image[first], differing, realBytes);
    ok = 0;
  }
  ok &= compareRegion(b, what, "guard after the buffer", userEnd, bufTotal(b));
  return ok;
}

static void workspaceCreate(DevBuf* ws, ulyssesPlan_t plan, ulyssesOp_t op) {
  size_t bytes = 0;
  ULY_CHECK(ulyssesGetWorkspaceSize(plan, op, &bytes));
  bufCreate(ws, bytes, GUARD_BYTES, 1, WORKSPACE_FILL); /* 0 bytes: NULL */
}

/*------------------------------------------------------------------------
 * Cases: the lengths, the slots the plan knows (the lengths in exact mode,
 * the capacities in capacity mode) and each tensor's reference shape.
 *----------------------------------------------------------------------*/
typedef struct {
  int nTensors;
  int capacity;
  ulyssesLayout_t layouts[MAX_TENSORS];
  int64_t lengths[MAX_RANKS]; /* the real lengths */
  int64_t slots[MAX_RANKS];   /* lengths (exact) or capacities (capacity) */
  int64_t slotTotal;
  refShape shapes[MAX_TENSORS];
  int isGqa[MAX_TENSORS];           /* layouts[t].queryHeads > 0: a kv tensor */
  refGqaShape gqa[MAX_TENSORS];     /* its reference shape (kv = shapes[t]) */
} Case;

static refFloatType refTypeOf(ulyssesDataType_t type) {
  return type == ulyssesTypeFloat16 ? REF_FLOAT16 : type == ulyssesTypeBfloat16 ? REF_BFLOAT16 : REF_FLOAT32;
}

static void caseInit(Case* c, int nTensors, const ulyssesLayout_t* layouts, const int64_t* lengths,
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

typedef enum { SIDE_SEQ = 0, SIDE_HEAD = 1, SIDE_GATHER = 2 } Side;

static Side inputSide(ulyssesOp_t op) { return op == ulyssesOpHeadToSeq ? SIDE_HEAD : SIDE_SEQ; }
static Side outputSide(ulyssesOp_t op) {
  return op == ulyssesOpSeqToHead ? SIDE_HEAD : op == ulyssesOpHeadToSeq ? SIDE_SEQ : SIDE_GATHER;
}

/* Tensor t's rows on one side of rank `rank`, for the case's current lengths. */
static RowMap caseMap(const Case* c, int t, Side side, int rank) {
  const ulyssesLayout_t* l = &c->layouts[t];
  const refShape* s = &c->shapes[t];
  RowMap m;
  m.batch = l->batch;
  m.sbhd = l->order == ulyssesOrderSBHD;
  if (side == SIDE_SEQ) {
    m.rowBytes = rowBytes(l, l->heads);
    m.real = c->lengths[rank];
    m.slot = c->slots[rank];
  } else {
    int64_t heads = side == SIDE_GATHER ? l->heads
                    : c->isGqa[t]       ? refKvCount(&c->gqa[t], rank)
                                        : refHeadCount(s, rank);
    m.rowBytes = rowBytes(l, heads);
    m.real = refTotalLength(s);
    m.slot = c->slotTotal;
  }
  return m;
}

/* The bytes of tensor t's sendbuff or recvbuff for op, from
 * ulyssesGetBufferSizes, which must agree with the layout's own count
 * (B * slot rows of that side); a disagreement ends the rank, as the buffers
 * could not be built. */
static size_t planBytes(ulyssesPlan_t plan, const Case* c, ulyssesOp_t op, int t, int isSend) {
  size_t sendBytes = 0, recvBytes = 0, alone = 0;
  ULY_CHECK(ulyssesGetBufferSizes(plan, op, t, &sendBytes, &recvBytes));
  /* Either pointer may be NULL. */
  if (isSend)
    ULY_CHECK(ulyssesGetBufferSizes(plan, op, t, &alone, NULL));
  else
    ULY_CHECK(ulyssesGetBufferSizes(plan, op, t, NULL, &alone));
  RowMap sendMap = caseMap(c, t, inputSide(op), gRank);
  RowMap recvMap = caseMap(c, t, outputSide(op), gRank);
  size_t got = isSend ? sendBytes : recvBytes;
  size_t want = mapBufferBytes(isSend ? &sendMap : &recvMap);
  gChecks += 2;
  if (alone != got)
    reportFailure("ulyssesGetBufferSizes(op %d, tensor %d) gives %zu %s bytes with both pointers, "
                  "%zu with the other NULL", (int)op, t, got, isSend ? "send" : "recv", alone);
  if (sendBytes != mapBufferBytes(&sendMap) || recvBytes != mapBufferBytes(&recvMap)) {
    printf("rank %d: scenario %s: ulyssesGetBufferSizes(op %d, tensor %d) gives send %zu, recv "
           "%zu bytes; the layout needs send %zu, recv %zu\n",
           gRank, gScenario, (int)op, t, sendBytes, recvBytes, mapBufferBytes(&sendMap),
           mapBufferBytes(&recvMap));
    fflush(stdout);
    _exit(2);
  }
  return want;
}

typedef size_t (*rankBytesFunction)(const refShape* shape, int rank);

static unsigned char** allocPerRank(const refShape* s, rankBytesFunction bytesOf) {
  unsigned char** buffers = xmalloc(sizeof(unsigned char*) * (size_t)gRanks);
  for (int r = 0; r < gRanks; r++) buffers[r] = xmalloc(bytesOf(s, r));
  return buffers;
}

static void fillPerRank(unsigned char** buffers, const refShape* s, rankBytesFunction bytesOf,
                        uint64_t seed) {
  for (int r = 0; r < gRanks; r++) refFillPattern(buffers[r], bytesOf(s, r), mixSeed(seed, (uint64_t)r));
}

static void freePerRank(unsigned char** buffers) {
  if (buffers == NULL) return;
  for (int r = 0; r < gRanks; r++) free(buffers[r]);
  free(buffers);
}

/* refAllGather writes every rank's (identical) output: let them share one. */
static void refAllGatherOwn(const refShape* s, unsigned char* const* inputs, unsigned char* out) {
  void** outputs = xmalloc(sizeof(void*) * (size_t)gRanks);
  for (int r = 0; r < gRanks; r++) outputs[r] = out;
  refAllGather(s, (const void* const*)inputs, outputs);
  free(outputs);
}

static const char* opName(ulyssesOp_t op) {
  switch (op) {
    case ulyssesOpSeqToHead: return "seq->head";
    case ulyssesOpHeadToSeq: return "head->seq";
    default: return "all-gather";
  }
}

/* Enqueues one exchange of every tensor of the plan on stream. */
static ulyssesResult_t enqueueExchangeOn(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                         int useMulti, DevBuf* send, DevBuf* recv, DevBuf* ws,
                                         ulyssesComm_t comm, cudaStream_t stream) {
  const void* sends[MAX_TENSORS];
  void* recvs[MAX_TENSORS];
  for (int t = 0; t < nTensors; t++) {
    sends[t] = send[t].user;
    recvs[t] = recv[t].user;
  }
  if (useMulti || nTensors > 1)
    return ulyssesExchangeMulti(plan, op, nTensors, sends, recvs, ws->user, ws->bytes, comm, stream);
  switch (op) {
    case ulyssesOpSeqToHead:
      return ulyssesSeqToHead(plan, sends[0], recvs[0], ws->user, ws->bytes, comm, stream);
    case ulyssesOpHeadToSeq:
      return ulyssesHeadToSeq(plan, sends[0], recvs[0], ws->user, ws->bytes, comm, stream);
    default:
      return ulyssesAllGather(plan, sends[0], recvs[0], ws->user, ws->bytes, comm, stream);
  }
}

static ulyssesResult_t enqueueExchange(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors, int useMulti,
                                       DevBuf* send, DevBuf* recv, DevBuf* ws, ulyssesComm_t comm) {
  return enqueueExchangeOn(plan, op, nTensors, useMulti, send, recv, ws, comm, gStream);
}

/* Checks every buffer of a finished call: inputs unchanged (padding and
 * guards included), outputs equal to the expectation in their real rows and
 * intact in their guards, the workspace's guards intact. */
static void compareCall(const char* label, int nTensors, const DevBuf* send, const DevBuf* recv,
                        const RowMap* outMaps, const DevBuf* ws) {
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

static void checkCall(const char* label, int nTensors, DevBuf* send, DevBuf* recv,
                      const RowMap* outMaps, DevBuf* ws) {
  for (int t = 0; t < nTensors; t++) {
    bufDownload(&send[t]);
    bufDownload(&recv[t]);
  }
  bufDownload(ws);
  compareCall(label, nTensors, send, recv, outMaps, ws);
}

/* Uploads the buffers, sets the outputs' expectation (the dense rows
 * `expected`, placed by outMaps), runs the exchange, waits for it and checks
 * everything. */
static void runAndCheck(ulyssesPlan_t plan, ulyssesOp_t op, const char* label, int nTensors,
                        int useMulti, DevBuf* send, DevBuf* recv, unsigned char* const* expected,
                        const RowMap* outMaps, ulyssesComm_t comm) {
  DevBuf ws;
  workspaceCreate(&ws, plan, op);
  bufUpload(&ws);
  for (int t = 0; t < nTensors; t++) {
    bufUpload(&send[t]);
    bufUpload(&recv[t]);
    bufScatterRows(&recv[t], &outMaps[t], expected[t]);
  }
  ULY_CHECK(enqueueExchange(plan, op, nTensors, useMulti, send, recv, &ws, comm));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  checkCall(label, nTensors, send, recv, outMaps, &ws);
  bufFree(&ws);
}

static void checkNoAsyncError(ulyssesComm_t comm) {
  ulyssesResult_t asyncError = ulyssesSuccess;
  ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
  if (asyncError != ulyssesSuccess)
    reportFailure("ulyssesCommGetAsyncError reports %s (%s)", ulyssesGetErrorString(asyncError),
                  ulyssesGetLastError());
}

/*------------------------------------------------------------------------
 * The scenario table.
 *----------------------------------------------------------------------*/
typedef enum {
  LENGTHS_EQUAL,    /* base on every rank */
  LENGTHS_SKEWED,   /* (r + 1) * base */
  LENGTHS_SOMEZERO, /* 0 on odd ranks, base + r on even ones */
  LENGTHS_ONEZERO,  /* 0 on rank 0 only, base + r elsewhere */
  LENGTHS_ALLZERO   /* 0 everywhere */
} LengthPattern;

static void makeLengths(LengthPattern pattern, int64_t base, int64_t* lengths) {
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

#define BSHD ulyssesOrderBSHD
#define SBHD ulyssesOrderSBHD
/* {batch, heads, headDim, elementSize, packed, order} */
#define LAYOUT(b, h, d, e, p, o) \
  {.size = sizeof(ulyssesLayout_t), .batch = (b), .heads = (h), .headDim = (d), .elementSize = (e), .packed = (p), .order = (o)}

typedef struct {
  const char* name;
  int nTensors;
  ulyssesLayout_t layouts[MAX_TENSORS];
  LengthPattern pattern;
  int64_t base;
  int misalign; /* bytes added before every user buffer (not the workspace) */
} Scenario;

static const Scenario scenarios[] = {
    {"bshd b1 h8 d64 e2, equal", 1, {LAYOUT(1, 8, 64, 2, 1, BSHD)}, LENGTHS_EQUAL, 4, 0},
    {"bshd b2 h8 d3 e4, skewed", 1, {LAYOUT(2, 8, 3, 4, 1, BSHD)}, LENGTHS_SKEWED, 2, 0},
    {"sbhd b2 h8 d64 e2, skewed", 1, {LAYOUT(2, 8, 64, 2, 1, SBHD)}, LENGTHS_SKEWED, 2, 0},
    {"sbhd b1 h5 d3 e1, some zero", 1, {LAYOUT(1, 5, 3, 1, 1, SBHD)}, LENGTHS_SOMEZERO, 3, 0},
    {"bshd b2 h3 d1 e8, rank 0 empty", 1, {LAYOUT(2, 3, 1, 8, 1, BSHD)}, LENGTHS_ONEZERO, 3, 0},
    {"sbhd b2 h7 d1 e1, all empty", 1, {LAYOUT(2, 7, 1, 1, 1, SBHD)}, LENGTHS_ALLZERO, 0, 0},
    {"packed bshd b2 h4 d64 e2, skewed", 1, {LAYOUT(2, 4, 64, 2, 3, BSHD)}, LENGTHS_SKEWED, 1, 0},
    {"packed sbhd b1 h6 d3 e4, some zero", 1, {LAYOUT(1, 6, 3, 4, 3, SBHD)}, LENGTHS_SOMEZERO, 2, 0},
    {"packed sbhd b2 h8 d64 e2, equal", 1, {LAYOUT(2, 8, 64, 2, 3, SBHD)}, LENGTHS_EQUAL, 3, 0},
    {"packed bshd b1 h3 d1 e1, rank 0 empty", 1, {LAYOUT(1, 3, 1, 1, 3, BSHD)}, LENGTHS_ONEZERO, 2, 0},
    {"bshd b2 h5 d3 e16, skewed", 1, {LAYOUT(2, 5, 3, 16, 1, BSHD)}, LENGTHS_SKEWED, 1, 0},
    {"sbhd b1 h12 d1 e16, equal", 1, {LAYOUT(1, 12, 1, 16, 1, SBHD)}, LENGTHS_EQUAL, 2, 0},
    {"bshd b2 h1 d64 e4, skewed", 1, {LAYOUT(2, 1, 64, 4, 1, BSHD)}, LENGTHS_SKEWED, 2, 0},
    {"bshd b1 h16 d64 e8, one row per rank", 1, {LAYOUT(1, 16, 64, 8, 1, BSHD)}, LENGTHS_EQUAL, 1, 0},
    {"misaligned bshd b2 h5 d64 e4, skewed", 1, {LAYOUT(2, 5, 64, 4, 1, BSHD)}, LENGTHS_SKEWED, 2, 4},
    {"misaligned sbhd b2 h8 d3 e2, some zero", 1, {LAYOUT(2, 8, 3, 2, 1, SBHD)}, LENGTHS_SOMEZERO, 2, 2},
    {"gqa bshd b2 q8 k2 v2 d64 e2, skewed", 3,
     {LAYOUT(2, 8, 64, 2, 1, BSHD), LAYOUT(2, 2, 64, 2, 1, BSHD), LAYOUT(2, 2, 64, 2, 1, BSHD)},
     LENGTHS_SKEWED, 2, 0},
    {"gqa sbhd b1 q8 k2 v2 d3 e4, some zero", 3,
     {LAYOUT(1, 8, 3, 4, 1, SBHD), LAYOUT(1, 2, 3, 4, 1, SBHD), LAYOUT(1, 2, 3, 4, 1, SBHD)},
     LENGTHS_SOMEZERO, 3, 0},
    {"gqa bshd b2 q12 k3 v3 d64 e2, rank 0 empty", 3,
     {LAYOUT(2, 12, 64, 2, 1, BSHD), LAYOUT(2, 3, 64, 2, 1, BSHD), LAYOUT(2, 3, 64, 2, 1, BSHD)},
     LENGTHS_ONEZERO, 2, 0},
    {"gqa sbhd b2 q4 k1 v1 d64 e2, all empty", 3,
     {LAYOUT(2, 4, 64, 2, 1, SBHD), LAYOUT(2, 1, 64, 2, 1, SBHD), LAYOUT(2, 1, 64, 2, 1, SBHD)},
     LENGTHS_ALLZERO, 0, 0},
    {"mixed bshd b2 h8 d64 e2 + packed sbhd b1 h3 d3 e1 + bshd b2 h2 d1 e8, skewed", 3,
     {LAYOUT(2, 8, 64, 2, 1, BSHD), LAYOUT(1, 3, 3, 1, 3, SBHD), LAYOUT(2, 2, 1, 8, 1, BSHD)},
     LENGTHS_SKEWED, 1, 0},
    {"larger bshd b2 h16 d128 e2, skewed", 1, {LAYOUT(2, 16, 128, 2, 1, BSHD)}, LENGTHS_SKEWED, 8, 0},
};
#define SCENARIO_COUNT ((int)(sizeof scenarios / sizeof scenarios[0]))

static ulyssesPlan_t makePlan(const Case* c, const int64_t* deviceLength) {
  ulyssesPlan_t plan = NULL;
  if (c->capacity)
    ULY_CHECK(ulyssesPlanCreateCapacity(&plan, gRanks, gRank, c->slots, deviceLength, c->nTensors,
                                        c->layouts));
  else
    ULY_CHECK(ulyssesPlanCreateExact(&plan, gRanks, gRank, c->lengths, c->nTensors, c->layouts));
  return plan;
}

static int64_t* deviceLengthCreate(int64_t value) {
  int64_t* deviceLength = NULL;
  CUDA_CHECK(cudaMalloc((void**)&deviceLength, sizeof(int64_t)));
  static int64_t hostValue;
  hostValue = value;
  CUDA_CHECK(cudaMemcpyAsync(deviceLength, &hostValue, sizeof hostValue, cudaMemcpyHostToDevice, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  return deviceLength;
}

/* Enqueued on the stream (a graph replay reads it when it runs). */
static void deviceLengthSet(int64_t* deviceLength, int64_t value) {
  static int64_t hostValue;
  CUDA_CHECK(cudaStreamSynchronize(gStream)); /* hostValue is free again */
  hostValue = value;
  CUDA_CHECK(cudaMemcpyAsync(deviceLength, &hostValue, sizeof hostValue, cudaMemcpyHostToDevice, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
}

/*------------------------------------------------------------------------
 * Per-tensor reference data: plain tensors through reference.h, kv tensors
 * through reference_gqa.h. Buffers hold the dense (real-row) tensor of one
 * side of every rank.
 *----------------------------------------------------------------------*/
static unsigned char** allocSide(const Case* c, int t, Side side) {
  unsigned char** buffers = xmalloc(sizeof(unsigned char*) * (size_t)gRanks);
  for (int r = 0; r < gRanks; r++) {
    RowMap m = caseMap(c, t, side, r);
    buffers[r] = xmalloc(mapDenseBytes(&m));
  }
  return buffers;
}

/* Opaque bytes for an opaque tensor; finite floats of its type for a tensor
 * with a dataType (head->seq of a kv tensor may sum them). */
static void fillSide(const Case* c, int t, Side side, unsigned char** buffers, uint64_t seed) {
  const ulyssesLayout_t* l = &c->layouts[t];
  for (int r = 0; r < gRanks; r++) {
    RowMap m = caseMap(c, t, side, r);
    size_t bytes = mapDenseBytes(&m);
    if (l->dataType == ulyssesTypeOpaque)
      refFillPattern(buffers[r], bytes, mixSeed(seed, (uint64_t)r));
    else
      refFillFloats(buffers[r], bytes / (size_t)l->elementSize, refTypeOf(l->dataType),
                    mixSeed(seed, (uint64_t)r));
  }
}

/* The reference seq->head or head->seq of tensor t, for every rank. */
static void refExchange(const Case* c, int t, ulyssesOp_t op, unsigned char* const* in,
                        unsigned char* const* out) {
  const void* const* inputs = (const void* const*)in;
  void* const* outputs = (void* const*)out;
  if (c->isGqa[t]) {
    if (op == ulyssesOpSeqToHead) refGqaSeqToHead(&c->gqa[t], inputs, outputs);
    else refGqaHeadToSeq(&c->gqa[t], inputs, outputs);
  } else {
    if (op == ulyssesOpSeqToHead) refSeqToHead(&c->shapes[t], inputs, outputs);
    else refHeadToSeq(&c->shapes[t], inputs, outputs);
  }
}

/* One case in one mode: seq->head, the round trip back, head->seq from
 * independent data, and (doGather) the all-gather, each checked against the
 * reference in the outputs' real rows, with guards, and the inputs unchanged.
 * The round trip of a plain tensor gives its input back; that of a kv tensor
 * whose kv heads are shared gives each replica's sum (the reference's
 * head->seq of the seq->head output). */
static void runCase(const Case* c, ulyssesPlan_t plan, uint64_t seed, size_t before,
                    int nullWhenEmpty, int useMulti, int doGather, ulyssesComm_t comm) {
  int R = gRank, T = c->nTensors;
  unsigned char **seqIn[MAX_TENSORS] = {0}, **headIn[MAX_TENSORS] = {0},
                **toHead[MAX_TENSORS] = {0}, **toSeq[MAX_TENSORS] = {0},
                **roundTrip[MAX_TENSORS] = {0}, *gathered[MAX_TENSORS] = {0};
  for (int t = 0; t < T; t++) {
    seqIn[t] = allocSide(c, t, SIDE_SEQ);
    fillSide(c, t, SIDE_SEQ, seqIn[t], mixSeed(seed, 100 + (uint64_t)t));
    headIn[t] = allocSide(c, t, SIDE_HEAD);
    fillSide(c, t, SIDE_HEAD, headIn[t], mixSeed(seed, 200 + (uint64_t)t));
    toHead[t] = allocSide(c, t, SIDE_HEAD);
    toSeq[t] = allocSide(c, t, SIDE_SEQ);
    refExchange(c, t, ulyssesOpSeqToHead, seqIn[t], toHead[t]);
    refExchange(c, t, ulyssesOpHeadToSeq, headIn[t], toSeq[t]);
    if (c->isGqa[t]) {
      roundTrip[t] = allocSide(c, t, SIDE_SEQ);
      refExchange(c, t, ulyssesOpHeadToSeq, toHead[t], roundTrip[t]);
    }
    if (doGather) {
      gathered[t] = xmalloc(refGatherBytes(&c->shapes[t]));
      refAllGatherOwn(&c->shapes[t], seqIn[t], gathered[t]);
    }
  }

  DevBuf seqSend[MAX_TENSORS], headRecv[MAX_TENSORS], seqBack[MAX_TENSORS],
      headSend[MAX_TENSORS], seqRecv[MAX_TENSORS], gatherRecv[MAX_TENSORS];
  memset(seqSend, 0, sizeof seqSend);
  memset(headRecv, 0, sizeof headRecv);
  memset(seqBack, 0, sizeof seqBack);
  memset(headSend, 0, sizeof headSend);
  memset(seqRecv, 0, sizeof seqRecv);
  memset(gatherRecv, 0, sizeof gatherRecv);
  unsigned char* expected[MAX_TENSORS] = {0};
  RowMap seqMap[MAX_TENSORS], headMap[MAX_TENSORS], gatherMap[MAX_TENSORS];
  memset(seqMap, 0, sizeof seqMap);
  memset(headMap, 0, sizeof headMap);
  memset(gatherMap, 0, sizeof gatherMap);
  for (int t = 0; t < T; t++) {
    seqMap[t] = caseMap(c, t, SIDE_SEQ, R);
    headMap[t] = caseMap(c, t, SIDE_HEAD, R);
    gatherMap[t] = caseMap(c, t, SIDE_GATHER, R);
  }

  /* seq -> head */
  for (int t = 0; t < T; t++) {
    bufCreate(&seqSend[t], planBytes(plan, c, ulyssesOpSeqToHead, t, 1), before, nullWhenEmpty, 0);
    bufSetInput(&seqSend[t], &seqMap[t], seqIn[t][R], mixSeed(seed, 300 + (uint64_t)t));
    bufCreate(&headRecv[t], planBytes(plan, c, ulyssesOpSeqToHead, t, 0), before, nullWhenEmpty,
              OUTPUT_FILL);
    expected[t] = toHead[t][R];
  }
  runAndCheck(plan, ulyssesOpSeqToHead, "seq->head", T, useMulti, seqSend, headRecv, expected,
              headMap, comm);

  /* the round trip: the device's seq->head output (padding and all) back
   * through head->seq */
  for (int t = 0; t < T; t++) {
    bufAdopt(&headRecv[t]);
    planBytes(plan, c, ulyssesOpHeadToSeq, t, 1); /* checked: the size headRecv has */
    bufCreate(&seqBack[t], planBytes(plan, c, ulyssesOpHeadToSeq, t, 0), before, nullWhenEmpty,
              OUTPUT_FILL);
    expected[t] = c->isGqa[t] ? roundTrip[t][R] : seqIn[t][R];
  }
  runAndCheck(plan, ulyssesOpHeadToSeq, "round trip (head->seq of the seq->head output)", T,
              useMulti, headRecv, seqBack, expected, seqMap, comm);

  /* head -> seq from its own data */
  for (int t = 0; t < T; t++) {
    bufCreate(&headSend[t], planBytes(plan, c, ulyssesOpHeadToSeq, t, 1), before, nullWhenEmpty, 0);
    bufSetInput(&headSend[t], &headMap[t], headIn[t][R], mixSeed(seed, 400 + (uint64_t)t));
    bufCreate(&seqRecv[t], planBytes(plan, c, ulyssesOpHeadToSeq, t, 0), before, nullWhenEmpty,
              OUTPUT_FILL);
    expected[t] = toSeq[t][R];
  }
  runAndCheck(plan, ulyssesOpHeadToSeq, "head->seq", T, useMulti, headSend, seqRecv, expected,
              seqMap, comm);

  /* all-gather of the seq->head inputs */
  if (doGather) {
    for (int t = 0; t < T; t++) {
      planBytes(plan, c, ulyssesOpAllGather, t, 1); /* checked: the size seqSend has */
      bufCreate(&gatherRecv[t], planBytes(plan, c, ulyssesOpAllGather, t, 0), before,
                nullWhenEmpty, OUTPUT_FILL);
      expected[t] = gathered[t];
    }
    runAndCheck(plan, ulyssesOpAllGather, "all-gather", T, useMulti, seqSend, gatherRecv,
                expected, gatherMap, comm);
  }

  checkNoAsyncError(comm);
  for (int t = 0; t < T; t++) {
    bufFree(&seqSend[t]);
    bufFree(&headRecv[t]);
    bufFree(&seqBack[t]);
    bufFree(&headSend[t]);
    bufFree(&seqRecv[t]);
    if (doGather) bufFree(&gatherRecv[t]);
    freePerRank(seqIn[t]);
    freePerRank(headIn[t]);
    freePerRank(toHead[t]);
    freePerRank(toSeq[t]);
    freePerRank(roundTrip[t]);
    free(gathered[t]);
  }
}

/* One scenario of the table in one mode. */
static void runScenario(int index, int capacity, ulyssesComm_t comm, const char* where) {
  const Scenario* sc = &scenarios[index];
  setScenario("%s%d \"%s\" (%s)", where, index, sc->name, capacity ? "capacity" : "exact");
  double started = nowMs();
  int64_t lengths[MAX_RANKS], slots[MAX_RANKS];
  makeLengths(sc->pattern, sc->base, lengths);
  for (int r = 0; r < gRanks; r++) slots[r] = lengths[r] + (capacity ? (r + index) % 3 : 0);
  Case c;
  caseInit(&c, sc->nTensors, sc->layouts, lengths, slots, capacity);
  int64_t* deviceLength = capacity ? deviceLengthCreate(lengths[gRank]) : NULL;
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  runCase(&c, plan, mixSeed((uint64_t)index, (uint64_t)capacity),
          GUARD_BYTES + (size_t)sc->misalign, index % 2 == 1 /* zero-byte buffers: NULL */,
          index % 4 == 3 /* single tensors through ulyssesExchangeMulti too */, 1, comm);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (deviceLength != NULL) CUDA_CHECK(cudaFree(deviceLength));
  if (gRank == 0) printf("rank 0: scenario %s: done in %.0f ms\n", gScenario, nowMs() - started);
}

/*------------------------------------------------------------------------
 * Grouped-query attention: kv tensors (queryHeads = Hq, heads = Hkv) whose kv
 * heads several ranks may share. The shapes depend on P: the issue's triple
 * (Hq, Hkv, P) for this P, and a second one with other sharing (a kv head
 * split between some ranks only, ranks without a query head).
 *----------------------------------------------------------------------*/
enum { GQA_SHAPE_MAIN = 0, GQA_SHAPE_OTHER = 1 };

static void gqaHeads(int shape, int64_t* queryHeads, int64_t* kvHeads) {
  /* MAIN: (8, 2, 1), (8, 1, 2), (28, 4, 3), (8, 1, 4), (28, 4, 8), else (4P, 2, P).
   * OTHER: (8, 1, 1); (6, 3, 2): kv head 1 on both ranks, 0 and 2 on one each;
   * (2, 1, 3): rank 2 owns no query head; (16, 2, 4): each kv head on two
   * ranks; (4, 2, 8): ranks 4..7 own none; else (8, 1, P). */
  static const int64_t mainShapes[9][2] = {{0, 0}, {8, 2}, {8, 1}, {28, 4}, {8, 1},
                                           {0, 0}, {0, 0}, {0, 0}, {28, 4}};
  static const int64_t otherShapes[9][2] = {{0, 0}, {8, 1}, {6, 3}, {2, 1}, {16, 2},
                                            {0, 0}, {0, 0}, {0, 0}, {4, 2}};
  const int64_t(*table)[2] = shape == GQA_SHAPE_MAIN ? mainShapes : otherShapes;
  if (gRanks < 9 && table[gRanks][0] > 0) {
    *queryHeads = table[gRanks][0];
    *kvHeads = table[gRanks][1];
  } else if (shape == GQA_SHAPE_MAIN) {
    *queryHeads = 4 * (int64_t)gRanks;
    *kvHeads = 2;
  } else {
    *queryHeads = 8;
    *kvHeads = 1;
  }
}

static int64_t typeBytes(ulyssesDataType_t type) { return type == ulyssesTypeFloat32 ? 4 : 2; }

static ulyssesLayout_t gqaLayout(int64_t batch, int64_t heads, int64_t headDim, ulyssesOrder_t order,
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

typedef struct {
  const char* name;
  int shape;      /* GQA_SHAPE_* */
  int multi;      /* q (plain: Hq heads, queryHeads 0) + k + v in one ulyssesExchangeMulti */
  int64_t batch, headDim;
  ulyssesOrder_t order;
  ulyssesDataType_t kvType, vType; /* multi: k's (and q's) and v's types */
  LengthPattern pattern;
  int64_t base;
  int misalign;
} GqaScenario;

static const GqaScenario gqaScenarios[] = {
    {"kv bshd b2 d5 fp32, some zero, misaligned", GQA_SHAPE_MAIN, 0, 2, 5, BSHD,
     ulyssesTypeFloat32, ulyssesTypeFloat32, LENGTHS_SOMEZERO, 2, 3},
    {"kv sbhd b2 d64 fp16, rank 0 empty", GQA_SHAPE_OTHER, 0, 2, 64, SBHD, ulyssesTypeFloat16,
     ulyssesTypeFloat16, LENGTHS_ONEZERO, 2, 0},
    {"kv bshd b2 d3 bf16, skewed", GQA_SHAPE_OTHER, 0, 2, 3, BSHD, ulyssesTypeBfloat16,
     ulyssesTypeBfloat16, LENGTHS_SKEWED, 1, 0},
    {"q fp16 + k fp16 + v bf16, bshd b2 d64, some zero", GQA_SHAPE_MAIN, 1, 2, 64, BSHD,
     ulyssesTypeFloat16, ulyssesTypeBfloat16, LENGTHS_SOMEZERO, 3, 0},
    {"q bf16 + k bf16 + v fp32, sbhd b1 d8, rank 0 empty", GQA_SHAPE_OTHER, 1, 1, 8, SBHD,
     ulyssesTypeBfloat16, ulyssesTypeFloat32, LENGTHS_ONEZERO, 2, 0},
};
#define GQA_SCENARIO_COUNT ((int)(sizeof gqaScenarios / sizeof gqaScenarios[0]))

static void runGqaScenario(int index, int capacity, ulyssesComm_t comm) {
  const GqaScenario* sc = &gqaScenarios[index];
  int64_t queryHeads = 0, kvHeads = 0;
  gqaHeads(sc->shape, &queryHeads, &kvHeads);
  setScenario("gqa %d \"%s\" Hq %lld Hkv %lld P %d (%s)", index, sc->name, (long long)queryHeads,
              (long long)kvHeads, gRanks, capacity ? "capacity" : "exact");
  double started = nowMs();
  ulyssesLayout_t layouts[MAX_TENSORS];
  int nTensors = 0;
  if (sc->multi) {
    layouts[nTensors++] = gqaLayout(sc->batch, queryHeads, sc->headDim, sc->order, 0, sc->kvType);
    layouts[nTensors++] =
        gqaLayout(sc->batch, kvHeads, sc->headDim, sc->order, queryHeads, sc->kvType);
    layouts[nTensors++] =
        gqaLayout(sc->batch, kvHeads, sc->headDim, sc->order, queryHeads, sc->vType);
  } else {
    layouts[nTensors++] =
        gqaLayout(sc->batch, kvHeads, sc->headDim, sc->order, queryHeads, sc->kvType);
  }
  int64_t lengths[MAX_RANKS], slots[MAX_RANKS];
  makeLengths(sc->pattern, sc->base, lengths);
  for (int r = 0; r < gRanks; r++) slots[r] = lengths[r] + (capacity ? (r + index + 1) % 3 : 0);
  Case c;
  caseInit(&c, nTensors, layouts, lengths, slots, capacity);
  int64_t* deviceLength = capacity ? deviceLengthCreate(lengths[gRank]) : NULL;
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  runCase(&c, plan, mixSeed(500 + (uint64_t)index, (uint64_t)capacity),
          GUARD_BYTES + (size_t)sc->misalign, index % 2 == 0, !sc->multi && index % 2 == 1,
          sc->multi, comm);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (deviceLength != NULL) CUDA_CHECK(cudaFree(deviceLength));
  if (gRank == 0) printf("rank 0: scenario %s: done in %.0f ms\n", gScenario, nowMs() - started);
}

/* head->seq of an opaque kv tensor whose kv head every rank shares (Hkv = 1,
 * Hq = 2P) has nothing to sum with: ulyssesErrorUnsupportedElementSize on
 * every rank (a plan-wide property, so no rank reaches NCCL), nothing
 * written. With P = 1 nothing is shared: the call moves the bytes. Then
 * exchanges every rank agrees on still work: seq->head of the same plan
 * (opaque replicas) and head->seq of a plain tensor. */
static void runGqaOpaqueScenario(ulyssesComm_t comm) {
  setScenario("gqa opaque kv head shared by %d rank(s): head->seq", gRanks);
  double started = nowMs();
  ulyssesLayout_t kv = gqaLayout(2, 1, 4, BSHD, 2 * (int64_t)gRanks, ulyssesTypeOpaque);
  kv.elementSize = 2;
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = (r + 1) % 3; /* 1, 2, 0, 1, ... */
  Case c;
  caseInit(&c, 1, &kv, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  uint64_t seed = mixSeed(600, 0);
  RowMap headMap = caseMap(&c, 0, SIDE_HEAD, gRank), seqMap = caseMap(&c, 0, SIDE_SEQ, gRank);

  unsigned char** headIn = allocSide(&c, 0, SIDE_HEAD);
  fillSide(&c, 0, SIDE_HEAD, headIn, mixSeed(seed, 1));
  DevBuf send, recv, ws;
  bufCreate(&send, planBytes(plan, &c, ulyssesOpHeadToSeq, 0, 1), GUARD_BYTES, 0, 0);
  bufSetInput(&send, &headMap, headIn[gRank], mixSeed(seed, 2));
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpHeadToSeq, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
  if (gRanks == 1) {
    unsigned char** toSeq = allocSide(&c, 0, SIDE_SEQ);
    refHeadToSeq(&c.shapes[0], (const void* const*)headIn, (void* const*)toSeq);
    runAndCheck(plan, ulyssesOpHeadToSeq, "head->seq (one rank: no replica to sum)", 1, 0, &send,
                &recv, &toSeq[gRank], &seqMap, comm);
    freePerRank(toSeq);
  } else {
    workspaceCreate(&ws, plan, ulyssesOpHeadToSeq);
    bufUpload(&ws);
    bufUpload(&send);
    bufUpload(&recv);
    ulyssesResult_t got =
        ulyssesHeadToSeq(plan, send.user, recv.user, ws.user, ws.bytes, comm, gStream);
    const char* message = ulyssesGetLastError();
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    gChecks += 2;
    if (got != ulyssesErrorUnsupportedElementSize)
      reportFailure("ulyssesHeadToSeq of an opaque kv tensor with shared kv heads returned %s, "
                    "not ulyssesErrorUnsupportedElementSize",
                    ulyssesGetErrorString(got));
    if (got != ulyssesSuccess && message[0] == '\0')
      reportFailure("ulyssesGetLastError is empty after %s", ulyssesGetErrorString(got));
    /* Nothing enqueued, nothing written: every byte as uploaded. */
    bufCheck(&send, "refused head->seq: sendbuff (an input)", CHECK_ALL);
    bufCheck(&recv, "refused head->seq: recvbuff (must be untouched)", CHECK_ALL);
    bufCheck(&ws, "refused head->seq: workspace (must be untouched)", CHECK_ALL);
    bufFree(&ws);
  }
  bufFree(&send);
  bufFree(&recv);
  freePerRank(headIn);

  /* The same plan's seq->head: replication needs no dataType. */
  setScenario("gqa opaque kv head shared by %d rank(s): seq->head afterwards", gRanks);
  unsigned char** seqIn = allocSide(&c, 0, SIDE_SEQ);
  fillSide(&c, 0, SIDE_SEQ, seqIn, mixSeed(seed, 3));
  unsigned char** toHead = allocSide(&c, 0, SIDE_HEAD);
  refExchange(&c, 0, ulyssesOpSeqToHead, seqIn, toHead);
  bufCreate(&send, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
  bufSetInput(&send, &seqMap, seqIn[gRank], mixSeed(seed, 4));
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
  runAndCheck(plan, ulyssesOpSeqToHead, "seq->head", 1, 0, &send, &recv, &toHead[gRank], &headMap,
              comm);
  bufFree(&send);
  bufFree(&recv);
  freePerRank(seqIn);
  freePerRank(toHead);
  ULY_CHECK(ulyssesPlanDestroy(plan));

  /* A plain exchange on its own plan: the ranks are still in step. */
  setScenario("gqa opaque kv head shared by %d rank(s): plain head->seq afterwards", gRanks);
  const ulyssesLayout_t plain = LAYOUT(2, 3, 4, 4, 1, SBHD);
  for (int r = 0; r < gRanks; r++) lengths[r] = r + 1;
  caseInit(&c, 1, &plain, lengths, lengths, 0);
  plan = makePlan(&c, NULL);
  headMap = caseMap(&c, 0, SIDE_HEAD, gRank);
  seqMap = caseMap(&c, 0, SIDE_SEQ, gRank);
  headIn = allocSide(&c, 0, SIDE_HEAD);
  fillSide(&c, 0, SIDE_HEAD, headIn, mixSeed(seed, 5));
  unsigned char** toSeq = allocSide(&c, 0, SIDE_SEQ);
  refExchange(&c, 0, ulyssesOpHeadToSeq, headIn, toSeq);
  bufCreate(&send, planBytes(plan, &c, ulyssesOpHeadToSeq, 0, 1), GUARD_BYTES, 0, 0);
  bufSetInput(&send, &headMap, headIn[gRank], mixSeed(seed, 6));
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpHeadToSeq, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
  runAndCheck(plan, ulyssesOpHeadToSeq, "head->seq", 1, 0, &send, &recv, &toSeq[gRank], &seqMap,
              comm);
  bufFree(&send);
  bufFree(&recv);
  freePerRank(headIn);
  freePerRank(toSeq);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  checkNoAsyncError(comm);
  if (gRank == 0)
    printf("rank 0: scenario gqa opaque kv head shared by %d rank(s): done in %.0f ms\n", gRanks,
           nowMs() - started);
}

/*------------------------------------------------------------------------
 * Replays: a CUDA graph of one seq->head call, and the no-hidden-sync check.
 * Both run phases of one plan and one set of buffers: phase 0 eager, later
 * phases with new data in the same input buffer (capacity mode: new lengths
 * in the same device int64 too).
 *----------------------------------------------------------------------*/
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
  const refShape* s = &x->c.shapes[0];
  freePerRank(x->seqIn);
  freePerRank(x->toHead);
  x->seqIn = allocPerRank(s, refSeqBytes);
  fillPerRank(x->seqIn, s, refSeqBytes, mixSeed(seed, 10 + (uint64_t)phase));
  x->toHead = allocPerRank(s, refHeadSideBytes);
  refSeqToHead(s, (const void* const*)x->seqIn, (void* const*)x->toHead);
  /* The input's image: this phase's rows in their places (they move with the
   * lengths in capacity mode), junk in the padding. */
  RowMap in = caseMap(&x->c, 0, SIDE_SEQ, gRank), out = caseMap(&x->c, 0, SIDE_HEAD, gRank);
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
  RowMap out = caseMap(&x->c, 0, SIDE_HEAD, gRank);
  checkCall(label, 1, &x->send, &x->recv, &out, &x->ws);
}

static void runReplayScenario(int kind, int capacity, ulyssesComm_t comm) {
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
    /* Before the communicators go: GPU.md saw ncclCommDestroy hang after a
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
 * A capacity-mode length out of range on one rank, on a comm of its own
 * (the error is sticky): every rank must see it, nothing may be written
 * outside the buffers, and the exchange runs with the clamped length (0 for a
 * negative one, the capacity for one above it), which defines the real rows
 * of the inputs and outputs.
 *----------------------------------------------------------------------*/
static void runBadLengthScenario(int negative, ncclComm_t nccl, ulyssesComm_t mainComm) {
  setScenario("capacity length %s (rank %d's)", negative ? "negative" : "above its capacity",
              negative ? 0 : gRanks - 1);
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, NULL));
  const ulyssesLayout_t layout = LAYOUT(2, 5, 3, 4, 1, BSHD);
  int victim = negative ? 0 : gRanks - 1;
  int64_t capacities[MAX_RANKS], clamped[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) {
    capacities[r] = r + 2;
    clamped[r] = r + 1; /* the others: one row of padding per batch entry */
  }
  clamped[victim] = negative ? 0 : capacities[victim];
  int64_t myLength = clamped[gRank];
  if (gRank == victim) myLength = negative ? -3 : capacities[gRank] + 3;
  Case c;
  caseInit(&c, 1, &layout, clamped, capacities, 1);
  const refShape* s = &c.shapes[0];
  int64_t* deviceLength = deviceLengthCreate(myLength);
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  uint64_t seed = mixSeed(2000, (uint64_t)negative);

  /* The reference, with the clamped lengths. */
  unsigned char** seqIn = allocPerRank(s, refSeqBytes);
  fillPerRank(seqIn, s, refSeqBytes, mixSeed(seed, 1));
  unsigned char** headIn = allocPerRank(s, refHeadSideBytes);
  fillPerRank(headIn, s, refHeadSideBytes, mixSeed(seed, 2));
  unsigned char** toHead = allocPerRank(s, refHeadSideBytes);
  unsigned char** toSeq = allocPerRank(s, refSeqBytes);
  unsigned char* gathered = xmalloc(refGatherBytes(s));
  refSeqToHead(s, (const void* const*)seqIn, (void* const*)toHead);
  refHeadToSeq(s, (const void* const*)headIn, (void* const*)toSeq);
  refAllGatherOwn(s, seqIn, gathered);

  ulyssesResult_t want = negative ? ulyssesErrorInvalidLength : ulyssesErrorLengthExceedsCapacity;
  const ulyssesOp_t ops[3] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq, ulyssesOpAllGather};
  for (int i = 0; i < 3; i++) {
    ulyssesOp_t op = ops[i];
    RowMap inMap = caseMap(&c, 0, inputSide(op), gRank);
    RowMap outMap = caseMap(&c, 0, outputSide(op), gRank);
    DevBuf send, recv;
    bufCreate(&send, planBytes(plan, &c, op, 0, 1), GUARD_BYTES, 0, 0);
    bufSetInput(&send, &inMap, op == ulyssesOpHeadToSeq ? headIn[gRank] : seqIn[gRank],
                mixSeed(seed, 10 + (uint64_t)i));
    bufCreate(&recv, planBytes(plan, &c, op, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
    unsigned char* expected = op == ulyssesOpSeqToHead   ? toHead[gRank]
                              : op == ulyssesOpHeadToSeq ? toSeq[gRank]
                                                         : gathered;
    char label[96];
    snprintf(label, sizeof label, "%s with a bad length", opName(op));
    runAndCheck(plan, op, label, 1, 0, &send, &recv, &expected, &outMap, comm);
    ulyssesResult_t asyncError = ulyssesSuccess;
    ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
    gChecks++;
    if (asyncError != want)
      reportFailure("after %s, ulyssesCommGetAsyncError reports %s, not %s", opName(op),
                    ulyssesGetErrorString(asyncError), ulyssesGetErrorString(want));
    /* Handled: cleared, so that the next op has to report it again. */
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    ULY_CHECK(ulyssesCommClearAsyncError(comm));
    ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
    gChecks++;
    if (asyncError != ulyssesSuccess)
      reportFailure("after ulyssesCommClearAsyncError, ulyssesCommGetAsyncError reports %s",
                    ulyssesGetErrorString(asyncError));
    bufFree(&send);
    bufFree(&recv);
  }
  /* Every rank's length in range again: nothing more to report. */
  deviceLengthSet(deviceLength, clamped[gRank]);
  {
    DevBuf send, recv, ws;
    bufCreate(&send, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
    bufCreate(&recv, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
    workspaceCreate(&ws, plan, ulyssesOpSeqToHead);
    ULY_CHECK(ulyssesSeqToHead(plan, send.user, recv.user, ws.user, ws.bytes, comm, gStream));
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    checkNoAsyncError(comm);
    bufFree(&send);
    bufFree(&recv);
    bufFree(&ws);
  }
  freePerRank(seqIn);
  freePerRank(headIn);
  freePerRank(toHead);
  freePerRank(toSeq);
  free(gathered);
  checkNoAsyncError(mainComm); /* the other comm's status is its own */
  ULY_CHECK(ulyssesPlanDestroy(plan));
  CUDA_CHECK(cudaFree(deviceLength));
  ULY_CHECK(ulyssesCommDestroy(comm));
  if (gRank == 0) printf("rank 0: scenario %s: done\n", gScenario);
}

/*------------------------------------------------------------------------
 * Under capture, what would wait for the stream is refused before it
 * enqueues anything, and the capture survives: ulyssesGatherLengthsHost, and
 * the plan check of a plan that never passed it eagerly. After an eager,
 * checked run, the same plan is captured without the check and its replay
 * writes what the eager run wrote.
 *----------------------------------------------------------------------*/
static void runCaptureScenario(ncclComm_t nccl) {
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

/*------------------------------------------------------------------------
 * Host waits for a non-blocking NCCL communicator: a call that returns
 * ncclInProgress has finished when ncclCommGetAsyncError stops saying so.
 *----------------------------------------------------------------------*/
enum { NCCL_WAIT_SECONDS = 60 };

static void ncclWaitDone(ncclComm_t comm, ncclResult_t result, const char* what, int line) {
  double started = nowMs();
  const struct timespec pause = {0, 100000};
  while (result == ncclInProgress) {
    if (nowMs() - started > NCCL_WAIT_SECONDS * 1e3)
      fatal(__FILE__, line, what, "ncclInProgress", "still in progress after the wait's limit");
    nanosleep(&pause, NULL);
    ncclResult_t queried = ncclCommGetAsyncError(comm, &result);
    if (queried != ncclSuccess)
      fatal(__FILE__, line, "ncclCommGetAsyncError", ncclGetErrorString(queried), what);
  }
  if (result != ncclSuccess)
    fatal(__FILE__, line, what, ncclGetErrorString(result), ncclGetLastError(comm));
}

#define NCCL_WAIT(comm, call) ncclWaitDone((comm), (call), #call, __LINE__)

/*------------------------------------------------------------------------
 * The plan check (ulyssesConfig_t.checkPlans, and ULYSSES_CHECK=1 with the
 * config's field left undefined). With P >= 2, rank P-1 makes its plan with
 * one length (or capacity) unlike the others': every rank must get
 * ulyssesErrorPlanMismatch, with a message naming rank P-1, nothing hung and
 * nothing written; then exchanges with agreeing plans on the same comm work
 * and are correct. With P = 1 only the agreeing plans run (they must pass
 * the check).
 *----------------------------------------------------------------------*/

/* Whether the message lists exactly rank as the one differing rank: the
 * library writes the list in parentheses, "(3)". */
static int namesOnlyRank(const char* text, int rank) {
  char listed[24];
  snprintf(listed, sizeof listed, "(%d)", rank);
  return strstr(text, listed) != NULL;
}

/* Rank P-1's plan holds rank 0's slot plus 2 (its own buffers stay right for
 * its plan, so only the check can tell). */
static void expectPlanMismatch(ulyssesComm_t comm, ulyssesOp_t op, int nTensors,
                               const ulyssesLayout_t* layouts, const int64_t* slots, int capacity,
                               const char* label, uint64_t seed) {
  int64_t mine[MAX_RANKS];
  memcpy(mine, slots, sizeof(int64_t) * (size_t)gRanks);
  if (gRank == gRanks - 1) mine[0] += 2;
  Case c;
  caseInit(&c, nTensors, layouts, mine, mine, capacity);
  int64_t* deviceLength = capacity ? deviceLengthCreate(mine[gRank]) : NULL;
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  DevBuf send[MAX_TENSORS], recv[MAX_TENSORS], ws;
  for (int t = 0; t < nTensors; t++) {
    bufCreate(&send[t], planBytes(plan, &c, op, t, 1), GUARD_BYTES, 0, 0);
    if (send[t].bytes > 0)
      refFillPattern(send[t].image + send[t].before, send[t].bytes, mixSeed(seed, (uint64_t)t));
    bufCreate(&recv[t], planBytes(plan, &c, op, t, 0), GUARD_BYTES, 0, OUTPUT_FILL);
    bufUpload(&send[t]);
    bufUpload(&recv[t]);
  }
  workspaceCreate(&ws, plan, op);
  bufUpload(&ws);
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ulyssesResult_t got = enqueueExchange(plan, op, nTensors, 0, send, recv, &ws, comm);
  char message[512];
  snprintf(message, sizeof message, "%s", ulyssesGetLastError());
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  gChecks += 2;
  if (got != ulyssesErrorPlanMismatch)
    reportFailure(
        "%s: rank %d's plan differs, yet the call returned %s, not "
        "ulyssesErrorPlanMismatch (\"%s\")",
        label, gRanks - 1, ulyssesGetErrorString(got), message);
  else if (!namesOnlyRank(message, gRanks - 1))
    reportFailure("%s: the message \"%s\" does not name rank %d, whose plan differs", label,
                  message, gRanks - 1);
  char what[160];
  for (int t = 0; t < nTensors; t++) {
    snprintf(what, sizeof what, "%s: tensor %d: sendbuff (an input)", label, t);
    bufCheck(&send[t], what, CHECK_ALL);
    snprintf(what, sizeof what, "%s: tensor %d: recvbuff (must be untouched)", label, t);
    bufCheck(&recv[t], what, CHECK_ALL);
    bufFree(&send[t]);
    bufFree(&recv[t]);
  }
  snprintf(what, sizeof what, "%s: workspace (must be untouched)", label);
  bufCheck(&ws, what, CHECK_ALL);
  bufFree(&ws);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (deviceLength != NULL) CUDA_CHECK(cudaFree(deviceLength));
}

static void runPlanCheckScenario(ncclComm_t nccl) {
  setScenario("plan check: comms");
  double started = nowMs();
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.checkPlans = 1;
  ulyssesComm_t byConfig = NULL, byEnvironment = NULL;
  ULY_CHECK(ulyssesCommCreate(&byConfig, nccl, &config));
  char saved[64] = "";
  const char* before = getenv("ULYSSES_CHECK");
  if (before != NULL) snprintf(saved, sizeof saved, "%s", before);
  setenv("ULYSSES_CHECK", "1", 1);
  ULY_CHECK(ulyssesCommCreate(&byEnvironment, nccl, NULL));
  if (before != NULL)
    setenv("ULYSSES_CHECK", saved, 1);
  else
    unsetenv("ULYSSES_CHECK");
  uint64_t seed = mixSeed(3000, 0);

  /* Exact mode, seq->head through ulyssesSeqToHead. */
  const ulyssesLayout_t exact = LAYOUT(2, 6, 4, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = (r + 2) % 3; /* 2, 0, 1, 2, ... */
  if (gRanks >= 2) {
    setScenario("plan check (config.checkPlans = 1): rank %d's lengths differ", gRanks - 1);
    expectPlanMismatch(byConfig, ulyssesOpSeqToHead, 1, &exact, lengths, 0, "exact seq->head",
                       mixSeed(seed, 1));
  }
  setScenario("plan check (config.checkPlans = 1): agreeing plans");
  Case c;
  caseInit(&c, 1, &exact, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  runCase(&c, plan, mixSeed(seed, 2), GUARD_BYTES, 0, 0, 0, byConfig);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  checkNoAsyncError(byConfig);

  /* Capacity mode, head->seq of two tensors through ulyssesExchangeMulti. */
  const ulyssesLayout_t pair[2] = {LAYOUT(1, 4, 8, 4, 1, SBHD), LAYOUT(2, 3, 2, 2, 3, BSHD)};
  int64_t capacities[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) capacities[r] = lengths[r] + 1 + r % 2;
  if (gRanks >= 2) {
    setScenario("plan check (ULYSSES_CHECK=1): rank %d's capacities differ", gRanks - 1);
    expectPlanMismatch(byEnvironment, ulyssesOpHeadToSeq, 2, pair, capacities, 1,
                       "capacity head->seq", mixSeed(seed, 3));
  }
  setScenario("plan check (ULYSSES_CHECK=1): agreeing plans");
  caseInit(&c, 2, pair, lengths, capacities, 1);
  int64_t* deviceLength = deviceLengthCreate(lengths[gRank]);
  plan = makePlan(&c, deviceLength);
  runCase(&c, plan, mixSeed(seed, 4), GUARD_BYTES, 1, 1, 1, byEnvironment);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  CUDA_CHECK(cudaFree(deviceLength));
  checkNoAsyncError(byEnvironment);

  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ULY_CHECK(ulyssesCommDestroy(byConfig));
  ULY_CHECK(ulyssesCommDestroy(byEnvironment));
  if (gRank == 0) printf("rank 0: scenario plan check: done in %.0f ms\n", nowMs() - started);
}

/*------------------------------------------------------------------------
 * One pass asked for (config.onePass = 1, outputs from ulyssesMemAlloc) on
 * this launcher's setup: one rank, or ranks sharing one GPU over sockets,
 * where NCCL has no symmetric memory. The library must take the staged path
 * and say why, and the exchange must still be exact. ulyssesMemAlloc itself
 * may be refused there (NCCL's call): then with a clear NCCL error.
 *----------------------------------------------------------------------*/
static void runOnePassRequestedScenario(ncclComm_t nccl) {
  setScenario("one pass requested: comm");
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.onePass = 1;
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, &config));
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = r + 2;
  const ulyssesLayout_t layout = LAYOUT(2, 6, 4, 2, 1, BSHD);
  refShape shape = {gRanks, lengths, 2, 6, 4, 2, 1, 0};
  ulyssesPlan_t plan = NULL;
  ULY_CHECK(ulyssesPlanCreateExact(&plan, gRanks, gRank, lengths, 1, &layout));
  /* The same size on every rank (collective): every head of every row. */
  size_t outBytes = refHeadSideBytes(&shape, gRank);
  size_t allocBytes = (size_t)(shape.batch * refTotalLength(&shape) * shape.heads *
                                shape.headDim * shape.elementSize);
  setScenario("one pass requested: ulyssesMemAlloc");
  void* output = NULL;
  ulyssesResult_t allocated = ulyssesMemAlloc(comm, allocBytes, &output);
  gChecks++;
  if (allocated != ulyssesSuccess) {
    if (allocated != ulyssesErrorNcclError || *ulyssesGetLastError() == '\0')
      reportFailure("ulyssesMemAlloc: %s (\"%s\")", ulyssesGetErrorString(allocated),
                    ulyssesGetLastError());
    if (gRank == 0) printf("rank 0: ulyssesMemAlloc refused here: %s\n", ulyssesGetLastError());
  } else {
    setScenario("one pass requested: the path");
    ulyssesPath_t path = ulyssesPathOnePass;
    const char* reason = NULL;
    ULY_CHECK(ulyssesGetExchangePath(plan, ulyssesOpSeqToHead, 1, &output, comm, &path, &reason));
    gChecks++;
    if (path != ulyssesPathStaged || reason == NULL || *reason == '\0')
      reportFailure("path %d (\"%s\"): this setup has no load/store peers", (int)path,
                    reason != NULL ? reason : "(null)");
    if (gRank == 0) printf("rank 0: one pass requested, path staged: %s\n", reason);
    setScenario("one pass requested: the exchange into ulyssesMemAlloc memory");
    unsigned char** inputs = allocPerRank(&shape, refSeqBytes);
    fillPerRank(inputs, &shape, refSeqBytes, mixSeed(4000, 0));
    unsigned char** expected = allocPerRank(&shape, refHeadSideBytes);
    refSeqToHead(&shape, (const void* const*)inputs, (void* const*)expected);
    void* input = NULL;
    CUDA_CHECK(cudaMalloc(&input, refSeqBytes(&shape, gRank)));
    CUDA_CHECK(cudaMemcpyAsync(input, inputs[gRank], refSeqBytes(&shape, gRank),
                               cudaMemcpyHostToDevice, gStream));
    CUDA_CHECK(cudaMemsetAsync(output, 0x5a, allocBytes, gStream));
    DevBuf ws;
    workspaceCreate(&ws, plan, ulyssesOpSeqToHead);
    ULY_CHECK(ulyssesSeqToHead(plan, input, output, ws.user, ws.bytes, comm, gStream));
    unsigned char* got = xmalloc(allocBytes);
    CUDA_CHECK(cudaMemcpyAsync(got, output, allocBytes, cudaMemcpyDeviceToHost, gStream));
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    gChecks++;
    if (memcmp(got, expected[gRank], outBytes) != 0)
      reportFailure("the output in ulyssesMemAlloc memory differs from the reference");
    for (size_t i = outBytes; i < allocBytes; i++)
      if (got[i] != 0x5a) {
        reportFailure("byte %zu past the output was written", i);
        break;
      }
    checkNoAsyncError(comm);
    free(got);
    bufFree(&ws);
    CUDA_CHECK(cudaFree(input));
    freePerRank(inputs);
    freePerRank(expected);
    ULY_CHECK(ulyssesMemFree(comm, output));
  }
  ULY_CHECK(ulyssesPlanDestroy(plan));
  ULY_CHECK(ulyssesCommDestroy(comm));
}

/*------------------------------------------------------------------------
 * A non-blocking NCCL communicator (ncclConfig_t.blocking = 0, made by
 * ncclCommSplit of the main one): the library waits on the host where NCCL
 * answers ncclInProgress. Table scenarios in both modes on it, then its
 * teardown: ncclCommFinalize (waited for), ncclCommDestroy.
 *----------------------------------------------------------------------*/
static void runNonBlockingScenario(ncclComm_t nccl) {
  setScenario("non-blocking NCCL communicator: ncclCommSplit");
  double started = nowMs();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t split = NULL;
  ncclResult_t splitting = ncclCommSplit(nccl, 0, gRank, &split, &config);
  if (split == NULL)
    fatal(__FILE__, __LINE__, "ncclCommSplit (non-blocking)", ncclGetErrorString(splitting),
          "no communicator");
  NCCL_WAIT(split, splitting);
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, split, NULL));
  int count = -1, rank = -1;
  ULY_CHECK(ulyssesCommCount(comm, &count));
  ULY_CHECK(ulyssesCommUserRank(comm, &rank));
  gChecks++;
  if (count != gRanks || rank != gRank)
    reportFailure("the non-blocking comm says rank %d of %d", rank, count);

  /* One tensor, sequence first; and three tensors of mixed layouts. */
  const int picks[2] = {2, SCENARIO_COUNT - 2};
  for (int i = 0; i < 2; i++)
    for (int capacity = 0; capacity <= 1; capacity++)
      runScenario(picks[i], capacity, comm, "non-blocking NCCL communicator: ");
  checkNoAsyncError(comm);

  setScenario("non-blocking NCCL communicator: teardown");
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ULY_CHECK(ulyssesCommDestroy(comm));
  NCCL_WAIT(split, ncclCommFinalize(split));
  /* Local once finalised; the communicator is gone afterwards, so an
   * ncclInProgress here could not be waited for. */
  ncclResult_t destroyed = ncclCommDestroy(split);
  if (destroyed != ncclSuccess && destroyed != ncclInProgress)
    fatal(__FILE__, __LINE__, "ncclCommDestroy (non-blocking)", ncclGetErrorString(destroyed),
          "NCCL");
  if (gRank == 0)
    printf("rank 0: scenario non-blocking NCCL communicator: done in %.0f ms\n", nowMs() - started);
}

/*------------------------------------------------------------------------
 * Stress: many small exchanges with random lengths (exact and capacity,
 * zeros included) and random shapes (heads, head dim, element size, packed,
 * order, batch, several tensors, kv tensors with queryHeads and a float
 * dataType), seq->head and head->seq interleaved, spread over
 * STRESS_STREAMS streams: iteration i runs on stream i % STRESS_STREAMS with
 * that slot's own buffers, workspace and device length, and is checked (a
 * download on the same stream, then a byte-for-byte comparison with the
 * reference) only when its slot comes round again, so up to STRESS_STREAMS
 * exchanges are in flight at once. One host thread enqueues everything, in
 * the same order on every rank (every random draw is the same on every
 * rank), which is the order NCCL needs.
 *
 * Bounded: the iteration count falls with P, and every STRESS_VOTE_EVERY
 * iterations the ranks all-reduce (max) a vote to stop, cast when a rank has
 * run past the time budget or seen too many failures; the vote keeps them in
 * step.
 *----------------------------------------------------------------------*/
enum {
  STRESS_STREAMS = 3,
  STRESS_VOTE_EVERY = 16,
  STRESS_MAX_LENGTH = 6,
  STRESS_MAX_FAILURES = 20,
  STRESS_ALIGN = 256,
};

static long stressIterations(int nRanks) {
  if (nRanks <= 2) return 400;
  if (nRanks == 3) return 260;
  if (nRanks == 4) return 200;
  return nRanks >= 16 ? 60 : 960 / nRanks; /* 120 for P = 8 */
}

static double stressBudgetMs(int nRanks) { return nRanks > 4 ? 45e3 : 30e3; }

typedef struct {
  cudaStream_t stream;
  unsigned char* device; /* every buffer of one exchange, each with its guards */
  unsigned char* upload; /* pinned: what is uploaded before the exchange */
  unsigned char* actual; /* pinned: what is downloaded after it */
  unsigned char* expect; /* what actual must hold where it is checked */
  size_t capacityBytes, used;
  int64_t* deviceLength; /* capacity mode: this rank's length */
  int64_t* hostLength;   /* pinned */
  int busy;
  long iteration;
  char description[256];
  Case c; /* in place: its shapes point at its lengths */
  ulyssesPlan_t plan;
  DevBuf send[MAX_TENSORS], recv[MAX_TENSORS], ws;
  RowMap outMaps[MAX_TENSORS];
} StressSlot;

typedef struct {
  long iterations, capacity, headToSeq, kv, multi, emptyLengths;
  double bytes; /* of this rank's send and receive buffers, every exchange */
} StressCounts;

static int64_t pick(uint64_t* state, int64_t n) {
  return (int64_t)(refRandom(state) % (uint64_t)n);
}

static ulyssesDataType_t pickFloatType(uint64_t* state) {
  static const ulyssesDataType_t types[3] = {ulyssesTypeFloat32, ulyssesTypeFloat16,
                                             ulyssesTypeBfloat16};
  return types[pick(state, 3)];
}

static int64_t pickHeadDim(uint64_t* state) {
  static const int64_t dims[7] = {1, 2, 3, 4, 5, 8, 16};
  return dims[pick(state, 7)];
}

static ulyssesLayout_t stressPlainLayout(uint64_t* state) {
  static const int64_t sizes[5] = {1, 2, 4, 8, 16};
  ulyssesLayout_t l;
  memset(&l, 0, sizeof l);
  l.size = sizeof l;
  l.batch = 1 + pick(state, 2);
  l.heads = 1 + pick(state, 8);
  l.headDim = pickHeadDim(state);
  l.elementSize = sizes[pick(state, 5)];
  l.packed = pick(state, 3) == 0 ? 3 : 1;
  l.order = pick(state, 2) ? ulyssesOrderSBHD : ulyssesOrderBSHD;
  int typed = pick(state, 2); /* a dataType on a plain tensor changes nothing */
  if (typed && l.elementSize == 4) l.dataType = ulyssesTypeFloat32;
  if (typed && l.elementSize == 2)
    l.dataType = pick(state, 2) ? ulyssesTypeFloat16 : ulyssesTypeBfloat16;
  return l;
}

static const char* typeName(ulyssesDataType_t type) {
  switch (type) {
    case ulyssesTypeFloat32:
      return "fp32";
    case ulyssesTypeFloat16:
      return "fp16";
    case ulyssesTypeBfloat16:
      return "bf16";
    default:
      return "opaque";
  }
}

/* One iteration's plan: layouts, lengths, slots, mode, op and call form,
 * all from the iteration's own random stream. */
typedef struct {
  int nTensors, capacity, useMulti, nullWhenEmpty;
  size_t misalign;
  ulyssesOp_t op;
  ulyssesLayout_t layouts[MAX_TENSORS];
  int64_t lengths[MAX_RANKS], slots[MAX_RANKS];
} StressDraw;

static void stressDraw(uint64_t* state, StressDraw* d, StressCounts* counts) {
  memset(d, 0, sizeof *d);
  int64_t kind = pick(state, 10);
  if (kind < 5) { /* one plain tensor */
    d->nTensors = 1;
    d->layouts[0] = stressPlainLayout(state);
  } else if (kind < 7) { /* two or three plain tensors of their own layouts */
    d->nTensors = 2 + (int)pick(state, 2);
    for (int t = 0; t < d->nTensors; t++) d->layouts[t] = stressPlainLayout(state);
  } else { /* kv tensors: one alone, or q + k + v */
    int64_t kvHeads = 1 + pick(state, 4), queryHeads = kvHeads * (1 + pick(state, 4));
    int64_t batch = 1 + pick(state, 2), headDim = pickHeadDim(state);
    ulyssesOrder_t order = pick(state, 2) ? ulyssesOrderSBHD : ulyssesOrderBSHD;
    ulyssesDataType_t kType = pickFloatType(state), vType = pickFloatType(state);
    if (kind < 8) {
      d->nTensors = 1;
      d->layouts[0] = gqaLayout(batch, kvHeads, headDim, order, queryHeads, kType);
      if (pick(state, 4) == 0) d->layouts[0].packed = 3;
    } else {
      d->nTensors = 3;
      d->layouts[0] = gqaLayout(batch, queryHeads, headDim, order, 0, kType);
      d->layouts[1] = gqaLayout(batch, kvHeads, headDim, order, queryHeads, kType);
      d->layouts[2] = gqaLayout(batch, kvHeads, headDim, order, queryHeads, vType);
    }
    counts->kv++;
  }
  if (d->nTensors > 1) counts->multi++;
  d->capacity = (int)pick(state, 2);
  d->op = pick(state, 2) ? ulyssesOpHeadToSeq : ulyssesOpSeqToHead;
  d->useMulti = d->nTensors == 1 && pick(state, 4) == 0;
  d->nullWhenEmpty = (int)pick(state, 2);
  d->misalign = pick(state, 4) == 0 ? (size_t)(1 + pick(state, 15)) : 0;
  int allEmpty = pick(state, 12) == 0;
  for (int r = 0; r < gRanks; r++) {
    d->lengths[r] = allEmpty || pick(state, 4) == 0 ? 0 : 1 + pick(state, STRESS_MAX_LENGTH);
    d->slots[r] = d->lengths[r] + (d->capacity ? pick(state, 3) : 0);
  }
  counts->iterations++;
  counts->capacity += d->capacity;
  counts->headToSeq += d->op == ulyssesOpHeadToSeq;
  counts->emptyLengths += allEmpty;
}

static void stressDescribe(const StressDraw* d, char* text, size_t size) {
  size_t used = (size_t)snprintf(text, size, "%s %s%s, lengths", d->capacity ? "capacity" : "exact",
                                 opName(d->op), d->useMulti ? " (multi)" : "");
  for (int r = 0; r < gRanks && used < size; r++)
    used += (size_t)snprintf(text + used, size - used, "%s%lld/%lld", r ? "," : " ",
                             (long long)d->lengths[r], (long long)d->slots[r]);
  for (int t = 0; t < d->nTensors && used < size; t++) {
    const ulyssesLayout_t* l = &d->layouts[t];
    used += (size_t)snprintf(text + used, size - used, "; %s b%lld h%lld d%lld e%lld p%d q%lld %s",
                             l->order == ulyssesOrderSBHD ? "sbhd" : "bshd", (long long)l->batch,
                             (long long)l->heads, (long long)l->headDim, (long long)l->elementSize,
                             l->packed, (long long)l->queryHeads, typeName(l->dataType));
  }
  if (d->misalign > 0 && used < size)
    snprintf(text + used, size - used, "; misaligned by %zu", d->misalign);
}

static size_t roundUp(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

static size_t stressFootprint(size_t bytes, size_t before) {
  return roundUp(before + bytes + GUARD_BYTES, STRESS_ALIGN);
}

/* Room for `bytes` in the slot. Only between the slot's exchanges; freeing
 * may wait for the other slots' exchanges, which every rank has enqueued. */
static void stressReserve(StressSlot* s, size_t bytes) {
  if (bytes <= s->capacityBytes) return;
  size_t grown = s->capacityBytes * 2 > bytes ? s->capacityBytes * 2 : bytes;
  if (s->device != NULL) CUDA_CHECK(cudaFree(s->device));
  if (s->upload != NULL) CUDA_CHECK(cudaFreeHost(s->upload));
  if (s->actual != NULL) CUDA_CHECK(cudaFreeHost(s->actual));
  free(s->expect);
  CUDA_CHECK(cudaMalloc((void**)&s->device, grown));
  CUDA_CHECK(cudaHostAlloc((void**)&s->upload, grown, cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc((void**)&s->actual, grown, cudaHostAllocDefault));
  s->expect = xmalloc(grown);
  s->capacityBytes = grown;
}

/* A buffer at the slot's next free place; its image in the upload area. */
static void stressCarve(StressSlot* s, DevBuf* b, size_t bytes, size_t before, int nullWhenEmpty,
                        unsigned fill) {
  size_t offset = s->used;
  b->device = s->device + offset;
  b->image = s->upload + offset;
  b->actual = s->actual + offset;
  b->before = before;
  b->bytes = bytes;
  b->after = GUARD_BYTES;
  memset(b->image, GUARD_BYTE, before);
  memset(b->image + before, (int)fill, bytes);
  memset(b->image + before + bytes, GUARD_BYTE, b->after);
  b->user = bytes == 0 && nullWhenEmpty ? NULL : b->device + before;
  s->used += stressFootprint(bytes, before);
}

/* The expectation of b from here on: the upload image, then the outputs. */
static void stressExpect(StressSlot* s, DevBuf* b) {
  b->image = s->expect + (b->device - s->device);
}

/* Enqueues iteration's exchange on its slot; returns the bytes of this
 * rank's send and receive buffers. */
static double stressStart(StressSlot* s, long iteration, const StressDraw* d, uint64_t dataSeed,
                          ulyssesComm_t comm) {
  s->iteration = iteration;
  stressDescribe(d, s->description, sizeof s->description);
  setScenario("stress %ld: %s", iteration, s->description);
  int T = d->nTensors;
  caseInit(&s->c, T, d->layouts, d->lengths, d->slots, d->capacity);
  s->plan = makePlan(&s->c, d->capacity ? s->deviceLength : NULL);
  size_t sendBytes[MAX_TENSORS], recvBytes[MAX_TENSORS], wsBytes = 0;
  size_t before = GUARD_BYTES + d->misalign, need = 0;
  double moved = 0;
  for (int t = 0; t < T; t++) {
    sendBytes[t] = planBytes(s->plan, &s->c, d->op, t, 1);
    recvBytes[t] = planBytes(s->plan, &s->c, d->op, t, 0);
    moved += (double)sendBytes[t] + (double)recvBytes[t];
    need += stressFootprint(sendBytes[t], before) + stressFootprint(recvBytes[t], before);
  }
  ULY_CHECK(ulyssesGetWorkspaceSize(s->plan, d->op, &wsBytes));
  need += stressFootprint(wsBytes, GUARD_BYTES);
  stressReserve(s, need);
  s->used = 0;
  for (int t = 0; t < T; t++) {
    stressCarve(s, &s->send[t], sendBytes[t], before, d->nullWhenEmpty, 0);
    stressCarve(s, &s->recv[t], recvBytes[t], before, d->nullWhenEmpty, OUTPUT_FILL);
  }
  stressCarve(s, &s->ws, wsBytes, GUARD_BYTES, 1, WORKSPACE_FILL);

  /* Every rank's inputs and the reference's outputs; this rank's input into
   * its image (junk in the padding), its output into the expectation. */
  Side in = inputSide(d->op), out = outputSide(d->op);
  unsigned char** outputs[MAX_TENSORS];
  for (int t = 0; t < T; t++) {
    unsigned char** inputs = allocSide(&s->c, t, in);
    fillSide(&s->c, t, in, inputs, mixSeed(dataSeed, (uint64_t)t));
    outputs[t] = allocSide(&s->c, t, out);
    refExchange(&s->c, t, d->op, inputs, outputs[t]);
    RowMap inMap = caseMap(&s->c, t, in, gRank);
    bufSetInput(&s->send[t], &inMap, inputs[gRank], mixSeed(dataSeed, 100 + (uint64_t)t));
    s->outMaps[t] = caseMap(&s->c, t, out, gRank);
    freePerRank(inputs);
  }
  /* The slot's earlier work has completed: upload, hostLength and expect are free. */
  *s->hostLength = d->lengths[gRank];
  CUDA_CHECK(cudaMemcpyAsync(s->device, s->upload, s->used, cudaMemcpyHostToDevice, s->stream));
  if (d->capacity)
    CUDA_CHECK(cudaMemcpyAsync(s->deviceLength, s->hostLength, sizeof(int64_t),
                               cudaMemcpyHostToDevice, s->stream));
  memcpy(s->expect, s->upload, s->used);
  for (int t = 0; t < T; t++) {
    stressExpect(s, &s->send[t]);
    stressExpect(s, &s->recv[t]);
    bufScatterRows(&s->recv[t], &s->outMaps[t], outputs[t][gRank]);
    freePerRank(outputs[t]);
  }
  stressExpect(s, &s->ws);
  ULY_CHECK(
      enqueueExchangeOn(s->plan, d->op, T, d->useMulti, s->send, s->recv, &s->ws, comm, s->stream));
  CUDA_CHECK(cudaMemcpyAsync(s->actual, s->device, s->used, cudaMemcpyDeviceToHost, s->stream));
  s->busy = 1;
  return moved;
}

static void stressFinish(StressSlot* s) {
  if (!s->busy) return;
  setScenario("stress %ld: %s", s->iteration, s->description);
  CUDA_CHECK(cudaStreamSynchronize(s->stream));
  char label[48];
  snprintf(label, sizeof label, "stress iteration %ld", s->iteration);
  compareCall(label, s->c.nTensors, s->send, s->recv, s->outMaps, &s->ws);
  ULY_CHECK(ulyssesPlanDestroy(s->plan));
  s->plan = NULL;
  s->busy = 0;
}

/* Every rank's vote (1: stop), all-reduced with max on the main communicator,
 * in the same place of every rank's sequence of NCCL calls. */
static int stressVote(ncclComm_t nccl, int* deviceVote, int* hostVote, int mine) {
  *hostVote = mine;
  CUDA_CHECK(cudaMemcpyAsync(deviceVote, hostVote, sizeof(int), cudaMemcpyHostToDevice, gStream));
  NCCL_CHECK(ncclAllReduce(deviceVote, deviceVote, 1, ncclInt32, ncclMax, nccl, gStream));
  CUDA_CHECK(cudaMemcpyAsync(hostVote, deviceVote, sizeof(int), cudaMemcpyDeviceToHost, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  return *hostVote;
}

/* ULYSSES_SOAK_SECONDS=N (1 to SOAK_MAX_SECONDS): the soak, the stress run
 * alone for N seconds with no iteration limit; 0 when unset. */
static int soakSeconds(void) {
  const char* text = getenv("ULYSSES_SOAK_SECONDS");
  if (text == NULL || *text == '\0') return 0;
  char* end;
  long seconds = strtol(text, &end, 10);
  if (*end != '\0' || seconds < 1 || seconds > SOAK_MAX_SECONDS) {
    printf("rank %d: ULYSSES_SOAK_SECONDS=%s: expected 1 to %d\n", gRank, text, SOAK_MAX_SECONDS);
    exit(2);
  }
  return (int)seconds;
}

static void runStressScenario(ncclComm_t nccl, ulyssesComm_t comm) {
  setScenario("stress: set-up");
  double started = nowMs();
  int soak = soakSeconds();
  long iterations = soak ? LONG_MAX : stressIterations(gRanks), failuresBefore = gFailures;
  double budgetMs = soak ? soak * 1e3 : stressBudgetMs(gRanks);
  StressSlot* slots = xmalloc(sizeof(StressSlot) * STRESS_STREAMS);
  memset(slots, 0, sizeof(StressSlot) * STRESS_STREAMS);
  for (int i = 0; i < STRESS_STREAMS; i++) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&slots[i].stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaMalloc((void**)&slots[i].deviceLength, sizeof(int64_t)));
    CUDA_CHECK(cudaHostAlloc((void**)&slots[i].hostLength, sizeof(int64_t), cudaHostAllocDefault));
    stressReserve(&slots[i], (size_t)1 << 20);
  }
  int *deviceVote = NULL, *hostVote = NULL;
  CUDA_CHECK(cudaMalloc((void**)&deviceVote, sizeof(int)));
  CUDA_CHECK(cudaHostAlloc((void**)&hostVote, sizeof(int), cudaHostAllocDefault));

  StressCounts counts;
  memset(&counts, 0, sizeof counts);
  uint64_t seed = mixSeed(4000, (uint64_t)gRanks);
  int stopped = 0;
  long i = 0;
  for (; i < iterations && !stopped; i++) {
    StressSlot* s = &slots[i % STRESS_STREAMS];
    stressFinish(s); /* iteration i - STRESS_STREAMS */
    uint64_t state = mixSeed(seed, (uint64_t)i);
    StressDraw draw;
    stressDraw(&state, &draw, &counts);
    counts.bytes += stressStart(s, i, &draw, mixSeed(seed ^ UINT64_C(0x5bd1e995), (uint64_t)i), comm);
    if ((i + 1) % STRESS_VOTE_EVERY == 0 && i + 1 < iterations) {
      setScenario("stress: vote after iteration %ld", i);
      int mine = nowMs() - started > budgetMs || gFailures - failuresBefore > STRESS_MAX_FAILURES;
      stopped = stressVote(nccl, deviceVote, hostVote, mine);
    }
  }
  for (int k = 0; k < STRESS_STREAMS; k++) stressFinish(&slots[k]);
  double elapsed = nowMs() - started;
  setScenario("stress: teardown");
  checkNoAsyncError(comm);
  for (int k = 0; k < STRESS_STREAMS; k++) {
    CUDA_CHECK(cudaStreamDestroy(slots[k].stream));
    CUDA_CHECK(cudaFree(slots[k].device));
    CUDA_CHECK(cudaFree(slots[k].deviceLength));
    CUDA_CHECK(cudaFreeHost(slots[k].upload));
    CUDA_CHECK(cudaFreeHost(slots[k].actual));
    CUDA_CHECK(cudaFreeHost(slots[k].hostLength));
    free(slots[k].expect);
  }
  free(slots);
  CUDA_CHECK(cudaFree(deviceVote));
  CUDA_CHECK(cudaFreeHost(hostVote));
  if (gRank == 0) {
    printf(
        "rank 0: scenario %s: %ld exchanges (%ld capacity, %ld head->seq, %ld with kv "
        "tensors, %ld multi-tensor, %ld all empty) on %d streams in %.0f ms (%.2f ms each), "
        "%.1f MiB of rank 0's buffers, each result compared with the reference\n",
        soak ? "soak" : "stress", counts.iterations, counts.capacity, counts.headToSeq, counts.kv,
        counts.multi, counts.emptyLengths, STRESS_STREAMS, elapsed,
        counts.iterations ? elapsed / (double)counts.iterations : 0.0, counts.bytes / 1048576.0);
    if (stopped && !soak)
      printf(
          "rank 0: scenario stress: stopped by the ranks' vote after %ld of %ld iterations "
          "(a rank past the %.0f s budget, or past %d failures)\n",
          i, iterations, budgetMs * 1e-3, STRESS_MAX_FAILURES);
  }
}

/*------------------------------------------------------------------------
 * ulyssesCommAbort, last of all: on a communicator of its own (ncclCommSplit
 * of the main one), used once, then aborted on every rank. A later exchange
 * on it is refused with ulyssesErrorInvalidUsage and writes nothing;
 * ulyssesCommDestroy still frees it (NCCL's communicator went with the
 * abort); the main comm still works.
 *----------------------------------------------------------------------*/
static void runAbortScenario(ncclComm_t nccl, ulyssesComm_t mainComm) {
  setScenario("abort: ncclCommSplit");
  double started = nowMs();
  ncclComm_t split = NULL;
  NCCL_CHECK(ncclCommSplit(nccl, 0, gRank, &split, NULL));
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, split, NULL));
  const ulyssesLayout_t layout = LAYOUT(2, 4, 8, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = r % 3 + 1;
  Case c;
  caseInit(&c, 1, &layout, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  uint64_t seed = mixSeed(5000, 0);
  unsigned char** seqIn = allocSide(&c, 0, SIDE_SEQ);
  fillSide(&c, 0, SIDE_SEQ, seqIn, mixSeed(seed, 1));
  unsigned char** toHead = allocSide(&c, 0, SIDE_HEAD);
  refExchange(&c, 0, ulyssesOpSeqToHead, seqIn, toHead);
  RowMap seqMap = caseMap(&c, 0, SIDE_SEQ, gRank), headMap = caseMap(&c, 0, SIDE_HEAD, gRank);
  DevBuf send, recv, ws;
  bufCreate(&send, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
  bufSetInput(&send, &seqMap, seqIn[gRank], mixSeed(seed, 2));
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);

  setScenario("abort: seq->head before the abort");
  runAndCheck(plan, ulyssesOpSeqToHead, "seq->head on the comm to abort", 1, 0, &send, &recv,
              &toHead[gRank], &headMap, comm);
  CUDA_CHECK(cudaStreamSynchronize(gStream));

  setScenario("abort: ulyssesCommAbort");
  ulyssesResult_t aborted = ulyssesCommAbort(comm);
  gChecks++;
  if (aborted != ulyssesSuccess)
    reportFailure("ulyssesCommAbort returned %s (%s)", ulyssesGetErrorString(aborted),
                  ulyssesGetLastError());

  /* The aborted NCCL communicator is freed: not asked again; it had no error. */
  setScenario("abort: ulyssesCommGetAsyncError after the abort");
  ulyssesResult_t afterAbort = ulyssesErrorCudaError;
  ULY_CHECK(ulyssesCommGetAsyncError(comm, &afterAbort));
  gChecks++;
  if (afterAbort != ulyssesSuccess)
    reportFailure("after a clean abort, ulyssesCommGetAsyncError reports %s (%s)",
                  ulyssesGetErrorString(afterAbort), ulyssesGetLastError());

  setScenario("abort: seq->head on the aborted comm");
  memset(recv.image + recv.before, OUTPUT_FILL, recv.bytes);
  workspaceCreate(&ws, plan, ulyssesOpSeqToHead);
  bufUpload(&ws);
  bufUpload(&send);
  bufUpload(&recv);
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ulyssesResult_t refused =
      ulyssesSeqToHead(plan, send.user, recv.user, ws.user, ws.bytes, comm, gStream);
  char message[512];
  snprintf(message, sizeof message, "%s", ulyssesGetLastError());
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  gChecks += 2;
  if (refused != ulyssesErrorInvalidUsage)
    reportFailure("ulyssesSeqToHead on an aborted comm returned %s, not ulyssesErrorInvalidUsage",
                  ulyssesGetErrorString(refused));
  if (refused != ulyssesSuccess && message[0] == '\0')
    reportFailure("ulyssesGetLastError is empty after %s", ulyssesGetErrorString(refused));
  bufCheck(&send, "refused seq->head: sendbuff (an input)", CHECK_ALL);
  bufCheck(&recv, "refused seq->head: recvbuff (must be untouched)", CHECK_ALL);
  bufCheck(&ws, "refused seq->head: workspace (must be untouched)", CHECK_ALL);
  bufFree(&ws);

  setScenario("abort: ulyssesCommDestroy of the aborted comm");
  ulyssesResult_t destroyed = ulyssesCommDestroy(comm);
  gChecks++;
  if (destroyed != ulyssesSuccess)
    reportFailure("ulyssesCommDestroy of an aborted comm returned %s (%s)",
                  ulyssesGetErrorString(destroyed), ulyssesGetLastError());

  setScenario("abort: the main comm afterwards");
  runAndCheck(plan, ulyssesOpSeqToHead, "seq->head on the main comm after the abort", 1, 0, &send,
              &recv, &toHead[gRank], &headMap, mainComm);
  checkNoAsyncError(mainComm);
  bufFree(&send);
  bufFree(&recv);
  freePerRank(seqIn);
  freePerRank(toHead);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (gRank == 0) printf("rank 0: scenario abort: done in %.0f ms\n", nowMs() - started);
}

/*------------------------------------------------------------------------
 * A rank that dies mid-run (--rank-failure): every rank runs seq->head
 * exchanges; before the 20th the last rank exits at once, without NCCL's
 * teardown, as a killed process does (its sockets close). The others must
 * notice through ulyssesCommGetAsyncError while they wait for the exchange
 * it never joined, abort with ulyssesCommAbort and leave within
 * FAILURE_NOTICE_SECONDS: exit 0 when they did, 1 when they saw no error in
 * time (a hang the watchdog could not end).
 *----------------------------------------------------------------------*/
enum { FAILURE_ITERATION = 20 };
static int gRankFailure; /* this rank process runs runRankFailure */

static int runRankFailure(ncclComm_t nccl) {
  setScenario("rank failure: set-up");
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, NULL));
  const ulyssesLayout_t layout = LAYOUT(2, 4, 64, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = 64 + r;
  Case c;
  caseInit(&c, 1, &layout, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  DevBuf send, recv, ws;
  size_t wsBytes = 0;
  ULY_CHECK(ulyssesGetWorkspaceSize(plan, ulyssesOpSeqToHead, &wsBytes));
  bufCreate(&send, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
  bufCreate(&ws, wsBytes, GUARD_BYTES, 1, WORKSPACE_FILL);
  for (int i = 0;; i++) {
    setScenario("rank failure: exchange %d", i);
    if (i == FAILURE_ITERATION && gRank == gRanks - 1) {
      printf("rank %d: exiting without teardown before exchange %d\n", gRank, i);
      fflush(stdout);
      _exit(0);
    }
    ULY_CHECK(enqueueExchangeOn(plan, ulyssesOpSeqToHead, 1, 0, &send, &recv, &ws, comm, gStream));
    /* A watchdog's wait: the stream, or an asynchronous error. */
    double waitStarted = nowMs();
    for (;;) {
      cudaError_t query = cudaStreamQuery(gStream);
      if (query == cudaSuccess) break;
      if (query != cudaErrorNotReady) {
        printf("rank %d: cudaStreamQuery: %s\n", gRank, cudaGetErrorString(query));
        return 1;
      }
      ulyssesResult_t asyncError = ulyssesSuccess;
      ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
      if (asyncError != ulyssesSuccess) {
        printf("rank %d: exchange %d: %s (%s) after %.1f s; aborting\n", gRank, i,
               ulyssesGetErrorString(asyncError), ulyssesGetLastError(),
               (nowMs() - waitStarted) * 1e-3);
        ulyssesResult_t aborted = ulyssesCommAbort(comm);
        printf("rank %d: ulyssesCommAbort: %s\n", gRank, ulyssesGetErrorString(aborted));
        fflush(stdout);
        /* NCCL's communicator went with the abort; the process leaves
         * without waiting for a stream that may hold the cancelled work. */
        _exit(aborted == ulyssesSuccess && i == FAILURE_ITERATION ? 0 : 1);
      }
      if (nowMs() - waitStarted > FAILURE_NOTICE_SECONDS * 1e3) {
        printf("rank %d: exchange %d: no error and no completion after %d s\n", gRank, i,
               FAILURE_NOTICE_SECONDS);
        fflush(stdout);
        ulyssesCommAbort(comm);
        _exit(1);
      }
      usleep(1000);
    }
  }
}

/*------------------------------------------------------------------------
 * Rank mode.
 *----------------------------------------------------------------------*/
static int rankMain(const launcherRank* me) {
  gRank = me->rank;
  gRanks = me->nRanks;
  signal(SIGALRM, onAlarm);
  alarm(RANK_ALARM_SECONDS);
  if (gRanks > MAX_RANKS) {
    printf("rank %d: %d ranks; this test handles at most %d\n", gRank, gRanks, MAX_RANKS);
    return 2;
  }
  double started = nowMs();
  ncclComm_t nccl = NULL;
  if (launcherInitComm(me, &nccl, ID_FILE_TIMEOUT_SECONDS) != 0) return 2;
  if (gRank == 0)
    printf("rank 0: %d rank(s), NCCL communicator ready in %.0f ms\n", gRanks, nowMs() - started);
  CUDA_CHECK(cudaStreamCreateWithFlags(&gStream, cudaStreamNonBlocking));
  if (gRankFailure) return runRankFailure(nccl);

  setScenario("comm");
  int version = 0;
  ULY_CHECK(ulyssesGetVersion(&version));
  if (version != ULYSSES_VERSION_CODE)
    reportFailure("ulyssesGetVersion gives %d, the header %d", version, ULYSSES_VERSION_CODE);
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, NULL));
  int count = -1, rank = -1;
  ULY_CHECK(ulyssesCommCount(comm, &count));
  ULY_CHECK(ulyssesCommUserRank(comm, &rank));
  gChecks++;
  if (count != gRanks || rank != gRank)
    reportFailure("the comm says rank %d of %d", rank, count);
  checkNoAsyncError(comm);

  /* The soak is the stress run alone, for as long as it was asked. */
  int soak = soakSeconds() > 0;
  for (int i = 0; i < SCENARIO_COUNT && !soak; i++)
    for (int capacity = 0; capacity <= 1; capacity++) runScenario(i, capacity, comm, "");
  if (soak) {
    runStressScenario(nccl, comm);
  } else {
    for (int i = 0; i < GQA_SCENARIO_COUNT; i++)
      for (int capacity = 0; capacity <= 1; capacity++) runGqaScenario(i, capacity, comm);
    runGqaOpaqueScenario(comm);
    for (int capacity = 0; capacity <= 1; capacity++) {
      runReplayScenario(REPLAY_GRAPH, capacity, comm);
      runReplayScenario(REPLAY_NO_HIDDEN_SYNC, capacity, comm);
    }
    runPlanCheckScenario(nccl);
    runOnePassRequestedScenario(nccl);
    runCaptureScenario(nccl);
    runNonBlockingScenario(nccl);
    runStressScenario(nccl, comm);
    /* Then those that leave sticky errors (on comms of their own). */
    runBadLengthScenario(0, nccl, comm);
    runBadLengthScenario(1, nccl, comm);
    /* Last of all: the abort. */
    runAbortScenario(nccl, comm);
  }

  /* Graphs are gone already; then our comm, then NCCL's. */
  setScenario("teardown");
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ULY_CHECK(ulyssesCommDestroy(comm));
  CUDA_CHECK(cudaStreamDestroy(gStream));
  NCCL_CHECK(ncclCommDestroy(nccl));
  alarm(0);
  printf("rank %d: %s: %ld checks, %ld failed (%.1f s)\n", gRank, gFailures ? "FAILED" : "passed",
         gChecks, gFailures, (nowMs() - started) * 1e-3);
  fflush(stdout);
  return gFailures ? 1 : 0;
}

/*------------------------------------------------------------------------
 * Parent mode.
 *----------------------------------------------------------------------*/
static char gSelf[PATH_MAX];

/* ULYSSES_TEST_RANKS="1,2" runs only those rank counts (the sanitizer runs
 * on the device take that subset to fit their time), "failure" the
 * rank-failure test; unset, all of them. */
static int testSelected(const char* name) {
  const char* selected = getenv("ULYSSES_TEST_RANKS");
  if (selected == NULL || *selected == '\0') return 1;
  size_t length = strlen(name);
  for (const char* p = selected; *p != '\0';) {
    const char* end = strchr(p, ',');
    size_t itemLength = end == NULL ? strlen(p) : (size_t)(end - p);
    if (itemLength == length && strncmp(p, name, length) == 0) return 1;
    p = end == NULL ? p + itemLength : end + 1;
  }
  return 0;
}

static int ranksSelected(int nRanks) {
  char name[16];
  snprintf(name, sizeof name, "%d", nRanks);
  return testSelected(name);
}

static void runWithRanks(int nRanks) {
  if (!ranksSelected(nRanks)) skip();
  printf("[ gpu      ] %d rank(s)\n", nRanks);
  fflush(stdout);
  assert_int_equal(launcherRun(gSelf, NULL, nRanks, RUN_TIMEOUT_SECONDS), 0);
}

static void testOneRank(void** state) { (void)state; runWithRanks(1); }
static void testTwoRanks(void** state) { (void)state; runWithRanks(2); }
static void testThreeRanks(void** state) { (void)state; runWithRanks(3); }
static void testFourRanks(void** state) { (void)state; runWithRanks(4); }
static void testEightRanks(void** state) { (void)state; runWithRanks(8); }

/* Three ranks, the last of which dies mid-run (runRankFailure); the others
 * exit 0 only if they noticed and aborted in time. */
static void testRankFailure(void** state) {
  (void)state;
  if (!testSelected("failure")) skip();
  printf("[ gpu      ] a rank that dies mid-run, 3 rank(s)\n");
  fflush(stdout);
  const char* const args[] = {"--rank-failure", NULL};
  assert_int_equal(launcherRun(gSelf, args, 3, FAILURE_NOTICE_SECONDS + 60), 0);
}

int main(int argc, char** argv) {
  launcherRank me;
  for (int i = 1; i < argc; i++) gRankFailure |= strcmp(argv[i], "--rank-failure") == 0;
  if (launcherParseRank(argc, argv, &me)) return rankMain(&me);

  int devices = 0;
  cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    printf("no CUDA device: skipping the GPU suite (cudaGetDeviceCount: %s, %d device(s))\n",
           cudaGetErrorName(error), devices);
    return 77; /* Meson's skip code */
  }
  ssize_t n = readlink("/proc/self/exe", gSelf, sizeof gSelf - 1);
  if (n <= 0) {
    snprintf(gSelf, sizeof gSelf, "%s", argv[0]);
  } else {
    gSelf[n] = '\0';
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testOneRank),   cmocka_unit_test(testTwoRanks),
      cmocka_unit_test(testThreeRanks), cmocka_unit_test(testFourRanks),
      cmocka_unit_test(testEightRanks), cmocka_unit_test(testRankFailure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
