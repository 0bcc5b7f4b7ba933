/* The index arithmetic of every kernel, and each kernel's per-thread work,
 * as functions of the thread's coordinates. This header compiles under nvcc
 * (host and device) and as plain C11, so that the CPU tests run exactly the
 * code the GPU runs, for every coordinate of a launch.
 *
 * Vocabulary. A rank's tensor is a list of rows (one sequence position of one
 * batch entry), each row `packed` groups of `heads` heads of headBytes bytes.
 * A segment is what one rank sends to one peer for one tensor; it is laid out
 * as the rows it carries, in the order of the sequence-side tensor, each row
 * cut to the heads it carries. A slot is the room a segment has: batch *
 * slot length rows (the slot length is the capacity in capacity mode), laid
 * out like the sender's tensor, so its real rows lead each batch entry
 * (batch first) or the whole slot (sequence first).
 * Two copies exist, each used in both directions (pack: user -> segments,
 * unpack: segments -> user):
 *  - head slice: the sequence-side tensor <-> one segment per peer p, holding
 *    every local row cut to p's heads;
 *  - row scatter: the head-side (or gathered) tensor <-> one segment per peer
 *    r, holding r's rows.
 * A run is the contiguous bytes one (row, packed index, peer) moves.
 *
 * How the work is split (the launch parameters, chosen on the host by
 * ulyssesGroupLanes and ulyssesChunkRuns at the end of this file):
 *  - a group of runLanes lanes of a warp takes a chunk of chunkRuns
 *    consecutive runs of one tensor, found by a grid-stride loop;
 *  - if the chunk's runs lie at fixed strides (ulyssesChunkSweep), the group
 *    sweeps them as one list of words, lane l taking words l, l + runLanes,
 *    ..., ULYSSES_WORDS_IN_FLIGHT loads before as many stores; else run by
 *    run, the index arithmetic once per run;
 *  - long runs: lanes so that each has up to ULYSSES_WORDS_IN_FLIGHT words of
 *    a run, chunks of ULYSSES_CHUNK_WORDS_PER_LANE words per lane (one run);
 *  - short runs (below ULYSSES_SHORT_RUN_BYTES): at least a cache line per
 *    round of the group's loads and ULYSSES_SHORT_CHUNK_WORDS_PER_LANE words
 *    per lane per chunk, as long as the chunks still give
 *    ULYSSES_FILL_THREADS threads work;
 *  - a head sum: one run per group, lanes over the head's aligned words. */
#ifndef ULYSSES_INDEX_H_
#define ULYSSES_INDEX_H_

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define ULYSSES_HD static __host__ __device__ __forceinline__
#else
#define ULYSSES_HD static inline
#endif

#ifdef __cplusplus
#define ULYSSES_ALIGNAS(n) alignas(n)
#else
#define ULYSSES_ALIGNAS(n) _Alignas(n)
#endif

#define ULYSSES_KERNEL_MAX_TENSORS 8
/* Words one lane loads before it stores any: independent loads in flight
 * are what a copy needs to reach memory bandwidth. */
#ifndef ULYSSES_WORDS_IN_FLIGHT
#define ULYSSES_WORDS_IN_FLIGHT 8
#endif
#if ULYSSES_WORDS_IN_FLIGHT < 1
#error "ULYSSES_WORDS_IN_FLIGHT must be at least 1"
#endif
#define ULYSSES_WARP_LANES 32
/* Threads of a copy kernel's block. */
#define ULYSSES_COPY_THREADS 256
/* Words each lane of a group moves per chunk of runs (ulyssesCopyChunkThread):
 * enough that the index arithmetic of a chunk is small against its copy. */
#ifndef ULYSSES_CHUNK_WORDS_PER_LANE
#define ULYSSES_CHUNK_WORDS_PER_LANE 8
#endif
/* Runs shorter than this get groups of at least a cache line per round of
 * loads and longer chunks: measured on an H200 (bench/RESULTS.md, d8174f7),
 * runs of 256 B to 1 KiB reached 0.71-0.90 of a copy, runs of 2 KiB and more
 * 0.90-0.94. */
#ifndef ULYSSES_SHORT_RUN_BYTES
#define ULYSSES_SHORT_RUN_BYTES 2048
#endif
#ifndef ULYSSES_SHORT_CHUNK_WORDS_PER_LANE
#define ULYSSES_SHORT_CHUNK_WORDS_PER_LANE 32
#endif
#define ULYSSES_LINE_BYTES 128
/* The longest run (in words) whose words a sweep counts in 32 bits; longer
 * runs are swept one at a time (ulyssesCopyRunsThread). A knob only so that
 * the CPU tests can take that path with short runs. */
#ifndef ULYSSES_COPY_COUNTED_WORDS
#define ULYSSES_COPY_COUNTED_WORDS INT32_MAX
#endif
/* Threads the chunks of a launch must keep busy before they may grow: a few
 * waves of the largest GPU (an H200 holds 132 x 2 blocks of 256), so that
 * longer chunks never leave multiprocessors idle (the whole-row chunks of
 * 2f341a6 did, at P = 16 below 256 MiB). */
#ifndef ULYSSES_FILL_THREADS
#define ULYSSES_FILL_THREADS (1 << 18)
#endif
#if ULYSSES_CHUNK_WORDS_PER_LANE < 1 || ULYSSES_SHORT_CHUNK_WORDS_PER_LANE < 1 || \
    ULYSSES_FILL_THREADS < 1
#error "the chunk knobs must be at least 1"
#endif
/* Ranks whose host values one length-table launch carries. */
#define ULYSSES_TABLE_CHUNK 128
/* Ranks whose exact-mode table a copy launch carries in its parameters
 * (2 KiB of them), instead of reading a table kernel's output. */
#define ULYSSES_INLINE_TABLE_RANKS 128

enum { ULYSSES_MODE_EXACT = 0, ULYSSES_MODE_CAPACITY = 1 };
enum { ULYSSES_COPY_HEAD_SLICE = 0, ULYSSES_COPY_ROW_SCATTER = 1, ULYSSES_COPY_HEAD_SUM = 2 };
enum {
  ULYSSES_TYPE_OPAQUE = 0,
  ULYSSES_TYPE_FLOAT32 = 1,
  ULYSSES_TYPE_FLOAT16 = 2,
  ULYSSES_TYPE_BFLOAT16 = 3
};
enum { ULYSSES_ORDER_BSHD = 0, ULYSSES_ORDER_SBHD = 1 };
/* The length table's error bits: the public header's ULYSSES_STATUS_* (which
 * this header does not include; src/plan.c asserts that they agree). */
