/* Pack and unpack: one launch moves every tensor of a call, each group of
 * args.runLanes lanes one run (a contiguous block of heads of one row) at a
 * time. */
#include <atomic>

#include "ulysses_launch.h"

#define COPY_THREADS 256
#define MAX_DEVICES 64

static __global__ void __launch_bounds__(COPY_THREADS)
    segmentCopyKernel(const __grid_constant__ ulyssesCopyArgs args) {
  int tensor = blockIdx.y;
  int64_t runs = ulyssesCopyRunCount(&args, tensor);
  int lanes = args.runLanes;
  int lane = threadIdx.x % lanes;
  int64_t groupsPerBlock = COPY_THREADS / lanes;
  int64_t group = blockIdx.x * groupsPerBlock + threadIdx.x / lanes;
  for (int64_t run = group; run < runs; run += gridDim.x * groupsPerBlock)
    ulyssesCopyRunThread(&args, tensor, run, lane, lanes);
}

/* Blocks of the copy kernel that the current device holds at once: one full
 * wave. A larger grid only adds a tail; the grid-stride loop covers the rest.
 * Looked up once per device. */
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
    error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perMultiprocessor, segmentCopyKernel,
                                                          COPY_THREADS, 0);
  if (error != cudaSuccess) return error;
  *blocks = multiprocessors * (perMultiprocessor > 0 ? perMultiprocessor : 1);
  if (device < MAX_DEVICES) cached[device].store(*blocks, std::memory_order_relaxed);
  return cudaSuccess;
}

extern "C" cudaError_t ulyssesLaunchCopy(const ulyssesCopyArgs* args, int64_t maxRuns,
                                         cudaStream_t stream) {
  if (maxRuns <= 0) return cudaSuccess;
  int wave;
  cudaError_t error = residentBlocks(&wave);
  if (error != cudaSuccess) return error;
  /* Every tensor is a grid row: the rows share one wave between them. */
  int64_t perTensor = (wave + args->nTensors - 1) / args->nTensors;
  int64_t groupsPerBlock = COPY_THREADS / args->runLanes;
  int64_t blocks = (maxRuns + groupsPerBlock - 1) / groupsPerBlock;
  if (blocks > perTensor) blocks = perTensor;
  dim3 grid((unsigned)blocks, (unsigned)args->nTensors);
  segmentCopyKernel<<<grid, COPY_THREADS, 0, stream>>>(*args);
  return cudaGetLastError();
}
