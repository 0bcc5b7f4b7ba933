/* The one-pass kernel's launchers (kernels/one_pass.cu): plain C entry points
 * so that host code and tests stay C. The exchange calls the NCCL ones when
 * its path choice (src/one_pass.c) says one pass. */
#ifndef ULYSSES_ONE_PASS_LAUNCH_H_
#define ULYSSES_ONE_PASS_LAUNCH_H_

#include <cuda_runtime.h>
#include <nccl.h>

#include "one_pass_index.h"

/* Blocks of every one-pass launch, and LSA barriers the NCCL device comm
 * holds: one per block. The grid is fixed rather than sized to the local
 * work so that every rank's launch has the same blocks, each meeting its
 * peers' block of the same index at the barriers: two resident blocks per SM
 * of an H200 (ULYSSES_ONE_PASS_MIN_BLOCKS). On simulated ranks on an H200
 * (2026-11-28) 264 blocks of 256 threads reached 0.768 of cudaMemcpy, 528
 * 0.763, 132 (one per SM) 0.568. */
#ifndef ULYSSES_ONE_PASS_BLOCKS
#define ULYSSES_ONE_PASS_BLOCKS 264
#endif
#define ULYSSES_ONE_PASS_THREADS 256
#define ULYSSES_ONE_PASS_MIN_BLOCKS 2

#ifdef __cplusplus
extern "C" {
#endif

/* Simulated ranks on one GPU: args' peerOutputs are device arrays of the
 * peers' output addresses; the barriers are no-ops, so the caller launches
 * rank after rank on one stream (each rank's reads never see another rank's
 * writes: inputs and outputs are apart). blocks: the grid (0:
 * ULYSSES_ONE_PASS_BLOCKS), free here since no barrier pairs the blocks. */
cudaError_t ulyssesLaunchOnePassLocal(const ulyssesOnePassArgs* args, int blocks,
                                      cudaStream_t stream);

/* Whether this build has the NCCL instantiation (NCCL 2.28 and later). */
int ulyssesOnePassKernelBuilt(void);

/* Collective: ncclDevCommCreate with one LSA barrier per block and a control
 * buffer of nRanks slots (ulyssesOnePassSlot) in NCCL's resource window.
 * *devComm: host memory that the launch and the destroy take; *lsaRanks: the
 * size of its load/store team. ncclInvalidUsage where NCCL has no device API. */
ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, int nRanks, void** devComm,
                                         int* lsaRanks);
ncclResult_t ulyssesOnePassDevCommDestroy(ncclComm_t comm, void* devComm);

/* One exchange in one kernel: publish sync's slot to every peer, the entry
 * barrier, the table and the peers' outputs from the published slots
 * (windows[t]: this rank's window of the allocation holding its output t),
 * the stores, the exit barrier. args' peerOutputs are ignored. */
cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args, const ulyssesOnePassSync* sync,
                                     const void* devComm, void* const* windows,
                                     cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* ULYSSES_ONE_PASS_LAUNCH_H_ */
