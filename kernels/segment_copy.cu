/* Pack and unpack: one launch moves every tensor of a call, each group of
 * args.runLanes lanes one chunk of consecutive runs (a run: a contiguous block
 * of heads of one row) at a time. */
#include <atomic>

#include "ulysses_launch.h"

#define MAX_DEVICES 64
/* Blocks per multiprocessor the register budget must allow, and resident
 * waves per launch (tuning knobs, measured by bench/kernel_perf). */
#ifndef ULYSSES_COPY_MIN_BLOCKS
#define ULYSSES_COPY_MIN_BLOCKS 2
#endif
#ifndef ULYSSES_COPY_WAVES
#define ULYSSES_COPY_WAVES 1
#endif
#if ULYSSES_COPY_MIN_BLOCKS < 1 || ULYSSES_COPY_WAVES < 1
#error "ULYSSES_COPY_MIN_BLOCKS and ULYSSES_COPY_WAVES must be at least 1"
#endif

/* One instantiation per word size and per presence of a head sum: the
 * launch's word size (args.launchWordBytes; 0: each tensor its own) and
 * args.launchSums, chosen on the host (src/launch_policy.c), are constants
 * inside, so neither the copy loops of the other sizes nor, in a launch
 * without one, the head sum are compiled in (nor take registers). The work
 * split (ulyssesCopyBlockThread): grid row blockIdx.y is tensor blockIdx.y,
 * its first gridBlocks blocks run a grid-stride loop over the tensor's
 * chunks, each group of runLanes lanes one chunk of consecutive runs at a
 * time (ulysses_index.h says how the chunk length and group size are
 * chosen). Where the tensors' words differ, each row switches once on its
 * tensor's word to the constant-word code, around the whole row's loop:
 * no copy or sum loop runs with a run-time word. A switch around each chunk
 * instead keeps the row loop's state live across five copies of the copy
 * and spills (bench/RESULTS.md, "SASS of the run-time-word kernels"). */
template <int WordBytes, int Sums>
static __global__ void __launch_bounds__(ULYSSES_COPY_THREADS, ULYSSES_COPY_MIN_BLOCKS)
    segmentCopyKernel(const __grid_constant__ ulyssesCopyArgs args) {
  int t = blockIdx.y;
  switch (WordBytes != 0 ? WordBytes : args.tensors[t].wordBytes) {
    case 16: ulyssesCopyBlockThread(&args, t, blockIdx.x, threadIdx.x, 16, Sums); break;
    case 8: ulyssesCopyBlockThread(&args, t, blockIdx.x, threadIdx.x, 8, Sums); break;
    case 4: ulyssesCopyBlockThread(&args, t, blockIdx.x, threadIdx.x, 4, Sums); break;
    case 2: ulyssesCopyBlockThread(&args, t, blockIdx.x, threadIdx.x, 2, Sums); break;
    default: ulyssesCopyBlockThread(&args, t, blockIdx.x, threadIdx.x, 1, Sums);
  }
}

/* Blocks of the copy kernel that the current device holds at once: one full
 * wave. A larger grid only adds a tail; the grid-stride loop covers the rest.
 * Looked up once per device. */
template <int WordBytes, int Sums>
static cudaError_t residentBlocks(int* blocks) {
  static std::atomic<int> cached[MAX_DEVICES];
  int device;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  if (device < MAX_DEVICES && (*blocks = cached[device].load(std::memory_order_relaxed)) > 0)
    return cudaSuccess;
  int multiprocessors = 0, perMultiprocessor = 0;
  error = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (error == cudaSuccess)
    error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &perMultiprocessor, segmentCopyKernel<WordBytes, Sums>, ULYSSES_COPY_THREADS, 0);
  if (error != cudaSuccess) return error;
  *blocks = ULYSSES_COPY_WAVES * multiprocessors * (perMultiprocessor > 0 ? perMultiprocessor : 1);
  if (device < MAX_DEVICES) cached[device].store(*blocks, std::memory_order_relaxed);
  return cudaSuccess;
}

/* The grid: one row per tensor, as long as the longest row's gridBlocks. */
template <int WordBytes, int Sums>
static cudaError_t launchCopy(const ulyssesCopyArgs* args, cudaStream_t stream) {
  int64_t blocks = 0;
  for (int t = 0; t < args->nTensors; t++)
    if (args->tensors[t].gridBlocks > blocks) blocks = args->tensors[t].gridBlocks;
  dim3 grid((unsigned)blocks, (unsigned)args->nTensors);
  segmentCopyKernel<WordBytes, Sums><<<grid, ULYSSES_COPY_THREADS, 0, stream>>>(*args);
  return cudaGetLastError();
}

template <int WordBytes>
static cudaError_t launchCopyOfWords(const ulyssesCopyArgs* args, cudaStream_t stream) {
  return args->launchSums ? launchCopy<WordBytes, 1>(args, stream)
                          : launchCopy<WordBytes, 0>(args, stream);
}

extern "C" cudaError_t ulyssesCopyWave(const ulyssesCopyArgs* args, int* blocks) {
  switch (args->launchWordBytes * 2 + args->launchSums) {
    case 32: return residentBlocks<16, 0>(blocks);
    case 33: return residentBlocks<16, 1>(blocks);
    case 16: return residentBlocks<8, 0>(blocks);
    case 17: return residentBlocks<8, 1>(blocks);
    case 8: return residentBlocks<4, 0>(blocks);
    case 9: return residentBlocks<4, 1>(blocks);
    case 4: return residentBlocks<2, 0>(blocks);
    case 5: return residentBlocks<2, 1>(blocks);
    case 2: return residentBlocks<1, 0>(blocks);
    case 3: return residentBlocks<1, 1>(blocks);
    case 1: return residentBlocks<0, 1>(blocks);
    default: return residentBlocks<0, 0>(blocks);
  }
}

extern "C" cudaError_t ulyssesLaunchCopy(const ulyssesCopyArgs* args, int64_t maxRuns,
                                         cudaStream_t stream) {
  if (maxRuns <= 0) return cudaSuccess;
  switch (args->launchWordBytes) {
    case 16: return launchCopyOfWords<16>(args, stream);
    case 8: return launchCopyOfWords<8>(args, stream);
    case 4: return launchCopyOfWords<4>(args, stream);
    case 2: return launchCopyOfWords<2>(args, stream);
    case 1: return launchCopyOfWords<1>(args, stream);
    default: return launchCopyOfWords<0>(args, stream);
  }
}
