#include "pipeline.h"

#include <pthread.h>
#include <string.h>

#include "env.h"
#include "error.h"
#include "launch_policy.h"
#include "log.h"

/* A place in the workspace; none when the plan needs no workspace. */
static void* at(void* workspace, size_t offset) {
  return workspace == NULL ? NULL : (unsigned char*)workspace + offset;
}

/* The table kernel carries the host values of ULYSSES_TABLE_CHUNK ranks per
 * launch; each launch continues the prefix sums where the previous one,
 * earlier on the same stream, left them. */
static ulyssesResult_t enqueueTable(const struct ulyssesPlan* plan,
                                    const ulyssesWorkspaceLayout* layout, void* workspace,
                                    const int64_t* gatheredLengths, uint32_t* status,
                                    const ulyssesBackend* backend) {
  for (int chunkBegin = 0; chunkBegin < plan->nRanks; chunkBegin += ULYSSES_TABLE_CHUNK) {
    ulyssesTableArgs args;
    memset(&args, 0, sizeof args);
    args.mode = plan->mode;
    args.nRanks = plan->nRanks;
    args.chunkBegin = chunkBegin;
    args.chunkCount = plan->nRanks - chunkBegin < ULYSSES_TABLE_CHUNK ? plan->nRanks - chunkBegin
                                                                      : ULYSSES_TABLE_CHUNK;
    memcpy(args.hostValues, plan->slotLengths + chunkBegin,
           sizeof(int64_t) * (size_t)args.chunkCount);
    args.gatheredLengths = gatheredLengths;
    args.lengths = at(workspace, layout->lengthsOffset);
    args.offsets = at(workspace, layout->offsetsOffset);
    args.slotOffsets = at(workspace, layout->slotOffsetsOffset);
    args.status = status;
    ULYSSES_CHECK(backend->launchTable(backend->context, &args));
  }
  return ulyssesSuccess;
}

/* ULYSSES_COPY_ORDER (src/env.h), read once. */
static int copyRowTiles;
static pthread_once_t copyOrderOnce = PTHREAD_ONCE_INIT;

static void readCopyOrder(void) {
  const char* value = ulyssesEnvValue(ULYSSES_ENV_COPY_ORDER);
  copyRowTiles = strcmp(value, "rows") == 0;
  if (!copyRowTiles && strcmp(value, "peers") != 0)
    ulyssesLog(ULYSSES_LOG_WARN, "%s=%s is neither rows nor peers: peers",
               ulyssesEnvName(ULYSSES_ENV_COPY_ORDER), value);
}

/* The caller's buffers of one side of call. */
static const void* const* userBuffersOf(const ulyssesCall* call, ulyssesSide side) {
  return side == ULYSSES_SEND ? call->sendbuffs : (const void* const*)call->recvbuffs;
}