#define ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY 0x1u
#define ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH 0x2u

/*------------------------------------------------------------------------
 * Head split: rank p owns heads [begin, begin + count); the first
 * heads % nRanks ranks take one extra head.
 *----------------------------------------------------------------------*/
ULYSSES_HD int64_t ulyssesHeadBegin(int64_t heads, int nRanks, int rank) {
  int64_t base = heads / nRanks, extra = heads % nRanks;
  return rank * base + (rank < extra ? rank : extra);
}

ULYSSES_HD int64_t ulyssesHeadCount(int64_t heads, int nRanks, int rank) {
  return heads / nRanks + (rank < heads % nRanks ? 1 : 0);
}

/* The heads peer gets of a tensor of `heads` heads: its group of the plain
 * split, or, for the kv heads of grouped-query attention (queryHeads > 0),
 * the kv heads its query heads read. Returns the count; *begin the first. */
ULYSSES_HD int64_t ulyssesPeerHeads(int64_t heads, int64_t queryHeads, int nRanks, int peer,
                                    int64_t* begin) {
  if (queryHeads == 0) {
    *begin = ulyssesHeadBegin(heads, nRanks, peer);
    return ulyssesHeadCount(heads, nRanks, peer);
  }
  int64_t group = queryHeads / heads;
  int64_t queryBegin = ulyssesHeadBegin(queryHeads, nRanks, peer);
  int64_t queryCount = ulyssesHeadCount(queryHeads, nRanks, peer);
  *begin = queryBegin / group;
  if (queryCount == 0) return 0;
  return (queryBegin + queryCount + group - 1) / group - *begin;
}

/* The heads of the peers before peer, summed: where peer's slice starts
 * among a row's segments (kv heads shared by several peers count for each). */
ULYSSES_HD int64_t ulyssesPeerHeadPrefix(int64_t heads, int64_t queryHeads, int nRanks, int peer) {
  if (queryHeads == 0) return ulyssesHeadBegin(heads, nRanks, peer);
  int64_t prefix = 0, begin;
  for (int q = 0; q < peer; q++) prefix += ulyssesPeerHeads(heads, queryHeads, nRanks, q, &begin);
  return prefix;
}

/* The rank that owns head `head` of `heads` in the plain split (the inverse
 * of ulyssesHeadBegin / ulyssesHeadCount). */
ULYSSES_HD int ulyssesHeadOwner(int64_t heads, int nRanks, int64_t head) {
  int64_t base = heads / nRanks, extra = heads % nRanks;
  if (head < extra * (base + 1)) return (int)(head / (base + 1));
  return (int)(extra + (head - extra * (base + 1)) / base);
}

/* The peers that hold kv head `head` (grouped-query: every peer whose query
 * heads read it; plain: its owner) are the consecutive ranks first .. last,
 * each holding at least that head; *prefix: ulyssesPeerHeadPrefix of first,
 * where first's slices start among a row's segments. Found once per run so
 * that the head sum's per-element work does not grow with the rank count. */
typedef struct {
  int first, last;
  int64_t prefix;
} ulyssesHolders;

ULYSSES_HD ulyssesHolders ulyssesHeadHolders(int64_t heads, int64_t queryHeads, int nRanks,
                                             int64_t head) {
  ulyssesHolders h;
  if (queryHeads == 0) {
    h.first = h.last = ulyssesHeadOwner(heads, nRanks, head);
  } else {
    /* A peer reads kv head `head` when its query heads meet [head * G,
     * head * G + G): the owners of the two ends and the ranks between. */
    int64_t group = queryHeads / heads;
    h.first = ulyssesHeadOwner(queryHeads, nRanks, head * group);
    h.last = ulyssesHeadOwner(queryHeads, nRanks, head * group + group - 1);
  }
  h.prefix = ulyssesPeerHeadPrefix(heads, queryHeads, nRanks, h.first);
  return h;
}

/* The rank whose rows hold global position g: the largest r with
 * offsets[r] <= g (ranks of length zero own nothing: a later rank with the
 * same offset wins). Requires 0 <= g < offsets[nRanks]. */
ULYSSES_HD int ulyssesRowOwner(const int64_t* offsets, int nRanks, int64_t g) {
  int low = 0, high = nRanks - 1;
  while (low < high) {
    int mid = low + (high - low + 1) / 2;
    if (offsets[mid] <= g)
      low = mid;
    else
      high = mid - 1;
  }
  return low;
}

/*------------------------------------------------------------------------
 * The length table: every kernel reads lengths and offsets from here, in
 * device memory, never from the host.
 *----------------------------------------------------------------------*/
typedef struct {
  int32_t mode;
  int32_t nRanks;
  int32_t chunkBegin; /* first rank of this launch */
  int32_t chunkCount; /* ranks in this launch, <= ULYSSES_TABLE_CHUNK */
  /* Exact mode: the lengths; capacity mode: the capacities; of ranks
   * chunkBegin .. chunkBegin + chunkCount - 1. */
  int64_t hostValues[ULYSSES_TABLE_CHUNK];
  const int64_t* gatheredLengths; /* capacity mode: every rank's raw length */
  int64_t* lengths;               /* nRanks: real lengths, clamped to capacity */
  int64_t* offsets;               /* nRanks + 1: prefix sums of lengths */
  int64_t* slotOffsets;           /* nRanks + 1: prefix sums of slot lengths */
  uint32_t* status;               /* capacity mode: error bits, OR-ed */
} ulyssesTableArgs;

/* The largest power of two up to 16 that divides headBytes and both bases:
 * the word a copy between them may move. */
ULYSSES_HD int ulyssesWordBytes(int64_t headBytes, const void* user, const void* segments) {
  uint64_t bits = (uint64_t)headBytes | (uint64_t)(uintptr_t)user | (uint64_t)(uintptr_t)segments;
  int word = 16;
  while (word > 1 && bits % (uint64_t)word != 0) word /= 2;
  return word;
}

/* A capacity-mode length as a rank reported it, clamped into [0, capacity]
 * so that no kernel ever addresses beyond the slot or the caller's buffer;
 * returns the error bits of a length that needed it. */
ULYSSES_HD uint32_t ulyssesClampLength(int64_t raw, int64_t capacity, int64_t* length) {
  if (raw < 0) {
    *length = 0;
    return ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH;
  }
  if (raw > capacity) {
    *length = capacity;
    return ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY;
  }
  *length = raw;
  return 0;
}

