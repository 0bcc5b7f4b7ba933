#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

/* The kernels' header (ulysses_index.h, also compiled as CUDA) repeats these
 * constants of the public header rather than include it. */
_Static_assert(ULYSSES_KERNEL_MAX_TENSORS == ULYSSES_MAX_TENSORS, "tensor limit");
_Static_assert(ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY == ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY &&
                   ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH == ULYSSES_STATUS_NEGATIVE_LENGTH,
               "status bits");
_Static_assert((int)ulyssesTypeOpaque == ULYSSES_TYPE_OPAQUE &&
                   (int)ulyssesTypeFloat32 == ULYSSES_TYPE_FLOAT32 &&
                   (int)ulyssesTypeFloat16 == ULYSSES_TYPE_FLOAT16 &&
                   (int)ulyssesTypeBfloat16 == ULYSSES_TYPE_BFLOAT16,
               "data types");
_Static_assert((int)ulyssesOrderBSHD == ULYSSES_ORDER_BSHD &&
                   (int)ulyssesOrderSBHD == ULYSSES_ORDER_SBHD,
               "orders");
_Static_assert(ULYSSES_LAYOUT_SIZE_MIN % sizeof(int64_t) == 0 &&
                   sizeof(ulyssesLayout_t) % sizeof(int64_t) == 0,
               "layout sizes step by whole int64_t fields");

static const char* const opNames[ULYSSES_OP_COUNT] = {"seq->head", "head->seq", "all-gather"};

int ulyssesOpIsValid(int op) { return op >= 0 && op < ULYSSES_OP_COUNT; }

static int64_t headBytesOf(const ulyssesLayout_t* layout) {
  return layout->headDim * layout->elementSize;
}

static int64_t slotTotal(const struct ulyssesPlan* plan) { return plan->slotOffsets[plan->nRanks]; }

/* Whether side of op holds the sequence-split tensor: the send side of
 * seq -> head and the all-gather, the receive side of head -> seq. */
static int isSequenceSide(ulyssesOp_t op, ulyssesSide side) {
  return op == ulyssesOpAllGather ? side == ULYSSES_SEND
                                  : (op == ulyssesOpSeqToHead) == (side == ULYSSES_SEND);
}

/*------------------------------------------------------------------------
 * Creation and validation.
 *----------------------------------------------------------------------*/
static ulyssesResult_t checkedMul(int64_t a, int64_t b, int64_t* product, int index,
                                  const char* what) {
  if (__builtin_mul_overflow(a, b, product))
    return ulyssesFail(ulyssesErrorSizeOverflow, "layouts[%d]: %s overflows 63 bits", index, what);
  return ulyssesSuccess;
}

/* The largest struct size the library steps by: far above any version's,
 * small enough that index * size cannot overflow. */
#define MAX_STRUCT_SIZE 4096

/* The size field of the first entry of a struct array (name: "layouts",
 * "segments"), which the library steps by: at least this version's minimum,
 * whole 8-byte words, and not absurd. */
static ulyssesResult_t checkStructSize(size_t size, size_t minimum, size_t current,
                                       const char* name, const char* type) {
  if (size >= minimum && size <= MAX_STRUCT_SIZE && size % sizeof(int64_t) == 0)
    return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorInvalidArgument,
                     "%s[0].size is %zu; set it to sizeof(%s) (%zu in this library's header)", name,
                     size, type, current);
}

/* layouts as the caller's header laid them out (every entry layouts[0].size
 * bytes) into this version's structs, the fields the caller's version lacks
 * at their defaults (0). */
static ulyssesResult_t readLayouts(const ulyssesLayout_t* layouts, int nTensors,
                                   ulyssesLayout_t* out) {
  const unsigned char* bytes = (const unsigned char*)layouts;
  size_t size = layouts[0].size;
  ULYSSES_CHECK(checkStructSize(size, ULYSSES_LAYOUT_SIZE_MIN, sizeof(ulyssesLayout_t), "layouts",
                                "ulyssesLayout_t"));
  for (int t = 0; t < nTensors; t++) {
    const unsigned char* entry = bytes + (size_t)t * size;
    size_t entrySize;
    memcpy(&entrySize, entry, sizeof entrySize);
    if (entrySize != size)
      return ulyssesFail(ulyssesErrorInvalidArgument,
                         "layouts[%d].size is %zu but layouts[0].size is %zu; every entry of the "
                         "array must be sizeof(ulyssesLayout_t)",
                         t, entrySize, size);
    for (size_t i = sizeof(ulyssesLayout_t); i < size; i++)
      if (entry[i] != 0)
        return ulyssesFail(ulyssesErrorUnsupported,
                           "layouts[%d] sets a field at byte %zu, beyond the %zu bytes of "
                           "ulyssesLayout_t this library (%d.%d.%d) knows",
                           t, i, sizeof(ulyssesLayout_t), ULYSSES_MAJOR, ULYSSES_MINOR,
                           ULYSSES_PATCH);
    memset(&out[t], 0, sizeof out[t]);
    memcpy(&out[t], entry, size < sizeof out[t] ? size : sizeof out[t]);
    out[t].size = sizeof out[t];
  }
  return ulyssesSuccess;
}

