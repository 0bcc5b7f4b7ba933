/* Plans: pure host arithmetic (no CUDA, no NCCL). What each rank sends to and
 * receives from each peer, where it lives, which passes the layout lets us
 * skip, and the workspace layout. Every number here is a function of data that
 * all ranks share (the lengths or capacities and the layouts), so the ranks'
 * message lists agree by construction. */
#ifndef ULYSSES_PLAN_H_
#define ULYSSES_PLAN_H_

#include "call.h"
#include "ulysses.h"
#include "ulysses_index.h"

#define ULYSSES_OP_COUNT 3
#define ULYSSES_REGION_ALIGNMENT 256
/* The largest tensor, gathered over every rank, that a plan accepts. */
#define ULYSSES_MAX_TENSOR_BYTES ((int64_t)1 << 56)

typedef enum { ULYSSES_SEND = 0, ULYSSES_RECV = 1 } ulyssesSide;

/* How one side of one tensor is copied: a head slice, a row scatter, or the
 * all-gather's send, which is the user buffer as it is. */
enum { ULYSSES_SIDE_WHOLE = ULYSSES_COPY_HEAD_SUM + 1 };

typedef struct {
  int kind;         /* ULYSSES_COPY_HEAD_SLICE, _ROW_SCATTER, _HEAD_SUM or ULYSSES_SIDE_WHOLE */
  int direct;       /* every segment is a range of the user buffer: no copy */
  int64_t rowHeads; /* row scatter: heads in one user row */
} ulyssesSideShape;

/* Where the length table and each tensor's send and receive regions lie in
 * the workspace (bytes from its start). */
typedef struct {
  int needTable;
  size_t gatheredOffset, lengthsOffset, offsetsOffset, slotOffsetsOffset;
  size_t regionOffset[2][ULYSSES_MAX_TENSORS];
  size_t totalBytes;
} ulyssesWorkspaceLayout;

/* One side of one tensor for one op, as the plan fixes it. */
typedef struct {
  ulyssesSideShape shape;
  size_t userBytes;           /* the caller's buffer of this side */
  int64_t maxRunBytes;        /* the longest run a copy of this side moves */
  int64_t maxRuns;            /* the copy's runs at the longest slot: a bound from the host */
  ulyssesSegment_t* segments; /* nRanks; a workspace segment's offset is from its region */
  int stagedOnEveryRank;      /* copied through the workspace on every rank, not only here */
} ulyssesPlanSideInfo;

/* Everything an exchange of one op needs from the plan, computed when the
 * plan is made so that a call costs O(nTensors * nRanks) on the host. */
typedef struct {
  ulyssesWorkspaceLayout workspace;
  uint64_t fingerprint;
  ulyssesPlanSideInfo sides[2][ULYSSES_MAX_TENSORS];
  /* Message groups: consecutive tensors whose segments with each peer lie
   * back to back, peer after peer, in one region (the first member's) on
   * each side that copies them, so that one message per peer can carry
   * them: tensors of the same shape, and any tensors that both sides copy on
   * every rank, where a head sum's replicas keep fixed strides (one head-sum
   * shape, other members splitting their heads evenly: joinsGroup in
   * src/plan.c). Tensor t is member groupIndex[t] of groupSize[t]. */
  int groupIndex[ULYSSES_MAX_TENSORS];
  int groupSize[ULYSSES_MAX_TENSORS];
} ulyssesPlanOp;

struct ulyssesPlan {
  int nRanks;
  int rank;
  int mode; /* ULYSSES_MODE_EXACT or ULYSSES_MODE_CAPACITY */
  int nTensors;
  int64_t* slotLengths; /* exact: the lengths; capacity: the capacities */
  int64_t* slotOffsets; /* nRanks + 1 prefix sums of slotLengths */
  const int64_t* deviceLocalLength;
  ulyssesLayout_t layouts[ULYSSES_MAX_TENSORS];
  ulyssesPlanOp ops[ULYSSES_OP_COUNT];
  ulyssesSegment_t* segmentStore; /* every ops[].sides[][].segments, in one allocation */
};

int ulyssesOpIsValid(int op);
/* Whether the copies carry the length table in their launch parameters
 * (exact mode, at most ULYSSES_INLINE_TABLE_RANKS ranks): no table kernel, no
 * table in the workspace. */
int ulyssesPlanInlineTable(const struct ulyssesPlan* plan);
/* Lookups into what the plan computed when it was made: O(1) each. */
ulyssesSideShape ulyssesPlanSide(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                                 ulyssesSide side);
/* The segment of (tensor, side) exchanged with peer; a workspace segment's
 * offset is from its tensor's region. Inline: a call looks up 2 x nTensors x
 * nRanks of them. */
static inline ulyssesSegment_t ulyssesPlanSegment(const struct ulyssesPlan* plan, ulyssesOp_t op,
                                                  int tensor, ulyssesSide side, int peer) {
  return plan->ops[op].sides[side][tensor].segments[peer];
}
/* How many tensors from tensor on travel in one message to or from each
 * peer (every rank finds the same): the rest of its message group where both
 * sides copy it on every rank, else 1. */
static inline int ulyssesPlanMessageTensors(const struct ulyssesPlan* plan, ulyssesOp_t op,
                                            int tensor) {
  const ulyssesPlanOp* opPlan = &plan->ops[op];
  if (!opPlan->sides[ULYSSES_SEND][tensor].stagedOnEveryRank ||
      !opPlan->sides[ULYSSES_RECV][tensor].stagedOnEveryRank)
    return 1;
  return opPlan->groupSize[tensor] - opPlan->groupIndex[tensor];
}
/* Bytes the caller's buffer of (tensor, side) spans. */
size_t ulyssesPlanUserBytes(const struct ulyssesPlan* plan, ulyssesOp_t op, int tensor,
                            ulyssesSide side);
void ulyssesPlanWorkspace(const struct ulyssesPlan* plan, ulyssesOp_t op,
                          ulyssesWorkspaceLayout* layout);

/* Validates a call's buffers against its plan (not NULL) before anything is
 * enqueued: tensor count, NULL pointers, workspace size and alignment,
 * overlaps. checkSend / checkRecv: which sides the call touches. */
ulyssesResult_t ulyssesCheckBuffers(const ulyssesCall* call, int checkSend, int checkRecv);

/* The communicator's size and rank must be the plan's. */
ulyssesResult_t ulyssesCheckCommShape(const struct ulyssesPlan* plan, int commRanks, int commRank);

/* What every rank must agree on for op, hashed: the mode, every rank's
 * lengths or capacities, the layouts. Equal on ranks whose plans agree. */
uint64_t ulyssesPlanFingerprint(const struct ulyssesPlan* plan, ulyssesOp_t op);
/* Compares every rank's fingerprint; the error names the ranks that differ
 * from rank 0. Every rank, seeing the same fingerprints, gives the same result. */
ulyssesResult_t ulyssesCheckFingerprints(const uint64_t* fingerprints, int nRanks, ulyssesOp_t op);


#endif /* ULYSSES_PLAN_H_ */