/* Rank chunkBegin + i's real and slot length; returns its error bits. */
ULYSSES_HD uint32_t ulyssesTableEntry(const ulyssesTableArgs* a, int i, int64_t* length,
                                      int64_t* slotLength) {
  int64_t hostValue = a->hostValues[i];
  if (a->mode == ULYSSES_MODE_EXACT) {
    *length = hostValue;
    *slotLength = hostValue;
    return 0;
  }
  *slotLength = hostValue;
  return ulyssesClampLength(a->gatheredLengths[a->chunkBegin + i], hostValue, length);
}

/* Thread i's writes of one table launch, given the inclusive prefix sums of
 * the launch's lengths and slot lengths up to i (the block scan's). Launches
 * of ULYSSES_TABLE_CHUNK ranks run in order on one stream, so each continues
 * the sums from the last entry the previous one wrote, at chunkBegin; no
 * thread of this launch writes that entry, so reading it races with nothing. */
ULYSSES_HD void ulyssesTableStore(const ulyssesTableArgs* a, int i, int64_t length,
                                  int64_t lengthPrefix, int64_t slotPrefix) {
  if (i == 0 && a->chunkBegin == 0) {
    a->offsets[0] = 0;
    a->slotOffsets[0] = 0;
  }
  if (i >= a->chunkCount) return;
  int64_t lengthCarry = a->chunkBegin == 0 ? 0 : a->offsets[a->chunkBegin];
  int64_t slotCarry = a->chunkBegin == 0 ? 0 : a->slotOffsets[a->chunkBegin];
  int rank = a->chunkBegin + i;
  a->lengths[rank] = length;
  a->offsets[rank + 1] = lengthCarry + lengthPrefix;
  a->slotOffsets[rank + 1] = slotCarry + slotPrefix;
}

/*------------------------------------------------------------------------
 * The pack / unpack copy.
 *----------------------------------------------------------------------*/
typedef struct {
  unsigned char* user;     /* the caller's tensor (sequence side for a head slice,
                              head side or gathered for a row scatter) */
  unsigned char* segments; /* this tensor's region of the workspace */
  int64_t batch;
  int64_t packed;
  int64_t heads;      /* the tensor's H */
  int64_t headBytes;  /* headDim * elementSize */
  int64_t rowHeads;   /* row scatter: heads in one user row */
  int64_t queryHeads; /* 0, or the query heads of a kv tensor (ulyssesPeerHeads) */
  int32_t kind;       /* ULYSSES_COPY_HEAD_SLICE, _ROW_SCATTER or _HEAD_SUM (unpack only) */
  int32_t dataType;   /* head sum: ULYSSES_TYPE_FLOAT32, _FLOAT16 or _BFLOAT16 */
  int32_t order;
  int32_t wordBytes; /* 1, 2, 4, 8 or 16: divides headBytes and both bases */
  int32_t active;    /* 0: this tensor travels straight from/to the user buffer */
  int64_t chunkRuns; /* consecutive runs one group of lanes moves together, >= 1 */
  int64_t hostRuns;  /* the host's bound of its runs (the device may find fewer) */
  int64_t hostBytes; /* the host's bound of the bytes it moves */
  int64_t gridBlocks; /* blocks of its grid row that work (ulyssesShareWave) */
} ulyssesCopyTensor;

typedef struct {
  int32_t toSegments; /* 1: pack, 0: unpack */
  int32_t nRanks;
  int32_t rank;
  int32_t nTensors;
  int32_t runLanes; /* lanes per run: a power of two, 1 .. ULYSSES_WARP_LANES */
  /* The length table in device memory (ulyssesTableArgs wrote it)... */
  const int64_t* lengths;
  const int64_t* offsets;
  const int64_t* slotOffsets;
  ulyssesCopyTensor tensors[ULYSSES_KERNEL_MAX_TENSORS];
  /* ...or, in exact mode with at most ULYSSES_INLINE_TABLE_RANKS ranks, the
   * host's table carried in the launch's parameters, so that the exchange
   * launches no table kernel (a slot is then the real length). */
  int32_t inlineTable;
  int64_t inlineLengths[ULYSSES_INLINE_TABLE_RANKS];
  int64_t inlineOffsets[ULYSSES_INLINE_TABLE_RANKS + 1];
} ulyssesCopyArgs;

/* The table a copy reads: the inline one, or the one in device memory. */
ULYSSES_HD const int64_t* ulyssesCopyLengths(const ulyssesCopyArgs* a) {
  return a->inlineTable ? a->inlineLengths : a->lengths;
}

ULYSSES_HD const int64_t* ulyssesCopyOffsets(const ulyssesCopyArgs* a) {
  return a->inlineTable ? a->inlineOffsets : a->offsets;
}

ULYSSES_HD const int64_t* ulyssesCopySlotOffsets(const ulyssesCopyArgs* a) {
  return a->inlineTable ? a->inlineOffsets : a->slotOffsets;
}

typedef struct {
  int64_t userOffset;
  int64_t segmentOffset;
  int64_t bytes;
  /* Runs of one piece follow each other at fixed strides or further apart,
   * never closer (see ulyssesChunkSweep); pieces increase with the run. */
  int64_t piece;
} ulyssesRun;

/* How many runs tensor t has, from the device-side lengths. */
ULYSSES_HD int64_t ulyssesCopyRunCount(const ulyssesCopyArgs* a, int t) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (!x->active) return 0;
  if (x->kind == ULYSSES_COPY_HEAD_SLICE)
    /* In the order the plan bounded the product: local runs, then peers. */
    return x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed * a->nRanks;
  if (x->kind == ULYSSES_COPY_HEAD_SUM)
    return x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed * x->heads;
  return x->batch * ulyssesCopyOffsets(a)[a->nRanks];
}

/* The row of the sequence-side tensor holding its realRow-th real row. */
ULYSSES_HD int64_t ulyssesLocalRow(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x,
                                   int64_t realRow) {
  int64_t length = ulyssesCopyLengths(a)[a->rank];
  int64_t slotLength = ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank];
  return x->order == ULYSSES_ORDER_BSHD ? realRow / length * slotLength + realRow % length
                                        : realRow;
}

/* Run `run` of tensor t: a head slice enumerates (peer, real row, packed
 * index), peer slowest; a row scatter enumerates the user tensor's real rows.
 * Batch-first tensors keep each batch entry's rows at a stride of the slot
 * length (capacity mode: [B, capacity, ...], the real rows first in each
 * entry); sequence-first tensors hold their real rows as a prefix. */
