/* The kernels' launchers: the only way host code reaches a kernel, so that
 * the host side stays plain C and the <<<>>> syntax stays in .cu files. */
#ifndef ULYSSES_LAUNCH_H_
#define ULYSSES_LAUNCH_H_

#include <cuda_runtime.h>

#include "ulysses_index.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One block writing one chunk of the length table. */
cudaError_t ulyssesLaunchLengthTable(const ulyssesTableArgs* args, cudaStream_t stream);

/* The pack or unpack copy of every tensor of args, by the kernel of its
 * launchWordBytes and launchSums, one grid row per tensor of its gridBlocks
 * (all of them chosen on the host, src/launch_policy.c). maxRuns bounds each
 * tensor's run count (the device may find fewer); 0: nothing to launch. */
cudaError_t ulyssesLaunchCopy(const ulyssesCopyArgs* args, int64_t maxRuns, cudaStream_t stream);

/* The wave of resident blocks the current device holds of the kernel that
 * ulyssesLaunchCopy picks for args (the host shares it between the grid
 * rows: ulyssesShareWave). */
cudaError_t ulyssesCopyWave(const ulyssesCopyArgs* args, int* blocks);

#ifdef __cplusplus
}
#endif

#endif /* ULYSSES_LAUNCH_H_ */
