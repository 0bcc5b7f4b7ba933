/* Pack and unpack: one launch moves every tensor of a call, each warp one run
 * (a contiguous block of heads of one row) at a time. */
#include "ulysses_launch.h"

#define COPY_THREADS 256
#define WARP_LANES 32
#define COPY_MAX_BLOCKS 65535

static __global__ void __launch_bounds__(COPY_THREADS)
    segmentCopyKernel(const __grid_constant__ ulyssesCopyArgs args) {
  int tensor = blockIdx.y;
  int64_t runs = ulyssesCopyRunCount(&args, tensor);
  int lane = threadIdx.x % WARP_LANES;
  int64_t warpsPerBlock = COPY_THREADS / WARP_LANES;
  int64_t warp = blockIdx.x * warpsPerBlock + threadIdx.x / WARP_LANES;
  for (int64_t run = warp; run < runs; run += gridDim.x * warpsPerBlock)
    ulyssesCopyRunThread(&args, tensor, run, lane, WARP_LANES);
}

extern "C" cudaError_t ulyssesLaunchCopy(const ulyssesCopyArgs* args, int64_t maxRuns,
                                         cudaStream_t stream) {
  if (maxRuns <= 0) return cudaSuccess;
  int64_t warpsPerBlock = COPY_THREADS / WARP_LANES;
  int64_t blocks = (maxRuns + warpsPerBlock - 1) / warpsPerBlock;
  if (blocks > COPY_MAX_BLOCKS) blocks = COPY_MAX_BLOCKS;
  dim3 grid((unsigned)blocks, (unsigned)args->nTensors);
  segmentCopyKernel<<<grid, COPY_THREADS, 0, stream>>>(*args);
  return cudaGetLastError();
}
