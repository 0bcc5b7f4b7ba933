/* The parts of ulysses_perf's driver (common.h): the arguments
 * (driver_args.c), a row's buffers and where its real rows lie in them
 * (driver_rows.c), its timing and the row as a whole (driver_timing.c), its
 * check against the CPU reference (driver_check.c), the table and the JSON
 * lines (driver_report.c) and the ranks' start-up (driver_rank.c). Internal
 * to ulysses_perf. */
#ifndef ULYSSES_BENCH_DRIVER_H_
#define ULYSSES_BENCH_DRIVER_H_

#include <stdio.h>

#include "common.h"
#include "gpu_sharing.h"
#include "rows.h"

/* -c 1 checks a row only when its tensors, gathered over every rank, total at
 * most this: each rank process then builds every rank's input and output on
 * its CPU (about 1 s per 512 MiB). */
#define BENCH_CHECK_MAX_BYTES ((double)((int64_t)1 << 30))
/* The byte every output is set to before the checked call, so that an
 * element the library never wrote is counted as wrong. */
#define BENCH_POISON 0xA5
/* The byte of the padding rows of every input (capacity mode), which the
 * library must never read as data. */
#define BENCH_INPUT_PADDING 0x5A
/* The comms a row runs through: -k 2 times and checks two. */
#define BENCH_MAX_COMMS 2

typedef struct {
  char host[64];
  char busId[32];
  char name[256];
  int32_t pid;
  int32_t device;
} rankInfo;

typedef struct {
  const benchConfig* config;
  int rank;
  int nRanks;
  int device;
  ncclComm_t nccl;
  ulyssesComm_t comm;        /* config.checkPlans = -k, or 0 with -k 2 */
  ulyssesComm_t checkedComm; /* -k 2: a second comm on nccl with config.checkPlans = 1 */
  cudaStream_t stream;
  double* deviceStats; /* a few doubles for the reductions over ranks */
  FILE* json;
  int sharedGpu;
  rankInfo info;
  int ncclVersion;
  int rows;
  int rowsChecked;
  double busBandwidthSum;
  double wrongTotal;
  double checkOverheadSum; /* -k 2: microseconds per call, summed over rows */
  double checkRatioSum;
  double ncclRatioSum;
  int onePassRows;            /* rows whose exchange took one pass */
  const char* lastPathReason; /* rank 0: the reason printed last, NULL before the first row */
  benchLaunchMode launchMode; /* fork, mpi or env */
  /* ncclAlltoAll where the loaded NCCL exports it (2.28 and later), else NULL. */
  ncclResult_t (*ncclAlltoAll)(const void*, void*, size_t, ncclDataType_t, ncclComm_t,
                               cudaStream_t);
} benchContext;

/* The most doubles one allReduce carries: a row's output sizes, one per tensor. */
#define BENCH_STATS ULYSSES_MAX_TENSORS
/* "0000:00:00.0" with room to spare. */
#define BENCH_BUS_ID_BYTES 64


typedef struct {
  int64_t totalLength;
  int64_t maxLength;
  int64_t* lengths;  /* real lengths */
  int64_t* slots;    /* exact: the lengths; capacity: the capacities */
  int nTensors;
  ulyssesLayout_t layouts[ULYSSES_MAX_TENSORS];
  size_t sendBytes[ULYSSES_MAX_TENSORS]; /* buffer sizes, from ulyssesGetBufferSizes */
  size_t recvBytes[ULYSSES_MAX_TENSORS];
  sideRows sendRows[ULYSSES_MAX_TENSORS]; /* where the real rows lie in the buffers */
  sideRows recvRows[ULYSSES_MAX_TENSORS];
  int64_t* deviceLocalLength;
  benchCall call;
  double gatheredBytes; /* every tensor gathered over every rank, real lengths */
  double paddedGatheredBytes; /* the same with every slice padded to maxLength */
  double wireBytes;     /* this rank's receive segments through NCCL */
  int grouped;          /* some tensor has shared kv heads (queryHeads > 0) */
  double expandWireBytes; /* wireBytes with kv tensors expanded to queryHeads heads */
  /* --path onepass: the comm whose ulyssesMemAlloc gave recvbuffs (they go
   * back through ulyssesMemFree on it); NULL: they are from cudaMalloc. */
  ulyssesComm_t symmetricComm;
  ulyssesPath_t path;     /* what ulyssesGetExchangePath says the row's calls take */
  const char* pathReason; /* and why (a static string of the library) */
} benchRow;