ULYSSES_HD ulyssesRun ulyssesCopyRunAt(const ulyssesCopyArgs* a, int t, int64_t run) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesRun result;
  int64_t slotRows = x->batch * (ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank]);
  if (x->kind == ULYSSES_COPY_HEAD_SLICE) {
    int64_t runsPerPeer = x->batch * ulyssesCopyLengths(a)[a->rank] * x->packed;
    int peer = (int)(run / runsPerPeer);
    int64_t rowPart =
        ulyssesLocalRow(a, x, run % runsPerPeer / x->packed) * x->packed + run % x->packed;
    int64_t headBegin;
    int64_t headCount = ulyssesPeerHeads(x->heads, x->queryHeads, a->nRanks, peer, &headBegin);
    int64_t headPrefix = ulyssesPeerHeadPrefix(x->heads, x->queryHeads, a->nRanks, peer);
    result.userOffset = (rowPart * x->heads + headBegin) * x->headBytes;
    result.segmentOffset =
        slotRows * x->packed * headPrefix * x->headBytes + rowPart * headCount * x->headBytes;
    result.bytes = headCount * x->headBytes;
    result.piece = peer;
  } else if (x->kind == ULYSSES_COPY_HEAD_SUM) {
    /* One kv head of one row; its replicas are read by ulyssesSumRunThread. */
    int64_t rowPart =
        ulyssesLocalRow(a, x, run / x->heads / x->packed) * x->packed + run / x->heads % x->packed;
    result.userOffset = (rowPart * x->heads + run % x->heads) * x->headBytes;
    result.segmentOffset = 0;
    result.bytes = x->headBytes;
    result.piece = run;
  } else {
    int64_t totalLength = ulyssesCopyOffsets(a)[a->nRanks];
    int64_t b, g, userRow;
    if (x->order == ULYSSES_ORDER_BSHD) {
      b = run / totalLength;
      g = run % totalLength;
      userRow = b * ulyssesCopySlotOffsets(a)[a->nRanks] + g;
    } else {
      g = run / x->batch;
      b = run % x->batch;
      userRow = run;
    }
    int owner = ulyssesRowOwner(ulyssesCopyOffsets(a), a->nRanks, g);
    int64_t s = g - ulyssesCopyOffsets(a)[owner];
    int64_t ownerSlotLength = ulyssesCopySlotOffsets(a)[owner + 1] - ulyssesCopySlotOffsets(a)[owner];
    int64_t segmentRow =
        x->order == ULYSSES_ORDER_BSHD ? b * ownerSlotLength + s : s * x->batch + b;
    int64_t rowBytes = x->packed * x->rowHeads * x->headBytes;
    result.userOffset = userRow * rowBytes;
    result.segmentOffset = (x->batch * ulyssesCopySlotOffsets(a)[owner] + segmentRow) * rowBytes;
    result.bytes = rowBytes;
    /* Batch first, the owners repeat in every batch entry. */
    result.piece = x->order == ULYSSES_ORDER_BSHD ? b * a->nRanks + owner : owner;
  }
  return result;
}

/*------------------------------------------------------------------------
 * Floating point for the head sum, in integer arithmetic where it can be, so
 * that host and device give the same bits: loads widen exactly, stores round
 * to nearest even, a NaN is stored as the type's canonical quiet NaN.
 *----------------------------------------------------------------------*/
