/* The GPU suite's shared parts: the rank's state and its failure reports
 * (suite_buffers.c), device buffers with guard bytes and where the real rows
 * lie in them (suite_buffers.c), the cases, the reference and one checked
 * exchange (suite_exchange.c), and the scenario registry that the driver
 * (suite_driver.c) runs by group or by name. Each scenarios_*.c file holds
 * one group and adds its scenarios to the registry.
 *
 * A rank generates every rank's inputs from a seed, runs the reference for
 * all ranks and compares its own outputs. A wrong byte prints one line and
 * the rank goes on (so the peers are not left waiting in NCCL); a failed API
 * call prints one line and ends the rank at once (the launcher then ends the
 * others).
 *
 * The reference works on dense tensors (the real rows only). In capacity
 * mode every buffer has capacity rows: a rank's input is the dense reference
 * input scattered into that layout (junk in the padding rows), and only an
 * output's real rows are compared with the dense reference output; its
 * padding rows are scratch that the library may overwrite. Inputs must come
 * back unchanged, padding included, and the guard bytes around every buffer
 * intact. */
#ifndef ULYSSES_TESTS_GPU_SUITE_H_
#define ULYSSES_TESTS_GPU_SUITE_H_

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "reference.h"
#include "reference_gqa.h"
#include "rows.h"
#include "ulysses.h"

enum {
  MAX_RANKS = 64,
  MAX_TENSORS = 3,
  GUARD_BYTES = 256, /* before and after every buffer: keeps the user pointer 256-aligned */
  SOAK_MAX_SECONDS = 240, /* a soak per rank count, inside the rank's alarm with set-up */
  FAILURE_RANKS = 3,      /* the rank-failure test's ranks, the last of which dies */
  FAILURE_NOTICE_SECONDS = 60, /* how long its survivors may take to notice */
};

#define GUARD_BYTE 0xC3u     /* around every buffer */
#define OUTPUT_FILL 0x5Eu    /* an output before the call */
#define WORKSPACE_FILL 0x77u /* the workspace before the call */

/*------------------------------------------------------------------------
 * The rank's state, failure reports and the checking macros.
 *----------------------------------------------------------------------*/
extern int gRank;
extern int gRanks;
extern long gChecks;
extern long gFailures;
extern char gScenario[256];
extern cudaStream_t gStream;

void setScenario(const char* format, ...) __attribute__((format(printf, 1, 2)));
/* One failed check: one line, and the rank goes on. */
void reportFailure(const char* format, ...) __attribute__((format(printf, 1, 2)));
/* A failed call: the rank cannot go on. No clean-up (it could hang in NCCL). */
void fatal(const char* file, int line, const char* call, const char* error, const char* detail)
    __attribute__((noreturn));
void* xmalloc(size_t bytes);
double nowMs(void);
uint64_t mixSeed(uint64_t a, uint64_t b);

#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    cudaError_t cudaCheck_ = (call);                                                  \
    if (cudaCheck_ != cudaSuccess)                                                    \
      fatal(__FILE__, __LINE__, #call, cudaGetErrorName(cudaCheck_),                 \
            cudaGetErrorString(cudaCheck_));                                          \
  } while (0)

