/* The one-pass exchange's index arithmetic and per-thread work (docs/one-pass.md):
 * each rank reads its own input and stores every run at its final place in a
 * peer's output, through the peer's address of that output. Compiles under
 * nvcc (host and device) and as plain C11, like ulysses_index.h, whose
 * primitives it composes: the staged sender's pack map says where a run is
 * read, the staged receiver's unpack map where it is written. The kernel
 * passes the peers' output addresses (from ncclGetLsaPointer, or plain
 * pointers in the simulated-ranks tests); nothing here knows about NCCL. */
#ifndef ULYSSES_ONE_PASS_INDEX_H_
#define ULYSSES_ONE_PASS_INDEX_H_

#include "ulysses_index.h"

/* The ops, as ulyssesOp_t numbers them (src/one_pass.c asserts it). */
enum {
  ULYSSES_ONE_PASS_SEQ_TO_HEAD = 0,
  ULYSSES_ONE_PASS_HEAD_TO_SEQ = 1,
  ULYSSES_ONE_PASS_ALL_GATHER = 2
};

typedef struct {
  const unsigned char* input; /* this rank's tensor */
  /* nRanks entries: peer p's output of this tensor, as this rank addresses it
   * (its own output at index rank). */
  unsigned char* const* peerOutputs;
  int64_t batch;
  int64_t packed;
  int64_t heads;      /* the tensor's H (kv heads for a kv tensor) */
  int64_t headBytes;  /* headDim * elementSize */
  ulyssesHeadSplit split; /* its heads among the ranks (ulyssesHeadSplitOf) */
  int32_t order;
  int32_t wordBytes; /* 1, 2, 4, 8 or 16: divides headBytes, the input and every output */
  int64_t chunkRuns; /* consecutive runs one group of lanes moves together, >= 1 */
} ulyssesOnePassTensor;

typedef struct {
  int32_t op; /* ULYSSES_ONE_PASS_* */
  int32_t nRanks;
  int32_t rank;
  int32_t nTensors;
  int32_t runLanes; /* lanes per run: a power of two, 1 .. ULYSSES_WARP_LANES */
  /* The word size every tensor moves, 0 where they differ (src/one_pass.c):
   * the simulated ranks' launcher picks its kernel by it; the NCCL kernel
   * narrows the words to the peers' addresses on the device instead. */
  int32_t launchWordBytes;
  /* The length table: real lengths, their prefix sums, the slots' prefix sums. */
  const int64_t* lengths;
  const int64_t* offsets;
  const int64_t* slotOffsets;
  ulyssesOnePassTensor tensors[ULYSSES_KERNEL_MAX_TENSORS];
} ulyssesOnePassArgs;

/* One run: bytes from input + inputOffset to peerOutputs[peer] + outputOffset. */
typedef struct {
  int64_t inputOffset;
  int64_t outputOffset;
  int64_t bytes;
  int peer;
  /* Runs of one piece lie at the op's strides or further apart in both
   * buffers, never closer, and pieces increase with the run (as in
   * ulyssesChunkSweep). */
  int64_t piece;
} ulyssesOnePassRun;

/* The heads peer takes: its group (a kv tensor: the kv heads its query heads
 * read); in the all-gather, every head. */
ULYSSES_HD int64_t ulyssesOnePassPeerHeads(const ulyssesOnePassArgs* a,
                                           const ulyssesOnePassTensor* x, int peer,
                                           int64_t* begin) {
  if (a->op == ULYSSES_ONE_PASS_ALL_GATHER) {
    *begin = 0;
    return x->heads;
  }
  return ulyssesSplitPeerHeads(&x->split, peer, begin);
}

/* Rows of the head side (or gathered tensor) that precede batch entry b's
 * global row g: batch first, entries at a stride of the slots' sum; sequence
 * first, row-major over (g, b). */