ULYSSES_HD float ulyssesFloatFromBits(uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

ULYSSES_HD uint32_t ulyssesBitsFromFloat(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
}

ULYSSES_HD float ulyssesHalfToFloat(uint32_t half) {
  uint32_t sign = (half & 0x8000u) << 16, exponent = half >> 10 & 0x1fu, mantissa = half & 0x3ffu;
  if (exponent == 0) {
    /* Zero or subnormal: mantissa * 2^-24, exact in fp32. */
    float magnitude = (float)mantissa * 5.9604644775390625e-8f;
    return ulyssesFloatFromBits(ulyssesBitsFromFloat(magnitude) | sign);
  }
  if (exponent == 31) return ulyssesFloatFromBits(sign | 0x7f800000u | mantissa << 13);
  return ulyssesFloatFromBits(sign | (exponent + 112) << 23 | mantissa << 13);
}

/* Round to nearest even (after F. Giesen's float_to_half_fast3_rtne). */
ULYSSES_HD uint32_t ulyssesFloatToHalf(float value) {
  uint32_t bits = ulyssesBitsFromFloat(value);
  uint32_t sign = bits >> 16 & 0x8000u, magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return 0x7e00u;
  if (magnitude >= 0x47800000u) return sign | 0x7c00u; /* 2^16 and up: infinity */
  if (magnitude < 0x38800000u) {
    /* Below the smallest normal half: adding 0.5 lets the FPU round the
     * subnormal's bits into the low mantissa. */
    float shifted = ulyssesFloatFromBits(magnitude) + 0.5f;
    return sign | (ulyssesBitsFromFloat(shifted) - 0x3f000000u);
  }
  uint32_t odd = magnitude >> 13 & 1u;
  magnitude += 0xc8000fffu + odd; /* rebias the exponent by -112, round */
  return sign | magnitude >> 13;
}

ULYSSES_HD uint32_t ulyssesFloatToBfloat16(float value) {
  uint32_t bits = ulyssesBitsFromFloat(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return (bits + 0x7fffu + (bits >> 16 & 1u)) >> 16;
}

/* An element's value from its raw bits (the low 16 for a 16-bit type), and
 * the raw bits of a value, as the head sum converts them. */
ULYSSES_HD float ulyssesFloatOfBits(uint32_t raw, int dataType) {
  if (dataType == ULYSSES_TYPE_FLOAT32) return ulyssesFloatFromBits(raw);
  if (dataType == ULYSSES_TYPE_FLOAT16) return ulyssesHalfToFloat(raw & 0xffffu);
  return ulyssesFloatFromBits((raw & 0xffffu) << 16);
}

ULYSSES_HD uint32_t ulyssesBitsOfFloat(float value, int dataType) {
  if (dataType == ULYSSES_TYPE_FLOAT32)
    return value != value ? 0x7fc00000u : ulyssesBitsFromFloat(value);
  if (dataType == ULYSSES_TYPE_FLOAT16) return ulyssesFloatToHalf(value);
  return ulyssesFloatToBfloat16(value);
}

/* An element from or to bytes of any alignment, little-endian. */
ULYSSES_HD float ulyssesLoadFloat(const unsigned char* p, int dataType) {
  uint32_t raw = (uint32_t)p[0] | (uint32_t)p[1] << 8;
  if (dataType == ULYSSES_TYPE_FLOAT32) raw |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  return ulyssesFloatOfBits(raw, dataType);
}

ULYSSES_HD void ulyssesStoreFloat(unsigned char* p, float value, int dataType) {
  uint32_t bits = ulyssesBitsOfFloat(value, dataType);
  int bytes = dataType == ULYSSES_TYPE_FLOAT32 ? 4 : 2;
  for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(bits >> (8 * i));
}

typedef struct {
  ULYSSES_ALIGNAS(16) uint64_t low;
  uint64_t high;
} ulyssesWord16;

/* Accumulators one lane of a head sum holds at a time: a round of loads of
 * every replica's units, summed in registers, then one round of stores. */
#define ULYSSES_SUM_ELEMENTS_IN_FLIGHT 8

/* One unit of a head sum (unitBytes: 2, 4, 8 or 16) as four 32-bit words,
 * little-endian, read and written in words of wordBytes (at most unitBytes,
 * as aligned). Registers, not a byte buffer: with unitBytes a constant
 * every index below is one, whatever wordBytes is. */
ULYSSES_HD void ulyssesLoadUnit(const unsigned char* p, int unitBytes, int wordBytes,
                                uint32_t* bits) {
  bits[0] = bits[1] = bits[2] = bits[3] = 0;
  if (wordBytes == 16) {
    ulyssesWord16 w = *(const ulyssesWord16*)(const void*)p;
    bits[0] = (uint32_t)w.low;
    bits[1] = (uint32_t)(w.low >> 32);
    bits[2] = (uint32_t)w.high;
    bits[3] = (uint32_t)(w.high >> 32);
  } else if (wordBytes == 8) {
    for (int w = 0; w < unitBytes / 8; w++) {
      uint64_t v = ((const uint64_t*)(const void*)p)[w];
      bits[2 * w] = (uint32_t)v;
      bits[2 * w + 1] = (uint32_t)(v >> 32);
    }
  } else if (wordBytes == 4) {
    for (int w = 0; w < unitBytes / 4; w++) bits[w] = ((const uint32_t*)(const void*)p)[w];
  } else if (wordBytes == 2) {
    for (int w = 0; w < unitBytes / 2; w++)
      bits[w / 2] |= (uint32_t)((const uint16_t*)(const void*)p)[w] << (16 * (w % 2));
  } else {
    for (int w = 0; w < unitBytes; w++) bits[w / 4] |= (uint32_t)p[w] << (8 * (w % 4));
  }
}

ULYSSES_HD void ulyssesStoreUnit(unsigned char* p, int unitBytes, int wordBytes,
                                 const uint32_t* bits) {
  if (wordBytes == 16) {
    ulyssesWord16 w;
    w.low = (uint64_t)bits[0] | (uint64_t)bits[1] << 32;
    w.high = (uint64_t)bits[2] | (uint64_t)bits[3] << 32;
    *(ulyssesWord16*)(void*)p = w;
  } else if (wordBytes == 8) {
    for (int w = 0; w < unitBytes / 8; w++)
      ((uint64_t*)(void*)p)[w] = (uint64_t)bits[2 * w] | (uint64_t)bits[2 * w + 1] << 32;
  } else if (wordBytes == 4) {
    for (int w = 0; w < unitBytes / 4; w++) ((uint32_t*)(void*)p)[w] = bits[w];
  } else if (wordBytes == 2) {
    for (int w = 0; w < unitBytes / 2; w++)
      ((uint16_t*)(void*)p)[w] = (uint16_t)(bits[w / 2] >> (16 * (w % 2)));
  } else {
    for (int w = 0; w < unitBytes; w++) p[w] = (unsigned char)(bits[w / 4] >> (8 * (w % 4)));
  }
}

/* What one lane of a head sum loads and stores at once: a word of the
 * tensor's wordBytes (every replica and the output are wordBytes-aligned,
 * their offsets being multiples of headBytes), or one element read in words
 * where the alignment allows less than an element. */
ULYSSES_HD int ulyssesSumUnitBytes(const ulyssesCopyTensor* x) {
  int elementSize = x->dataType == ULYSSES_TYPE_FLOAT32 ? 4 : 2;
  return x->wordBytes > elementSize ? x->wordBytes : elementSize;
}

/* The replicas of one head-sum run (one kv head of one row), in increasing
 * rank order of their holders first .. last (ulyssesHeadHolders). A holder
 * after the first has kv head `head` as its first head (its first query
 * head is in that head's group, else the holder before it would not hold it
 * too), and one strictly between first and last holds that head only; so
 * replica i >= 1 lies at next + (i - 1) * stride, the last one lastExtra
 * further (it may hold more heads, which widen its rows). Found once per
 * run, so that the sum's loop over replicas does no division. */
typedef struct {
  const ulyssesCopyTensor* x;
  unsigned char* out; /* the run's place in the user tensor */
  const unsigned char* first;
  const unsigned char* next;
  int64_t stride;
  int64_t lastExtra;
  int replicas;
} ulyssesSumRun;

ULYSSES_HD ulyssesSumRun ulyssesSumRunAt(const ulyssesCopyArgs* a, int t, int64_t run) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesSumRun r;
  int64_t head = run % x->heads;
  int64_t rowPart =
      ulyssesLocalRow(a, x, run / x->heads / x->packed) * x->packed + run / x->heads % x->packed;
  int64_t slotRows = x->batch * (ulyssesCopySlotOffsets(a)[a->rank + 1] - ulyssesCopySlotOffsets(a)[a->rank]);
  ulyssesHolders holders = ulyssesHeadHolders(x->heads, x->queryHeads, a->nRanks, head);
  int64_t firstBegin, lastBegin;
  int64_t firstCount = ulyssesPeerHeads(x->heads, x->queryHeads, a->nRanks, holders.first, &firstBegin);
  int64_t lastCount = ulyssesPeerHeads(x->heads, x->queryHeads, a->nRanks, holders.last, &lastBegin);
  int64_t headSlot = slotRows * x->packed * x->headBytes;
  r.x = x;
  r.out = x->user + (rowPart * x->heads + head) * x->headBytes;
  r.first = x->segments + holders.prefix * headSlot +
            (rowPart * firstCount + head - firstBegin) * x->headBytes;
  r.next = x->segments + (holders.prefix + firstCount) * headSlot + rowPart * x->headBytes;
  r.stride = headSlot;
  r.lastExtra = rowPart * (lastCount - 1) * x->headBytes;
  r.replicas = holders.last - holders.first + 1;
  return r;
}

/* One thread's units of a head-sum run, for one unit size and element size
 * (constants where ulyssesSumRunThread calls it, so that the accumulators
 * and the unit's bytes stay in registers): lane l takes units l, l +
 * laneCount, ... (coalesced across the lanes), up to
 * ULYSSES_SUM_ELEMENTS_IN_FLIGHT elements per round. Each element is the
 * first replica, then the next ones added in increasing rank order, in fp32,
 * rounded once; an element costs one load and one add per replica. */
ULYSSES_HD void ulyssesSumUnitsThread(const ulyssesSumRun* r, int unitBytes, int elementSize,
                                      int lane, int laneCount) {
  const ulyssesCopyTensor* x = r->x;
  int wordBytes = x->wordBytes < unitBytes ? x->wordBytes : unitBytes;
  int unitElements = unitBytes / elementSize;
  int roundUnits = ULYSSES_SUM_ELEMENTS_IN_FLIGHT / unitElements;
  int64_t units = x->headBytes / unitBytes;
  for (int64_t unit0 = lane; unit0 < units; unit0 += (int64_t)roundUnits * laneCount) {
    float sum[ULYSSES_SUM_ELEMENTS_IN_FLIGHT] = {0};
    for (int i = 0; i < r->replicas; i++) {
      const unsigned char* replica =
          i == 0 ? r->first
                 : r->next + (i - 1) * r->stride + (i == r->replicas - 1 ? r->lastExtra : 0);
      for (int k = 0; k < roundUnits; k++) {
        if (unit0 + k * laneCount >= units) break;
        uint32_t bits[4];
        ulyssesLoadUnit(replica + (unit0 + k * laneCount) * unitBytes, unitBytes, wordBytes, bits);
        for (int e = 0; e < unitElements; e++) {
          /* Element e's raw bits: a whole word of a 4-byte type, a half of a 2-byte one. */
          uint32_t raw = elementSize == 4 ? bits[e] : bits[e / 2] >> (16 * (e % 2));
          float value = ulyssesFloatOfBits(raw, x->dataType);
          sum[k * unitElements + e] = i == 0 ? value : sum[k * unitElements + e] + value;
        }
      }
    }
    for (int k = 0; k < roundUnits; k++) {
      if (unit0 + k * laneCount >= units) break;
      uint32_t bits[4] = {0, 0, 0, 0};
      for (int e = 0; e < unitElements; e++) {
        uint32_t raw = ulyssesBitsOfFloat(sum[k * unitElements + e], x->dataType);
        if (elementSize == 4)
          bits[e] = raw;
        else
          bits[e / 2] |= (raw & 0xffffu) << (16 * (e % 2));
      }
      ulyssesStoreUnit(r->out + (unit0 + k * laneCount) * unitBytes, unitBytes, wordBytes, bits);
    }
  }
}

/* One thread's elements of a head-sum run: each element of one kv head of
 * one local row is the sum of the replicas the peers that need that head
 * sent back (ulyssesSumUnitsThread, in units of ulyssesSumUnitBytes). */
ULYSSES_HD void ulyssesSumRunThread(const ulyssesCopyArgs* a, int t, int64_t run, int lane,
                                    int laneCount) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesSumRun r = ulyssesSumRunAt(a, t, run);
  int unitBytes = ulyssesSumUnitBytes(x);
#define ULYSSES_SUM_UNITS(UnitBytes, ElementSize) \
  ulyssesSumUnitsThread(&r, UnitBytes, ElementSize, lane, laneCount)
  if (x->dataType == ULYSSES_TYPE_FLOAT32) {
    if (unitBytes == 16) ULYSSES_SUM_UNITS(16, 4);
    else if (unitBytes == 8) ULYSSES_SUM_UNITS(8, 4);
    else ULYSSES_SUM_UNITS(4, 4);
  } else {
    if (unitBytes == 16) ULYSSES_SUM_UNITS(16, 2);
    else if (unitBytes == 8) ULYSSES_SUM_UNITS(8, 2);
    else if (unitBytes == 4) ULYSSES_SUM_UNITS(4, 2);
    else ULYSSES_SUM_UNITS(2, 2);
  }
#undef ULYSSES_SUM_UNITS
}

