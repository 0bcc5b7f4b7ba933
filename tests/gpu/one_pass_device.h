/* The one-pass kernel's simulated ranks on one GPU (kernels/one_pass.cu's
 * local launch): every rank's inputs and outputs copied to the device, each
 * tensor's table of the peers' output addresses and the length table there,
 * and each rank's launch arguments. Shared by the GPU test
 * (test_one_pass_gpu.c) and the bench (bench/one_pass_perf.c). */
#ifndef ULYSSES_TESTS_GPU_ONE_PASS_DEVICE_H_
#define ULYSSES_TESTS_GPU_ONE_PASS_DEVICE_H_

#include <cuda_runtime.h>

#include "one_pass_launch.h"
#include "one_pass_run.h"

typedef struct {
  unsigned char* inputs[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  unsigned char* outputs[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  unsigned char** peerTables[ULYSSES_MAX_TENSORS];
  int64_t* table; /* lengths, offsets, slot offsets */
} onePassDevice;

/* Copies run's send and receive buffers and table to the device. On an
 * error, what was allocated stays in *d for onePassDeviceTeardown. */
cudaError_t onePassDeviceSetup(onePassDevice* d, const exchangeRun* run, const lengthTable* table);
void onePassDeviceTeardown(onePassDevice* d, const scenario* s);
/* Rank r's launch of run's op: its inputs, the peer tables and the length
 * table on the device (the word size from the peers' device addresses). */
void onePassDeviceArgs(const exchangeRun* run, const onePassDevice* d, int r,
                       ulyssesOnePassArgs* args);
/* Every rank's launch of blocks blocks (0: the NCCL launch's fixed grid),
 * one after another on stream. */
cudaError_t onePassDeviceLaunchRanks(const exchangeRun* run, const onePassDevice* d, int blocks,
                                     cudaStream_t stream);
/* Copies every rank's outputs back into run's receive buffers. */
cudaError_t onePassDeviceFetch(const exchangeRun* run, const onePassDevice* d);

#endif /* ULYSSES_TESTS_GPU_ONE_PASS_DEVICE_H_ */