#define NCCL_CHECK(call)                                                              \
  do {                                                                                \
    ncclResult_t ncclCheck_ = (call);                                                 \
    if (ncclCheck_ != ncclSuccess)                                                    \
      fatal(__FILE__, __LINE__, #call, ncclGetErrorString(ncclCheck_), "NCCL");      \
  } while (0)

#define ULY_CHECK(call)                                                               \
  do {                                                                                \
    ulyssesResult_t ulyCheck_ = (call);                                               \
    if (ulyCheck_ != ulyssesSuccess)                                                  \
      fatal(__FILE__, __LINE__, #call, ulyssesGetErrorString(ulyCheck_), "ulysses"); \
  } while (0)

/* Host waits for a non-blocking NCCL communicator: a call that returns
 * ncclInProgress has finished when ncclCommGetAsyncError stops saying so. */
void ncclWaitDone(ncclComm_t comm, ncclResult_t result, const char* what, int line);
#define NCCL_WAIT(comm, call) ncclWaitDone((comm), (call), #call, __LINE__)

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

size_t bufTotal(const DevBuf* b);
void bufCreate(DevBuf* b, size_t bytes, size_t before, int nullWhenEmpty, unsigned fill);
void bufFree(DevBuf* b);
void bufUpload(const DevBuf* b);
void bufDownload(DevBuf* b);
/* Takes what the device holds as the expectation (an output used as the
 * next call's input). */
void bufAdopt(DevBuf* b);

enum { CHECK_GUARDS = 0, CHECK_ALL = 1 };

/* An input (CHECK_ALL: every byte, padding and guards, as uploaded) or the
 * workspace (CHECK_GUARDS: its contents are the library's), as last
 * downloaded; bufCheck downloads first. Return 1 when they agree. */
int bufCompare(const DevBuf* b, const char* what, int mode);
int bufCheck(DevBuf* b, const char* what, int mode);

/* Where the real rows of a dense reference tensor live in a buffer of the
 * plan's layout: rows.h's sideRows. */
/* Writes the dense rows into their places in the image's user bytes. */
void bufScatterRows(DevBuf* b, const sideRows* m, const unsigned char* dense);
/* An input's image: junk everywhere (a kernel reading padding as data shows
 * in its output), then the dense rows in their places. */
void bufSetInput(DevBuf* b, const sideRows* m, const unsigned char* dense, uint64_t junkSeed);
/* An output after the call, as last downloaded: its guards intact and its
 * real rows equal to the image's (set with bufScatterRows); its padding rows
 * are scratch. */
int bufCompareOutput(const DevBuf* b, const char* what, const sideRows* m);

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
  int isGqa[MAX_TENSORS];       /* layouts[t].queryHeads > 0: a kv tensor */
  refGqaShape gqa[MAX_TENSORS]; /* its reference shape (kv = shapes[t]) */
} Case;

void caseInit(Case* c, int nTensors, const ulyssesLayout_t* layouts, const int64_t* lengths,
              const int64_t* slots, int capacity);

typedef enum { SIDE_SEQ = 0, SIDE_HEAD = 1, SIDE_GATHER = 2 } Side;

Side inputSide(ulyssesOp_t op);
Side outputSide(ulyssesOp_t op);
/* Tensor t's rows on one side of rank `rank`, for the case's current lengths. */
sideRows caseMap(const Case* c, int t, Side side, int rank);
/* The bytes of tensor t's sendbuff (isSend) or recvbuff for op, from
 * ulyssesGetBufferSizes, which must agree with the layout's own count; a
 * disagreement ends the rank, as the buffers could not be built. */
size_t planBytes(ulyssesPlan_t plan, const Case* c, ulyssesOp_t op, int t, int isSend);
ulyssesPlan_t makePlan(const Case* c, const int64_t* deviceLength);
int64_t* deviceLengthCreate(int64_t value);
/* Enqueued on the stream (a graph replay reads it when it runs). */
void deviceLengthSet(int64_t* deviceLength, int64_t value);

typedef enum {
  LENGTHS_EQUAL,    /* base on every rank */
  LENGTHS_SKEWED,   /* (r + 1) * base */
  LENGTHS_SOMEZERO, /* 0 on odd ranks, base + r on even ones */
  LENGTHS_ONEZERO,  /* 0 on rank 0 only, base + r elsewhere */
  LENGTHS_ALLZERO   /* 0 everywhere */
} LengthPattern;

void makeLengths(LengthPattern pattern, int64_t base, int64_t* lengths);

#define BSHD ulyssesOrderBSHD
#define SBHD ulyssesOrderSBHD
/* {batch, heads, headDim, elementSize, packed, order} */
#define LAYOUT(b, h, d, e, p, o)                                                        \
  {.size = sizeof(ulyssesLayout_t), .batch = (b), .heads = (h), .headDim = (d),        \
   .elementSize = (e), .packed = (p), .order = (o)}

/* A kv tensor (queryHeads > 0) or, with queryHeads 0, a plain one with a
 * float dataType. */
ulyssesLayout_t gqaLayout(int64_t batch, int64_t heads, int64_t headDim, ulyssesOrder_t order,
                          int64_t queryHeads, ulyssesDataType_t type);
const char* opName(ulyssesOp_t op);

/*------------------------------------------------------------------------
 * The reference, per tensor: plain tensors through reference.h, kv tensors
 * through reference_gqa.h. Each buffer of a side holds the dense (real-row)
 * tensor of one rank.
 *----------------------------------------------------------------------*/
unsigned char** allocSide(const Case* c, int t, Side side);
/* Opaque bytes for an opaque tensor; finite floats of its type for a tensor
 * with a dataType (head->seq of a kv tensor may sum them). */
void fillSide(const Case* c, int t, Side side, unsigned char** buffers, uint64_t seed);
/* The reference op of tensor t, for every rank. */
void refExchange(const Case* c, int t, ulyssesOp_t op, unsigned char* const* in,
                 unsigned char* const* out);
void freePerRank(unsigned char** buffers);

/*------------------------------------------------------------------------
 * Running and checking exchanges.
 *----------------------------------------------------------------------*/
void workspaceCreate(DevBuf* ws, ulyssesPlan_t plan, ulyssesOp_t op);
/* One exchange of a scenario: the plan, the op, its tensors' buffers and the
 * workspace; useMulti: through ulyssesExchangeMulti even for one tensor. */
typedef struct {
  ulyssesPlan_t plan;
  ulyssesOp_t op;
  int nTensors;
  int useMulti;
  DevBuf* send;
  DevBuf* recv;
  DevBuf* ws;
} ExchangeCall;
/* Enqueues call on stream: through ulyssesExchangeMulti when useMulti or
 * several tensors, else the op's own entry point. */
ulyssesResult_t enqueueExchangeOn(const ExchangeCall* call, ulyssesComm_t comm,
                                  cudaStream_t stream);
/* Checks every buffer of a finished call, as last downloaded: inputs
 * unchanged (padding and guards included), outputs equal to the expectation
 * in their real rows and intact in their guards, the workspace's guards
 * intact. checkCall downloads them first. */
void compareCall(const char* label, int nTensors, const DevBuf* send, const DevBuf* recv,
                 const sideRows* outMaps, const DevBuf* ws);
void checkCall(const char* label, int nTensors, DevBuf* send, DevBuf* recv, const sideRows* outMaps,
               DevBuf* ws);
/* Uploads the buffers, sets the outputs' expectation (the dense rows
 * `expected`, placed by outMaps), runs call (with a workspace of its own,
 * whatever call.ws says) on gStream, waits for it and checks everything. */
void runAndCheck(ExchangeCall call, const char* label, unsigned char* const* expected,
                 const sideRows* outMaps, ulyssesComm_t comm);
void checkNoAsyncError(ulyssesComm_t comm);

/* How a call's user buffers are made. */
typedef struct {
  size_t before;     /* bytes before every user buffer: GUARD_BYTES plus a misalignment */
  int nullWhenEmpty; /* zero-byte buffers passed as NULL */
} BufferStyle;

/* One exchange of every tensor of a case: every rank's dense inputs of op's
 * input side, the reference's outputs, and this rank's buffers (the input
 * with its rows in place and junk in its padding, the output filled with
 * OUTPUT_FILL). */
typedef struct {
  int nTensors;
  ulyssesOp_t op;
  unsigned char** inputs[MAX_TENSORS];  /* every rank's dense input */
  unsigned char** outputs[MAX_TENSORS]; /* every rank's reference output */
  DevBuf send[MAX_TENSORS], recv[MAX_TENSORS];
  sideRows outMaps[MAX_TENSORS];
} Exchange;

/* Allocates every side, fills the inputs from seed, runs the reference and
 * creates this rank's buffers. */
void exchangePrepare(Exchange* x, const Case* c, ulyssesPlan_t plan, ulyssesOp_t op,
                     const BufferStyle* style, uint64_t seed);
/* Runs it on comm with the outputs back at their fill, and checks it
 * (runAndCheck). May run again, on another comm. */
void exchangeRun(Exchange* x, ulyssesPlan_t plan, const char* label, int useMulti,
                 ulyssesComm_t comm);
/* Calls it on comm expecting a refusal before anything is enqueued: every
 * buffer, the workspace included, must hold what was uploaded. Returns the
 * call's result; message gets ulyssesGetLastError's text. */
ulyssesResult_t exchangeRefused(Exchange* x, ulyssesPlan_t plan, const char* label,
                                ulyssesComm_t comm, char* message, size_t messageSize);
void exchangeFree(Exchange* x);
/* Prepare, run (through the op's own entry point for one tensor) and free:
 * one checked exchange. */
void exchangeChecked(const Case* c, ulyssesPlan_t plan, ulyssesOp_t op, const char* label,
                     const BufferStyle* style, uint64_t seed, ulyssesComm_t comm);

/* One case in one mode: seq->head, the round trip back, head->seq from
 * independent data, and (doGather) the all-gather, each checked against the
 * reference. */
void runCase(const Case* c, ulyssesPlan_t plan, uint64_t seed, const BufferStyle* style,
             int useMulti, int doGather, ulyssesComm_t comm);

/*------------------------------------------------------------------------
 * The scenario registry. A scenario belongs to one group (one Meson test)
 * and has a name that selects it alone (ULYSSES_TEST_SCENARIOS).
 *----------------------------------------------------------------------*/
typedef struct {
  ncclComm_t nccl;     /* the rank's NCCL communicator */
  ulyssesComm_t comm;  /* the main comm on it */
} Suite;

typedef void (*ScenarioFunction)(const Suite* suite, int argument);

enum { MAX_SCENARIOS = 128, SCENARIO_NAME_BYTES = 48 };

typedef struct {
  const char* group;
  char name[SCENARIO_NAME_BYTES];
  ScenarioFunction run;
  int argument;
  int ownRanks; /* 0: runs at every rank count of the table; else alone, with this many */
} ScenarioEntry;

typedef struct {
  ScenarioEntry entries[MAX_SCENARIOS];
  int count;
} ScenarioList;

void scenarioAdd(ScenarioList* list, const char* group, ScenarioFunction run, int argument,
                 int ownRanks, const char* nameFormat, ...) __attribute__((format(printf, 6, 7)));

/* Each group's scenarios, in the order they run. */
void addExchangeScenarios(ScenarioList* list);
void addGraphScenarios(ScenarioList* list);
void addErrorScenarios(ScenarioList* list);
void addOnePassScenarios(ScenarioList* list);
void addStressScenarios(ScenarioList* list);

/* ULYSSES_SOAK_SECONDS=N (1 to SOAK_MAX_SECONDS): the soak, the stress run
 * alone for N seconds with no iteration limit; 0 when unset. */
int soakSeconds(void);

#endif /* ULYSSES_TESTS_GPU_SUITE_H_ */