static ulyssesResult_t checkLayout(const ulyssesLayout_t* layout, int index) {
  if (layout->batch < 1)
    return ulyssesFail(ulyssesErrorInvalidArgument, "layouts[%d].batch is %lld; it must be >= 1",
                       index, (long long)layout->batch);
  if (layout->heads < 1)
    return ulyssesFail(ulyssesErrorInvalidArgument, "layouts[%d].heads is %lld; it must be >= 1",
                       index, (long long)layout->heads);
  /* The kernels split heads in 32 bits (ulysses_heads.h), so that their
   * divisions are inline rather than calls of the 64-bit routine. */
  if (layout->heads > INT32_MAX)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "layouts[%d].heads is %lld, above the 2^31 - 1 heads the kernels split",
                       index, (long long)layout->heads);
  if (layout->headDim < 1)
    return ulyssesFail(ulyssesErrorInvalidArgument, "layouts[%d].headDim is %lld; it must be >= 1",
                       index, (long long)layout->headDim);
  int64_t e = layout->elementSize;
  if (e != 1 && e != 2 && e != 4 && e != 8 && e != 16)
    return ulyssesFail(ulyssesErrorUnsupportedElementSize,
                       "layouts[%d].elementSize is %lld; the kernels move 1, 2, 4, 8 or 16 bytes",
                       index, (long long)e);
  if (layout->packed != 1 && layout->packed != 3)
    return ulyssesFail(ulyssesErrorInvalidArgument, "layouts[%d].packed is %d; it must be 1 or 3",
                       index, layout->packed);
  if (layout->order != ulyssesOrderBSHD && layout->order != ulyssesOrderSBHD)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "layouts[%d].order is %d; it must be ulyssesOrderBSHD or ulyssesOrderSBHD",
                       index, (int)layout->order);
  if (layout->queryHeads < 0)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "layouts[%d].queryHeads is %lld; it must be 0 or a multiple of heads", index,
                       (long long)layout->queryHeads);
  if (layout->queryHeads > INT32_MAX)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "layouts[%d].queryHeads is %lld, above the 2^31 - 1 heads the kernels split",
                       index, (long long)layout->queryHeads);
  if (layout->queryHeads % layout->heads != 0)
    return ulyssesFail(ulyssesErrorHeadGroupMismatch,
                       "layouts[%d].queryHeads is %lld, not a multiple of its %lld kv heads", index,
                       (long long)layout->queryHeads, (long long)layout->heads);
  static const int64_t typeSizes[] = {0, 4, 2, 2};
  if (layout->dataType < ulyssesTypeOpaque || layout->dataType > ulyssesTypeBfloat16)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "layouts[%d].dataType is %d; it is not a ulyssesDataType_t", index,
                       (int)layout->dataType);
  if (layout->dataType != ulyssesTypeOpaque && typeSizes[layout->dataType] != e)
    return ulyssesFail(ulyssesErrorUnsupportedElementSize,
                       "layouts[%d].dataType has %lld-byte elements but elementSize is %lld", index,
                       (long long)typeSizes[layout->dataType], (long long)e);
  return ulyssesSuccess;
}

/* Layout's heads among the ranks, for the loops over peers (found once:
 * ulyssesHeadSplitOf divides, and for kv heads runs Euclid's loop). */
static ulyssesHeadSplit headSplitOf(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout) {
  return ulyssesHeadSplitOf(layout->heads, layout->queryHeads, plan->nRanks);
}

/* The heads peer gets of layout: its plain group, or the kv heads its query
 * heads read. */
static int64_t peerHeads(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout, int peer,
                         int64_t* begin) {
  return ulyssesPeerHeads(layout->heads, layout->queryHeads, plan->nRanks, peer, begin);
}

/* The heads of every peer, summed: more than the tensor has when kv heads
 * are shared by several ranks. */
static int64_t sentHeads(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout) {
  return ulyssesPeerHeadPrefix(layout->heads, layout->queryHeads, plan->nRanks, plan->nRanks);
}

/* Every byte count and run count the plan or a kernel forms is bounded by
 * these products; with each tensor at most ULYSSES_MAX_TENSOR_BYTES, a
 * workspace of 2 * ULYSSES_MAX_TENSORS regions plus the table stays far
 * below 2^63, so later arithmetic needs no checks. */
/* bytes: what `what` (a phrase ending in a verb) comes to for layouts[index]. */
static ulyssesResult_t checkAddressable(int64_t bytes, int index, const char* what) {
  if (bytes <= ULYSSES_MAX_TENSOR_BYTES) return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorSizeOverflow,
                     "layouts[%d]: %s %lld bytes, above the 2^56 the library addresses", index,
                     what, (long long)bytes);
}

static ulyssesResult_t checkTensorSizes(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout,
                                        int index) {
  int64_t headBytes, rowBytes, packedHeads, rows, bytes, localRuns, runs;
  ULYSSES_CHECK(
      checkedMul(layout->headDim, layout->elementSize, &headBytes, index, "headDim * elementSize"));
  ULYSSES_CHECK(checkedMul(layout->packed, layout->heads, &packedHeads, index, "packed * heads"));
  ULYSSES_CHECK(checkedMul(packedHeads, headBytes, &rowBytes, index,
                           "packed * heads * headDim * elementSize"));
  ULYSSES_CHECK(checkedMul(layout->batch, slotTotal(plan), &rows, index, "batch * sum(lengths)"));
  ULYSSES_CHECK(checkedMul(rows, rowBytes, &bytes, index, "the gathered tensor's bytes"));
  ULYSSES_CHECK(checkAddressable(bytes, index, "the tensor gathered over every rank is"));
  /* Every rank must accept or refuse the same plan: bound the pack kernel's
   * runs by the longest slot, not this rank's. */
  int64_t longestSlot = 0;
  for (int r = 0; r < plan->nRanks; r++)
    if (plan->slotLengths[r] > longestSlot) longestSlot = plan->slotLengths[r];
  ULYSSES_CHECK(checkedMul(layout->batch * longestSlot, layout->packed, &localRuns, index,
                           "batch * length * packed"));
  ULYSSES_CHECK(checkedMul(localRuns, plan->nRanks, &runs, index,
                           "nRanks * batch * length * packed (the pack kernel's runs)"));
  /* Shared kv heads travel once per rank that needs them. */
  int64_t sentRowBytes, sentBytes;
  ULYSSES_CHECK(checkedMul(layout->packed * headBytes, sentHeads(plan, layout), &sentRowBytes,
                           index, "the bytes one row sends"));
  ULYSSES_CHECK(checkedMul(rows, sentRowBytes, &sentBytes, index, "the bytes the ranks send"));
  ULYSSES_CHECK(checkAddressable(sentBytes, index, "the ranks send"));
  return ulyssesSuccess;
}

