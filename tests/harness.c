#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define GUARD_PATTERN 0xA5

void guardedAlloc(guardedBuffer* buffer, size_t bytes, size_t misalignment) {
  buffer->allocation = malloc(bytes + 2 * HARNESS_GUARD_BYTES + 16);
  buffer->data = buffer->allocation + HARNESS_GUARD_BYTES + misalignment % 16;
  buffer->bytes = bytes;
  memset(buffer->allocation, GUARD_PATTERN, bytes + 2 * HARNESS_GUARD_BYTES + 16);
}

void guardedFree(guardedBuffer* buffer) {
  free(buffer->allocation);
  memset(buffer, 0, sizeof *buffer);
}

int guardsIntact(const guardedBuffer* buffer) {
  const unsigned char* end = buffer->allocation + 2 * HARNESS_GUARD_BYTES + 16 + buffer->bytes;
  for (const unsigned char* p = buffer->allocation; p < buffer->data; p++)
    if (*p != GUARD_PATTERN) return 0;
  for (const unsigned char* p = buffer->data + buffer->bytes; p < end; p++)
    if (*p != GUARD_PATTERN) return 0;
  return 1;
}

static int64_t pick(uint64_t* random, int64_t count) { return (int64_t)(refRandom(random) % (uint64_t)count); }

void randomScenario(scenario* s, uint64_t* random, int maxRanks, int capacityMode) {
  static const int rankChoices[] = {1, 2, 3, 4, 5, 7, 8, 16};
  static const int64_t elementSizes[] = {1, 2, 4, 8, 16};
  memset(s, 0, sizeof *s);
  do s->nRanks = rankChoices[pick(random, 8)]; while (s->nRanks > maxRanks);
  s->capacityMode = capacityMode;
  int pattern = (int)pick(random, 4);
  int64_t base = 1 + pick(random, 4);
  for (int r = 0; r < s->nRanks; r++) {
    switch (pattern) {
      case 0: s->lengths[r] = base; break;                                   /* equal */
      case 1: s->lengths[r] = base * (r + 1) % 7; break;                     /* skewed */
      case 2: s->lengths[r] = r % 2 == 0 ? 0 : base + r; break;              /* zeros */
      default: s->lengths[r] = pick(random, 6); break;                       /* random */
    }
    s->capacities[r] = s->lengths[r] + pick(random, 3);
  }
  s->nTensors = 1 + (int)pick(random, 3);
  for (int t = 0; t < s->nTensors; t++) {
    ulyssesLayout_t* layout = &s->layouts[t];
    /* Often the shape of the tensor before (k and v, or q, k and v of
     * attention without grouped queries): their segments share a region and
     * a message per peer (src/plan.h). */
    if (t > 0 && pick(random, 2)) {
      *layout = s->layouts[t - 1];
      continue;
    }
    layout->size = sizeof *layout;
    layout->batch = 1 + pick(random, 3);
    layout->heads = pick(random, 2) ? s->nRanks * (1 + pick(random, 3)) : 1 + pick(random, 2 * s->nRanks + 3);
    layout->headDim = 1 + pick(random, 5);
    layout->elementSize = elementSizes[pick(random, 5)];
    layout->packed = pick(random, 3) == 0 ? 3 : 1;
    layout->order = pick(random, 2) ? ulyssesOrderSBHD : ulyssesOrderBSHD;
    if (pick(random, 3) == 0) {
      /* kv heads of grouped-query attention, often fewer than the ranks,
       * half the time of 16-byte heads (so that they may share a message
       * group with a tensor of another shape: src/plan.h). */
      static const ulyssesDataType_t types[] = {ulyssesTypeFloat32, ulyssesTypeFloat16,
                                                ulyssesTypeBfloat16};
      layout->heads = 1 + pick(random, s->nRanks + 2);
      layout->queryHeads = layout->heads * (1 + pick(random, 4));
      layout->dataType = types[pick(random, 3)];
      layout->elementSize = layout->dataType == ulyssesTypeFloat32 ? 4 : 2;
      if (pick(random, 2)) layout->headDim = 16 / layout->elementSize;
    }
  }
}

int isKvTensor(const scenario* s, int t) { return s->layouts[t].queryHeads > 0; }

refGqaShape kvShapeOf(const scenario* s, int t, const int64_t* lengths) {
  const ulyssesLayout_t* layout = &s->layouts[t];
  refGqaShape shape = {shapeOf(s, t, lengths), layout->queryHeads,
                       layout->dataType == ulyssesTypeFloat32   ? REF_FLOAT32
                       : layout->dataType == ulyssesTypeFloat16 ? REF_FLOAT16
                                                                : REF_BFLOAT16};
  return shape;
}

refShape shapeOf(const scenario* s, int t, const int64_t* lengths) {
  const ulyssesLayout_t* layout = &s->layouts[t];
  refShape shape = {s->nRanks,      lengths,        layout->batch,
                    layout->heads,  layout->headDim, layout->elementSize,
                    layout->packed, layout->order == ulyssesOrderSBHD};
  return shape;
}
