/* The length table: real lengths (clamped to capacity), their prefix sums and
 * the slots' prefix sums, written to the workspace for the copy kernels. */
#include <cub/block/block_scan.cuh>

#include "ulysses_launch.h"

typedef cub::BlockScan<int64_t, ULYSSES_TABLE_CHUNK> LengthScan;

static __global__ void __launch_bounds__(ULYSSES_TABLE_CHUNK)
    lengthTableKernel(const __grid_constant__ ulyssesTableArgs args) {
  __shared__ typename LengthScan::TempStorage lengthStorage;
  __shared__ typename LengthScan::TempStorage slotStorage;
  int i = threadIdx.x;
  int64_t length = 0, slotLength = 0;
  uint32_t errorBits = 0;
  if (i < args.chunkCount) errorBits = ulyssesTableEntry(&args, i, &length, &slotLength);
  int64_t lengthPrefix, slotPrefix;
  LengthScan(lengthStorage).InclusiveSum(length, lengthPrefix);
  LengthScan(slotStorage).InclusiveSum(slotLength, slotPrefix);
  ulyssesTableStore(&args, i, length, lengthPrefix, slotPrefix);
  /* One atomicOr per launch, by one thread. Device scope is enough: the
   * word's writers are the threads of this one device (a comm belongs to one
   * device; a ulyssesPack caller's word too), and an atomic on mapped host
   * memory is atomic among them even where the link has no host-native
   * atomics (it is not atomic against the host, which only reads the word
   * or, in ulyssesCommClearAsyncError, zeroes it). Two launches that find
   * different errors both keep their bits. */
  uint32_t aboveCapacity = __syncthreads_or(errorBits & ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY);
  uint32_t negative = __syncthreads_or(errorBits & ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH);
  if (i == 0 && args.status != NULL && (aboveCapacity || negative))
    atomicOr(args.status, (aboveCapacity ? ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY : 0u) |
                              (negative ? ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH : 0u));
}

extern "C" cudaError_t ulyssesLaunchLengthTable(const ulyssesTableArgs* args, cudaStream_t stream) {
  lengthTableKernel<<<1, ULYSSES_TABLE_CHUNK, 0, stream>>>(*args);
  return cudaGetLastError();
}
