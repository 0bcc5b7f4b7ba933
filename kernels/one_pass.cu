/* The one-pass exchange (docs/one-pass.md): one launch per rank reads the
 * rank's inputs and stores every run at its final place in the peers'
 * outputs. One kernel body, two instantiations: plain peer pointers with
 * no-op barriers (simulated ranks on one GPU, run bit-exact on an H200 on
 * 2026-11-28), and NCCL's device API (LSA pointers and barriers, the publish
 * step; compiled, never run: it needs GPUs that reach each other by P2P). */
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

/* The pass that takes a tensor of word wordBytes (1 for any size but the
 * five, as the copy kernel's switch). */
static __device__ int onePassWordPass(int wordBytes) {
  return wordBytes == 16 || wordBytes == 8 || wordBytes == 4 || wordBytes == 2 ? wordBytes : 1;
}

/* Every block walks the tensors' chunks, each group of args.runLanes lanes
 * one chunk at a time, grid-stride, in words of WordBytes; with OfWord only
 * the tensors of that pass (onePassWordPass). */
template <int WordBytes, int OfWord>
static __device__ void onePassTensorsThread(const ulyssesOnePassArgs* args) {
  int lanes = args->runLanes;
  int lane = threadIdx.x % lanes;
  int64_t groupsPerBlock = ULYSSES_ONE_PASS_THREADS / lanes;
  int64_t group = blockIdx.x * groupsPerBlock + threadIdx.x / lanes;
  for (int t = 0; t < args->nTensors; t++) {
    if (OfWord && onePassWordPass(args->tensors[t].wordBytes) != WordBytes) continue;
    int64_t chunks = ulyssesOnePassChunkCount(args, t);
    for (int64_t chunk = group; chunk < chunks; chunk += gridDim.x * groupsPerBlock)
      ulyssesOnePassChunkThread(args, t, chunk, lane, lanes, WordBytes);
  }
}

/* The kernels' body. WordBytes 0 (the tensors' words differ): one pass over
 * the tensors per word size, each constant-word, so that no copy loop runs
 * with a run-time word. A switch on the word inside one pass keeps the
 * tensor loop's state live across five copies of the copy and spills
 * (bench/RESULTS.md, "SASS of the run-time-word kernels"). */
template <int WordBytes>
static __device__ void onePassBody(const ulyssesOnePassArgs* args) {
  if (WordBytes != 0) {
    onePassTensorsThread<WordBytes, 0>(args);
    return;
  }
  onePassTensorsThread<16, 1>(args);
  onePassTensorsThread<8, 1>(args);
  onePassTensorsThread<4, 1>(args);
  onePassTensorsThread<2, 1>(args);
  onePassTensorsThread<1, 1>(args);
}

/* One instantiation per word size the host knows (args.launchWordBytes; 0:
 * the tensors differ, each pass over the tensors of one word), as the copy
 * kernel has. */
template <int WordBytes>
static __global__ void __launch_bounds__(ULYSSES_ONE_PASS_THREADS, ULYSSES_ONE_PASS_MIN_BLOCKS)
    onePassLocalKernel(const __grid_constant__ ulyssesOnePassArgs args) {
  onePassBody<WordBytes>(&args);
}

template <int WordBytes>
static cudaError_t launchOnePassLocal(const ulyssesOnePassArgs* args, int blocks,
                                      cudaStream_t stream) {
  onePassLocalKernel<WordBytes><<<blocks, ULYSSES_ONE_PASS_THREADS, 0, stream>>>(*args);
  return cudaGetLastError();
}

extern "C" cudaError_t ulyssesLaunchOnePassLocal(const ulyssesOnePassArgs* args, int blocks,
                                                 cudaStream_t stream) {
  if (blocks <= 0) blocks = ULYSSES_ONE_PASS_BLOCKS;
  switch (args->launchWordBytes) {
    case 16: return launchOnePassLocal<16>(args, blocks, stream);
    case 8: return launchOnePassLocal<8>(args, blocks, stream);
    case 4: return launchOnePassLocal<4>(args, blocks, stream);
    case 2: return launchOnePassLocal<2>(args, blocks, stream);
    case 1: return launchOnePassLocal<1>(args, blocks, stream);
    default: return launchOnePassLocal<0>(args, blocks, stream);
  }
}

#if ULYSSES_HAVE_NCCL_DEVICE
/* What ulyssesOnePassDevCommCreate hands the host: the device comm and the
 * handle of the control buffer in its resource window. */
typedef struct {
  ncclDevComm dev;
  ncclDevResourceHandle control;
} onePassDevComm;

typedef struct {
  ncclWindow_t windows[ULYSSES_KERNEL_MAX_TENSORS];
} onePassWindows;

