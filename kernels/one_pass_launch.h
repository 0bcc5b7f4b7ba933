/* The one-pass kernel's launchers (kernels/one_pass.cu): plain C entry points
 * so that host code and tests stay C. Nothing here is wired into the
 * exchange yet (docs/one-pass.md, "What has run"). */
#ifndef ULYSSES_ONE_PASS_LAUNCH_H_
#define ULYSSES_ONE_PASS_LAUNCH_H_

#include <cuda_runtime.h>
#include <nccl.h>

#include "one_pass_index.h"

/* Blocks of every one-pass launch, and LSA barriers the NCCL device comm
 * holds: one per block. The grid is fixed rather than sized to the local
 * work so that every rank's launch has the same blocks, each meeting its
 * peers' block of the same index at the barriers. */
#define ULYSSES_ONE_PASS_BLOCKS 132
#define ULYSSES_ONE_PASS_THREADS 256
/* The most ranks a load/store team holds (an NVL72 rack). */
#define ULYSSES_ONE_PASS_MAX_PEERS 72

#ifdef __cplusplus
extern "C" {
#endif

/* Simulated ranks on one GPU: args' peerOutputs are device arrays of the
 * peers' output addresses; the barriers are no-ops, so the caller launches
 * rank after rank on one stream (each rank's reads never see another rank's
 * writes: inputs and outputs are apart). */
cudaError_t ulyssesLaunchOnePassLocal(const ulyssesOnePassArgs* args, cudaStream_t stream);

/* Built only where NCCL has its device API (2.28 and later): the same
 * kernel, each output resolved as ncclGetLsaPointer(windows[t],
 * windowOffsets[t], peer) (the same offset on every rank: the publish step of
 * docs/one-pass.md is not written), between an entry and an exit LSA
 * barrier. devComm from ulyssesOnePassDevCommCreate. */
cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args, const void* devComm,
                                     void* const* windows, const size_t* windowOffsets,
                                     cudaStream_t stream);
/* Collective (ncclDevCommCreate with ULYSSES_ONE_PASS_BLOCKS LSA barriers):
 * *devComm is host memory holding the ncclDevComm, *lsaRanks its LSA team's
 * size. ncclInvalidUsage where NCCL has no device API. */
ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, void** devComm, int* lsaRanks);
ncclResult_t ulyssesOnePassDevCommDestroy(ncclComm_t comm, void* devComm);

#ifdef __cplusplus
}
#endif

#endif /* ULYSSES_ONE_PASS_LAUNCH_H_ */