ULYSSES_HD int64_t ulyssesOnePassGlobalRow(const ulyssesOnePassArgs* a,
                                           const ulyssesOnePassTensor* x, int64_t b, int64_t g) {
  return x->order == ULYSSES_ORDER_BSHD ? b * a->slotOffsets[a->nRanks] + g : g * x->batch + b;
}

/* Rank owner's sequence-side row of batch entry b, local row s: batch first,
 * entries at a stride of owner's slot length. */
ULYSSES_HD int64_t ulyssesOnePassLocalRow(const ulyssesOnePassArgs* a,
                                          const ulyssesOnePassTensor* x, int owner, int64_t b,
                                          int64_t s) {
  int64_t slotLength = a->slotOffsets[owner + 1] - a->slotOffsets[owner];
  return x->order == ULYSSES_ORDER_BSHD ? b * slotLength + s : s * x->batch + b;
}

/* How many runs tensor t has on this rank, from the table's lengths. */
ULYSSES_HD int64_t ulyssesOnePassRunCount(const ulyssesOnePassArgs* a, int t) {
  const ulyssesOnePassTensor* x = &a->tensors[t];
  if (a->op == ULYSSES_ONE_PASS_HEAD_TO_SEQ) {
    int64_t begin;
    /* A rank that holds no heads has nothing to push. */
    if (ulyssesOnePassPeerHeads(a, x, a->rank, &begin) == 0) return 0;
    return x->batch * a->offsets[a->nRanks] * x->packed;
  }
  return (int64_t)a->nRanks * x->batch * a->lengths[a->rank] * x->packed;
}

/* Run `run` of tensor t. Seq -> head and the all-gather enumerate (peer, real
 * local row, packed index), peer slowest, so that consecutive runs read
 * consecutive local rows and write consecutive rows of one peer; head -> seq
 * enumerates this rank's real head-side rows and packed indices. */
ULYSSES_HD ulyssesOnePassRun ulyssesOnePassRunAt(const ulyssesOnePassArgs* a, int t, int64_t run) {
  const ulyssesOnePassTensor* x = &a->tensors[t];
  ulyssesOnePassRun result;
  int64_t k = run % x->packed, realRow = run / x->packed, b, begin;
  if (a->op == ULYSSES_ONE_PASS_HEAD_TO_SEQ) {
    int64_t totalLength = a->offsets[a->nRanks];
    int64_t g = x->order == ULYSSES_ORDER_BSHD ? realRow % totalLength : realRow / x->batch;
    b = x->order == ULYSSES_ORDER_BSHD ? realRow / totalLength : realRow % x->batch;
    int owner = ulyssesRowOwner(a->offsets, a->nRanks, g);
    int64_t count = ulyssesOnePassPeerHeads(a, x, a->rank, &begin);
    int64_t inputRow = ulyssesOnePassGlobalRow(a, x, b, g);
    int64_t outputRow = ulyssesOnePassLocalRow(a, x, owner, b, g - a->offsets[owner]);
    result.inputOffset = (inputRow * x->packed + k) * count * x->headBytes;
    result.outputOffset = ((outputRow * x->packed + k) * x->heads + begin) * x->headBytes;
    result.bytes = count * x->headBytes;
    result.peer = owner;
    /* Batch first, the owners repeat in every batch entry. */
    result.piece = x->order == ULYSSES_ORDER_BSHD ? b * a->nRanks + owner : owner;
    return result;
  }
  int64_t length = a->lengths[a->rank];
  int64_t runsPerPeer = x->batch * length;
  int peer = (int)(realRow / runsPerPeer);
  int64_t i = realRow % runsPerPeer;
  int64_t s = x->order == ULYSSES_ORDER_BSHD ? i % length : i / x->batch;
  b = x->order == ULYSSES_ORDER_BSHD ? i / length : i % x->batch;
  int64_t count = ulyssesOnePassPeerHeads(a, x, peer, &begin);
  int64_t inputRow = ulyssesOnePassLocalRow(a, x, a->rank, b, s);
  int64_t outputRow = ulyssesOnePassGlobalRow(a, x, b, a->offsets[a->rank] + s);
  result.inputOffset = ((inputRow * x->packed + k) * x->heads + begin) * x->headBytes;
  result.outputOffset = (outputRow * x->packed + k) * count * x->headBytes;
  result.bytes = count * x->headBytes;
  result.peer = peer;
  result.piece = peer;
  return result;
}

