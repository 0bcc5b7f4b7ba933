/* The one-pass exchange (docs/one-pass.md): one launch per rank reads the
 * rank's inputs and stores every run at its final place in the peers'
 * outputs. One kernel body, two instantiations: plain peer pointers with
 * no-op barriers (simulated ranks on one GPU), and NCCL's device API (LSA
 * pointers and barriers). Compiled, not run: no GPU has executed it. */
#include <stdlib.h>
#include <string.h>

#include "one_pass_launch.h"

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0)
#include <cuda/atomic>
/* NCCL's device headers do not build warning-free with -Wextra -Werror. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <nccl_device.h>
#pragma GCC diagnostic pop
#define ULYSSES_HAVE_NCCL_DEVICE 1
#else
#define ULYSSES_HAVE_NCCL_DEVICE 0
#endif

/* Every block walks every tensor's chunks, each group of args.runLanes lanes
 * one chunk at a time, grid-stride. */
static __device__ void onePassBody(const ulyssesOnePassArgs* args) {
  int lanes = args->runLanes;
  int lane = threadIdx.x % lanes;
  int64_t groupsPerBlock = ULYSSES_ONE_PASS_THREADS / lanes;
  int64_t group = blockIdx.x * groupsPerBlock + threadIdx.x / lanes;
  for (int t = 0; t < args->nTensors; t++) {
    int64_t chunks = ulyssesOnePassChunkCount(args, t);
    for (int64_t chunk = group; chunk < chunks; chunk += gridDim.x * groupsPerBlock)
      ulyssesOnePassChunkThread(args, t, chunk, lane, lanes);
  }
}

static __global__ void __launch_bounds__(ULYSSES_ONE_PASS_THREADS)
    onePassLocalKernel(const __grid_constant__ ulyssesOnePassArgs args) {
  onePassBody(&args);
}

extern "C" cudaError_t ulyssesLaunchOnePassLocal(const ulyssesOnePassArgs* args,
                                                 cudaStream_t stream) {
  onePassLocalKernel<<<ULYSSES_ONE_PASS_BLOCKS, ULYSSES_ONE_PASS_THREADS, 0, stream>>>(*args);
  return cudaGetLastError();
}

#if ULYSSES_HAVE_NCCL_DEVICE
typedef struct {
  ncclWindow_t windows[ULYSSES_KERNEL_MAX_TENSORS];
  size_t offsets[ULYSSES_KERNEL_MAX_TENSORS];
} onePassWindows;

static __global__ void __launch_bounds__(ULYSSES_ONE_PASS_THREADS)
    onePassNcclKernel(const __grid_constant__ ulyssesOnePassArgs args,
                      const __grid_constant__ ncclDevComm devComm,
                      const __grid_constant__ onePassWindows windows) {
  /* The block's copy of the arguments, its tensors pointing at the peer
   * tables that the block resolves once. */
  __shared__ ulyssesOnePassArgs local;
  __shared__ unsigned char* peers[ULYSSES_KERNEL_MAX_TENSORS][ULYSSES_ONE_PASS_MAX_PEERS];
  if (threadIdx.x == 0) local = args;
  for (int i = threadIdx.x; i < args.nTensors * args.nRanks; i += blockDim.x) {
    int t = i / args.nRanks, peer = i % args.nRanks;
    peers[t][peer] =
        (unsigned char*)ncclGetLsaPointer(windows.windows[t], windows.offsets[t], peer);
  }
  __syncthreads();
  if (threadIdx.x < args.nTensors) local.tensors[threadIdx.x].peerOutputs = peers[threadIdx.x];
  __syncthreads();
  ncclLsaBarrierSession<ncclCoopCta> barrier(ncclCoopCta(), devComm, ncclTeamTagLsa(), blockIdx.x);
  /* Entry: block blockIdx.x of every peer has started, so every earlier
   * kernel on its stream (a reader of its outputs) has finished. */
  barrier.sync(ncclCoopCta(), cuda::memory_order_acq_rel);
  onePassBody(&local);
  /* Exit: every peer's block of this index has stored (release) and this
   * block sees it (acquire); the blocks together cover every peer's stores. */
  barrier.sync(ncclCoopCta(), cuda::memory_order_acq_rel);
}

extern "C" cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args, const void* devComm,
                                                void* const* windows, const size_t* windowOffsets,
                                                cudaStream_t stream) {
  if (args->nRanks > ULYSSES_ONE_PASS_MAX_PEERS) return cudaErrorInvalidValue;
  onePassWindows table;
  for (int t = 0; t < ULYSSES_KERNEL_MAX_TENSORS; t++) {
    table.windows[t] = t < args->nTensors ? (ncclWindow_t)windows[t] : nullptr;
    table.offsets[t] = t < args->nTensors ? windowOffsets[t] : 0;
  }
  onePassNcclKernel<<<ULYSSES_ONE_PASS_BLOCKS, ULYSSES_ONE_PASS_THREADS, 0, stream>>>(
      *args, *(const ncclDevComm*)devComm, table);
  return cudaGetLastError();
}

extern "C" ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, void** devComm,
                                                    int* lsaRanks) {
  ncclDevComm* created = (ncclDevComm*)calloc(1, sizeof(ncclDevComm));
  if (created == nullptr) return ncclSystemError;
  ncclDevCommRequirements requirements;
  memset(&requirements, 0, sizeof requirements);
  requirements.lsaBarrierCount = ULYSSES_ONE_PASS_BLOCKS;
  ncclResult_t result = ncclDevCommCreate(comm, &requirements, created);
  if (result != ncclSuccess) {
    free(created);
    return result;
  }
  *lsaRanks = created->lsaSize;
  *devComm = created;
  return ncclSuccess;
}

extern "C" ncclResult_t ulyssesOnePassDevCommDestroy(ncclComm_t comm, void* devComm) {
  ncclResult_t result = ncclDevCommDestroy(comm, (const ncclDevComm*)devComm);
  free(devComm);
  return result;
}
#else
extern "C" cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args, const void* devComm,
                                                void* const* windows, const size_t* windowOffsets,
                                                cudaStream_t stream) {
  (void)args;
  (void)devComm;
  (void)windows;
  (void)windowOffsets;
  (void)stream;
  return cudaErrorNotSupported;
}

extern "C" ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, void** devComm,
                                                    int* lsaRanks) {
  (void)comm;
  (void)devComm;
  (void)lsaRanks;
  return ncclInvalidUsage;
}

extern "C" ncclResult_t ulyssesOnePassDevCommDestroy(ncclComm_t comm, void* devComm) {
  (void)comm;
  (void)devComm;
  return ncclInvalidUsage;
}
#endif