/* count runs of the same size, run k at src + k * srcStride and dst + k *
 * dstStride: what one sweep moves. */
typedef struct {
  const unsigned char* src;
  int64_t srcStride;
  unsigned char* dst;
  int64_t dstStride;
  int64_t count;
  int64_t bytes;
} ulyssesSweep;

/* One thread's share of a sweep: words lane, lane + laneCount, ... of the
 * runs' concatenation, in rounds of ULYSSES_WORDS_IN_FLIGHT loads, then as
 * many stores, so that the loads of one round may span several runs.
 * Everything but the loads and stores is resolved before the loop: a lane's
 * next word is laneCount / words runs and laneCount % words words on, plus
 * one run where the word passes the run's end, so a step is two adds and a
 * compare (no division, no table), the word's place in its run counted in 32
 * bits. Longer runs (above ULYSSES_COPY_COUNTED_WORDS) are swept one at a
 * time, no lane leaving its run, so that nothing wraps and that place is not
 * counted. The stores retrace the loads' steps rather than hold their
 * addresses, which would take registers that the words in flight need. Only
 * the last round, with fewer words, checks each word (by a constant index,
 * so that the words stay in registers). */
ULYSSES_HD void ulyssesCopyRunsThread(const ulyssesSweep* s, int wordBytes, int lane,
                                      int laneCount) {
  int64_t words = s->bytes / wordBytes, total = s->count * words, sweeps = 1;
  if (words > ULYSSES_COPY_COUNTED_WORDS) {
    sweeps = s->count;
    total = words;
  }
  if (lane >= total) return;
  int64_t firstWord = lane % words, runStep = laneCount / words, wordStep = laneCount % words;
  int32_t runWords = (int32_t)words, stepWords = (int32_t)wordStep;
  if (sweeps > 1) {
    runWords = 1;
    stepWords = 0;
  }
  int64_t srcStep = runStep * s->srcStride + wordStep * wordBytes;
  int64_t dstStep = runStep * s->dstStride + wordStep * wordBytes;
  int64_t srcWrap = s->srcStride - words * wordBytes, dstWrap = s->dstStride - words * wordBytes;
#define ULYSSES_COPY_STEP(At, Step, Wrap) \
  do {                                    \
    word += stepWords;                    \
    At += Step;                           \
    if (word >= runWords) {               \
      word -= runWords;                   \
      At += Wrap;                         \
    }                                     \
  } while (0)
#define ULYSSES_COPY_LOAD(Type)                   \
  do {                                            \
    held[k] = *(const Type*)(const void*)src;     \
    ULYSSES_COPY_STEP(src, srcStep, srcWrap);     \
  } while (0)
#define ULYSSES_COPY_STORE(Type)                  \
  do {                                            \
    *(Type*)(void*)dst = held[k];                 \
    ULYSSES_COPY_STEP(dst, dstStep, dstWrap);     \
  } while (0)
  /* The widest type the alignment allows: 16-byte words are one vector
   * load and store per lane. */
#define ULYSSES_COPY_WORDS(Type)                                                     \
  do {                                                                               \
    Type held[ULYSSES_WORDS_IN_FLIGHT];                                              \
    int32_t roundWord;                                                               \
    for (; left >= ULYSSES_WORDS_IN_FLIGHT; left -= ULYSSES_WORDS_IN_FLIGHT) {       \
      roundWord = word;                                                              \
      for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++) ULYSSES_COPY_LOAD(Type);     \
      word = roundWord;                                                              \
      for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++) ULYSSES_COPY_STORE(Type);    \
    }                                                                                \
    roundWord = word;                                                                \
    for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++)                                \
      if (k < left) ULYSSES_COPY_LOAD(Type);                                         \
    word = roundWord;                                                                \
    for (int k = 0; k < ULYSSES_WORDS_IN_FLIGHT; k++)                                \
      if (k < left) ULYSSES_COPY_STORE(Type);                                        \
  } while (0)
  for (int64_t sweep = 0; sweep < sweeps; sweep++) {
    int64_t run = sweeps > 1 ? sweep : lane / words;
    const unsigned char* src = s->src + run * s->srcStride + firstWord * wordBytes;
    unsigned char* dst = s->dst + run * s->dstStride + firstWord * wordBytes;
    int64_t left = (total - lane + laneCount - 1) / laneCount;
    int32_t word = sweeps > 1 ? 0 : (int32_t)firstWord;
    switch (wordBytes) {
      case 16:
        ULYSSES_COPY_WORDS(ulyssesWord16);
        break;
      case 8:
        ULYSSES_COPY_WORDS(uint64_t);
        break;
      case 4:
        ULYSSES_COPY_WORDS(uint32_t);
        break;
      case 2:
        ULYSSES_COPY_WORDS(uint16_t);
        break;
      default:
        ULYSSES_COPY_WORDS(uint8_t);
    }
  }