/* The strides of consecutive runs of one piece, one packed index apart, in
 * the input and in the output. */
ULYSSES_HD void ulyssesOnePassStrides(const ulyssesOnePassArgs* a, const ulyssesOnePassTensor* x,
                                      const ulyssesOnePassRun* r, int64_t* inputStride,
                                      int64_t* outputStride) {
  if (a->op == ULYSSES_ONE_PASS_HEAD_TO_SEQ) {
    *inputStride = r->bytes;
    *outputStride = x->heads * x->headBytes;
  } else {
    *inputStride = x->heads * x->headBytes;
    *outputStride = r->bytes;
  }
}

/* One thread's share of count runs from r on, at the op's strides, in words
 * of wordBytes. */
ULYSSES_HD void ulyssesOnePassMoveThread(const ulyssesOnePassArgs* a, const ulyssesOnePassTensor* x,
                                         ulyssesOnePassRun r, int64_t count, int wordBytes,
                                         int lane, int laneCount) {
  /* A peer that owns no heads has empty runs. */
  if (r.bytes == 0) return;
  ulyssesSweep sweep;
  ulyssesOnePassStrides(a, x, &r, &sweep.srcStride, &sweep.dstStride);
  sweep.src = x->input + r.inputOffset;
  sweep.dst = x->peerOutputs[r.peer] + r.outputOffset;
  sweep.count = count;
  sweep.bytes = r.bytes;
  ulyssesCopyRunsThread(&sweep, wordBytes, lane, laneCount);
}

/* Chunks of x->chunkRuns runs that tensor t's runs make. */
ULYSSES_HD int64_t ulyssesOnePassChunkCount(const ulyssesOnePassArgs* a, int t) {
  return (ulyssesOnePassRunCount(a, t) + a->tensors[t].chunkRuns - 1) / a->tensors[t].chunkRuns;
}

/* One thread's share of chunk `chunk` of tensor t, in words of wordBytes (0,
 * the tensor's own, only from the CPU tests: the kernels pass a constant):
 * one strided sweep where the chunk's first and last runs
 * share a piece and lie exactly (count - 1) strides apart in both buffers
 * (then, runs of a piece never being closer than the strides, every run
 * between is where the sweep puts it), else run by run. A kernel compiled
 * for one word size passes it as a constant, so that it carries no copy loop
 * of the others (nor their registers). */
ULYSSES_HD void ulyssesOnePassChunkThread(const ulyssesOnePassArgs* a, int t, int64_t chunk,
                                          int lane, int laneCount, int wordBytes) {
  const ulyssesOnePassTensor* x = &a->tensors[t];
  if (wordBytes == 0) wordBytes = x->wordBytes;
  int64_t firstRun = chunk * x->chunkRuns;
  int64_t count = ulyssesOnePassRunCount(a, t) - firstRun;
  if (count > x->chunkRuns) count = x->chunkRuns;
  if (count <= 0) return;
  ulyssesOnePassRun first = ulyssesOnePassRunAt(a, t, firstRun);
  if (count > 1) {
    ulyssesOnePassRun last = ulyssesOnePassRunAt(a, t, firstRun + count - 1);
    int64_t inputStride, outputStride;
    ulyssesOnePassStrides(a, x, &first, &inputStride, &outputStride);
    if (first.piece == last.piece && first.bytes == last.bytes &&
        last.inputOffset - first.inputOffset == (count - 1) * inputStride &&
        last.outputOffset - first.outputOffset == (count - 1) * outputStride) {
      ulyssesOnePassMoveThread(a, x, first, count, wordBytes, lane, laneCount);
      return;
    }
  }
  for (int64_t k = 0; k < count; k++)
    ulyssesOnePassMoveThread(a, x, k == 0 ? first : ulyssesOnePassRunAt(a, t, firstRun + k), 1,
                             wordBytes, lane, laneCount);
}

