/* The shared driver of ulysses_perf, after nccl-tests: argument parsing, the
 * rank processes, buffers, timing with CUDA events, checking against the CPU
 * reference and the table (driver.h names its parts). Each operation is one
 * entry of the table in ops.c that only says which tensors it moves, the
 * bytes it is credited with, its CPU reference and the one library call it
 * times. */
#ifndef ULYSSES_BENCH_COMMON_H_
#define ULYSSES_BENCH_COMMON_H_

#include <stdint.h>

#include "launch.h"
#include "reference.h"
#include "reference_gqa.h"
#include "ulysses.h"
#include "util.h"

struct benchOp;

typedef enum {
  BENCH_LENGTHS_EQUAL,  /* Ltot / P each */
  BENCH_LENGTHS_SKEW,   /* L_r proportional to r + 1 */
  BENCH_LENGTHS_RANDOM, /* L_r proportional to a weight in [1, 1000] drawn from the seed */
  BENCH_LENGTHS_ONE     /* rank 0 holds half of Ltot, the others share the rest */
} benchPattern;

typedef struct {
  int nRanks;                 /* -p; 0 until the parent counts the GPUs */
  int64_t minLength;          /* -b: total sequence length, all ranks together */
  int64_t maxLength;          /* -e */
  int64_t stepFactor;         /* -f */
  int64_t batch;              /* -B */
  int64_t heads;              /* -H */
  int64_t headDim;            /* -D */
  int64_t kvHeads;            /* -G: multi, gqa, gqa_bwd; 0 until defaulted to max(1, H / 4) */
  const char* typeName;       /* -d */
  int elementSize;
  const struct benchOp* op;   /* -o */
  int capacityMode;           /* -m */
  benchPattern pattern;       /* -l */
  uint64_t seed;              /* -s */
  int sbhd;                   /* -O */
  int64_t iterations;         /* -n */
  int64_t warmups;            /* -w */
  int check;                  /* -c */
  int checkPlans;             /* -k: 0 off, 1 on (config.checkPlans), 2 both, timed apart */
  const char* jsonPath;       /* -j */
  int64_t timeoutSeconds;     /* -T */
  benchLaunchMode launchMode; /* -L */
  int onePass;                /* --path: 0 staged (cudaMalloc outputs), 1 onepass */
} benchConfig;

/* Everything one timed library call needs. */
typedef struct {
  ulyssesPlan_t plan;
  int nTensors;
  const void* sendbuffs[ULYSSES_MAX_TENSORS];
  void* recvbuffs[ULYSSES_MAX_TENSORS];
  void* workspace;
  size_t workspaceSize;
  ulyssesComm_t comm;
  cudaStream_t stream;
} benchCall;

typedef void (*benchReference)(const refShape* shape, const void* const* inputs,
                               void* const* outputs);

typedef struct benchOp {
  const char* name;    /* the -o value */
  const char* summary; /* one line for -h */
  ulyssesOp_t direction;
  /* Fills layouts[] (at most ULYSSES_MAX_TENSORS) and returns their count. */
  int (*layouts)(const benchConfig* config, ulyssesLayout_t* layouts);
  /* The bytes one rank is credited with (the "size" column, algbw's
   * numerator), from the bytes of every tensor gathered over all ranks
   * (B * Ltot * packed * H * D * E, summed over tensors). */
  double (*bytes)(double gatheredBytes, int nRanks);
  /* The CPU reference of one tensor, for P simulated ranks. A tensor whose
   * layout has queryHeads > 0 (the kv heads of grouped-query attention) is
   * checked against refGqaSeqToHead or refGqaHeadToSeq instead, by direction,
   * and filled with finite floats of its dataType (refFillFloats). */
  benchReference reference;
  /* The library call that is timed. */
  ulyssesResult_t (*run)(const benchCall* call);
  int usesKvHeads; /* its layouts read -G */
} benchOp;

/* The ops (ops.c), in -h's order; the first is -o's default. */
extern const benchOp benchOps[];
extern const int benchOpCount;

/* A layout of the configuration's batch, head dim, element size and order. */
ulyssesLayout_t benchLayout(const benchConfig* config, int64_t heads, int packed);

/* Whether op reads -G (multi, gqa, gqa_bwd). */
int benchUsesKvHeads(const benchOp* op);

/* The library's data type of a -d name: bf16, fp16 (half) and fp32 (float)
 * are the float types the head -> seq sum of shared kv heads reads;
 * ulyssesTypeOpaque for every other name. */
ulyssesDataType_t benchDataType(const char* typeName);

/* The all-to-all ops are credited with the mean rank's sequence-side tensor
 * (gathered / P): every rank's send buffer when the lengths are equal, as
 * nccl-tests credits its all-to-all. */
double benchAllToAllBytes(double gatheredBytes, int nRanks);
/* The all-gather is credited with the gathered tensor, as nccl-tests credits
 * its all-gather with its receive buffer. */
double benchAllGatherBytes(double gatheredBytes, int nRanks);

/* Splits totalLength over nRanks by pattern; the same on every rank. 0 on
 * success. */
int benchLengths(benchPattern pattern, uint64_t seed, int64_t totalLength, int nRanks,
                 int64_t* lengths);

/* ulysses_perf's main: as the parent, starts the ranks; as a rank, runs the
 * sweep. ops[0..nOps): the -o choices. */
int benchMain(int argc, char** argv, const benchOp* ops, int nOps);

#endif /* ULYSSES_BENCH_COMMON_H_ */