#undef ULYSSES_COPY_WORDS
#undef ULYSSES_COPY_STORE
#undef ULYSSES_COPY_LOAD
#undef ULYSSES_COPY_STEP
}

/* The sweep of count runs of r.bytes from run r on, userStride apart in the
 * user buffer and back to back in the segments, in the direction of the
 * launch (pack: user -> segments). */
ULYSSES_HD ulyssesSweep ulyssesMoveSweep(const ulyssesCopyArgs* a, const ulyssesCopyTensor* x,
                                         const ulyssesRun* r, int64_t count, int64_t userStride) {
  ulyssesSweep sweep;
  unsigned char* userBytes = x->user + r->userOffset;
  unsigned char* segmentBytes = x->segments + r->segmentOffset;
  sweep.src = a->toSegments ? userBytes : segmentBytes;
  sweep.srcStride = a->toSegments ? userStride : r->bytes;
  sweep.dst = a->toSegments ? segmentBytes : userBytes;
  sweep.dstStride = a->toSegments ? r->bytes : userStride;
  sweep.count = count;
  sweep.bytes = r->bytes;
  return sweep;
}

/* One thread's share of one run (a head sum: of its elements), in words of
 * wordBytes (ulyssesLaunchWordBytes). sums: whether the launch has a head
 * sum (ulyssesLaunchSums); a constant in each kernel, so that a kernel
 * without one carries none of the sum's code or registers. */
ULYSSES_HD void ulyssesCopyRunThread(const ulyssesCopyArgs* a, int t, int64_t run, int lane,
                                     int laneCount, int wordBytes, int sums) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (wordBytes == 0) wordBytes = x->wordBytes;
  if (sums && x->kind == ULYSSES_COPY_HEAD_SUM) {
    ulyssesSumRunThread(a, t, run, lane, laneCount);
    return;
  }
  ulyssesRun r = ulyssesCopyRunAt(a, t, run);
  /* A peer that owns no heads has empty runs, whose buffers may be NULL. */
  if (r.bytes == 0) return;
  ulyssesSweep sweep = ulyssesMoveSweep(a, x, &r, 1, 0);
  ulyssesCopyRunsThread(&sweep, wordBytes, lane, laneCount);
}

/* Chunks of x->chunkRuns runs that tensor t's runs make. */
ULYSSES_HD int64_t ulyssesCopyChunkCount(const ulyssesCopyArgs* a, int t) {
  return (ulyssesCopyRunCount(a, t) + a->tensors[t].chunkRuns - 1) / a->tensors[t].chunkRuns;
}

/* The runs of chunk `chunk` of tensor t (count of them from the first), and
 * whether they lie at the fixed strides of consecutive runs in both buffers
 * (one row, or one packed index, apart: userStride in the user buffer, the
 * run's size in the segments), so that one sweep moves them all with the
 * index arithmetic done twice per chunk rather than once per run. Inside a
 * piece consecutive runs are at least those strides apart and pieces only grow
 * with the run, so when the first and last run share a piece and are exactly
 * (count - 1) strides apart, every run in between is where the sweep puts it. */
ULYSSES_HD int ulyssesChunkSweep(const ulyssesCopyArgs* a, int t, int64_t chunk, ulyssesRun* first,
                                 int64_t* count, int64_t* userStride) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  int64_t firstRun = chunk * x->chunkRuns;
  *count = ulyssesCopyRunCount(a, t) - firstRun;
  if (*count > x->chunkRuns) *count = x->chunkRuns;
  if (*count < 2 || x->kind == ULYSSES_COPY_HEAD_SUM) return 0;
  *first = ulyssesCopyRunAt(a, t, firstRun);
  ulyssesRun last = ulyssesCopyRunAt(a, t, firstRun + *count - 1);
  *userStride = x->kind == ULYSSES_COPY_HEAD_SLICE ? x->heads * x->headBytes : first->bytes;
  return first->piece == last.piece && first->bytes == last.bytes &&
         last.userOffset - first->userOffset == (*count - 1) * *userStride &&
         last.segmentOffset - first->segmentOffset == (*count - 1) * first->bytes;
}

/* One thread's share of chunk `chunk` of tensor t, in words of wordBytes
 * (ulyssesLaunchWordBytes): one sweep where ulyssesChunkSweep allows it, else
 * run by run. */