/*------------------------------------------------------------------------
 * The NCCL launch's publish step (docs/one-pass.md, "Synchronisation"):
 * before the entry barrier every rank stores one slot into every peer's
 * control buffer; after it, every rank reads the same nRanks slots, so every
 * rank reaches the same verdict from them.
 *----------------------------------------------------------------------*/
/* The most ranks a load/store team holds (an NVL72 rack). */
#define ULYSSES_ONE_PASS_MAX_PEERS 72
/* Set in the comm's status word when the ranks' outputs of a tensor are not
 * in one collective allocation of ulyssesMemAlloc: no rank writes anything. */
#define ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS 0x4u

/* What rank r publishes: its real length, and where each of its outputs
 * lies (the allocation's serial, the same on every rank for the k-th
 * collective ulyssesMemAlloc, and the output's offset in it). */
typedef struct {
  int64_t length;
  uint64_t serials[ULYSSES_KERNEL_MAX_TENSORS];
  uint64_t offsets[ULYSSES_KERNEL_MAX_TENSORS];
} ulyssesOnePassSlot;

/* The host's part of the publish step and the table. */
typedef struct {
  int32_t capacityMode;
  /* Exact mode: every rank's length; capacity mode: every rank's capacity. */
  int64_t slotLengths[ULYSSES_ONE_PASS_MAX_PEERS];
  /* Capacity mode: this rank's real length, on the device. */
  const int64_t* localLength;
  /* This rank's slot but its length (read from localLength in capacity mode). */
  ulyssesOnePassSlot mine;
  uint32_t* status; /* the comm's status word */
} ulyssesOnePassSync;

/* From slots (rank p's at index p, as published to this rank): the length
 * table (lengths, offsets and slotOffsets of nRanks, nRanks + 1 and nRanks + 1
 * entries) and the error bits: the clamped capacity-mode lengths' (the
 * exchange goes on with the clamped lengths, as on the staged path) and
 * ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS when a tensor's outputs are not in
 * one collective allocation on every rank (then nothing may be written).
 * Every rank compares with rank 0's slot, not its own, so that all reach the
 * same verdict. */
ULYSSES_HD uint32_t ulyssesOnePassResolve(const ulyssesOnePassSync* sync, int nRanks, int nTensors,
                                          const ulyssesOnePassSlot* slots, int64_t* lengths,
                                          int64_t* offsets, int64_t* slotOffsets) {
  uint32_t status = 0;
  offsets[0] = 0;
  slotOffsets[0] = 0;
  for (int p = 0; p < nRanks; p++) {
    int64_t slotLength = sync->slotLengths[p];
    if (sync->capacityMode)
      status |= ulyssesClampLength(slots[p].length, slotLength, &lengths[p]);
    else
      lengths[p] = slotLength;
    offsets[p + 1] = offsets[p] + lengths[p];
    slotOffsets[p + 1] = slotOffsets[p] + slotLength;
    for (int t = 0; t < nTensors; t++)
      if (slots[p].serials[t] != slots[0].serials[t])
        status |= ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS;
  }
  return status;
}

/* Narrows each tensor's word size to what the peers' output addresses (as
 * this rank resolved them) allow: the host knew only its own. */
ULYSSES_HD void ulyssesOnePassNarrowWords(ulyssesOnePassArgs* a) {
  for (int t = 0; t < a->nTensors; t++) {
    ulyssesOnePassTensor* x = &a->tensors[t];
    for (int p = 0; p < a->nRanks; p++) {
      int word = ulyssesWordBytes(x->headBytes, x->input, x->peerOutputs[p]);
      if (word < x->wordBytes) x->wordBytes = word;
    }
  }
}

#endif /* ULYSSES_ONE_PASS_INDEX_H_ */