static __global__ void __launch_bounds__(ULYSSES_ONE_PASS_THREADS, ULYSSES_ONE_PASS_MIN_BLOCKS)
    onePassNcclKernel(const __grid_constant__ ulyssesOnePassArgs args,
                      const __grid_constant__ ulyssesOnePassSync sync,
                      const __grid_constant__ ncclDevComm devComm,
                      const __grid_constant__ onePassWindows windows,
                      ncclDevResourceHandle control) {
  /* The block's copy of the arguments, pointing at the table and the peer
   * addresses that the block resolves from the published slots. */
  __shared__ ulyssesOnePassArgs local;
  __shared__ unsigned char* peers[ULYSSES_KERNEL_MAX_TENSORS][ULYSSES_ONE_PASS_MAX_PEERS];
  __shared__ int64_t lengths[ULYSSES_ONE_PASS_MAX_PEERS];
  __shared__ int64_t offsets[ULYSSES_ONE_PASS_MAX_PEERS + 1];
  __shared__ int64_t slotOffsets[ULYSSES_ONE_PASS_MAX_PEERS + 1];
  __shared__ uint32_t verdict;
  int nRanks = args.nRanks;
  ncclTeam world = ncclTeamWorld(devComm);
  /* Publish: thread p stores this rank's slot at index rank of peer p's
   * control buffer. Every block stores it (the same bytes), because block i's
   * barrier orders only block i's own stores before its peers' reads. */
  if ((int)threadIdx.x < nRanks) {
    ulyssesOnePassSlot mine = sync.mine;
    if (sync.capacityMode) mine.length = *sync.localLength;
    int lsaPeer = ncclTeamRankToLsa(devComm, world, (int)threadIdx.x);
    ulyssesOnePassSlot* slots =
        (ulyssesOnePassSlot*)ncclGetResourceBufferLsaPointer(devComm, control, lsaPeer);
    slots[args.rank] = mine;
  }
  ncclLsaBarrierSession<ncclCoopCta> barrier(ncclCoopCta(), devComm, ncclTeamTagLsa(), blockIdx.x);
  /* Entry: block blockIdx.x of every peer has published and started, so
   * every earlier kernel on its stream (a reader of its outputs) has
   * finished, and its slot is visible here. */
  barrier.sync(ncclCoopCta(), cuda::memory_order_acq_rel);
  const ulyssesOnePassSlot* slots =
      (const ulyssesOnePassSlot*)ncclGetResourceBufferLocalPointer(devComm, control);
  if (threadIdx.x == 0) {
    local = args;
    uint32_t status =
        ulyssesOnePassResolve(&sync, nRanks, args.nTensors, slots, lengths, offsets, slotOffsets);
    local.lengths = lengths;
    local.offsets = offsets;
    local.slotOffsets = slotOffsets;
    /* One report per launch. */
    if (status != 0 && blockIdx.x == 0) atomicOr(sync.status, status);
    verdict = status;
  }
  for (int i = threadIdx.x; i < args.nTensors * nRanks; i += blockDim.x) {
    int t = i / nRanks, peer = i % nRanks;
    peers[t][peer] = (unsigned char*)ncclGetLsaPointer(
        windows.windows[t], slots[peer].offsets[t], ncclTeamRankToLsa(devComm, world, peer));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int t = 0; t < args.nTensors; t++) local.tensors[t].peerOutputs = peers[t];
    ulyssesOnePassNarrowWords(&local);
  }
  __syncthreads();
  /* The narrowed words are known only here: the per-word passes. */
  if (!(verdict & ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS)) onePassBody<0>(&local);
  /* Exit: every peer's block of this index has stored (release) and this
   * block sees it (acquire); the blocks together cover every peer's stores,
   * and no peer reads its slots of this launch any more. */
  barrier.sync(ncclCoopCta(), cuda::memory_order_acq_rel);
}

extern "C" int ulyssesOnePassKernelBuilt(void) { return 1; }

extern "C" cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args,
                                                const ulyssesOnePassSync* sync,
                                                const void* devComm, void* const* windows,
                                                cudaStream_t stream) {
  if (args->nRanks > ULYSSES_ONE_PASS_MAX_PEERS) return cudaErrorInvalidValue;
  const onePassDevComm* d = (const onePassDevComm*)devComm;
  onePassWindows table;
  for (int t = 0; t < ULYSSES_KERNEL_MAX_TENSORS; t++)
    table.windows[t] = t < args->nTensors ? (ncclWindow_t)windows[t] : nullptr;
  onePassNcclKernel<<<ULYSSES_ONE_PASS_BLOCKS, ULYSSES_ONE_PASS_THREADS, 0, stream>>>(
      *args, *sync, d->dev, table, d->control);
  return cudaGetLastError();
}

extern "C" ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, int nRanks, void** devComm,
                                                    int* lsaRanks) {
  onePassDevComm* created = (onePassDevComm*)calloc(1, sizeof(onePassDevComm));
  if (created == nullptr) return ncclSystemError;
  ncclDevResourceRequirements control;
  memset(&control, 0, sizeof control);
  control.bufferSize = sizeof(ulyssesOnePassSlot) * (size_t)nRanks;
  control.bufferAlign = 16;
  control.outBufferHandle = &created->control;
  /* From 2.29 the struct is versioned: NCCL refuses one not filled by its
   * initializer. 2.28's has no version fields and is zeroed. */
#ifdef NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER
  ncclDevCommRequirements requirements = NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER;
#else
  ncclDevCommRequirements requirements;
  memset(&requirements, 0, sizeof requirements);
#endif
  requirements.resourceRequirementsList = &control;
  requirements.lsaBarrierCount = ULYSSES_ONE_PASS_BLOCKS;
  ncclResult_t result = ncclDevCommCreate(comm, &requirements, &created->dev);
  if (result != ncclSuccess) {
    free(created);
    return result;
  }
  *lsaRanks = created->dev.lsaSize;
  *devComm = created;
  return ncclSuccess;
}

extern "C" ncclResult_t ulyssesOnePassDevCommDestroy(ncclComm_t comm, void* devComm) {
  ncclResult_t result = ncclDevCommDestroy(comm, &((onePassDevComm*)devComm)->dev);
  free(devComm);
  return result;
}
#else
extern "C" int ulyssesOnePassKernelBuilt(void) { return 0; }

extern "C" cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args,
                                                const ulyssesOnePassSync* sync,
                                                const void* devComm, void* const* windows,
                                                cudaStream_t stream) {
  (void)args;
  (void)sync;
  (void)devComm;
  (void)windows;
  (void)stream;
  return cudaErrorNotSupported;
}

extern "C" ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, int nRanks, void** devComm,
                                                    int* lsaRanks) {
  (void)comm;
  (void)nRanks;
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
