#include "one_pass.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "launch_policy.h"

_Static_assert((int)ulyssesOpSeqToHead == ULYSSES_ONE_PASS_SEQ_TO_HEAD &&
                   (int)ulyssesOpHeadToSeq == ULYSSES_ONE_PASS_HEAD_TO_SEQ &&
                   (int)ulyssesOpAllGather == ULYSSES_ONE_PASS_ALL_GATHER,
               "one-pass ops");
_Static_assert(ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS == ULYSSES_STATUS_ONE_PASS_OUTPUTS,
               "the one-pass status bit");

/*------------------------------------------------------------------------
 * The registry of symmetric allocations.
 *----------------------------------------------------------------------*/
ulyssesResult_t ulyssesSymmetricAdd(ulyssesSymmetricRegistry* registry, const void* base,
                                    size_t bytes, void* window) {
  const unsigned char* begin = base;
  for (int i = 0; i < registry->count; i++) {
    const ulyssesSymmetricBuffer* b = &registry->buffers[i];
    if (begin < b->base + b->bytes && b->base < begin + bytes)
      return ulyssesFail(ulyssesErrorInvalidArgument,
                         "symmetric allocation %p (%zu bytes) overlaps one already recorded", base,
                         bytes);
  }
  if (registry->count == registry->capacity) {
    int capacity = registry->capacity == 0 ? 8 : 2 * registry->capacity;
    ulyssesSymmetricBuffer* grown =
        realloc(registry->buffers, sizeof(ulyssesSymmetricBuffer) * (size_t)capacity);
    if (grown == NULL)
      return ulyssesFail(ulyssesErrorSystemError, "out of host memory recording an allocation");
    registry->buffers = grown;
    registry->capacity = capacity;
  }
  ulyssesSymmetricBuffer entry = {begin, bytes, registry->nextSerial++, window};
  registry->buffers[registry->count++] = entry;
  return ulyssesSuccess;
}

int ulyssesSymmetricRemove(ulyssesSymmetricRegistry* registry, const void* base, void** window) {
  for (int i = 0; i < registry->count; i++)
    if (registry->buffers[i].base == base) {
      *window = registry->buffers[i].window;
      registry->buffers[i] = registry->buffers[--registry->count];
      return 1;
    }
  return 0;
}

const ulyssesSymmetricBuffer* ulyssesSymmetricFind(const ulyssesSymmetricRegistry* registry,
                                                   const void* begin, size_t bytes) {
  const unsigned char* p = begin;
  for (int i = 0; i < registry->count; i++) {
    const ulyssesSymmetricBuffer* b = &registry->buffers[i];
    /* Compared as offsets, so that begin + bytes never overflows. */
    if (p >= b->base && (size_t)(p - b->base) <= b->bytes &&
        bytes <= b->bytes - (size_t)(p - b->base))
      return b;
  }
  return NULL;
}

void ulyssesSymmetricClear(ulyssesSymmetricRegistry* registry) {
  free(registry->buffers);
  memset(registry, 0, sizeof *registry);
}

/*------------------------------------------------------------------------
 * The path choice.
 *----------------------------------------------------------------------*/
static int choose(int path, const char* why, const char** reason) {
  *reason = why;
  return path;
}

/* Whether some rank's output of tensor t is empty, from what every rank's
 * plan holds, so that every rank answers the same. */
static int someRankReceivesNothing(const struct ulyssesPlan* plan, ulyssesOp_t op, int t) {
  const ulyssesLayout_t* layout = &plan->layouts[t];
  for (int p = 0; p < plan->nRanks; p++) {
    if (op == ulyssesOpHeadToSeq) {
      if (plan->slotLengths[p] == 0) return 1;
      continue;
    }
    int64_t begin;
    int64_t heads = op == ulyssesOpAllGather ? layout->heads
                                             : ulyssesPeerHeads(layout->heads, layout->queryHeads,
                                                                plan->nRanks, p, &begin);
    if (heads == 0 || plan->slotOffsets[plan->nRanks] == 0) return 1;
  }
  return 0;
}