/* The copy of one side of every tensor; returns whether any tensor needs it. */
static int buildCopy(const ulyssesCall* call, ulyssesSide side, ulyssesCopyArgs* args,
                     int64_t* maxRuns) {
  const struct ulyssesPlan* plan = call->plan;
  ulyssesOp_t op = call->op;
  const void* const* userBuffers = userBuffersOf(call, side);
  void* workspace = call->workspace;
  const ulyssesWorkspaceLayout* layout = &plan->ops[op].workspace;
  memset(args, 0, sizeof *args);
  args->toSegments = side == ULYSSES_SEND;
  args->nRanks = plan->nRanks;
  args->rank = plan->rank;
  args->nTensors = plan->nTensors;
  pthread_once(&copyOrderOnce, readCopyOrder);
  args->rowTiles = copyRowTiles;
  /* The table travels in the launch's parameters or lies in the workspace,
   * never both: the other one's pointers stay NULL. */
  args->inlineTable = ulyssesPlanInlineTable(plan);
  if (args->inlineTable) {
    memcpy(args->inlineLengths, plan->slotLengths, sizeof(int64_t) * (size_t)plan->nRanks);
    memcpy(args->inlineOffsets, plan->slotOffsets, sizeof(int64_t) * ((size_t)plan->nRanks + 1));
  } else {
    args->lengths = at(workspace, layout->lengthsOffset);
    args->offsets = at(workspace, layout->offsetsOffset);
    args->slotOffsets = at(workspace, layout->slotOffsetsOffset);
  }
  *maxRuns = 0;
  int64_t runBytes[ULYSSES_KERNEL_MAX_TENSORS] = {0}, runs[ULYSSES_KERNEL_MAX_TENSORS] = {0};
  int anyActive = 0;
  for (int t = 0; t < plan->nTensors; t++) {
    const ulyssesLayout_t* tensorLayout = &plan->layouts[t];
    const ulyssesPlanSideInfo* info = &plan->ops[op].sides[side][t];
    ulyssesCopyTensor* x = &args->tensors[t];
    x->kind = info->shape.kind == ULYSSES_SIDE_WHOLE ? ULYSSES_COPY_ROW_SCATTER : info->shape.kind;
    x->user = (unsigned char*)(uintptr_t)userBuffers[t];
    x->segments = at(workspace, layout->regionOffset[side][t]);
    x->batch = tensorLayout->batch;
    x->packed = tensorLayout->packed;
    x->heads = tensorLayout->heads;
    x->headBytes = tensorLayout->headDim * tensorLayout->elementSize;
    x->rowHeads = info->shape.rowHeads;
    x->split = ulyssesHeadSplitOf(x->heads, tensorLayout->queryHeads, plan->nRanks);
    x->dataType = (int32_t)tensorLayout->dataType;
    x->order = tensorLayout->order == ulyssesOrderSBHD ? ULYSSES_ORDER_SBHD : ULYSSES_ORDER_BSHD;
    x->wordBytes = ulyssesWordBytes(x->headBytes, x->user, x->segments);
    x->active = !info->shape.direct;
    x->groupFirst = t - plan->ops[op].groupIndex[t];
    x->groupSize = plan->ops[op].groupSize[t];
    if (!x->active) continue;
    anyActive = 1;
    runs[t] = info->maxRuns;
    if (runs[t] > *maxRuns) *maxRuns = runs[t];
    runBytes[t] = info->maxRunBytes;
  }
  /* Each row scatter's place in its group's rows (ulyssesCopyRunAt); with no
   * rows at all the plan bounds no row's bytes, and no run reads them. */
  for (int t = 0; t < plan->nTensors && plan->slotOffsets[plan->nRanks] > 0; t++) {
    ulyssesCopyTensor* x = &args->tensors[t];
    for (int m = x->groupFirst; m < x->groupFirst + x->groupSize; m++) {
      const ulyssesCopyTensor* y = &args->tensors[m];
      int64_t rowBytes = y->batch * y->packed * y->rowHeads * y->headBytes;
      x->groupRowBytes += rowBytes;
      if (m < t) x->beforeRowBytes += rowBytes;
    }
  }
  /* The kernel, lanes and chunks the launch takes (src/launch_policy.c). */
  ulyssesChooseCopyLaunch(args, runBytes, runs);
  return anyActive;
}

static const void* segmentAddress(const ulyssesCall* call, int tensor, ulyssesSide side, int peer,
                                  size_t* bytes) {
  const struct ulyssesPlan* plan = call->plan;
  ulyssesSegment_t segment = ulyssesPlanSegment(plan, call->op, tensor, side, peer);
  *bytes = segment.bytes;
  /* An empty segment has no address (its buffer may be NULL); it is not posted. */
  if (segment.bytes == 0) return NULL;
  if (segment.place == ulyssesSegmentInUserBuffer)
    return (const unsigned char*)userBuffersOf(call, side)[tensor] + segment.offset;
  return (const unsigned char*)call->workspace +
         plan->ops[call->op].workspace.regionOffset[side][tensor] + segment.offset;
}

/* The message of tensors first .. first + count - 1 on side with peer: the
 * first one's segment and the bytes of all (the plan lays a group's
 * segments with one peer back to back: ulyssesPlanMessageTensors). */
