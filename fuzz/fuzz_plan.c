/* libFuzzer target: plan creation and validation with arbitrary shapes,
 * lengths, flags and buffer pointers (fuzz/README.md).
 *
 * One input is one scenario, decoded byte by byte (a missing byte reads as 0,
 * which always decodes to the ordinary choice):
 *
 *   ctl        bit 0: capacity mode; bits 1-2: lengths pattern; bits 3-7: an
 *              oddity (31: plan out-pointer NULL, 30: lengths NULL, 29:
 *              layouts NULL, 28: deviceLocalLength NULL, 27/26: it is
 *              misaligned by 4 / 1 bytes; anything else: none)
 *   nRanks     1 + b % 16 for b < 224, else a special (0, -1, INT_MIN, 17,
 *              127, 128, 129, 257, 300, ...; above 300 reads as 300)
 *   rank       b % nRanks for b < 240, else -1, nRanks, INT_MAX, ...
 *   lengths    pattern 0: one value for all; 1: one value per rank; 2: one
 *              byte % 6 per rank, then (index, value) overriding one rank;
 *              3: one value for all, then (index, value) overriding one
 *   nTensors   1 + b % 3 for b < 224, else 0, -1, 8, 9, INT_MAX, ...
 *   layouts    per tensor (min(max(nTensors, 1), 8) of them): a kind byte
 *              (& 3 == 1: copy the previous layout; == 2: the previous
 *              layout's kv tensor for grouped-query attention; else fresh),
 *              and for a fresh one batch, heads, headDim, elementSize,
 *              packed, order, queryHeads, dataType
 *   capacity mode only: the ranks' device lengths (mostly within capacity)
 *   sim        bit 0: pass NULL for zero-byte buffers; bits 1-7: offsets
 *   pick       (read once the plan exists) which op a simulation past 16
 *              ranks runs, which segments are cross-checked past 32 ranks,
 *              which ranks' fingerprints are perturbed
 *   call       op, stage or exchange, stage side, nTensors, comm shape,
 *              NULL arrays, one pointer pattern per send buffer, receive
 *              buffer and the workspace, workspace size, device pointers
 *              (fuzzCall below)
 *
 * A value "num" is lo + b % span for b < 208, one of 40 special int64
 * values for b < 248, else a raw 2-, 4- or 8-byte little-endian integer.
 * fuzz/make_corpus.py writes seeds in this format.
 *
 * What it asserts (any failure aborts, which libFuzzer reports as a crash):
 *  - creation never crashes or overflows (UBSan is fatal);
 *  - creation succeeds exactly when an independent model of the documented
 *    rules says the arguments are valid; on failure the code is a known
 *    error code, the out-pointer is untouched and the message is non-empty;
 *  - on success, every op and tensor has its buffer sizes (equal to the
 *    model's) and workspace size; the workspace layout is in bounds,
 *    256-aligned and non-overlapping (a message group of tensors sharing
 *    one, alike tensors in a row always grouped, their segments peer by
 *    peer back to back); every segment lies inside its region or user buffer; receive segments never overlap; ulyssesGetSegments
 *    agrees with the plan;
 *  - every rank's plan, built from the same arguments, agrees on success
 *    (past 16 ranks: the first, the last and the longest rank's), and what
 *    rank r sends to p is what p receives from r, fingerprints equal;
 *  - for small shapes (under 1 MiB over every rank; up to 16 ranks, or one
 *    plain tensor on up to 132 ranks to cross the length table's 128-rank
 *    chunk, one op), every op runs on every rank through the recording
 *    backend (tests/sim_backend.c): the ranks' messages match, the guard
 *    zones around every buffer are intact, the status bits are those of the
 *    device lengths, and the outputs equal the CPU reference;
 *  - ulyssesEnqueueExchange and ulyssesEnqueueStage (what the public
 *    exchanges and stages run through), with fuzzed pointers (NULL,
 *    overlapping, adjacent, misaligned) and sizes, accept exactly what the
 *    documented rules accept; when they refuse, nothing was recorded. */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enqueue.h"
#include "error.h"
#include "harness.h"
#include "pipeline.h"
#include "plan.h"
#include "reference.h"
#include "reference_gqa.h"
#include "sim_backend.h"
#include "ulysses.h"

__extension__ typedef __int128 i128;

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#define FUZZ_MAX_RANKS 300
/* The recording backend runs every kernel thread on the CPU: only shapes
 * this small go through it. */
#define SIM_MAX_BYTES ((i128)1 << 20)
#define SIM_MAX_WORK ((i128)1 << 24)
#define SIM_SMALL_RANKS 16
#define SIM_LARGE_RANKS (ULYSSES_TABLE_CHUNK + 4)
#define PLAN_SENTINEL ((ulyssesPlan_t)(uintptr_t)0x5eed)
#define I64_MAX ((i128)INT64_MAX)

/*------------------------------------------------------------------------
 * Failing.
 *----------------------------------------------------------------------*/
__attribute__((format(printf, 4, 5), noreturn)) static void fuzzFail(const char* file, int line,
                                                                      const char* condition,
                                                                      const char* format, ...) {
  va_list args;
  fprintf(stderr, "\n%s:%d: invariant failed: %s\n  ", file, line, condition);
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
  fprintf(stderr, "\n  library's last message: \"%s\"\n", ulyssesGetLastError());
  abort();
}