const char* ulyssesOnePassCommReason(const ulyssesOnePassSupport* support) {
  if (!support->enabled)
    return "one pass is off (the default; ULYSSES_ONE_PASS=1 or config.onePass = 1 turns it on)";
  if (!support->kernelReady)
    return "this build has no one-pass kernel (it was built without NCCL's device API)";
  if (support->compiledNcclVersion < ULYSSES_ONE_PASS_MIN_NCCL)
    return "the library was built against an NCCL without the device API (before 2.28)";
  if (support->compiledNcclVersion < ULYSSES_ONE_PASS_VERSIONED_NCCL) {
    if (support->runtimeNcclVersion != support->compiledNcclVersion)
      return "the loaded NCCL is not the 2.28 release the library was built against (2.28's "
             "device structs carry no version, so only the same release reads them)";
  } else if (support->runtimeNcclVersion < support->compiledNcclVersion) {
    return "the loaded NCCL is older than the one the library was built against (from 2.29 "
           "NCCL runs device code built against it or an older release, not a newer one)";
  }
  if (support->commRanks < 2) return "a single rank: there is no peer to write to";
  if (support->commRanks > ULYSSES_ONE_PASS_MAX_PEERS)
    return "more ranks than a load/store team holds (ULYSSES_ONE_PASS_MAX_PEERS, 72)";
  return NULL;
}

int ulyssesChooseExchangePath(const ulyssesOnePassSupport* support,
                              const ulyssesSymmetricRegistry* registry,
                              const struct ulyssesPlan* plan, ulyssesOp_t op,
                              void* const* recvbuffs, const char** reason) {
  const char* commReason = ulyssesOnePassCommReason(support);
  if (commReason != NULL) return choose(ULYSSES_PATH_STAGED, commReason, reason);
  if (!support->devCommReady)
    return choose(ULYSSES_PATH_STAGED,
                  "ncclDevCommCreate failed when the comm was created (no symmetric memory "
                  "support, or ranks beyond one load/store team; NCCL's message is logged then "
                  "under ULYSSES_DEBUG=INFO)",
                  reason);
  if (support->lsaRanks != support->commRanks)
    return choose(ULYSSES_PATH_STAGED,
                  "not every rank of the comm is reachable by load and store (several nodes, or "
                  "GPUs without P2P): NCCL's LSA team is smaller than the comm",
                  reason);
  for (int t = 0; t < plan->nTensors; t++)
    if (ulyssesPlanSide(plan, op, t, ULYSSES_RECV).kind == ULYSSES_COPY_HEAD_SUM)
      return choose(ULYSSES_PATH_STAGED,
                    "head -> seq of kv heads shared by several ranks sums their replicas, which "
                    "one pass cannot do before every replica has arrived",
                    reason);
  for (int t = 0; t < plan->nTensors; t++)
    if (someRankReceivesNothing(plan, op, t))
      return choose(ULYSSES_PATH_STAGED,
                    "a rank receives nothing of a tensor (a zero length in head -> seq, or fewer "
                    "heads than ranks): its empty output has no window to address the others' by",
                    reason);
  for (int t = 0; t < plan->nTensors; t++) {
    size_t bytes = ulyssesPlanUserBytes(plan, op, t, ULYSSES_RECV);
    const ulyssesSymmetricBuffer* buffer = ulyssesSymmetricFind(registry, recvbuffs[t], bytes);
    if (buffer == NULL)
      return choose(ULYSSES_PATH_STAGED,
                    "an output is not inside memory from ulyssesMemAlloc on this comm", reason);
    if (buffer->window == NULL)
      return choose(ULYSSES_PATH_STAGED,
                    "an output's ulyssesMemAlloc memory has no symmetric window", reason);
  }
  return choose(ULYSSES_PATH_ONE_PASS,
                "one pass: every rank reachable by load and store, every output in symmetric "
                "memory",
                reason);
}

/*------------------------------------------------------------------------
 * The launch's arguments.
 *----------------------------------------------------------------------*/
/* The word size every tensor of the launch moves, or 0 where they differ
 * (the launch then takes the kernel with every size). */
static int commonWordBytes(const ulyssesOnePassArgs* a) {
  int wordBytes = 0;
  for (int t = 0; t < a->nTensors; t++) {
    if (wordBytes != 0 && a->tensors[t].wordBytes != wordBytes) return 0;
    wordBytes = a->tensors[t].wordBytes;
  }
  return wordBytes;
}

