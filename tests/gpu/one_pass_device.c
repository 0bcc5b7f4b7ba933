#include "one_pass_device.h"

#include <string.h>

#define RETURN_IF_ERROR(call)                 \
  do {                                        \
    cudaError_t error_ = (call);              \
    if (error_ != cudaSuccess) return error_; \
  } while (0)

static cudaError_t deviceCopy(void** device, const void* host, size_t bytes) {
  RETURN_IF_ERROR(cudaMalloc(device, bytes > 0 ? bytes : 1));
  if (bytes > 0) RETURN_IF_ERROR(cudaMemcpy(*device, host, bytes, cudaMemcpyHostToDevice));
  return cudaSuccess;
}

cudaError_t onePassDeviceSetup(onePassDevice* d, const exchangeRun* run, const lengthTable* table) {
  const scenario* s = run->s;
  memset(d, 0, sizeof *d);
  for (int r = 0; r < s->nRanks; r++)
    for (int t = 0; t < s->nTensors; t++) {
      RETURN_IF_ERROR(
          deviceCopy((void**)&d->inputs[r][t], run->send[r][t].data, run->send[r][t].bytes));
      RETURN_IF_ERROR(
          deviceCopy((void**)&d->outputs[r][t], run->recv[r][t].data, run->recv[r][t].bytes));
    }
  for (int t = 0; t < s->nTensors; t++) {
    unsigned char* addresses[HARNESS_MAX_RANKS];
    for (int p = 0; p < s->nRanks; p++) addresses[p] = d->outputs[p][t];
    RETURN_IF_ERROR(deviceCopy((void**)&d->peerTables[t], addresses,
                               sizeof(unsigned char*) * (size_t)s->nRanks));
  }
  int64_t host[3 * (HARNESS_MAX_RANKS + 1)];
  memcpy(host, table->lengths, sizeof(int64_t) * HARNESS_MAX_RANKS);
  memcpy(host + HARNESS_MAX_RANKS + 1, table->offsets, sizeof table->offsets);
  memcpy(host + 2 * (HARNESS_MAX_RANKS + 1), table->slotOffsets, sizeof table->slotOffsets);
  return deviceCopy((void**)&d->table, host, sizeof host);
}

void onePassDeviceTeardown(onePassDevice* d, const scenario* s) {
  for (int r = 0; r < s->nRanks; r++)
    for (int t = 0; t < s->nTensors; t++) {
      cudaFree(d->inputs[r][t]);
      cudaFree(d->outputs[r][t]);
    }
  for (int t = 0; t < s->nTensors; t++) cudaFree(d->peerTables[t]);
  cudaFree(d->table);
  memset(d, 0, sizeof *d);
}

void onePassDeviceArgs(const exchangeRun* run, const onePassDevice* d, int r,
                       ulyssesOnePassArgs* args) {
  const scenario* s = run->s;
  const void* inputs[ULYSSES_MAX_TENSORS];
  unsigned char* const* tables[ULYSSES_MAX_TENSORS];
  unsigned char* hostTables[ULYSSES_MAX_TENSORS][HARNESS_MAX_RANKS];
  for (int t = 0; t < s->nTensors; t++) {
    inputs[t] = d->inputs[r][t];
    /* The fill reads the addresses on the host for the word size. */
    for (int p = 0; p < s->nRanks; p++) hostTables[t][p] = d->outputs[p][t];
    tables[t] = hostTables[t];
  }
  ulyssesOnePassFill(run->plans[r], run->op, inputs, tables, args);
  args->lengths = d->table;
  args->offsets = d->table + HARNESS_MAX_RANKS + 1;
  args->slotOffsets = d->table + 2 * (HARNESS_MAX_RANKS + 1);
  for (int t = 0; t < s->nTensors; t++) args->tensors[t].peerOutputs = d->peerTables[t];
}

cudaError_t onePassDeviceLaunchRanks(const exchangeRun* run, const onePassDevice* d, int blocks,
                                     cudaStream_t stream) {
  for (int r = 0; r < run->s->nRanks; r++) {
    ulyssesOnePassArgs args;
    onePassDeviceArgs(run, d, r, &args);
    RETURN_IF_ERROR(ulyssesLaunchOnePassLocal(&args, blocks, stream));
  }
  return cudaSuccess;
}

cudaError_t onePassDeviceFetch(const exchangeRun* run, const onePassDevice* d) {
  const scenario* s = run->s;
  for (int p = 0; p < s->nRanks; p++)
    for (int t = 0; t < s->nTensors; t++)
      if (run->recv[p][t].bytes > 0)
        RETURN_IF_ERROR(cudaMemcpy(run->recv[p][t].data, d->outputs[p][t], run->recv[p][t].bytes,
                                   cudaMemcpyDeviceToHost));
  return cudaSuccess;
}