#define CHECK(condition, ...) \
  do { if (!(condition)) fuzzFail(__FILE__, __LINE__, #condition, __VA_ARGS__); } while (0)

static void* xcalloc(size_t count, size_t size) {
  void* p = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
  CHECK(p != NULL, "out of host memory");
  return p;
}

/* ULYSSES_FUZZ_VERBOSE=1: one line per stage of each input on stderr, to
 * see what an input decodes to and how far it gets. */
static int verbose(void) {
  static int value = -1;
  if (value < 0) value = getenv("ULYSSES_FUZZ_VERBOSE") != NULL;
  return value;
}

__attribute__((format(printf, 1, 2))) static void trace(const char* format, ...) {
  if (!verbose()) return;
  va_list args;
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
}

/*------------------------------------------------------------------------
 * Decoding.
 *----------------------------------------------------------------------*/
typedef struct {
  const uint8_t* data;
  size_t size;
  size_t pos;
} reader;

static unsigned byteOf(reader* in) { return in->pos < in->size ? in->data[in->pos++] : 0u; }

static uint64_t bytesOf(reader* in, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; i++) value |= (uint64_t)byteOf(in) << (8 * i);
  return value;
}

static const int64_t specials[40] = {
    0, -1, -2, INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, INT64_MAX / 2,
    INT64_MAX / 3, (int64_t)1 << 62, ((int64_t)1 << 62) + 1, (int64_t)1 << 56,
    ((int64_t)1 << 56) - 1, ((int64_t)1 << 56) + 1, (int64_t)1 << 48, (int64_t)1 << 40,
    (int64_t)1 << 32, ((int64_t)1 << 32) - 1, ((int64_t)1 << 32) + 1, INT32_MAX,
    (int64_t)INT32_MAX - 1, (int64_t)INT32_MAX + 1, INT32_MIN, 3037000499, 3037000500,
    (int64_t)1 << 28, (int64_t)1 << 24, (int64_t)1 << 20, 65535, 65536,
    255, 256, 127, 128, 129, 17, 16, 15, 3, 5};

static const int intSpecials[32] = {0,  -1, -2, INT_MIN, INT_MAX, INT_MAX - 1, 1,   2,
                                    3,  4,  5,  6,       7,       8,           9,   15,
                                    16, 17, 31, 32,      33,      64,          100, 127,
                                    128, 129, 130, 200,  255,     256,         257, 300};

static int64_t num(reader* in, int64_t lo, int64_t span) {
  unsigned b = byteOf(in);
  if (b < 208) return lo + (int64_t)(b % (unsigned)span);
  if (b < 248) return specials[b - 208];
  if (b < 250) return (int64_t)bytesOf(in, 2);
  if (b < 252) return (int64_t)bytesOf(in, 4);
  return (int64_t)bytesOf(in, 8);
}

static int intNum(reader* in, int lo, int span) {
  unsigned b = byteOf(in);
  if (b < 224) return lo + (int)(b % (unsigned)span);
  return intSpecials[b - 224];
}

typedef struct {
  int capacity;
  int oddity;
  int nRanks; /* as passed */
  int rank;
  int nTensors;
  int nLengths;    /* entries of slots and deviceLengths: max(nRanks, 1) */
  int64_t* slots;  /* the lengths (exact) or capacities, as passed */
  int64_t* deviceLengths;
  int nLayouts;
  ulyssesLayout_t* layouts;
  /* The layouts as the library gets them: nLayouts entries of layoutStride
   * bytes each (sizeof, or another version's size for the ODD_LAYOUT_*
   * oddities), from layoutBytes. */
  unsigned char* layoutBytes;
  size_t layoutStride;
  unsigned simFlags;
} fuzzCase;

enum {
  ODD_OUT_NULL = 31,
  ODD_LENGTHS_NULL = 30,
  ODD_LAYOUTS_NULL = 29,
  ODD_DEVICE_NULL = 28,
  ODD_DEVICE_MISALIGNED4 = 27,
  ODD_DEVICE_MISALIGNED1 = 26,
  /* Another header's ulyssesLayout_t (the library steps by layouts[0].size): */
  ODD_LAYOUT_OLDEST = 25,        /* ULYSSES_LAYOUT_SIZE_MIN: no queryHeads, no dataType */
  ODD_LAYOUT_NEWER = 24,         /* 8 bytes more, zero: fields this library lacks, unset */
  ODD_LAYOUT_UNKNOWN_FIELD = 23, /* 8 bytes more, one set in the last entry: Unsupported */
  ODD_LAYOUT_ODD_SIZE = 22,      /* sizeof + 4: not whole 8-byte words */
  ODD_LAYOUT_MIXED_SIZES = 21,   /* the last entry's size differs (with two or more) */
  ODD_LAYOUT_TOO_SMALL = 20      /* ULYSSES_LAYOUT_SIZE_MIN - 8 */
};

/* Whether the oddity makes the layouts' sizes themselves wrong. */
static int layoutSizeRefused(const fuzzCase* c) {
  return c->oddity == ODD_LAYOUT_UNKNOWN_FIELD || c->oddity == ODD_LAYOUT_ODD_SIZE ||
         c->oddity == ODD_LAYOUT_TOO_SMALL ||
         (c->oddity == ODD_LAYOUT_MIXED_SIZES && c->nTensors >= 2 && c->nLayouts >= 2);
}

/* Lays c->layouts out as the oddity's header would; an older header's
 * missing fields are dropped from c->layouts too, as the library reads them. */
static void encodeLayouts(fuzzCase* c) {
  size_t stride = sizeof(ulyssesLayout_t);
  if (c->oddity == ODD_LAYOUT_OLDEST) stride = ULYSSES_LAYOUT_SIZE_MIN;
  if (c->oddity == ODD_LAYOUT_NEWER || c->oddity == ODD_LAYOUT_UNKNOWN_FIELD ||
      c->oddity == ODD_LAYOUT_MIXED_SIZES)
    stride = sizeof(ulyssesLayout_t) + 8;
  if (c->oddity == ODD_LAYOUT_ODD_SIZE) stride = sizeof(ulyssesLayout_t) + 4;
  if (c->oddity == ODD_LAYOUT_TOO_SMALL) stride = ULYSSES_LAYOUT_SIZE_MIN - 8;
  c->layoutStride = stride;
  c->layoutBytes = xcalloc((size_t)c->nLayouts, stride + 8);
  for (int t = 0; t < c->nLayouts; t++) {
    ulyssesLayout_t* l = &c->layouts[t];
    if (stride < sizeof *l) {
      l->queryHeads = 0;
      l->dataType = ulyssesTypeOpaque;
    }
    unsigned char* entry = c->layoutBytes + (size_t)t * stride;
    memcpy(entry, l, stride < sizeof *l ? stride : sizeof *l);
    size_t size = stride;
    if (c->oddity == ODD_LAYOUT_MIXED_SIZES && t == c->nLayouts - 1 && t > 0) size = sizeof *l;
    memcpy(entry, &size, sizeof size);
  }
  if (c->oddity == ODD_LAYOUT_UNKNOWN_FIELD)
    c->layoutBytes[(size_t)(c->nLayouts - 1) * stride + sizeof(ulyssesLayout_t) + 3] = 1;
}

static int64_t elementSizeFor(ulyssesDataType_t type) {
  return type == ulyssesTypeFloat32 ? 4 : type == ulyssesTypeOpaque ? 0 : 2;
}

/* A float type matching elementSize where there is one. */
static ulyssesDataType_t typeForSize(int64_t elementSize, unsigned choice) {
  if (elementSize == 4) return ulyssesTypeFloat32;
  if (elementSize == 2) return choice & 1 ? ulyssesTypeBfloat16 : ulyssesTypeFloat16;
  return ulyssesTypeOpaque;
}

static void decodeLayout(reader* in, ulyssesLayout_t* layout, const ulyssesLayout_t* previous) {
  static const int64_t sizes[5] = {1, 2, 4, 8, 16};
  unsigned kind = byteOf(in);
  memset(layout, 0, sizeof *layout);
  layout->size = sizeof *layout;
  if (previous != NULL && (kind & 3) == 1) {
    *layout = *previous;
    return;
  }
  if (previous != NULL && (kind & 3) == 2) {
    /* The kv tensor of grouped-query attention for the previous (query)
     * tensor: its own kv head count, the query heads as queryHeads. */
    *layout = *previous;
    layout->heads = num(in, 1, 4);
    layout->queryHeads = previous->heads;
    layout->dataType = typeForSize(layout->elementSize, kind >> 2);
    return;
  }
  layout->batch = num(in, 1, 3);
  layout->heads = num(in, 1, 8);
  layout->headDim = num(in, 1, 6);
  unsigned b = byteOf(in);
  layout->elementSize = b < 224 ? sizes[b % 5] : b < 248 ? intSpecials[b - 224] : specials[b - 248 + 3];
  b = byteOf(in);
  layout->packed = b < 224 ? (b & 1 ? 3 : 1) : intSpecials[b - 224];
  b = byteOf(in);
  layout->order = (ulyssesOrder_t)(b < 224 ? (int)(b & 1) : intSpecials[b - 224]);
  b = byteOf(in);
  if (b < 128) {
    layout->queryHeads = 0;
  } else if (b < 208) {
    int64_t queryHeads;
    if (__builtin_mul_overflow(layout->heads, (int64_t)(1 + b % 4), &queryHeads))
      queryHeads = INT64_MAX;
    layout->queryHeads = queryHeads;
  } else {
    in->pos--; /* reread b as a num */
    layout->queryHeads = num(in, 0, 1);
  }
  b = byteOf(in);
  if (b < 192)
    layout->dataType = layout->queryHeads != 0 || b % 4 == 0 ? typeForSize(layout->elementSize, b >> 2)
                                                             : ulyssesTypeOpaque;
  else
    layout->dataType = (ulyssesDataType_t)intSpecials[(b - 192) % 32];
}

/* a + b, saturated to the int64_t range: a capacity may be any int64_t. */
static int64_t addSaturated(int64_t a, int64_t b) {
  int64_t sum;
  if (!__builtin_add_overflow(a, b, &sum)) return sum;
  return b > 0 ? INT64_MAX : INT64_MIN;
}

static int64_t badDeviceLength(unsigned choice, int64_t capacity) {
  switch (choice % 6) {
    case 0: return -1;
    case 1: return addSaturated(capacity, 1);
    case 2: return INT64_MIN;
    case 3: return INT64_MAX;
    case 4: return addSaturated(capacity, 1000);
    default: return -1000;
  }
}

/* a + b, clamped to int: nRanks may itself be INT_MIN or INT_MAX. */
static int addClamped(int a, long long b) {
  long long sum = (long long)a + b;
  return sum > INT_MAX ? INT_MAX : sum < INT_MIN ? INT_MIN : (int)sum;
}

static void decodeCase(reader* in, fuzzCase* c) {
  memset(c, 0, sizeof *c);
  unsigned ctl = byteOf(in);
  c->capacity = (int)(ctl & 1);
  unsigned lengthsPattern = ctl >> 1 & 3;
  c->oddity = (int)(ctl >> 3);
  c->nRanks = intNum(in, 1, 16);
  if (c->nRanks > FUZZ_MAX_RANKS) c->nRanks = FUZZ_MAX_RANKS;
  int n = c->nRanks;
  c->nLengths = n < 1 ? 1 : n;
  unsigned b = byteOf(in);
  if (b < 240) {
    c->rank = (int)(b % (unsigned)c->nLengths);
  } else {
    const int ranks[16] = {-1, n,  addClamped(n, 1),   INT_MAX, INT_MIN, -2,  addClamped(n, n),
                           addClamped(n, -1), 0,  n, -1, addClamped(n, 128), 128, 129, 256, 299};
    c->rank = ranks[b - 240];
  }

  /* Exactly nLengths entries: reading past them is an ASan report. */
  c->slots = xcalloc((size_t)c->nLengths, sizeof(int64_t));
  c->deviceLengths = xcalloc((size_t)c->nLengths, sizeof(int64_t));
  if (lengthsPattern == 0 || lengthsPattern == 3) {
    int64_t value = num(in, 0, 8);
    for (int r = 0; r < c->nLengths; r++) c->slots[r] = value;
  } else if (lengthsPattern == 1) {
    for (int r = 0; r < c->nLengths; r++) c->slots[r] = num(in, 0, 8);
  } else {
    for (int r = 0; r < c->nLengths; r++) c->slots[r] = byteOf(in) % 6;
  }
  if (lengthsPattern >= 2) {
    int index = (int)(byteOf(in) % (unsigned)c->nLengths);
    c->slots[index] = num(in, 0, 8);
  }

  c->nTensors = intNum(in, 1, 3);
  c->nLayouts = c->nTensors < 1 ? 1 : c->nTensors > ULYSSES_MAX_TENSORS ? ULYSSES_MAX_TENSORS : c->nTensors;
  c->layouts = xcalloc((size_t)c->nLayouts, sizeof(ulyssesLayout_t));
  for (int t = 0; t < c->nLayouts; t++)
    decodeLayout(in, &c->layouts[t], t > 0 ? &c->layouts[t - 1] : NULL);

  encodeLayouts(c);
  for (int r = 0; r < c->nLengths; r++) c->deviceLengths[r] = c->slots[r];
  if (c->capacity) {
    b = byteOf(in);
    if (b >= 128 && b < 224) {
      for (int r = 0; r < c->nLengths; r++) {
        int64_t capacity = c->slots[r];
        unsigned cut = byteOf(in);
        c->deviceLengths[r] = capacity <= 0 ? capacity : capacity - (int64_t)(cut % ((uint64_t)capacity + 1));
      }
    } else if (b >= 224) {
      int index = (int)(byteOf(in) % (unsigned)c->nLengths);
      c->deviceLengths[index] = badDeviceLength(byteOf(in), c->slots[index]);
    }
  }
  c->simFlags = byteOf(in);
}

static void freeCase(fuzzCase* c) {
  free(c->slots);
  free(c->deviceLengths);
  free(c->layouts);
  free(c->layoutBytes);
}

/*------------------------------------------------------------------------
 * An independent model of the documented rules, in 128-bit arithmetic.
 *----------------------------------------------------------------------*/
static i128 modelHeadBegin(i128 heads, int n, int p) {
  i128 base = heads / n, extra = heads % n;
  return p * base + (p < extra ? p : extra);
}

static i128 modelHeadCount(i128 heads, int n, int p) { return heads / n + (p < heads % n ? 1 : 0); }

/* The kv heads peer p gets: [floor(h_p / G), ceil(h_{p+1} / G)), none when
 * it owns no query head; the plain split without queryHeads. */
static i128 modelPeerHeads(const ulyssesLayout_t* layout, int n, int p, i128* begin) {
  if (layout->queryHeads == 0) {
    *begin = modelHeadBegin(layout->heads, n, p);
    return modelHeadCount(layout->heads, n, p);
  }
  i128 group = (i128)layout->queryHeads / layout->heads;
  i128 queryBegin = modelHeadBegin(layout->queryHeads, n, p);
  i128 queryCount = modelHeadCount(layout->queryHeads, n, p);
  *begin = queryBegin / group;
  if (queryCount == 0) return 0;
  return (queryBegin + queryCount + group - 1) / group - *begin;
}

static i128 modelSentHeads(const ulyssesLayout_t* layout, int n) {
  i128 sum = 0, begin;
  for (int p = 0; p < n; p++) sum += modelPeerHeads(layout, n, p, &begin);
  return sum;
}

static i128 slotSum(const fuzzCase* c) {
  i128 sum = 0;
  for (int r = 0; r < c->nRanks; r++) sum += c->slots[r];
  return sum;
}

/* a * b <= limit, for a, b >= 0, without overflowing. */
static int productAtMost(i128 a, i128 b, i128 limit) { return a == 0 || b == 0 || a <= limit / b; }

/* Whether two layouts have the same shape: the same segments everywhere. */
static int modelAlike(const ulyssesLayout_t* a, const ulyssesLayout_t* b) {
  return a->batch == b->batch && a->heads == b->heads && a->headDim == b->headDim &&
         a->elementSize == b->elementSize && a->packed == b->packed && a->order == b->order &&
         a->queryHeads == b->queryHeads;
}

static int modelLayoutValid(const ulyssesLayout_t* l) {
  int64_t e = l->elementSize;
  if (l->batch < 1 || l->heads < 1 || l->headDim < 1) return 0;
  if (l->heads > INT32_MAX || l->queryHeads > INT32_MAX) return 0;
  if (e != 1 && e != 2 && e != 4 && e != 8 && e != 16) return 0;
  if (l->packed != 1 && l->packed != 3) return 0;
  if ((int)l->order != ulyssesOrderBSHD && (int)l->order != ulyssesOrderSBHD) return 0;
  if (l->queryHeads < 0 || l->queryHeads % l->heads != 0) return 0;
  if ((int)l->dataType < ulyssesTypeOpaque || (int)l->dataType > ulyssesTypeBfloat16) return 0;
  if (l->dataType != ulyssesTypeOpaque && elementSizeFor(l->dataType) != e) return 0;
  return 1;
}

/* Sizes: a product the library forms overflows 63 bits, or a tensor, as
 * gathered or as the ranks send it (shared kv heads once per rank that reads
 * them), exceeds 2^56 bytes. */
static int modelSizesValid(const fuzzCase* c, const ulyssesLayout_t* l) {
  const i128 maxBytes = (i128)1 << 56;
  int n = c->nRanks;
  i128 headBytes = (i128)l->headDim * l->elementSize;
  if (headBytes > I64_MAX) return 0;
  i128 packedHeads = (i128)l->packed * l->heads;
  if (packedHeads > I64_MAX) return 0;
  i128 rowBytes = packedHeads * headBytes;
  if (rowBytes > I64_MAX) return 0;
  i128 rows = (i128)l->batch * slotSum(c);
  if (rows > I64_MAX) return 0;
  if (!productAtMost(rows, rowBytes, maxBytes)) return 0;
  /* The pack kernel's runs, for the longest rank (so that no rank's plan
   * differs from another's). */
  i128 longest = 0;
  for (int r = 0; r < n; r++) longest = c->slots[r] > longest ? c->slots[r] : longest;
  if (!productAtMost((i128)l->batch * longest * l->packed, n, I64_MAX)) return 0;
  i128 sentHeads = modelSentHeads(l, n);
  if (!productAtMost((i128)l->packed * headBytes, sentHeads, I64_MAX)) return 0;
  if (!productAtMost(rows, (i128)l->packed * headBytes * sentHeads, maxBytes)) return 0;
  return 1;
}

static int modelPlanValid(const fuzzCase* c, int outNull, const int64_t* lengths,
                          const int64_t* deviceLocalLength, const ulyssesLayout_t* layouts) {
  if (outNull || c->nRanks < 1 || c->rank < 0 || c->rank >= c->nRanks || lengths == NULL) return 0;
  for (int r = 0; r < c->nRanks; r++)
    if (lengths[r] < 0 || lengths[r] > ULYSSES_MAX_LENGTH) return 0;
  if (c->capacity && (deviceLocalLength == NULL || (uintptr_t)deviceLocalLength % 8 != 0)) return 0;
  if (c->nTensors < 1 || c->nTensors > ULYSSES_MAX_TENSORS || layouts == NULL) return 0;
  if (layoutSizeRefused(c)) return 0;
  for (int t = 0; t < c->nTensors; t++)
    if (!modelLayoutValid(&layouts[t])) return 0;
  for (int t = 0; t < c->nTensors; t++)
    if (!modelSizesValid(c, &layouts[t])) return 0;
  return 1;
}

static int sequenceSide(int op, int side) {
  return rowsOnSequenceSide((ulyssesOp_t)op, side == ULYSSES_SEND);
}

/* Bytes of (tensor, side)'s user buffer on rank, for an accepted plan. */
static i128 modelUserBytes(const fuzzCase* c, const ulyssesLayout_t* l, int op, int side, int rank) {
  i128 headBytes = (i128)l->headDim * l->elementSize;
  if (sequenceSide(op, side))
    return (i128)l->batch * c->slots[rank] * l->packed * l->heads * headBytes;
  i128 begin;
  i128 rowHeads = op == ulyssesOpAllGather ? l->heads : modelPeerHeads(l, c->nRanks, rank, &begin);
  return (i128)l->batch * slotSum(c) * l->packed * rowHeads * headBytes;
}

/* head -> seq sums the replicas of kv heads several ranks read. */
static int modelHeadSum(const fuzzCase* c, const ulyssesLayout_t* l, int op) {
  return op == ulyssesOpHeadToSeq && modelSentHeads(l, c->nRanks) > l->heads;
}

/*------------------------------------------------------------------------
 * Plan creation.
 *----------------------------------------------------------------------*/
static ulyssesResult_t createFor(const fuzzCase* c, ulyssesPlan_t* out, int rank,
                                 const int64_t* lengths, const int64_t* deviceLocalLength,
                                 const ulyssesLayout_t* layouts) {
  /* The library gets the layouts in the case's header's layout. */
  if (layouts == c->layouts) layouts = (const ulyssesLayout_t*)(const void*)c->layoutBytes;
  return c->capacity ? ulyssesPlanCreateCapacity(out, c->nRanks, rank, lengths, deviceLocalLength,
                                                 c->nTensors, layouts)
                     : ulyssesPlanCreateExact(out, c->nRanks, rank, lengths, c->nTensors, layouts);
}

/* A valid plan of every rank, from the same arguments. */
static ulyssesPlan_t planOf(const fuzzCase* c, int rank) {
  ulyssesPlan_t plan = NULL;
  ulyssesResult_t result = createFor(c, &plan, rank, c->slots, &c->deviceLengths[rank], c->layouts);
  CHECK(result == ulyssesSuccess,
        "rank %d's plan failed (%s) where rank %d's, from the same arguments, succeeded", rank,
        ulyssesGetErrorString(result), c->rank);
  return plan;
}

static void checkFailure(ulyssesResult_t result, const char* what) {
  CHECK(result != ulyssesSuccess && (unsigned)result < ulyssesNumResults, "%s returned %d", what,
        (int)result);
  CHECK(ulyssesGetLastError()[0] != '\0', "%s failed (%s) without a message", what,
        ulyssesGetErrorString(result));
  CHECK(strcmp(ulyssesGetErrorString(result), "unknown ulyssesResult_t") != 0, "%s: unnamed result %d",
        what, (int)result);
}

/*------------------------------------------------------------------------
 * Invariants of one accepted plan.
 *----------------------------------------------------------------------*/
typedef struct {
  size_t offset, bytes;
} span;

static int compareSpans(const void* a, const void* b) {
  const span *x = a, *y = b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sorts spans and fails on any two that overlap. */
static void checkDisjoint(span* spans, int count, const char* what, int op, int t) {
  qsort(spans, (size_t)count, sizeof *spans, compareSpans);
  for (int i = 1; i < count; i++)
    CHECK((i128)spans[i - 1].offset + spans[i - 1].bytes <= spans[i].offset,
          "op %d tensor %d: %s [%zu, +%zu) and [%zu, +%zu) overlap", op, t, what,
          spans[i - 1].offset, spans[i - 1].bytes, spans[i].offset, spans[i].bytes);
}

static void checkPlan(const fuzzCase* c, ulyssesPlan_t plan, int rank, int checkAllSegments,
                      unsigned pick) {
  int n = c->nRanks, T = c->nTensors;
  size_t size;
  CHECK(ulyssesGetWorkspaceSize(plan, (ulyssesOp_t)ULYSSES_OP_COUNT, &size) == ulyssesErrorInvalidArgument, "op 3");
  CHECK(ulyssesGetWorkspaceSize(plan, (ulyssesOp_t)-1, &size) == ulyssesErrorInvalidArgument, "op -1");
  CHECK(ulyssesGetWorkspaceSize(plan, ulyssesOpSeqToHead, NULL) == ulyssesErrorNullPointer, "NULL size");
  CHECK(ulyssesGetBufferSizes(plan, ulyssesOpSeqToHead, T, NULL, NULL) == ulyssesErrorInvalidArgument,
        "tensor %d", T);
  CHECK(ulyssesGetBufferSizes(plan, ulyssesOpSeqToHead, -1, NULL, NULL) == ulyssesErrorInvalidArgument,
        "tensor -1");

  span* spans = xcalloc((size_t)n + 2 * ULYSSES_MAX_TENSORS + 1, sizeof(span));
  ulyssesSegment_t* segments = xcalloc((size_t)n, sizeof *segments);
  /* ulyssesGetSegments' output at the largest entry size tried, and a little. */
  size_t segmentBytesTotal = (size_t)n * (sizeof(ulyssesSegment_t) + 16) + 64;
  unsigned char* segmentBytes = xcalloc(segmentBytesTotal, 1);
  for (int op = 0; op < ULYSSES_OP_COUNT; op++) {
    size_t workspaceSize = 0;
    CHECK(ulyssesGetWorkspaceSize(plan, (ulyssesOp_t)op, &workspaceSize) == ulyssesSuccess,
          "ulyssesGetWorkspaceSize(op %d)", op);
    ulyssesWorkspaceLayout layout;
    ulyssesPlanWorkspace(plan, (ulyssesOp_t)op, &layout);
    CHECK(layout.totalBytes == workspaceSize, "op %d: layout %zu bytes, ulyssesGetWorkspaceSize %zu",
          op, layout.totalBytes, workspaceSize);
    CHECK(!c->capacity || layout.needTable, "op %d: capacity mode without a length table", op);
    i128 tableEnd = 0;
    if (layout.needTable) {
      CHECK(layout.gatheredOffset % 8 == 0 && layout.lengthsOffset % 8 == 0 &&
                layout.offsetsOffset % 8 == 0 && layout.slotOffsetsOffset % 8 == 0,
            "op %d: a table array is not 8-byte aligned", op);
      CHECK((i128)layout.gatheredOffset + 8 * n <= layout.lengthsOffset &&
                (i128)layout.lengthsOffset + 8 * n <= layout.offsetsOffset &&
                (i128)layout.offsetsOffset + 8 * (n + 1) <= layout.slotOffsetsOffset,
            "op %d: the table's arrays overlap", op);
      tableEnd = (i128)layout.slotOffsetsOffset + 8 * (n + 1);
      CHECK(tableEnd <= workspaceSize, "op %d: the table ends at %lld, past the workspace's %zu",
            op, (long long)tableEnd, workspaceSize);
    }
    int nRegions = 0;
    span* regions = spans + n;
    /* A message group (the plan's, src/plan.h) shares one region, its
     * segments peer by peer, each peer's in tensor order, back to back:
     * alike tensors in a row always, others only with whole 16-byte heads. */
    const ulyssesPlanOp* opPlan = &plan->ops[op];
    for (int t = 0; t < T; t++) {
      int member = opPlan->groupIndex[t], first = t - member;
      int last = first + opPlan->groupSize[t] - 1;
      CHECK(first >= 0 && last < T && opPlan->groupSize[t] == opPlan->groupSize[first],
            "op %d tensor %d: member %d of a group of %d", op, t, member, opPlan->groupSize[t]);
      if (t > 0 && modelAlike(&c->layouts[t - 1], &c->layouts[t]))
        CHECK(member > 0, "op %d tensor %d: alike to tensor %d but not in its group", op, t, t - 1);
      if (member > 0 && !modelAlike(&c->layouts[t - 1], &c->layouts[t])) {
        CHECK(c->layouts[t].headDim * c->layouts[t].elementSize % 16 == 0 &&
                  c->layouts[t - 1].headDim * c->layouts[t - 1].elementSize % 16 == 0,
              "op %d tensors %d and %d: shapes differ, heads not whole 16-byte words, one group",
              op, t - 1, t);
        /* A head sum's replicas a fixed stride apart: one head-sum shape,
         * every other member's heads split evenly. */
        int sum = -1;
        for (int m = first; m <= last; m++)
          if (ulyssesPlanSide(plan, (ulyssesOp_t)op, m, ULYSSES_RECV).kind == ULYSSES_COPY_HEAD_SUM) {
            CHECK(sum < 0 || modelAlike(&c->layouts[sum], &c->layouts[m]),
                  "op %d: head sums of tensors %d and %d of two shapes in one group", op, sum, m);
            sum = m;
          }
        for (int m = first; m <= last && sum >= 0; m++) {
          if (ulyssesPlanSide(plan, (ulyssesOp_t)op, m, ULYSSES_RECV).kind == ULYSSES_COPY_HEAD_SUM)
            continue;
          const ulyssesLayout_t* y = &c->layouts[m];
          int64_t begin, count0 = ulyssesPeerHeads(y->heads, y->queryHeads, n, 0, &begin);
          for (int p = 1; p < n; p++)
            CHECK(ulyssesPeerHeads(y->heads, y->queryHeads, n, p, &begin) == count0,
                  "op %d: tensor %d's heads split unevenly in the group of head sum %d", op, m, sum);
        }
      }
      i128 userBytes[2];
      size_t sendBytes = 0, recvBytes = 0;
      CHECK(ulyssesGetBufferSizes(plan, (ulyssesOp_t)op, t, &sendBytes, &recvBytes) == ulyssesSuccess,
            "ulyssesGetBufferSizes(op %d, tensor %d)", op, t);
      CHECK(ulyssesGetBufferSizes(plan, (ulyssesOp_t)op, t, NULL, NULL) == ulyssesSuccess, "NULL sizes");
      userBytes[ULYSSES_SEND] = sendBytes;
      userBytes[ULYSSES_RECV] = recvBytes;
      for (int side = 0; side < 2; side++) {
        i128 model = modelUserBytes(c, &c->layouts[t], op, side, rank);
        CHECK(userBytes[side] == model, "op %d tensor %d side %d: %lld bytes, the model says %lld", op,
              t, side, (long long)userBytes[side], (long long)model);
        CHECK(model <= (i128)1 << 56, "op %d tensor %d: a buffer above 2^56 bytes", op, t);
        ulyssesSideShape shape = ulyssesPlanSide(plan, (ulyssesOp_t)op, t, (ulyssesSide)side);
        size_t regionOffset = layout.regionOffset[side][t];
        CHECK(regionOffset % ULYSSES_REGION_ALIGNMENT == 0, "op %d tensor %d side %d: region at %zu",
              op, t, side, regionOffset);
        i128 sum = 0;
        int nSpans = 0;
        for (int p = 0; p < n; p++) {
          ulyssesSegment_t s = ulyssesPlanSegment(plan, (ulyssesOp_t)op, t, (ulyssesSide)side, p);
          CHECK(s.place == (shape.direct ? ulyssesSegmentInUserBuffer : ulyssesSegmentInWorkspace),
                "op %d tensor %d side %d peer %d: place %d but direct %d", op, t, side, p,
                (int)s.place, shape.direct);
          CHECK(s.bytes <= (size_t)1 << 56, "op %d tensor %d side %d peer %d: %zu bytes", op, t,
                side, p, s.bytes);
          sum += s.bytes;
          if (s.bytes > 0) spans[nSpans++] = (span){s.offset, s.bytes};
          if (shape.direct && s.bytes > 0)
            CHECK((i128)s.offset + s.bytes <= userBytes[side],
                  "op %d tensor %d side %d peer %d: segment [%zu, +%zu) outside the %lld-byte user "
                  "buffer", op, t, side, p, s.offset, s.bytes, (long long)userBytes[side]);
        }
        if (!shape.direct) {
          i128 regionBytes = 0;
          for (int m = first; m <= last; m++)
            for (int p = 0; p < n; p++)
              regionBytes += ulyssesPlanSegment(plan, (ulyssesOp_t)op, m, (ulyssesSide)side, p).bytes;
          for (int i = 0; i < nSpans; i++)
            CHECK((i128)spans[i].offset + spans[i].bytes <= regionBytes,
                  "op %d tensor %d side %d: segment [%zu, +%zu) outside its %lld-byte region", op,
                  t, side, spans[i].offset, spans[i].bytes, (long long)regionBytes);
          CHECK(regionOffset >= tableEnd && (i128)regionOffset + regionBytes <= workspaceSize,
                "op %d tensor %d side %d: region [%zu, +%lld) outside [%lld, %zu)", op, t, side,
                regionOffset, (long long)regionBytes, (long long)tableEnd, workspaceSize);
          if (member > 0)
            CHECK(regionOffset == layout.regionOffset[side][first],
                  "op %d tensor %d side %d: region at %zu, its group's at %zu", op, t, side,
                  regionOffset, layout.regionOffset[side][first]);
          else if (regionBytes > 0)
            regions[nRegions++] = (span){regionOffset, (size_t)regionBytes};
          /* Each segment follows the one before it in the group's order. */
          size_t expected = 0;
          for (int p = 0; p < n; p++)
            for (int m = first; m <= last; m++) {
              ulyssesSegment_t s = ulyssesPlanSegment(plan, (ulyssesOp_t)op, m, (ulyssesSide)side, p);
              if (m == t)
                CHECK(s.offset == expected, "op %d tensor %d side %d peer %d: segment at %zu, not "
                      "%zu, after the group's segments before it", op, t, side, p, s.offset, expected);
              expected += s.bytes;
            }
        } else if (side == ULYSSES_RECV) {
          CHECK(sum <= userBytes[side], "op %d tensor %d: receive segments sum to %lld, above the "
                "%lld-byte buffer", op, t, (long long)sum, (long long)userBytes[side]);
        }
        /* Receive segments are written: no two may overlap. (Send segments
         * may: a shared kv head is read once per peer.) */
        if (side == ULYSSES_RECV || !shape.direct)
          checkDisjoint(spans, nSpans, side == ULYSSES_RECV ? "receive segments" : "send segments",
                        op, t);
      }
    }
    checkDisjoint(regions, nRegions, "workspace regions", op, -1);

    /* ulyssesGetSegments: the plan's segments, workspace ones offset by
     * their region. */
    for (int t = 0; t < T; t++)
      for (int side = 0; side < 2; side++) {
        if (!checkAllSegments && (unsigned)(op * 2 * T + t * 2 + side) != pick % (unsigned)(6 * T))
          continue;
        /* The caller's header decides the entries' size: this one's, a
         * newer one's (its extra fields zeroed), or one the library refuses
         * without writing anything. */
        static const size_t extras[8] = {0, 0, 0, 0, 0, 8, 16, 0};
        unsigned variant = (pick + (unsigned)(op * 7 + t * 3 + side)) % 8u;
        size_t size = sizeof(ulyssesSegment_t) + extras[variant];
        if (variant == 7) {
          static const size_t refused[3] = {sizeof(ulyssesSegment_t) + 4,
                                            sizeof(ulyssesSegment_t) - 8, 0};
          size = refused[(unsigned)(t + side) % 3u];
        }
        memset(segmentBytes, 0xcd, segmentBytesTotal);
        memcpy(segmentBytes, &size, sizeof size);
        ulyssesResult_t got = ulyssesGetSegments(plan, (ulyssesOp_t)op, t, side == ULYSSES_SEND,
                                                 (ulyssesSegment_t*)(void*)segmentBytes);
        if (variant == 7) {
          CHECK(got == ulyssesErrorInvalidArgument,
                "ulyssesGetSegments with segments[0].size %zu: %s", size, ulyssesGetErrorString(got));
          for (size_t i = sizeof size; i < segmentBytesTotal; i++)
            CHECK(segmentBytes[i] == 0xcd, "a refused ulyssesGetSegments wrote byte %zu", i);
          continue;
        }
        CHECK(got == ulyssesSuccess, "ulyssesGetSegments(op %d, tensor %d, size %zu)", op, t, size);
        for (int p = 0; p < n; p++) {
          ulyssesSegment_t s = ulyssesPlanSegment(plan, (ulyssesOp_t)op, t, (ulyssesSide)side, p);
          if (s.place == ulyssesSegmentInWorkspace) s.offset += layout.regionOffset[side][t];
          const unsigned char* entry = segmentBytes + (size_t)p * size;
          ulyssesSegment_t e;
          memcpy(&e, entry, sizeof e);
          CHECK(e.size == size && s.place == e.place && s.offset == e.offset && s.bytes == e.bytes,
                "op %d tensor %d side %d peer %d: ulyssesGetSegments differs", op, t, side, p);
          for (size_t i = sizeof e; i < size; i++)
            CHECK(entry[i] == 0, "peer %d's segment: byte %zu of a newer header's field is not 0",
                  p, i);
        }
        for (size_t i = (size_t)n * size; i < segmentBytesTotal; i++)
          CHECK(segmentBytes[i] == 0xcd, "ulyssesGetSegments wrote byte %zu, past %d entries", i, n);
      }
  }
  CHECK(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 0, 1, NULL) == ulyssesErrorNullPointer, "NULL segments");
  CHECK(ulyssesGetSegments(plan, ulyssesOpSeqToHead, T, 1, segments) == ulyssesErrorInvalidArgument, "tensor T");
  CHECK(ulyssesGetSegments(plan, (ulyssesOp_t)7, 0, 1, segments) == ulyssesErrorInvalidArgument, "op 7");
  free(segments);
  free(segmentBytes);
  free(spans);
}

/* What rank r sends to p is what p receives from r, for every pair; the
 * plans' fingerprints (the plan check) agree, and a differing one is
 * caught. */
static void checkMessagesMatch(const fuzzCase* c, ulyssesPlan_t* plans, unsigned flips) {
  int n = c->nRanks;
  uint64_t* fingerprints = xcalloc((size_t)n, sizeof(uint64_t));
  for (int op = 0; op < ULYSSES_OP_COUNT; op++) {
    for (int r = 0; r < n; r++) {
      fingerprints[r] = ulyssesPlanFingerprint(plans[r], (ulyssesOp_t)op);
      CHECK(fingerprints[r] == fingerprints[0], "op %d: rank %d's fingerprint differs from rank 0's",
            op, r);
    }
    ulyssesClearError();
    CHECK(ulyssesCheckFingerprints(fingerprints, n, (ulyssesOp_t)op) == ulyssesSuccess,
          "op %d: equal fingerprints refused", op);
    if (n > 1 && flips != 0) {
      /* Some ranks (never rank 0) with a different plan. */
      int any = 0;
      for (int r = 1; r < n; r++)
        if (flips >> (r % 8) & 1) {
          fingerprints[r] ^= (uint64_t)1 << (r % 64);
          any = 1;
        }
      if (!any) fingerprints[n - 1] ^= 1;
      ulyssesResult_t result = ulyssesCheckFingerprints(fingerprints, n, (ulyssesOp_t)op);
      CHECK(result == ulyssesErrorPlanMismatch, "op %d: differing fingerprints gave %s", op,
            ulyssesGetErrorString(result));
      checkFailure(result, "ulyssesCheckFingerprints");
    }
  }
  free(fingerprints);
  for (int op = 0; op < ULYSSES_OP_COUNT; op++)
    for (int t = 0; t < c->nTensors; t++)
      for (int r = 0; r < c->nRanks; r++)
        for (int p = 0; p < c->nRanks; p++) {
          size_t sent = ulyssesPlanSegment(plans[r], (ulyssesOp_t)op, t, ULYSSES_SEND, p).bytes;
          size_t received = ulyssesPlanSegment(plans[p], (ulyssesOp_t)op, t, ULYSSES_RECV, r).bytes;
          CHECK(sent == received, "op %d tensor %d: rank %d sends %zu bytes to %d, which receives %zu",
                op, t, r, sent, p, received);
        }
}

/*------------------------------------------------------------------------
 * Whole exchanges on the recording backend.
 *----------------------------------------------------------------------*/
static int isKvFloat(const ulyssesLayout_t* l) {
  return l->queryHeads > 0 && l->dataType != ulyssesTypeOpaque;
}

static refFloatType refTypeOf(ulyssesDataType_t type) {
  return type == ulyssesTypeFloat32 ? REF_FLOAT32 : type == ulyssesTypeFloat16 ? REF_FLOAT16 : REF_BFLOAT16;
}

/* Rough CPU cost of one op on every simulated rank, and its bytes. */
static int simAffordable(const fuzzCase* c) {
  int n = c->nRanks;
  i128 slots = slotSum(c), bytes = 0, work = 0;
  for (int t = 0; t < c->nTensors; t++) {
    const ulyssesLayout_t* l = &c->layouts[t];
    i128 headBytes = (i128)l->headDim * l->elementSize;
    i128 rows = (i128)l->batch * slots;
    i128 gathered = rows * l->packed * l->heads * headBytes;
    i128 sent = rows * l->packed * modelSentHeads(l, n) * headBytes;
    /* Every rank holds the gathered tensor (all-gather) or a share of the
     * sent bytes, twice (user buffer and workspace). */
    bytes += (i128)n * gathered + 2 * sent + rows * l->packed * l->heads * headBytes;
    i128 prefix = l->queryHeads > 0 ? n : 1;
    work += (i128)n * rows * l->packed * 32 * prefix + (i128)n * rows * 32 * 9 +
            (l->queryHeads > 0 ? rows * l->packed * l->heads * ((i128)32 + l->headDim) * n : 0);
    if (bytes > SIM_MAX_BYTES || work > SIM_MAX_WORK) return 0;
  }
  work += 3 * bytes;
  if (n > SIM_SMALL_RANKS) {
    /* Past 16 ranks only just past the length table's 128-rank chunk, one
     * tensor without shared heads and one op: the plans' segments and the
     * backend's message matching cost about P^3 (~0.2 s at 129 ranks). */
    if (n > SIM_LARGE_RANKS || c->nTensors > 1 || c->layouts[0].queryHeads > 0) return 0;
  }
  return bytes <= SIM_MAX_BYTES && work <= SIM_MAX_WORK;
}

/* The reference loops over every rank, batch entry and head even where
 * there is no row: only dimensions this small are compared with it. */
static int referenceAffordable(const fuzzCase* c) {
  const int64_t limit = (int64_t)1 << 12;
  for (int t = 0; t < c->nTensors; t++) {
    const ulyssesLayout_t* l = &c->layouts[t];
    if (l->batch > limit || l->heads > limit || l->queryHeads > limit || l->headDim > limit)
      return 0;
  }
  return 1;
}

static sideRows rowsOf(const fuzzCase* c, const ulyssesLayout_t* l, int op, int side, int r,
                       const int64_t* lengths) {
  i128 headBytes = (i128)l->headDim * l->elementSize;
  sideRows rows = {0, l->batch, 0, 0, l->order == ulyssesOrderSBHD};
  if (sequenceSide(op, side)) {
    rows.rowBytes = (size_t)((i128)l->packed * l->heads * headBytes);
    rows.realRows = lengths[r];
    rows.slotRows = c->slots[r];
    return rows;
  }
  i128 begin;
  i128 rowHeads = op == ulyssesOpAllGather ? l->heads : modelPeerHeads(l, c->nRanks, r, &begin);
  rows.rowBytes = (size_t)(l->packed * rowHeads * headBytes);
  for (int q = 0; q < c->nRanks; q++) {
    rows.realRows += lengths[q];
    rows.slotRows += c->slots[q];
  }
  return rows;
}

/* The real rows of every rank's output of tensor t against the reference. */
static void compareWithReference(const fuzzCase* c, int op, int t, guardedBuffer* send,
                                 guardedBuffer* recv, const int64_t* lengths) {
  const ulyssesLayout_t* l = &c->layouts[t];
  int n = c->nRanks, T = c->nTensors;
  refShape shape = {n, lengths, l->batch, l->heads, l->headDim, l->elementSize, l->packed,
                    l->order == ulyssesOrderSBHD};
  refGqaShape kvShape = {shape, l->queryHeads, refTypeOf(l->dataType)};
  const void** inputs = xcalloc((size_t)n, sizeof(void*));
  void** dense = xcalloc((size_t)n, sizeof(void*));
  void** expected = xcalloc((size_t)n, sizeof(void*));
  for (int r = 0; r < n; r++) {
    sideRows in = rowsOf(c, l, op, ULYSSES_SEND, r, lengths);
    sideRows out = rowsOf(c, l, op, ULYSSES_RECV, r, lengths);
    dense[r] = xcalloc((size_t)(in.batch * in.realRows) * in.rowBytes + 1, 1);
    densify(&in, send[r * T + t].data, dense[r]);
    inputs[r] = dense[r];
    expected[r] = xcalloc((size_t)(out.batch * out.realRows) * out.rowBytes + 1, 1);
  }
  if (op == ulyssesOpAllGather) refAllGather(&shape, inputs, expected);
  else if (l->queryHeads > 0 && op == ulyssesOpSeqToHead) refGqaSeqToHead(&kvShape, inputs, expected);
  else if (l->queryHeads > 0) refGqaHeadToSeq(&kvShape, inputs, expected);
  else if (op == ulyssesOpSeqToHead) refSeqToHead(&shape, inputs, expected);
  else refHeadToSeq(&shape, inputs, expected);
  for (int r = 0; r < n; r++) {
    sideRows out = rowsOf(c, l, op, ULYSSES_RECV, r, lengths);
    const unsigned char* want = expected[r];
    for (int64_t i = 0; i < out.batch * out.realRows; i++) {
      const unsigned char* got = recv[r * T + t].data + rowOffset(&out, i);
      CHECK(memcmp(got, want + (size_t)i * out.rowBytes, out.rowBytes) == 0,
            "op %d, rank %d, tensor %d: real row %lld differs from the reference", op, r, t,
            (long long)i);
    }
    free(expected[r]);
    free(dense[r]);
  }
  free(inputs);
  free(dense);
  free(expected);
}

static void simulate(const fuzzCase* c, ulyssesPlan_t* plans, int op) {
  int n = c->nRanks, T = c->nTensors;
  int nullEmpty = (int)(c->simFlags & 1);
  unsigned seed = c->simFlags >> 1;
  int headSumOpaque = 0;
  for (int t = 0; t < T; t++)
    headSumOpaque |= ulyssesPlanSide(plans[0], (ulyssesOp_t)op, t, ULYSSES_RECV).kind == ULYSSES_COPY_HEAD_SUM &&
                     c->layouts[t].dataType == ulyssesTypeOpaque;

  uint32_t expectedStatus = 0;
  int inRange = 1;
  for (int r = 0; r < n && c->capacity; r++) {
    if (c->deviceLengths[r] < 0) expectedStatus |= ULYSSES_STATUS_NEGATIVE_LENGTH;
    if (c->deviceLengths[r] > c->slots[r]) expectedStatus |= ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY;
  }
  inRange = expectedStatus == 0;

  simWorld* world = simCreate(n);
  guardedBuffer* send = xcalloc((size_t)n * (size_t)T, sizeof(guardedBuffer));
  guardedBuffer* recv = xcalloc((size_t)n * (size_t)T, sizeof(guardedBuffer));
  guardedBuffer* workspace = xcalloc((size_t)n, sizeof(guardedBuffer));
  size_t* workspaceBytes = xcalloc((size_t)n, sizeof(size_t));
  uint32_t* status = xcalloc((size_t)n, sizeof(uint32_t));
  const void* sendbuffs[ULYSSES_MAX_TENSORS];
  void* recvbuffs[ULYSSES_MAX_TENSORS];
  for (int r = 0; r < n; r++) {
    CHECK(ulyssesGetWorkspaceSize(plans[r], (ulyssesOp_t)op, &workspaceBytes[r]) == ulyssesSuccess, "size");
    guardedAlloc(&workspace[r], workspaceBytes[r], 0);
    for (int t = 0; t < T; t++) {
      const ulyssesLayout_t* l = &c->layouts[t];
      size_t sendBytes, recvBytes;
      CHECK(ulyssesGetBufferSizes(plans[r], (ulyssesOp_t)op, t, &sendBytes, &recvBytes) == ulyssesSuccess, "sizes");
      size_t misalignment = (seed + (unsigned)(r * 7 + t * 3)) % 16;
      guardedAlloc(&send[r * T + t], sendBytes, misalignment);
      guardedAlloc(&recv[r * T + t], recvBytes, misalignment / 2 + (seed & 1));
      uint64_t fill = (uint64_t)seed * 1000003u + (uint64_t)(r * 31 + t);
      if (isKvFloat(l))
        refFillFloats(send[r * T + t].data, sendBytes / (size_t)l->elementSize, refTypeOf(l->dataType), fill);
      else
        refFillPattern(send[r * T + t].data, sendBytes, fill);
      memset(recv[r * T + t].data, 0x5A, recvBytes);
    }
  }
  for (int r = 0; r < n; r++) {
    for (int t = 0; t < T; t++) {
      guardedBuffer* in = &send[r * T + t];
      guardedBuffer* out = &recv[r * T + t];
      sendbuffs[t] = nullEmpty && in->bytes == 0 ? NULL : in->data;
      recvbuffs[t] = nullEmpty && out->bytes == 0 ? NULL : out->data;
    }
    void* workspaceData = nullEmpty && workspaceBytes[r] == 0 ? NULL : workspace[r].data;
    ulyssesBackend backend = simBackendOf(world, r);
    simComm comm;
    simCommInit(&comm, n, r);
    ulyssesCall call = {.plan = plans[r],
                        .op = (ulyssesOp_t)op,
                        .nTensors = T,
                        .sendbuffs = sendbuffs,
                        .recvbuffs = recvbuffs,
                        .workspace = workspaceData,
                        .workspaceSize = workspaceBytes[r],
                        .deviceStatus = &status[r],
                        .comm = &comm.comm};
    ulyssesClearError();
    ulyssesResult_t result = ulyssesEnqueueExchange(&call, &backend);
    if (headSumOpaque) {
      CHECK(result == ulyssesErrorUnsupportedElementSize, "op %d rank %d: opaque kv heads summed (%s)",
            op, r, ulyssesGetErrorString(result));
      CHECK(simCountCalls(world, r) == 0, "op %d rank %d: refused, yet recorded calls", op, r);
    } else {
      CHECK(result == ulyssesSuccess, "op %d rank %d: valid buffers refused: %s", op, r,
            ulyssesGetErrorString(result));
    }
  }
  if (!headSumOpaque) {
    char message[512];
    CHECK(simExecute(world, message, sizeof message) == 0, "op %d: %s", op, message);
    for (int r = 0; r < n; r++)
      CHECK(status[r] == expectedStatus, "op %d rank %d: status 0x%x, expected 0x%x", op, r,
            (unsigned)status[r], (unsigned)expectedStatus);
    if (inRange && referenceAffordable(c)) {
      const int64_t* lengths = c->capacity ? c->deviceLengths : c->slots;
      for (int t = 0; t < T; t++) {
        const ulyssesLayout_t* l = &c->layouts[t];
        /* Opaque kv bytes would be read as floats by the reference. */
        if (l->queryHeads > 0 && l->dataType == ulyssesTypeOpaque) continue;
        compareWithReference(c, op, t, send, recv, lengths);
      }
    }
  }
  for (int r = 0; r < n; r++) {
    CHECK(guardsIntact(&workspace[r]), "op %d rank %d: a byte around the workspace changed", op, r);
    guardedFree(&workspace[r]);
    for (int t = 0; t < T; t++) {
      CHECK(guardsIntact(&send[r * T + t]) && guardsIntact(&recv[r * T + t]),
            "op %d rank %d tensor %d: a byte around a user buffer changed", op, r, t);
      guardedFree(&send[r * T + t]);
      guardedFree(&recv[r * T + t]);
    }
  }
  simDestroy(world);
  free(send);
  free(recv);
  free(workspace);
  free(workspaceBytes);
  free(status);
}

/*------------------------------------------------------------------------
 * Call-time validation with fuzzed pointers. Addresses are made up (no
 * byte behind them is touched: what an accepted call records is never
 * executed), above 2^61 so that no arithmetic on them wraps.
 *----------------------------------------------------------------------*/
typedef struct {
  uintptr_t begin;
  size_t bytes;
  int writable;
} range;

static int rangesOverlap(const range* a, const range* b) {
  if (a->bytes == 0 || b->bytes == 0) return 0;
  return a->begin < b->begin + b->bytes && b->begin < a->begin + a->bytes;
}

static uintptr_t pointerFor(reader* in, int index, const uintptr_t* own, const size_t* bytes,
                            int count, int aligned16) {
  unsigned b = byteOf(in);
  if (b < 160) return own[index];
  int other = (int)(byteOf(in) % (unsigned)count);
  unsigned offset = byteOf(in);
  uintptr_t begin = own[other], end = own[other] + bytes[other];
  uintptr_t address;
  switch ((b - 160) % 8) {
    case 0: return 0;
    case 1: address = begin; break;
    case 2: address = begin + (bytes[other] > 0 ? offset % bytes[other] : 0); break;
    case 3: return own[index] + 1 + offset % 15; /* misaligned */
    case 4: address = end; break;
    case 5: address = begin - bytes[index]; break;
    case 6: address = end > begin ? end - 1 : end; break;
    default: address = own[index] + 16 * (1 + offset % 4); break;
  }
  if (aligned16) address = address / 16 * 16;
  return address;
}

static size_t sizeFor(reader* in, size_t needed) {
  unsigned b = byteOf(in);
  if (b < 192) return needed;
  switch (b % 6) {
    case 0: return needed > 0 ? needed - 1 : 0;
    case 1: return 0;
    case 2: return SIZE_MAX;
    case 3: return needed + 1;
    case 4: return needed / 2;
    default: return needed > 16 ? needed - 16 : needed;
  }
}

static void fuzzCall(reader* in, const fuzzCase* c, ulyssesPlan_t plan) {
  int n = c->nRanks, T = c->nTensors;
  unsigned b = byteOf(in);
  int op = b < 240 ? (int)(b % 3) : (const int[]){3, -1, INT_MAX, INT_MIN, 4, 100, 2, 1}[(b - 240) % 8];
  int stage = (int)(byteOf(in) % 4 == 3);
  ulyssesSide stageSide = byteOf(in) & 1 ? ULYSSES_SEND : ULYSSES_RECV;
  b = byteOf(in);
  int nTensors = b < 224 ? T : (const int[]){T - 1, T + 1, 0, -1, 9, INT_MAX, INT_MIN, 8}[(b - 224) % 8];
  b = byteOf(in);
  int commRanks = n, commRank = c->rank;
  if (b >= 224) {
    if (b & 1) commRanks = (b & 2) ? n + 1 : n - 1;
    else commRank = (b & 2) ? c->rank + 1 : -1;
  }
  b = byteOf(in);
  int sendArrayNull = b >= 248 && (b & 1), recvArrayNull = b >= 248 && !(b & 1);

  int layoutOp = ulyssesOpIsValid(op) ? op : 0;
  size_t needed = 0;
  CHECK(ulyssesGetWorkspaceSize(plan, (ulyssesOp_t)layoutOp, &needed) == ulyssesSuccess, "size");
  if (!ulyssesOpIsValid(op)) needed = 0;
  /* Ranges 0 .. T-1: send buffers; T .. 2T-1: receive buffers; 2T: the
   * workspace, each in a slot of its own unless the input says otherwise. */
  int count = 2 * T + 1;
  uintptr_t own[2 * ULYSSES_MAX_TENSORS + 1];
  size_t bytes[2 * ULYSSES_MAX_TENSORS + 1];
  uintptr_t cursor = (uintptr_t)1 << 61;
  for (int i = 0; i < count; i++) {
    if (i < 2 * T)
      CHECK(ulyssesGetBufferSizes(plan, (ulyssesOp_t)layoutOp, i % T, i < T ? &bytes[i] : NULL,
                                  i < T ? NULL : &bytes[i]) == ulyssesSuccess, "sizes");
    else
      bytes[i] = needed;
    own[i] = cursor;
    cursor = (cursor + bytes[i] + 1024) / 256 * 256;
  }
  uintptr_t address[2 * ULYSSES_MAX_TENSORS + 1];
  for (int i = 0; i < count; i++) address[i] = pointerFor(in, i, own, bytes, count, i == 2 * T);
  size_t workspaceSize = sizeFor(in, needed);
  b = byteOf(in);
  const int64_t* deviceLengths = c->capacity ? (const int64_t*)(uintptr_t)((uintptr_t)1 << 40) : NULL;
  uint32_t* deviceStatus = c->capacity ? (uint32_t*)(uintptr_t)(((uintptr_t)1 << 40) + 4096) : NULL;
  if (b >= 224) {
    switch (b % 6) {
      case 0: deviceLengths = NULL; break;
      case 1: deviceStatus = NULL; break;
      case 2: deviceLengths = (const int64_t*)(uintptr_t)(((uintptr_t)1 << 40) + 4); break;
      case 3: deviceStatus = (uint32_t*)(uintptr_t)(((uintptr_t)1 << 40) + 4098); break;
      case 4: deviceLengths = (const int64_t*)(uintptr_t)((uintptr_t)1 << 40); break;
      default: deviceStatus = (uint32_t*)(uintptr_t)(((uintptr_t)1 << 40) + 4096); break;
    }
  }

  /* Exactly T entries: the call reads no more once nTensors matches. */
  const void** sendbuffs = xcalloc((size_t)T, sizeof(void*));
  void** recvbuffs = xcalloc((size_t)T, sizeof(void*));
  for (int t = 0; t < T; t++) {
    sendbuffs[t] = (const void*)address[t];
    recvbuffs[t] = (void*)address[T + t];
  }
  void* workspace = (void*)address[2 * T];

  /* The documented rules. */
  int checkSend = !stage || stageSide == ULYSSES_SEND, checkRecv = !stage || stageSide == ULYSSES_RECV;
  int valid = ulyssesOpIsValid(op) && nTensors == T;
  if (!stage) valid = valid && commRanks == n && commRank == c->rank;
  if (stage && c->capacity)
    valid = valid && deviceLengths != NULL && deviceStatus != NULL &&
            (uintptr_t)deviceLengths % 8 == 0 && (uintptr_t)deviceStatus % 4 == 0;
  if (stage && !c->capacity) valid = valid && deviceLengths == NULL && deviceStatus == NULL;
  for (int t = 0; valid && checkRecv && t < T; t++)
    if (modelHeadSum(c, &c->layouts[t], op) && c->layouts[t].dataType == ulyssesTypeOpaque) valid = 0;
  if ((checkSend && sendArrayNull) || (checkRecv && recvArrayNull)) valid = 0;
  range ranges[2 * ULYSSES_MAX_TENSORS + 1];
  int nRanges = 0;
  for (int i = 0; valid && i < 2 * T; i++) {
    if (!(i < T ? checkSend : checkRecv)) continue;
    if (address[i] == 0 && bytes[i] > 0) valid = 0;
    ranges[nRanges++] = (range){address[i], bytes[i], i >= T};
  }
  if (valid && needed > 0) {
    if (address[2 * T] == 0 || address[2 * T] % ULYSSES_WORKSPACE_ALIGNMENT != 0 || workspaceSize < needed)
      valid = 0;
    ranges[nRanges++] = (range){address[2 * T], needed, 1};
  }
  for (int i = 0; valid && i < nRanges; i++)
    for (int j = i + 1; valid && j < nRanges; j++)
      if ((ranges[i].writable || ranges[j].writable) && rangesOverlap(&ranges[i], &ranges[j])) valid = 0;

  simWorld* world = simCreate(n);
  ulyssesBackend backend = simBackendOf(world, c->rank);
  uint32_t status = 0;
  ulyssesClearError();
  ulyssesResult_t result;
  const char* what = stage ? "ulyssesEnqueueStage" : "ulyssesEnqueueExchange";
  simComm comm;
  simCommInit(&comm, commRanks, commRank);
  /* A stage reads only its side's array. */
  ulyssesCall call = {.plan = plan,
                      .op = (ulyssesOp_t)op,
                      .nTensors = nTensors,
                      .sendbuffs = sendArrayNull ? NULL : sendbuffs,
                      .recvbuffs = recvArrayNull ? NULL : recvbuffs,
                      .workspace = workspace,
                      .workspaceSize = workspaceSize,
                      .deviceLengths = stage ? deviceLengths : NULL,
                      .deviceStatus = stage ? deviceStatus : &status,
                      .comm = stage ? NULL : &comm.comm};
  if (stage)
    result = ulyssesEnqueueStage(&call, stageSide, &backend);
  else
    result = ulyssesEnqueueExchange(&call, &backend);
  trace("  %s, op %d: %s %s (the rules say %s)\n", what, op, ulyssesGetErrorString(result),
        ulyssesGetLastError(), valid ? "valid" : "invalid");
  if (result == ulyssesSuccess) {
    CHECK(valid, "%s (op %d, %s side) accepted buffers the documented rules refuse", what, op,
          stage ? (stageSide == ULYSSES_SEND ? "send" : "receive") : "either");
    CHECK(stage || simCountCalls(world, c->rank) >= 2, "%s: accepted, yet no NCCL group", what);
  } else {
    checkFailure(result, what);
    CHECK(!valid, "%s (op %d) refused valid buffers: %s", what, op, ulyssesGetErrorString(result));
    CHECK(simCountCalls(world, c->rank) == 0, "%s failed (%s) after recording %d calls", what,
          ulyssesGetErrorString(result), simCountCalls(world, c->rank));
  }
  ulyssesClearError();
  simCommInit(&comm, n, c->rank);
  ulyssesCall noPlan = {.op = ulyssesOpSeqToHead,
                        .nTensors = T,
                        .sendbuffs = sendbuffs,
                        .recvbuffs = recvbuffs,
                        .workspace = workspace,
                        .workspaceSize = workspaceSize,
                        .deviceStatus = &status,
                        .comm = &comm.comm};
  CHECK(ulyssesEnqueueExchange(&noPlan, &backend) == ulyssesErrorNullPointer, "NULL plan");
  simDestroy(world);
  free(sendbuffs);
  free(recvbuffs);
}

/*------------------------------------------------------------------------
 * The target.
 *----------------------------------------------------------------------*/
int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  reader in = {data, size, 0};
  fuzzCase c;
  decodeCase(&in, &c);

  int outNull = c.oddity == ODD_OUT_NULL;
  const int64_t* lengths = c.oddity == ODD_LENGTHS_NULL ? NULL : c.slots;
  const ulyssesLayout_t* layouts = c.oddity == ODD_LAYOUTS_NULL ? NULL : c.layouts;
  int ownRank = c.rank >= 0 && c.rank < c.nLengths ? c.rank : 0;
  const int64_t* deviceLocalLength = &c.deviceLengths[ownRank];
  if (c.oddity == ODD_DEVICE_NULL) deviceLocalLength = NULL;
  if (c.oddity == ODD_DEVICE_MISALIGNED4)
    deviceLocalLength = (const int64_t*)(uintptr_t)((uintptr_t)deviceLocalLength + 4);
  if (c.oddity == ODD_DEVICE_MISALIGNED1)
    deviceLocalLength = (const int64_t*)(uintptr_t)((uintptr_t)deviceLocalLength + 1);

  trace("%s mode, nRanks %d, rank %d, nTensors %d, oddity %d, lengths", c.capacity ? "capacity" : "exact",
        c.nRanks, c.rank, c.nTensors, c.oddity);
  for (int r = 0; r < c.nLengths && r < 8; r++) trace(" %lld", (long long)c.slots[r]);
  trace("%s\n", c.nLengths > 8 ? " ..." : "");
  for (int t = 0; t < c.nLayouts; t++)
    trace("  layout %d: B %lld H %lld D %lld E %lld packed %d order %d queryHeads %lld type %d\n", t,
          (long long)c.layouts[t].batch, (long long)c.layouts[t].heads,
          (long long)c.layouts[t].headDim, (long long)c.layouts[t].elementSize, c.layouts[t].packed,
          (int)c.layouts[t].order, (long long)c.layouts[t].queryHeads, (int)c.layouts[t].dataType);

  ulyssesPlan_t plan = PLAN_SENTINEL;
  ulyssesResult_t result = createFor(&c, outNull ? NULL : &plan, c.rank, lengths, deviceLocalLength, layouts);
  trace("  creation: %s %s\n", ulyssesGetErrorString(result), ulyssesGetLastError());
  int valid = modelPlanValid(&c, outNull, lengths, deviceLocalLength, layouts);
  if (result != ulyssesSuccess) {
    checkFailure(result, "plan creation");
    CHECK(plan == PLAN_SENTINEL, "a failed plan creation wrote its out-pointer");
    CHECK(result != ulyssesErrorLengthExceedsCapacity && result != ulyssesErrorLayoutMismatch &&
              result != ulyssesErrorCommMismatch && result != ulyssesErrorWorkspaceTooSmall &&
              result != ulyssesErrorBufferOverlap && result != ulyssesErrorCudaError &&
              result != ulyssesErrorNcclError &&
              (result != ulyssesErrorUnsupported || c.oddity == ODD_LAYOUT_UNKNOWN_FIELD) &&
              result != ulyssesErrorPlanMismatch && result != ulyssesErrorInvalidUsage,
          "plan creation returned %s", ulyssesGetErrorString(result));
    CHECK(!valid, "plan creation refused arguments the documented rules accept: %s",
          ulyssesGetErrorString(result));
    freeCase(&c);
    return 0;
  }
  CHECK(plan != PLAN_SENTINEL && plan != NULL, "plan creation succeeded without a plan");
  int n = c.nRanks;
  /* The rank with the most rows must accept what this rank did (checked
   * first: the model below cannot tell which rank a plan is for). */
  int longest = 0;
  for (int r = 1; r < n; r++) longest = c.slots[r] > c.slots[longest] ? r : longest;
  ulyssesPlanDestroy(planOf(&c, longest));
  CHECK(valid, "plan creation accepted arguments the documented rules refuse (nRanks %d, rank %d)",
        c.nRanks, c.rank);

  unsigned pick = byteOf(&in);
  checkPlan(&c, plan, c.rank, n <= 32, pick);
  if (n <= SIM_SMALL_RANKS || simAffordable(&c)) {
    /* Every rank's plan from the same arguments. */
    ulyssesPlan_t* plans = xcalloc((size_t)n, sizeof(ulyssesPlan_t));
    for (int r = 0; r < n; r++) {
      plans[r] = planOf(&c, r);
      if (n <= SIM_SMALL_RANKS && r != c.rank) checkPlan(&c, plans[r], r, 1, 0);
    }
    int affordable = simAffordable(&c);
    trace("  every rank's plan checked; %s\n", affordable ? "simulated" : "too big to simulate");
    if (n <= SIM_SMALL_RANKS) {
      checkMessagesMatch(&c, plans, pick >> 2);
      if (affordable)
        for (int op = 0; op < ULYSSES_OP_COUNT; op++) simulate(&c, plans, op);
    } else if (affordable) {
      simulate(&c, plans, (int)(pick % ULYSSES_OP_COUNT));
    }
    for (int r = 0; r < n; r++) ulyssesPlanDestroy(plans[r]);
    free(plans);
  } else {
    /* Too many ranks for every plan: the first and the last rank must
     * accept what this one did. */
    ulyssesPlanDestroy(planOf(&c, 0));
    ulyssesPlanDestroy(planOf(&c, n - 1));
  }
  fuzzCall(&in, &c, plan);
  ulyssesPlanDestroy(plan);
  freeCase(&c);
  return 0;
}