void ulyssesOnePassFill(const struct ulyssesPlan* plan, ulyssesOp_t op,
                        const void* const* sendbuffs, unsigned char* const* const* peerOutputs,
                        ulyssesOnePassArgs* args) {
  memset(args, 0, sizeof *args);
  args->op = (int32_t)op;
  args->nRanks = plan->nRanks;
  args->rank = plan->rank;
  args->nTensors = plan->nTensors;
  int64_t words[ULYSSES_KERNEL_MAX_TENSORS] = {0};
  for (int t = 0; t < plan->nTensors; t++) {
    const ulyssesLayout_t* layout = &plan->layouts[t];
    ulyssesOnePassTensor* x = &args->tensors[t];
    x->input = sendbuffs[t];
    x->peerOutputs = peerOutputs == NULL ? NULL : peerOutputs[t];
    x->batch = layout->batch;
    x->packed = layout->packed;
    x->heads = layout->heads;
    x->headBytes = layout->headDim * layout->elementSize;
    x->split = ulyssesHeadSplitOf(layout->heads, layout->queryHeads, plan->nRanks);
    x->order = layout->order == ulyssesOrderSBHD ? ULYSSES_ORDER_SBHD : ULYSSES_ORDER_BSHD;
    x->wordBytes = ulyssesWordBytes(x->headBytes, x->input, x->input);
    for (int p = 0; x->peerOutputs != NULL && p < plan->nRanks; p++) {
      int word = ulyssesWordBytes(x->headBytes, x->peerOutputs[p], x->peerOutputs[p]);
      if (word < x->wordBytes) x->wordBytes = word;
    }
    /* The longest run: the widest peer's heads (every head in the
     * all-gather), or this rank's own heads in head -> seq. */
    int64_t begin, maxHeads = 0;
    for (int p = 0; p < plan->nRanks; p++) {
      if (op == ulyssesOpHeadToSeq && p != plan->rank) continue;
      int64_t count = ulyssesOnePassPeerHeads(args, x, p, &begin);
      if (count > maxHeads) maxHeads = count;
    }
    words[t] = maxHeads * x->headBytes / x->wordBytes;
  }
  args->launchWordBytes = commonWordBytes(args);
  /* The copy kernel's lane rule (ulyssesGroupLanes), for the tensor that
   * needs the most. */
  args->runLanes = 1;
  for (int t = 0; t < plan->nTensors; t++) {
    int lanes = ulyssesGroupLanes(words[t], args->tensors[t].wordBytes);
    if (lanes > args->runLanes) args->runLanes = lanes;
  }
  for (int t = 0; t < plan->nTensors; t++) {
    ulyssesOnePassTensor* x = &args->tensors[t];
    x->chunkRuns =
        words[t] > 0 ? (int64_t)args->runLanes * ULYSSES_CHUNK_WORDS_PER_LANE / words[t] : 1;
    if (x->chunkRuns < 1) x->chunkRuns = 1;
  }
}

void ulyssesOnePassFillSync(const struct ulyssesPlan* plan, ulyssesOp_t op,
                            const ulyssesSymmetricRegistry* registry, void* const* recvbuffs,
                            uint32_t* status, ulyssesOnePassSync* sync, void** windows) {
  memset(sync, 0, sizeof *sync);
  sync->capacityMode = plan->mode == ULYSSES_MODE_CAPACITY;
  memcpy(sync->slotLengths, plan->slotLengths, sizeof(int64_t) * (size_t)plan->nRanks);
  sync->localLength = plan->deviceLocalLength;
  sync->mine.length = plan->slotLengths[plan->rank];
  sync->status = status;
  for (int t = 0; t < plan->nTensors; t++) {
    size_t bytes = ulyssesPlanUserBytes(plan, op, t, ULYSSES_RECV);
    const ulyssesSymmetricBuffer* b = ulyssesSymmetricFind(registry, recvbuffs[t], bytes);
    windows[t] = b->window;
    sync->mine.serials[t] = b->serial;
    sync->mine.offsets[t] = (uint64_t)((const unsigned char*)recvbuffs[t] - b->base);
  }
}
