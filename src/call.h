/* One call's arguments as they travel inside the library, after NCCL's
 * ncclInfo: the public entry points fill one, and everything below them
 * (validation, the path choice, the plan check, the pipeline, the backend)
 * reads it instead of a row of loose parameters. */
#ifndef ULYSSES_CALL_H_
#define ULYSSES_CALL_H_

#include "ulysses.h"

struct ulyssesComm;

typedef struct {
  const struct ulyssesPlan* plan;
  ulyssesOp_t op;
  int nTensors;
  const void* const* sendbuffs;
  void* const* recvbuffs;
  void* workspace;
  size_t workspaceSize;
  /* The local stages in capacity mode: every rank's length, on the device. */
  const int64_t* deviceLengths;
  /* Where the kernels OR their error bits: an exchange's comm's word, a
   * local stage's caller's; may be NULL in exact mode. */
  uint32_t* deviceStatus;
  struct ulyssesComm* comm; /* NULL for the local stages, which call no NCCL */
  cudaStream_t stream;
} ulyssesCall;

#endif /* ULYSSES_CALL_H_ */