static const void* messageAddress(const ulyssesCall* call, int first, int count, ulyssesSide side,
                                  int peer, size_t* bytes) {
  const void* address = NULL;
  *bytes = 0;
  for (int t = first; t < first + count; t++) {
    size_t segmentBytes;
    const void* segment = segmentAddress(call, t, side, peer, &segmentBytes);
    if (address == NULL) address = segment;
    *bytes += segmentBytes;
  }
  return address;
}

static ulyssesResult_t postMessages(const ulyssesCall* call, const ulyssesBackend* backend) {
  const struct ulyssesPlan* plan = call->plan;
  ULYSSES_CHECK(backend->groupStart(backend->context));
  ulyssesResult_t result = ulyssesSuccess;
  for (int peer = 0; peer < plan->nRanks && result == ulyssesSuccess; peer++)
    for (int t = 0, count; t < plan->nTensors && result == ulyssesSuccess; t += count) {
      count = ulyssesPlanMessageTensors(plan, call->op, t);
      size_t sendBytes, recvBytes;
      const void* sendAddress = messageAddress(call, t, count, ULYSSES_SEND, peer, &sendBytes);
      const void* recvAddress = messageAddress(call, t, count, ULYSSES_RECV, peer, &recvBytes);
      /* Both sides compute the same byte count for each pair, so skipping
       * empty messages is agreed without talking. */
      if (sendBytes > 0) result = backend->send(backend->context, sendAddress, sendBytes, peer);
      if (recvBytes > 0 && result == ulyssesSuccess)
        result = backend->recv(backend->context, (void*)(uintptr_t)recvAddress, recvBytes, peer);
    }
  /* A group once started is always ended, so that NCCL can clean up. */
  ulyssesResult_t endResult = backend->groupEnd(backend->context);
  return result != ulyssesSuccess ? result : endResult;
}

ulyssesResult_t ulyssesRunExchange(const ulyssesCall* call, const ulyssesBackend* backend) {
  const struct ulyssesPlan* plan = call->plan;
  void* workspace = call->workspace;
  const ulyssesWorkspaceLayout* layout = &plan->ops[call->op].workspace;
  if (plan->mode == ULYSSES_MODE_CAPACITY)
    ULYSSES_CHECK(backend->allGather(backend->context, plan->deviceLocalLength,
                                     at(workspace, layout->gatheredOffset), sizeof(int64_t)));
  if (layout->needTable)
    ULYSSES_CHECK(enqueueTable(plan, layout, workspace, at(workspace, layout->gatheredOffset),
                               call->deviceStatus, backend));
  ulyssesCopyArgs copy;
  int64_t maxRuns;
  if (buildCopy(call, ULYSSES_SEND, &copy, &maxRuns))
    ULYSSES_CHECK(backend->launchCopy(backend->context, &copy, maxRuns));
  ULYSSES_CHECK(postMessages(call, backend));
  if (buildCopy(call, ULYSSES_RECV, &copy, &maxRuns))
    ULYSSES_CHECK(backend->launchCopy(backend->context, &copy, maxRuns));
  return ulyssesSuccess;
}

ulyssesResult_t ulyssesRunStage(const ulyssesCall* call, ulyssesSide side,
                                const ulyssesBackend* backend) {
  const struct ulyssesPlan* plan = call->plan;
  const ulyssesWorkspaceLayout* layout = &plan->ops[call->op].workspace;
  ulyssesCopyArgs copy;
  int64_t maxRuns;
  int copies = buildCopy(call, side, &copy, &maxRuns);
  /* Capacity mode checks the lengths even when this stage copies nothing. */
  if (layout->needTable && (copies || plan->mode == ULYSSES_MODE_CAPACITY))
    ULYSSES_CHECK(enqueueTable(plan, layout, call->workspace, call->deviceLengths,
                               call->deviceStatus, backend));
  if (copies) ULYSSES_CHECK(backend->launchCopy(backend->context, &copy, maxRuns));
  return ulyssesSuccess;
}