static void computeOps(struct ulyssesPlan* plan);

/* The arguments of ulyssesPlanCreateExact or ulyssesPlanCreateCapacity. */
typedef struct {
  int nRanks;
  int rank;
  int mode;
  const int64_t* lengths; /* exact: the lengths; capacity: the capacities */
  const int64_t* deviceLocalLength;
  int nTensors;
  const ulyssesLayout_t* layouts;
} planRequest;

static ulyssesResult_t createPlan(ulyssesPlan_t* out, const planRequest* request) {
  int nRanks = request->nRanks, rank = request->rank, mode = request->mode;
  const int64_t* lengths = request->lengths;
  const int64_t* deviceLocalLength = request->deviceLocalLength;
  int nTensors = request->nTensors;
  const ulyssesLayout_t* layouts = request->layouts;
  ulyssesClearError();
  if (rank >= 0 && rank < nRanks) ulyssesLogSetRank(rank);
  const char* lengthsName = mode == ULYSSES_MODE_EXACT ? "lengths" : "capacities";
  if (out == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  if (nRanks < 1)
    return ulyssesFail(ulyssesErrorInvalidArgument, "nRanks is %d; it must be >= 1", nRanks);
  if (rank < 0 || rank >= nRanks)
    return ulyssesFail(ulyssesErrorInvalidArgument, "rank is %d; it must be in [0, %d)", rank,
                       nRanks);
  if (lengths == NULL) return ulyssesFail(ulyssesErrorNullPointer, "%s is NULL", lengthsName);
  for (int r = 0; r < nRanks; r++)
    if (lengths[r] < 0 || lengths[r] > ULYSSES_MAX_LENGTH)
      return ulyssesFail(ulyssesErrorInvalidLength, "%s[%d] is %lld; it must be in [0, %lld]",
                         lengthsName, r, (long long)lengths[r], (long long)ULYSSES_MAX_LENGTH);
  if (mode == ULYSSES_MODE_CAPACITY) {
    if (deviceLocalLength == NULL)
      return ulyssesFail(ulyssesErrorNullPointer, "deviceLocalLength is NULL");
    if ((uintptr_t)deviceLocalLength % sizeof(int64_t) != 0)
      return ulyssesFail(ulyssesErrorMisalignedPointer,
                         "deviceLocalLength %p is not 8-byte aligned",
                         (const void*)deviceLocalLength);
  }
  if (nTensors < 1 || nTensors > ULYSSES_MAX_TENSORS)
    return ulyssesFail(ulyssesErrorInvalidArgument, "nTensors is %d; it must be in [1, %d]",
                       nTensors, ULYSSES_MAX_TENSORS);
  if (layouts == NULL) return ulyssesFail(ulyssesErrorNullPointer, "layouts is NULL");
  ulyssesLayout_t known[ULYSSES_MAX_TENSORS];
  ULYSSES_CHECK(readLayouts(layouts, nTensors, known));
  for (int t = 0; t < nTensors; t++) ULYSSES_CHECK(checkLayout(&known[t], t));

  struct ulyssesPlan* plan = calloc(1, sizeof *plan);
  int64_t* slotLengths = malloc(sizeof(int64_t) * (size_t)nRanks);
  int64_t* slotOffsets = malloc(sizeof(int64_t) * ((size_t)nRanks + 1));
  ulyssesSegment_t* segmentStore = calloc(
      (size_t)ULYSSES_OP_COUNT * 2 * (size_t)nTensors * (size_t)nRanks, sizeof(ulyssesSegment_t));
  if (plan == NULL || slotLengths == NULL || slotOffsets == NULL || segmentStore == NULL) {
    free(plan);
    free(slotLengths);
    free(slotOffsets);
    free(segmentStore);
    return ulyssesFail(ulyssesErrorSystemError, "out of host memory for a plan of %d ranks",
                       nRanks);
  }
  plan->nRanks = nRanks;
  plan->rank = rank;
  plan->mode = mode;
  plan->nTensors = nTensors;
  plan->slotLengths = slotLengths;
  plan->slotOffsets = slotOffsets;
  plan->segmentStore = segmentStore;
  plan->deviceLocalLength = deviceLocalLength;
  memcpy(plan->layouts, known, sizeof(ulyssesLayout_t) * (size_t)nTensors);
  slotOffsets[0] = 0;
  for (int r = 0; r < nRanks; r++) {
    slotLengths[r] = lengths[r];
    slotOffsets[r + 1] = slotOffsets[r] + lengths[r]; /* <= nRanks * INT32_MAX: no overflow */
  }
  for (int t = 0; t < nTensors; t++) {
    ulyssesResult_t result = checkTensorSizes(plan, &known[t], t);
    if (result != ulyssesSuccess) {
      ulyssesPlanDestroy(plan);
      return result;
    }
  }
  computeOps(plan);
  ulyssesLog(ULYSSES_LOG_INFO,
             "plan: %s mode, %d rank(s), %d tensor(s), %s %lld rows in all; workspace %zu bytes "
             "(seq->head), %zu (head->seq), %zu (all-gather)",
             mode == ULYSSES_MODE_EXACT ? "exact" : "capacity", nRanks, nTensors,
             mode == ULYSSES_MODE_EXACT ? "lengths" : "capacities", (long long)slotTotal(plan),
             plan->ops[0].workspace.totalBytes, plan->ops[1].workspace.totalBytes,
             plan->ops[2].workspace.totalBytes);
  *out = plan;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesPlanCreateExact(ulyssesPlan_t* plan, int nRanks, int rank,
                                                   const int64_t* lengths, int nTensors,
                                                   const ulyssesLayout_t* layouts) {
  planRequest request = {nRanks, rank, ULYSSES_MODE_EXACT, lengths, NULL, nTensors, layouts};
  return createPlan(plan, &request);
}

ULYSSES_API ulyssesResult_t ulyssesPlanCreateCapacity(ulyssesPlan_t* plan, int nRanks, int rank,
                                                      const int64_t* capacities,
                                                      const int64_t* deviceLocalLength,
                                                      int nTensors,
                                                      const ulyssesLayout_t* layouts) {
  planRequest request = {nRanks,   rank,      ULYSSES_MODE_CAPACITY, capacities, deviceLocalLength,
                         nTensors, layouts};
  return createPlan(plan, &request);
}

ULYSSES_API ulyssesResult_t ulyssesPlanDestroy(ulyssesPlan_t plan) {
  if (plan != NULL) {
    free(plan->slotLengths);
    free(plan->slotOffsets);
    free(plan->segmentStore);
    free(plan);
  }
  return ulyssesSuccess;
}

/*------------------------------------------------------------------------
 * Sides, segments and the workspace, computed once when the plan is made.
 *----------------------------------------------------------------------*/
/* Whether each peer takes every head of layout or none: then the sequence
 * side's segments are whole rows. */
static int wholeRowsPerPeer(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout) {
  ulyssesHeadSplit split = headSplitOf(plan, layout);
  int64_t begin;
  int wholeRows = 1;
  for (int p = 0; p < plan->nRanks; p++) {
    int64_t count = ulyssesSplitPeerHeads(&split, p, &begin);
    wholeRows &= count == 0 || count == layout->heads;
  }
  return wholeRows;
}

/* Whether rank's rows of layout are at most one (row, packed index): in
 * exact mode its sequence side is then a range per peer too. */
static int atMostOneRun(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout, int rank) {
  return plan->mode == ULYSSES_MODE_EXACT &&
         layout->batch * plan->slotLengths[rank] * layout->packed <= 1;
}

/* Whether the head-side or gathered tensor's rows from each peer are one
 * block of the user buffer: the batch is 1 or the sequence is the outer
 * dimension; in capacity mode their position is known only on the device. */
static int headSideDirect(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout) {
  return plan->nRanks == 1 ||
         (plan->mode == ULYSSES_MODE_EXACT &&
          (layout->batch == 1 || layout->order == ulyssesOrderSBHD));
}

static ulyssesSideShape computeSide(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                                    ulyssesSide side) {
  const ulyssesLayout_t* layout = &plan->layouts[tensor];
  ulyssesSideShape shape = {ULYSSES_COPY_ROW_SCATTER, 0, 0};
  int64_t begin;
  if (op == ulyssesOpAllGather && side == ULYSSES_SEND) {
    shape.kind = ULYSSES_SIDE_WHOLE;
    shape.direct = 1;
  } else if (op == ulyssesOpHeadToSeq && side == ULYSSES_RECV &&
             sentHeads(plan, layout) > layout->heads) {
    /* kv heads shared by several ranks come back once from each: summed. */
    shape.kind = ULYSSES_COPY_HEAD_SUM;
  } else if (isSequenceSide(op, side)) {
    /* The sequence-side tensor: each peer's segment is every local row cut
     * to the peer's heads. */
    shape.kind = ULYSSES_COPY_HEAD_SLICE;
    shape.direct = wholeRowsPerPeer(plan, layout) || atMostOneRun(plan, layout, plan->rank);
  } else {
    shape.rowHeads =
        op == ulyssesOpAllGather ? layout->heads : peerHeads(plan, layout, plan->rank, &begin);
    shape.direct = headSideDirect(plan, layout);
  }
  return shape;
}

/* Whether the side is copied through the workspace on every rank, not only
 * on this one: what all ranks know alike, so that they agree on which
 * messages to merge (ulyssesPlanMessageTensors). */
static int stagedOnEveryRank(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                             ulyssesSide side, ulyssesSideShape shape) {
  const ulyssesLayout_t* layout = &plan->layouts[tensor];
  if (shape.kind == ULYSSES_SIDE_WHOLE) return 0;
  if (shape.kind == ULYSSES_COPY_HEAD_SUM) return 1;
  if (!isSequenceSide(op, side)) return !headSideDirect(plan, layout);
  if (wholeRowsPerPeer(plan, layout)) return 0;
  for (int r = 0; r < plan->nRanks; r++)
    if (atMostOneRun(plan, layout, r)) return 0;
  return 1;
}

/* Every peer's segment of one side, in one pass: the heads of the peers
 * before each one are carried along rather than summed per peer, so that
 * shared kv heads cost O(nRanks), not O(nRanks^2). Also the longest run. */
static int64_t computeSegments(const struct ulyssesPlan* plan, int tensor, ulyssesSideShape shape,
                               ulyssesSegment_t* segments) {
  const ulyssesLayout_t* layout = &plan->layouts[tensor];
  int64_t headBytes = headBytesOf(layout);
  int64_t localSlotRows = layout->batch * plan->slotLengths[plan->rank];
  ulyssesSegmentPlace_t place =
      shape.direct ? ulyssesSegmentInUserBuffer : ulyssesSegmentInWorkspace;
  ulyssesHeadSplit split = headSplitOf(plan, layout);
  int64_t headPrefix = 0, maxRunBytes = 0;
  for (int peer = 0; peer < plan->nRanks; peer++) {
    ulyssesSegment_t* segment = &segments[peer];
    segment->place = place;
    if (shape.kind == ULYSSES_SIDE_WHOLE) {
      segment->offset = 0;
      segment->bytes = (size_t)(localSlotRows * layout->packed * layout->heads * headBytes);
    } else if (shape.kind == ULYSSES_COPY_HEAD_SLICE || shape.kind == ULYSSES_COPY_HEAD_SUM) {
      int64_t headBegin;
      int64_t headCount = ulyssesSplitPeerHeads(&split, peer, &headBegin);
      segment->bytes = (size_t)(localSlotRows * layout->packed * headCount * headBytes);
      /* Direct only with at most one (row, packed index), or peers taking
       * every head or none (whose headBegin is 0): the slice starts at its
       * first head. */
      segment->offset =
          (size_t)(shape.direct ? headBegin * headBytes
                                : localSlotRows * layout->packed * headPrefix * headBytes);
      headPrefix += headCount;
      int64_t runBytes = shape.kind == ULYSSES_COPY_HEAD_SUM ? headBytes : headCount * headBytes;
      if (runBytes > maxRunBytes) maxRunBytes = runBytes;
    } else {
      int64_t rowBytes = layout->packed * shape.rowHeads * headBytes;
      segment->bytes = (size_t)(layout->batch * plan->slotLengths[peer] * rowBytes);
      segment->offset = (size_t)(layout->batch * plan->slotOffsets[peer] * rowBytes);
      maxRunBytes = rowBytes;
    }
  }
  return maxRunBytes;
}

static size_t computeUserBytes(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                               ulyssesSide side) {
  const ulyssesLayout_t* layout = &plan->layouts[tensor];
  int64_t headBytes = headBytesOf(layout);
  if (isSequenceSide(op, side))
    return (size_t)(layout->batch * plan->slotLengths[plan->rank] * layout->packed * layout->heads *
                    headBytes);
  int64_t begin;
  int64_t rowHeads =
      op == ulyssesOpAllGather ? layout->heads : peerHeads(plan, layout, plan->rank, &begin);
  return (size_t)(layout->batch * slotTotal(plan) * layout->packed * rowHeads * headBytes);
}

/* The copy's runs at this rank's slot length (the capacity in capacity
 * mode): the most the device can find, whatever the real lengths. */
static int64_t computeMaxRuns(const struct ulyssesPlan* plan, int tensor, ulyssesSideShape shape) {
  const ulyssesLayout_t* layout = &plan->layouts[tensor];
  if (shape.direct) return 0;
  int64_t localRuns = layout->batch * plan->slotLengths[plan->rank] * layout->packed;
  if (shape.kind == ULYSSES_COPY_HEAD_SLICE) return localRuns * plan->nRanks;
  if (shape.kind == ULYSSES_COPY_HEAD_SUM) return localRuns * layout->heads;
  return layout->batch * slotTotal(plan);
}

/* Whether two tensors' segments have the same bytes for every peer on every
 * side of every op, and their copies the same runs. */
static int segmentsAlike(const ulyssesLayout_t* a, const ulyssesLayout_t* b) {
  return a->batch == b->batch && a->heads == b->heads && a->headDim == b->headDim &&
         a->elementSize == b->elementSize && a->packed == b->packed && a->order == b->order &&
         a->queryHeads == b->queryHeads;
}

/* Whether tensor may share a message group with a tensor of another shape:
 * both sides copy it on every rank (so every rank lays it out alike) and its
 * heads are whole 16-byte words (so that every member's segments start where
 * the widest word may). */
static int joinsAnyShape(const struct ulyssesPlan* plan, const ulyssesPlanOp* opPlan, int tensor) {
  return headBytesOf(&plan->layouts[tensor]) % 16 == 0 &&
         opPlan->sides[ULYSSES_SEND][tensor].stagedOnEveryRank &&
         opPlan->sides[ULYSSES_RECV][tensor].stagedOnEveryRank;
}

/* Whether every peer gets as many of layout's heads. */
static int evenSplit(const struct ulyssesPlan* plan, const ulyssesLayout_t* layout) {
  ulyssesHeadSplit split = headSplitOf(plan, layout);
  int64_t begin, count = ulyssesSplitPeerHeads(&split, 0, &begin);
  for (int p = 1; p < plan->nRanks; p++)
    if (ulyssesSplitPeerHeads(&split, p, &begin) != count) return 0;
  return 1;
}

static int isHeadSum(const ulyssesPlanOp* opPlan, int tensor) {
  return opPlan->sides[ULYSSES_RECV][tensor].shape.kind == ULYSSES_COPY_HEAD_SUM;
}

/* Whether tensor t joins the group of tensors first .. t - 1: always when
 * alike to t - 1; else where both may join any shape and, if the group then
 * holds a head sum, its replicas keep a fixed stride (ulyssesSumChunkAt): one
 * head-sum shape only, every other member splitting its heads evenly. A
 * holder strictly between a kv head's first and last holds that head only,
 * so its segments of the group then have the same bytes as the next one's. */
static int joinsGroup(const struct ulyssesPlan* plan, const ulyssesPlanOp* opPlan, int first,
                      int t) {
  if (segmentsAlike(&plan->layouts[t - 1], &plan->layouts[t])) return 1;
  if (!joinsAnyShape(plan, opPlan, t - 1) || !joinsAnyShape(plan, opPlan, t)) return 0;
  int sum = -1;
  for (int m = first; m <= t; m++) {
    if (!isHeadSum(opPlan, m)) continue;
    if (sum >= 0 && !segmentsAlike(&plan->layouts[sum], &plan->layouts[m])) return 0;
    sum = m;
  }
  for (int m = first; m <= t && sum >= 0; m++)
    if (!isHeadSum(opPlan, m) && !evenSplit(plan, &plan->layouts[m])) return 0;
  return 1;
}

/* The op's message groups (ulyssesPlanOp.groupIndex): each tensor's index in
 * its group and the group's size. */
static void computeGroups(const struct ulyssesPlan* plan, ulyssesPlanOp* opPlan) {
  for (int t = 0; t < plan->nTensors; t++) {
    int joins = t > 0 && joinsGroup(plan, opPlan, t - 1 - opPlan->groupIndex[t - 1], t);
    opPlan->groupIndex[t] = joins ? opPlan->groupIndex[t - 1] + 1 : 0;
  }
  for (int t = plan->nTensors - 1; t >= 0; t--)
    opPlan->groupSize[t] = t + 1 < plan->nTensors && opPlan->groupIndex[t + 1] > 0
                               ? opPlan->groupSize[t + 1]
                               : opPlan->groupIndex[t] + 1;
}

/* A group's segments with peer p lie back to back in tensor order, after
 * every member's segments with the peers before p: member t's starts at the
 * members' offsets alone (their bytes to the peers before p), summed, plus
 * the bytes to p of the members before t. Members of one group copy alike
 * (the same shape, or copied on every rank): a direct side stays as it is. */
static void interleaveSegments(const struct ulyssesPlan* plan, ulyssesPlanOp* opPlan, int first) {
  int members = opPlan->groupSize[first];
  for (int side = 0; side < 2; side++) {
    if (opPlan->sides[side][first].shape.direct) continue;
    for (int p = 0; p < plan->nRanks; p++) {
      size_t offset = 0;
      for (int t = first; t < first + members; t++) offset += opPlan->sides[side][t].segments[p].offset;
      for (int t = first; t < first + members; t++) {
        ulyssesSegment_t* segment = &opPlan->sides[side][t].segments[p];
        segment->offset = offset;
        offset += segment->bytes;
      }
    }
  }
}

static size_t alignUp(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

static void computeWorkspace(const struct ulyssesPlan* plan, ulyssesPlanOp* opPlan) {
  ulyssesWorkspaceLayout* layout = &opPlan->workspace;
  memset(layout, 0, sizeof *layout);
  int anyCopy = 0;
  for (int side = 0; side < 2; side++)
    for (int t = 0; t < plan->nTensors; t++) anyCopy |= !opPlan->sides[side][t].shape.direct;
  /* Capacity mode always builds the table: it is where a length above its
   * capacity is found, even when no kernel needs the lengths. An exact plan
   * of few ranks carries its table in the copy launches' parameters. */
  layout->needTable = plan->mode == ULYSSES_MODE_CAPACITY ||
                      (anyCopy && !ulyssesPlanInlineTable(plan));
  size_t cursor = 0;
  if (layout->needTable) {
    size_t n = (size_t)plan->nRanks;
    layout->gatheredOffset = 0;
    layout->lengthsOffset = n * sizeof(int64_t);
    layout->offsetsOffset = 2 * n * sizeof(int64_t);
    layout->slotOffsetsOffset = (3 * n + 1) * sizeof(int64_t);
    cursor = alignUp((4 * n + 2) * sizeof(int64_t), ULYSSES_REGION_ALIGNMENT);
  }
  for (int side = 0; side < 2; side++)
    for (int t = 0; t < plan->nTensors; t++) {
      const ulyssesPlanSideInfo* info = &opPlan->sides[side][t];
      /* A group's members share its region: all their segments. */
      if (opPlan->groupIndex[t] > 0) {
        layout->regionOffset[side][t] = layout->regionOffset[side][t - 1];
        continue;
      }
      layout->regionOffset[side][t] = cursor;
      if (info->shape.direct) continue;
      size_t regionBytes = 0;
      for (int m = t; m < t + opPlan->groupSize[t]; m++)
        for (int p = 0; p < plan->nRanks; p++) regionBytes += opPlan->sides[side][m].segments[p].bytes;
      cursor = alignUp(cursor + regionBytes, ULYSSES_REGION_ALIGNMENT);
    }
  layout->totalBytes = cursor;
}

static uint64_t computeFingerprint(const struct ulyssesPlan* plan);
static uint64_t hashInt(uint64_t hash, int64_t value);

/* Fills plan->ops; plan->segmentStore holds ULYSSES_OP_COUNT * 2 * nTensors *
 * nRanks segments. */
static void computeOps(struct ulyssesPlan* plan) {
  ulyssesSegment_t* next = plan->segmentStore;
  uint64_t fingerprint = computeFingerprint(plan);
  for (int op = 0; op < ULYSSES_OP_COUNT; op++) {
    ulyssesPlanOp* opPlan = &plan->ops[op];
    for (int side = 0; side < 2; side++)
      for (int t = 0; t < plan->nTensors; t++) {
        ulyssesPlanSideInfo* info = &opPlan->sides[side][t];
        info->shape = computeSide(plan, (ulyssesOp_t)op, t, (ulyssesSide)side);
        info->segments = next;
        next += plan->nRanks;
        info->maxRunBytes = computeSegments(plan, t, info->shape, info->segments);
        info->stagedOnEveryRank =
            stagedOnEveryRank(plan, (ulyssesOp_t)op, t, (ulyssesSide)side, info->shape);
        info->userBytes = computeUserBytes(plan, (ulyssesOp_t)op, t, (ulyssesSide)side);
        info->maxRuns = computeMaxRuns(plan, t, info->shape);
      }
    computeGroups(plan, opPlan);
    for (int t = 0; t < plan->nTensors; t++)
      if (opPlan->groupIndex[t] == 0) interleaveSegments(plan, opPlan, t);
    computeWorkspace(plan, opPlan);
    opPlan->fingerprint = hashInt(fingerprint, op);
  }
}

int ulyssesPlanInlineTable(const struct ulyssesPlan* plan) {
  return plan->mode == ULYSSES_MODE_EXACT && plan->nRanks <= ULYSSES_INLINE_TABLE_RANKS;
}

ulyssesSideShape ulyssesPlanSide(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                                 ulyssesSide side) {
  return plan->ops[op].sides[side][tensor].shape;
}

size_t ulyssesPlanUserBytes(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                            ulyssesSide side) {
  return plan->ops[op].sides[side][tensor].userBytes;
}

void ulyssesPlanWorkspace(const struct ulyssesPlan* plan, ulyssesOp_t op,
                          ulyssesWorkspaceLayout* layout) {
  *layout = plan->ops[op].workspace;
}

/*------------------------------------------------------------------------
 * Call-time checks.
 *----------------------------------------------------------------------*/
typedef struct {
  const void* begin;
  size_t bytes;
  const char* name;
  int index;
  int writable;
} bufferRange;

static int rangesOverlap(const bufferRange* a, const bufferRange* b) {
  if (a->bytes == 0 || b->bytes == 0) return 0;
  uintptr_t aBegin = (uintptr_t)a->begin, bBegin = (uintptr_t)b->begin;
  return aBegin < bBegin + b->bytes && bBegin < aBegin + a->bytes;
}

ulyssesResult_t ulyssesCheckBuffers(const ulyssesCall* call, int checkSend, int checkRecv) {
  const struct ulyssesPlan* plan = call->plan;
  ulyssesOp_t op = call->op;
  int nTensors = call->nTensors;
  const void* const* sendbuffs = call->sendbuffs;
  void* const* recvbuffs = call->recvbuffs;
  const void* workspace = call->workspace;
  size_t workspaceSize = call->workspaceSize;
  if (!ulyssesOpIsValid((int)op))
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "op is %d; it must be ulyssesOpSeqToHead, ulyssesOpHeadToSeq or "
                       "ulyssesOpAllGather",
                       (int)op);
  if (nTensors != plan->nTensors)
    return ulyssesFail(ulyssesErrorLayoutMismatch,
                       "the call moves %d tensor(s) but the plan was made for %d", nTensors,
                       plan->nTensors);
  for (int t = 0; checkRecv && t < nTensors; t++)
    if (ulyssesPlanSide(plan, op, t, ULYSSES_RECV).kind == ULYSSES_COPY_HEAD_SUM &&
        plan->layouts[t].dataType == ulyssesTypeOpaque)
      return ulyssesFail(ulyssesErrorUnsupportedElementSize,
                         "layouts[%d] shares kv heads across ranks, so head->seq sums their "
                         "gradients: its dataType must be ulyssesTypeFloat32, ulyssesTypeFloat16 "
                         "or ulyssesTypeBfloat16",
                         t);
  if (checkSend && sendbuffs == NULL)
    return ulyssesFail(ulyssesErrorNullPointer, "sendbuffs is NULL");
  if (checkRecv && recvbuffs == NULL)
    return ulyssesFail(ulyssesErrorNullPointer, "recvbuffs is NULL");

  bufferRange ranges[2 * ULYSSES_MAX_TENSORS + 1];
  int nRanges = 0;
  for (int side = 0; side < 2; side++) {
    if (!(side == ULYSSES_SEND ? checkSend : checkRecv)) continue;
    for (int t = 0; t < nTensors; t++) {
      const void* buffer = side == ULYSSES_SEND ? sendbuffs[t] : recvbuffs[t];
      size_t bytes = ulyssesPlanUserBytes(plan, op, t, (ulyssesSide)side);
      const char* name = side == ULYSSES_SEND ? "sendbuff" : "recvbuff";
      if (buffer == NULL && bytes > 0)
        return ulyssesFail(ulyssesErrorNullPointer,
                           "%s of tensor %d is NULL but %s needs %zu bytes there", name, t,
                           opNames[op], bytes);
      ranges[nRanges++] = (bufferRange){buffer, bytes, name, t, side == ULYSSES_RECV};
    }
  }

  size_t needed = plan->ops[op].workspace.totalBytes;
  if (needed > 0) {
    if (workspace == NULL)
      return ulyssesFail(ulyssesErrorNullPointer, "workspace is NULL but %s needs %zu bytes",
                         opNames[op], needed);
    if ((uintptr_t)workspace % ULYSSES_WORKSPACE_ALIGNMENT != 0)
      return ulyssesFail(ulyssesErrorMisalignedPointer, "workspace %p is not %d-byte aligned",
                         workspace, ULYSSES_WORKSPACE_ALIGNMENT);
    if (workspaceSize < needed)
      return ulyssesFail(ulyssesErrorWorkspaceTooSmall,
                         "workspaceSize is %zu bytes; %s with this plan needs %zu", workspaceSize,
                         opNames[op], needed);
    ranges[nRanges++] = (bufferRange){workspace, needed, "workspace", 0, 1};
  }

  /* Reading overlapping inputs is harmless; anything written must overlap
   * nothing else. */
  for (int i = 0; i < nRanges; i++)
    for (int j = i + 1; j < nRanges; j++)
      if ((ranges[i].writable || ranges[j].writable) && rangesOverlap(&ranges[i], &ranges[j]))
        return ulyssesFail(ulyssesErrorBufferOverlap, "%s of tensor %d overlaps %s of tensor %d",
                           ranges[i].name, ranges[i].index, ranges[j].name, ranges[j].index);
  return ulyssesSuccess;
}

ulyssesResult_t ulyssesCheckCommShape(const struct ulyssesPlan* plan, int commRanks, int commRank) {
  if (commRanks != plan->nRanks || commRank != plan->rank)
    return ulyssesFail(ulyssesErrorCommMismatch,
                       "comm is rank %d of %d but the plan was made for rank %d of %d", commRank,
                       commRanks, plan->rank, plan->nRanks);
  return ulyssesSuccess;
}

/* FNV-1a, 64 bits, over a value's bytes. */
static uint64_t hashBytes(uint64_t hash, const void* bytes, size_t count) {
  const unsigned char* p = bytes;
  for (size_t i = 0; i < count; i++) hash = (hash ^ p[i]) * 0x100000001b3ull;
  return hash;
}

static uint64_t hashInt(uint64_t hash, int64_t value) {
  return hashBytes(hash, &value, sizeof value);
}

/* What every op's fingerprint hashes but the op (ulyssesPlanOp.fingerprint:
 * this, then the op), found once per plan. */
static uint64_t computeFingerprint(const struct ulyssesPlan* plan) {
  uint64_t hash = 0xcbf29ce484222325ull;
  hash = hashInt(hash, plan->nRanks);
  hash = hashInt(hash, plan->mode);
  hash = hashInt(hash, plan->nTensors);
  for (int r = 0; r < plan->nRanks; r++) hash = hashInt(hash, plan->slotLengths[r]);
  for (int t = 0; t < plan->nTensors; t++) {
    const ulyssesLayout_t* layout = &plan->layouts[t];
    int64_t fields[] = {layout->batch,  layout->heads, layout->headDim,    layout->elementSize,
                        layout->packed, layout->order, layout->queryHeads, layout->dataType};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) hash = hashInt(hash, fields[i]);
  }
  return hash;
}

uint64_t ulyssesPlanFingerprint(const struct ulyssesPlan* plan, ulyssesOp_t op) {
  return plan->ops[op].fingerprint;
}

ulyssesResult_t ulyssesCheckFingerprints(const uint64_t* fingerprints, int nRanks, ulyssesOp_t op) {
  char ranks[160] = "";
  size_t used = 0;
  int differing = 0;
  for (int r = 1; r < nRanks; r++) {
    if (fingerprints[r] == fingerprints[0]) continue;
    if (differing++ < 8 && used < sizeof ranks)
      used += (size_t)snprintf(ranks + used, sizeof ranks - used, "%s%d", used ? ", " : "", r);
  }
  if (differing == 0) return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorPlanMismatch,
                     "the plans of %d rank(s) (%s%s) differ from rank 0's for %s: their lengths, "
                     "capacities, mode or layouts disagree; nothing was moved",
                     differing, ranks, differing > 8 ? ", ..." : "", opNames[op]);
}

