/* The exchange pipeline, written against a small backend of the few NCCL
 * calls and kernel launches it makes. The library's backend calls NCCL and
 * CUDA; the CPU tests' backend records every call, runs the kernels' per-thread
 * functions on the CPU and matches what each rank posts against its peers. */
#ifndef ULYSSES_PIPELINE_H_
#define ULYSSES_PIPELINE_H_

#include "plan.h"

typedef struct {
  void* context;
  ulyssesResult_t (*allGather)(void* context, const void* sendbuff, void* recvbuff, size_t bytes);
  ulyssesResult_t (*groupStart)(void* context);
  ulyssesResult_t (*groupEnd)(void* context);
  ulyssesResult_t (*send)(void* context, const void* buff, size_t bytes, int peer);
  ulyssesResult_t (*recv)(void* context, void* buff, size_t bytes, int peer);
  ulyssesResult_t (*launchTable)(void* context, const ulyssesTableArgs* args);
  /* maxRuns: an upper bound of every tensor's run count, from the host. */
  ulyssesResult_t (*launchCopy)(void* context, const ulyssesCopyArgs* args, int64_t maxRuns);
} ulyssesBackend;

/* The whole exchange: lengths, pack, NCCL group, unpack. status: where the
 * length-table kernel ORs its error bits (may be NULL in exact mode). The
 * buffers have passed ulyssesCheckBuffers. */
ulyssesResult_t ulyssesRunExchange(const struct ulyssesPlan* plan, ulyssesOp_t op,
                                   const void* const* sendbuffs, void* const* recvbuffs,
                                   void* workspace, uint32_t* status,
                                   const ulyssesBackend* backend);

/* One local stage alone (the public ulyssesPack and ulyssesUnpack):
 * side ULYSSES_SEND packs sendbuffs, ULYSSES_RECV unpacks into recvbuffs.
 * deviceLengths: capacity mode, every rank's length; exact mode, NULL. */
ulyssesResult_t ulyssesRunStage(const struct ulyssesPlan* plan, ulyssesOp_t op, ulyssesSide side,
                                const void* const* userBuffers, const int64_t* deviceLengths,
                                void* workspace, uint32_t* status, const ulyssesBackend* backend);

/* Validates every argument of an exchange, enqueuing nothing. */
ulyssesResult_t ulyssesCheckExchange(const struct ulyssesPlan* plan, int commRanks, int commRank,
                                     ulyssesOp_t op, int nTensors, const void* const* sendbuffs,
                                     void* const* recvbuffs, const void* workspace,
                                     size_t workspaceSize);

/* The checked entry points behind the public calls: every argument is
 * validated before anything is enqueued on backend. */
ulyssesResult_t ulyssesExchange(const struct ulyssesPlan* plan, int commRanks, int commRank,
                                ulyssesOp_t op, int nTensors, const void* const* sendbuffs,
                                void* const* recvbuffs, void* workspace, size_t workspaceSize,
                                uint32_t* status, const ulyssesBackend* backend);
ulyssesResult_t ulyssesStage(const struct ulyssesPlan* plan, ulyssesOp_t op, ulyssesSide side,
                             int nTensors, const void* const* userBuffers,
                             const int64_t* deviceLengths, uint32_t* deviceStatus, void* workspace,
                             size_t workspaceSize, const ulyssesBackend* backend);

#endif /* ULYSSES_PIPELINE_H_ */