ULYSSES_HD void ulyssesCopyChunkThread(const ulyssesCopyArgs* a, int t, int64_t chunk, int lane,
                                       int laneCount, int wordBytes, int sums) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  ulyssesRun r;
  int64_t count, userStride;
  if (wordBytes == 0) wordBytes = x->wordBytes;
  if (ulyssesChunkSweep(a, t, chunk, &r, &count, &userStride)) {
    if (r.bytes == 0) return;
    ulyssesSweep sweep = ulyssesMoveSweep(a, x, &r, count, userStride);
    ulyssesCopyRunsThread(&sweep, wordBytes, lane, laneCount);
    return;
  }
  for (int64_t k = 0; k < count; k++)
    ulyssesCopyRunThread(a, t, chunk * x->chunkRuns + k, lane, laneCount, wordBytes, sums);
}

/* The word size of one launch: its tensors' common word size, so that the
 * kernel is compiled for one word size and spends no registers on the
 * others; 0 when they differ (a kernel with every size, each tensor moving
 * its own words). */
ULYSSES_HD int ulyssesLaunchWordBytes(const ulyssesCopyArgs* a) {
  int wordBytes = 0;
  for (int t = 0; t < a->nTensors; t++) {
    if (!a->tensors[t].active) continue;
    if (wordBytes != 0 && a->tensors[t].wordBytes != wordBytes) return 0;
    wordBytes = a->tensors[t].wordBytes;
  }
  return wordBytes;
}

/* Whether any tensor of the launch is a head sum. */
ULYSSES_HD int ulyssesLaunchSums(const ulyssesCopyArgs* a) {
  for (int t = 0; t < a->nTensors; t++)
    if (a->tensors[t].active && a->tensors[t].kind == ULYSSES_COPY_HEAD_SUM) return 1;
  return 0;
}

/* Lanes per group for a tensor whose longest run has `words` words of
 * wordBytes (for a head sum: units of ulyssesSumUnitBytes): the smallest
 * power of two that leaves each lane at most ULYSSES_WORDS_IN_FLIGHT of them,
 * at most a warp, so that short runs share a warp; for a run shorter than
 * ULYSSES_SHORT_RUN_BYTES, at least the lanes whose words make a cache line,
 * so that a round of a group's loads reads whole lines. The launch takes the
 * largest over its tensors. */
ULYSSES_HD int ulyssesGroupLanes(int64_t words, int wordBytes) {
  int lanes = 1;
  while (lanes < ULYSSES_WARP_LANES && (int64_t)lanes * ULYSSES_WORDS_IN_FLIGHT < words) lanes *= 2;
  if (words * wordBytes < ULYSSES_SHORT_RUN_BYTES)
    while (lanes < ULYSSES_WARP_LANES && lanes * wordBytes < ULYSSES_LINE_BYTES) lanes *= 2;
  return lanes;
}

/* Consecutive runs per chunk for a tensor of `runs` runs of at most `words`
 * words of wordBytes, moved by groups of `lanes` lanes: about
 * ULYSSES_CHUNK_WORDS_PER_LANE words per lane (runs below
 * ULYSSES_SHORT_RUN_BYTES: ULYSSES_SHORT_CHUNK_WORDS_PER_LANE), but never so
 * many that fewer than ULYSSES_FILL_THREADS threads get a chunk; at least 1. */
ULYSSES_HD int64_t ulyssesChunkRuns(int64_t words, int wordBytes, int64_t runs, int lanes) {
  if (words < 1) return 1;
  int64_t perLane = words * wordBytes < ULYSSES_SHORT_RUN_BYTES
                        ? ULYSSES_SHORT_CHUNK_WORDS_PER_LANE
                        : ULYSSES_CHUNK_WORDS_PER_LANE;
  int64_t chunkRuns = (int64_t)lanes * perLane / words;
  int64_t fillRuns = runs / (ULYSSES_FILL_THREADS / lanes > 0 ? ULYSSES_FILL_THREADS / lanes : 1);
  if (chunkRuns > fillRuns) chunkRuns = fillRuns;
  return chunkRuns < 1 ? 1 : chunkRuns;
}

/* Shares a wave of `wave` resident blocks of ULYSSES_COPY_THREADS between the
 * launch's tensors in proportion to the bytes each moves (each active tensor
 * at least one block), none past the blocks its chunks need: each tensor's
 * gridBlocks. Returns the longest grid row. The launcher gives it one wave
 * of the device, so that the rows together fill the GPU once and the
 * grid-stride loop (ulyssesCopyBlockThread) covers the rest. */
ULYSSES_HD int64_t ulyssesShareWave(ulyssesCopyArgs* a, int64_t wave) {
  double totalBytes = 0;
  for (int t = 0; t < a->nTensors; t++)
    if (a->tensors[t].active) totalBytes += (double)a->tensors[t].hostBytes;
  int64_t groupsPerBlock = ULYSSES_COPY_THREADS / a->runLanes, longest = 0;
  for (int t = 0; t < a->nTensors; t++) {
    ulyssesCopyTensor* x = &a->tensors[t];
    x->gridBlocks = 0;
    if (!x->active) continue;
    double share = totalBytes > 0 ? (double)wave * ((double)x->hostBytes / totalBytes) : (double)wave;
    x->gridBlocks = share < 1 ? 1 : share > (double)wave ? wave : (int64_t)share;
    int64_t chunks = (x->hostRuns + x->chunkRuns - 1) / x->chunkRuns;
    int64_t need = (chunks + groupsPerBlock - 1) / groupsPerBlock;
    if (x->gridBlocks > need) x->gridBlocks = need > 0 ? need : 1;
    if (x->gridBlocks > longest) longest = x->gridBlocks;
  }
  return longest;
}

/* Thread `thread` of block `block` of tensor t's grid row: its group of
 * runLanes lanes takes chunks group, group + the row's groups, ... (a
 * grid-stride loop over the row's gridBlocks blocks; the row's other blocks
 * have nothing to do). wordBytes, sums: as ulyssesCopyChunkThread. */
ULYSSES_HD void ulyssesCopyBlockThread(const ulyssesCopyArgs* a, int t, int64_t block, int thread,
                                       int wordBytes, int sums) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  if (block >= x->gridBlocks) return;
  int lanes = a->runLanes;
  int64_t groupsPerBlock = ULYSSES_COPY_THREADS / lanes;
  int64_t chunks = ulyssesCopyChunkCount(a, t);
  for (int64_t chunk = block * groupsPerBlock + thread / lanes; chunk < chunks;
       chunk += x->gridBlocks * groupsPerBlock)
    ulyssesCopyChunkThread(a, t, chunk, thread % lanes, lanes, wordBytes, sums);
}

#endif /* ULYSSES_INDEX_H_ */
