/* What both bench binaries share: the checking macros, the GPU check, number
 * and data-type parsing, and small output helpers. */
#ifndef ULYSSES_BENCH_UTIL_H_
#define ULYSSES_BENCH_UTIL_H_

#include <stdint.h>
#include <stdio.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "ulysses.h"

/* The exit status of a binary started on a machine without a GPU. */
#define BENCH_EXIT_NO_GPU 2

/* The rank that prefixes error messages; -1 in a single process or the parent. */
extern int benchRank;

void benchReportCuda(cudaError_t error, const char* call, const char* file, int line);
void benchReportNccl(ncclResult_t result, const char* call, const char* file, int line);
void benchReportUlysses(ulyssesResult_t result, const char* call, const char* file, int line);
void benchReportFailure(const char* file, int line, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

/* Every call goes through one of these: on failure they print file:line, the
 * call and the library's own message, and return 1 from the enclosing
 * function (which returns int, 0 meaning success). */
#define CUDACHECK(call)                                                  \
  do {                                                                   \
    cudaError_t benchCudaError_ = (call);                                \
    if (benchCudaError_ != cudaSuccess) {                                \
      benchReportCuda(benchCudaError_, #call, __FILE__, __LINE__);       \
      return 1;                                                          \
    }                                                                    \
  } while (0)

#define NCCLCHECK(call)                                                  \
  do {                                                                   \
    ncclResult_t benchNcclResult_ = (call);                              \
    if (benchNcclResult_ != ncclSuccess) {                               \
      benchReportNccl(benchNcclResult_, #call, __FILE__, __LINE__);      \
      return 1;                                                          \
    }                                                                    \
  } while (0)

#define ULYSSESCHECK(call)                                               \
  do {                                                                   \
    ulyssesResult_t benchUlyssesResult_ = (call);                        \
    if (benchUlyssesResult_ != ulyssesSuccess) {                         \
      benchReportUlysses(benchUlyssesResult_, #call, __FILE__, __LINE__);\
      return 1;                                                          \
    }                                                                    \
  } while (0)

/* A bench function that already printed why it failed. */
#define BENCHCHECK(call)          \
  do {                            \
    if ((call) != 0) return 1;    \
  } while (0)

/* A host allocation that must succeed. */
#define HOSTCHECK(pointer)                                                         \
  do {                                                                             \
    if ((pointer) == NULL) {                                                       \
      benchReportFailure(__FILE__, __LINE__, "out of host memory (%s)", #pointer); \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

/* The number of CUDA devices; 0 after printing "<program>: no CUDA device
 * found; the benchmark needs a GPU" (and the CUDA error, if any) to stderr. */
int benchCountGpus(const char* program);

/* A command line as nccl-tests takes it: flags of one letter, each with a
 * value (-X VALUE or -XVALUE), and -h. benchIsHelp: whether arg is -h, the
 * caller's to answer. benchFlagValue: the value of flag argv[*i] (*i moved
 * past a separate value), or NULL after printing why: argv[*i] is not a flag,
 * or it lacks its value. */
int benchIsHelp(const char* arg);
const char* benchFlagValue(int argc, char** argv, int* i);

/* "64", "1K", "32k", "2M", "1G" (powers of 1024) into *value >= 0; 0 on
 * success, 1 when text is not such a number. */
int benchParseSize(const char* text, int64_t* value);
/* 1, after saying so, when the sweep's -e is below its -b. */
int benchCheckSweep(const char* program, int64_t minLength, int64_t maxLength);
/* A plain decimal integer in [min, max]; 0 on success. */
int benchParseInt(const char* text, int64_t min, int64_t max, int64_t* value);
/* A comma-separated list of at most maxValues integers in [min, max]; returns
 * the count, or 0 when text is malformed. */
int benchParseIntList(const char* text, int64_t min, int64_t max, int64_t* values, int maxValues);

/* The element size of a data type name (bf16, fp16, fp32, int8, ...); 0 when
 * unknown. The library moves elements as opaque bytes: only the size matters. */
int benchTypeSize(const char* name);
/* The names benchTypeSize knows, for help texts. */
extern const char benchTypeNames[];

/* The elements of elementSize bytes in which got and expected (bytes long)
 * differ: what the benches' -c checks report. */
double benchCountWrong(const unsigned char* got, const unsigned char* expected, size_t bytes,
                       int elementSize);
/* A byte count for humans: "512 B", "64.0 KiB", "1.50 GiB". */
const char* benchFormatBytes(double bytes, char* text, size_t capacity);
/* Writes text as a JSON string literal, quotes included. */
void benchJsonString(FILE* file, const char* text);
/* "2.28.9" from 22809 (or 2.18.3 from 2183 before NCCL 2.9's new code). */
void benchNcclVersionText(int code, char* text, size_t capacity);
/* "13.0" from 13000. */
void benchCudaVersionText(int code, char* text, size_t capacity);

/*------------------------------------------------------------------------
 * One GPU of a single-process bench (kernel_perf, one_pass_perf): its
 * stream, the buffer that flushes L2 before every timed call, and the JSON
 * lines file.
 *----------------------------------------------------------------------*/
typedef struct {
  int64_t index; /* -g */
  struct cudaDeviceProp properties;
  char name[256];
  char driverText[16], runtimeText[16]; /* the CUDA driver and runtime versions */
  cudaStream_t stream;
  void* flush;
  size_t flushBytes; /* -F MiB, at least four times L2 */
  FILE* json;        /* -j, or NULL */
} benchDevice;

/* Opens device index with a flush buffer of flushMiB (at least 4 x L2) and
 * jsonPath for writing (NULL: none); 1 after saying why it could not. */
int benchOpenDevice(benchDevice* device, int64_t index, int64_t flushMiB, const char* jsonPath);
int benchCloseDevice(benchDevice* device);
/* The header line "# GPU i: name, SMs, L2; flush". */
void benchPrintDevice(const benchDevice* device);

/* A call timed against cudaMemcpyAsync of `bytes` from source to destination
 * on the device's stream: warmups of both, then iterations of the copy and
 * the call, interleaved, each after its own L2 flush and between its own pair
 * of events. run(call, stream) enqueues the call (0 on success). */
typedef struct {
  int (*run)(const void* call, cudaStream_t stream);
  const void* call;
  void* destination;
  const void* source;
  size_t bytes;
  int64_t iterations, warmups;
} benchTimedCall;

/* Each iteration's milliseconds of the call and of the copy (iterations
 * entries each). */
int benchTimeCall(const benchDevice* device, const benchTimedCall* timed, double* callMs,
                  double* copyMs);

#endif /* ULYSSES_BENCH_UTIL_H_ */
