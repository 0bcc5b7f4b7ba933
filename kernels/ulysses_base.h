/* What every kernel header shares: the qualifiers that make a function run
 * on the host and the device (and as plain C11 in the CPU tests), the
 * kernels' knobs and limits, the codes the host and the kernels agree on,
 * the 16-byte word and the word size a copy may move. */
#ifndef ULYSSES_BASE_H_
#define ULYSSES_BASE_H_

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
/* The longest run (in words) whose words a sweep counts in 32 bits; longer
 * runs are swept one at a time (ulyssesCopyRunsThread). A knob only so that
 * the CPU tests can take that path with short runs. */
#ifndef ULYSSES_COPY_COUNTED_WORDS
#define ULYSSES_COPY_COUNTED_WORDS INT32_MAX
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

/* A 16-byte word: one vector load or store. */
typedef struct {
  ULYSSES_ALIGNAS(16) uint64_t low;
  uint64_t high;
} ulyssesWord16;

/* The largest power of two up to 16 that divides headBytes and both bases:
 * the word a copy between them may move. */
ULYSSES_HD int ulyssesWordBytes(int64_t headBytes, const void* user, const void* segments) {
  uint64_t bits = (uint64_t)headBytes | (uint64_t)(uintptr_t)user | (uint64_t)(uintptr_t)segments;
  int word = 16;
  while (word > 1 && bits % (uint64_t)word != 0) word /= 2;
  return word;
}

#endif /* ULYSSES_BASE_H_ */