/* What runRow reduced over the ranks, for the table and the JSON line. */
typedef struct {
  double bytes;
  double minTime;        /* microseconds per call: the fastest rank's */
  double avgTime;        /* the mean over ranks */
  double slowest;        /* the slowest rank's: the time column */
  double slowestChecked; /* -k 2: the slowest rank's with the plan check on */
  double algbw;
  double busbw;
  double wire;
  double padded;
  double expandWire;
  double ncclTime;  /* the slowest rank's */
  double ncclBytes; /* what one rank sent (all-gather: contributed) in it */
  int checked;
  double wrong;
} rowResult;

/* driver_args.c: 0: parsed; 1: bad arguments (said why); 2: -h printed the help. */
int benchParseArgs(int argc, char** argv, const benchOp* ops, int nOps, benchConfig* config);

/* driver_rows.c */
/* A tensor's shape for the references: kv is the plain shape; queryHeads
 * and type matter only where queryHeads > 0 (shared kv heads). */
refGqaShape benchShapeOf(const ulyssesLayout_t* layout, int nRanks, const int64_t* lengths);
/* The bytes of rank's dense send (isSend) or receive tensor of direction. */
size_t benchSideBytes(ulyssesOp_t direction, int isSend, const refGqaShape* gqaShape, int rank);
/* A dense tensor's data: finite floats of its dataType for shared kv heads
 * (head -> seq sums them), else bytes of a pattern. */
void benchFillDense(const refGqaShape* shape, void* buffer, size_t bytes, uint64_t seed);
/* The seed of rank's tensor: every rank rebuilds every rank's inputs. */
uint64_t benchDataSeed(uint64_t seed, int rank, int tensor);
void* benchHostAlloc(size_t bytes);
int benchDeviceAlloc(void** pointer, size_t bytes);
/* Copies the real rows between a dense host tensor and a device buffer
 * laid out as r says: toDevice scatters dense into buffer, else gathers
 * buffer into dense. On stream, synchronised. */
int benchCopyRealRows(const sideRows* r, unsigned char* dense, unsigned char* buffer, int toDevice,
                      cudaStream_t stream);
/* The row of totalLength: plan, buffers (inputs filled), path. */
int benchSetupRow(benchContext* c, int64_t totalLength, benchRow* row);
/* The row's device buffers and plan; its host arrays stay for the table. */
int benchFreeRowDevice(benchRow* row);
void benchFreeRowHost(benchRow* row);

/* driver_timing.c */
/* values[0..count) reduced over every rank with op, in place. Synchronises. */
int benchAllReduce(benchContext* c, double* values, int count, ncclRedOp_t op);
int benchBarrier(benchContext* c);
/* One row: set up, timed through each comm, checked, NCCL's baseline timed,
 * reduced over the ranks, printed by rank 0. */
int benchRunRow(benchContext* c, int64_t totalLength);

/* driver_check.c */
/* One more call through each of comms[0..nComms), every output against the
 * CPU reference; *wrong gets the elements that differ. */
int benchCheckRow(benchContext* c, benchRow* row, const ulyssesComm_t* comms, int nComms,
                  double* wrong);
/* Whether an exchange through comm failed on the device. */
int benchCheckAsyncError(ulyssesComm_t comm, int64_t totalLength);

/* driver_report.c */
const char* benchPathName(ulyssesPath_t path);
/* How ranks sharing a GPU talk: what the launcher (tests/gpu/launcher.c, or
 * benchLaunchShareGpu) chose, from the loaded NCCL and the environment it
 * left. */
gpuSharingMode benchSharingMode(const benchContext* c);
const char* benchNcclBaselineName(const benchContext* c);
/* The header lines and the table's column names (rank 0 prints them). */
int benchPrintHeader(benchContext* c);
/* Rank 0: the row's line of the table (and a note where its path changes),
 * and its JSON line with -j. */
void benchPrintRow(benchContext* c, const benchRow* row, const rowResult* r);
/* Rank 0: the lines after the table. */
void benchPrintSummary(const benchContext* c);

#endif /* ULYSSES_BENCH_DRIVER_H_ */