ULYSSES_API ulyssesResult_t ulyssesGetWorkspaceSize(ulyssesPlan_t plan, ulyssesOp_t op,
                                                    size_t* workspaceSize) {
  ulyssesClearError();
  if (plan == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  if (workspaceSize == NULL) return ulyssesFail(ulyssesErrorNullPointer, "workspaceSize is NULL");
  if (!ulyssesOpIsValid((int)op))
    return ulyssesFail(ulyssesErrorInvalidArgument, "op is %d; it is not a ulyssesOp_t", (int)op);
  *workspaceSize = plan->ops[op].workspace.totalBytes;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesGetBufferSizes(ulyssesPlan_t plan, ulyssesOp_t op, int tensor,
                                                  size_t* sendBytes, size_t* recvBytes) {
  ulyssesClearError();
  if (plan == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  if (!ulyssesOpIsValid((int)op))
    return ulyssesFail(ulyssesErrorInvalidArgument, "op is %d; it is not a ulyssesOp_t", (int)op);
  if (tensor < 0 || tensor >= plan->nTensors)
    return ulyssesFail(ulyssesErrorInvalidArgument, "tensor is %d; the plan has %d", tensor,
                       plan->nTensors);
  if (sendBytes != NULL) *sendBytes = ulyssesPlanUserBytes(plan, op, tensor, ULYSSES_SEND);
  if (recvBytes != NULL) *recvBytes = ulyssesPlanUserBytes(plan, op, tensor, ULYSSES_RECV);
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesGetSegments(ulyssesPlan_t plan, ulyssesOp_t op, int tensor,
                                               int isSend, ulyssesSegment_t* segments) {
  ulyssesClearError();
  if (plan == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  if (segments == NULL) return ulyssesFail(ulyssesErrorNullPointer, "segments is NULL");
  if (!ulyssesOpIsValid((int)op))
    return ulyssesFail(ulyssesErrorInvalidArgument, "op is %d; it is not a ulyssesOp_t", (int)op);
  if (tensor < 0 || tensor >= plan->nTensors)
    return ulyssesFail(ulyssesErrorInvalidArgument, "tensor is %d; the plan has %d", tensor,
                       plan->nTensors);
  size_t size = segments[0].size;
  ULYSSES_CHECK(checkStructSize(size, ULYSSES_SEGMENT_SIZE_MIN, sizeof(ulyssesSegment_t),
                                "segments", "ulyssesSegment_t"));
  ulyssesSide side = isSend ? ULYSSES_SEND : ULYSSES_RECV;
  size_t regionOffset = plan->ops[op].workspace.regionOffset[side][tensor];
  unsigned char* entry = (unsigned char*)segments;
  for (int p = 0; p < plan->nRanks; p++, entry += size) {
    ulyssesSegment_t segment = ulyssesPlanSegment(plan, op, tensor, side, p);
    if (segment.place == ulyssesSegmentInWorkspace) segment.offset += regionOffset;
    segment.size = size;
    /* Fields of a newer caller's version that this library does not know: 0. */
    memset(entry, 0, size);
    memcpy(entry, &segment, sizeof segment);
  }
  return ulyssesSuccess;
}
