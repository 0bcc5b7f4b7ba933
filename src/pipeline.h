/* The exchange pipeline, written against a small backend of the few NCCL
 * calls and kernel launches it makes. The library's backend calls NCCL and
 * CUDA; the CPU tests' backend records every call, runs the kernels' per-thread
 * functions on the CPU and matches what each rank posts against its peers. */
#ifndef ULYSSES_PIPELINE_H_
#define ULYSSES_PIPELINE_H_

#include "one_pass_index.h"
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
  /* Whether the stream is being captured into a CUDA graph, where nothing
   * may wait for it on the host. */
  ulyssesResult_t (*capturing)(void* context, int* capturing);
  /* Every rank's 8 bytes of value, in rank order, into the host's values,
   * once they have arrived (waits for the stream). */
  ulyssesResult_t (*gatherToHost)(void* context, const void* value, void* values);
  /* The one-pass kernel; windows[t]: this rank's window of output t. */
  ulyssesResult_t (*launchOnePass)(void* context, const ulyssesOnePassArgs* args,
                                   const ulyssesOnePassSync* sync, void* const* windows);
} ulyssesBackend;

/* The whole staged exchange of call (its buffers have passed
 * ulyssesCheckBuffers): lengths, pack, NCCL group, unpack. */
ulyssesResult_t ulyssesRunExchange(const ulyssesCall* call, const ulyssesBackend* backend);

/* One local stage alone (the public ulyssesPack and ulyssesUnpack): side
 * ULYSSES_SEND packs call->sendbuffs, ULYSSES_RECV unpacks into
 * call->recvbuffs. call->deviceLengths: capacity mode, every rank's length;
 * exact mode, NULL. */
ulyssesResult_t ulyssesRunStage(const ulyssesCall* call, ulyssesSide side,
                                const ulyssesBackend* backend);

#endif /* ULYSSES_PIPELINE_H_ */
