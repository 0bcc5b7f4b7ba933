#include "one_pass_run.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

void onePassBuildTable(const exchangeRun* run, lengthTable* table) {
  const scenario* s = run->s;
  ulyssesTableArgs args;
  memset(&args, 0, sizeof args);
  memset(table, 0, sizeof *table);
  args.mode = s->capacityMode ? ULYSSES_MODE_CAPACITY : ULYSSES_MODE_EXACT;
  args.nRanks = s->nRanks;
  args.chunkCount = s->nRanks;
  memcpy(args.hostValues, s->capacityMode ? s->capacities : s->lengths,
         sizeof(int64_t) * (size_t)s->nRanks);
  args.gatheredLengths = s->capacityMode ? run->deviceLengths : NULL;
  args.lengths = table->lengths;
  args.offsets = table->offsets;
  args.slotOffsets = table->slotOffsets;
  args.status = &table->status;
  simRunTable(&args);
}

unsigned char* onePassRealBytes(const exchangeRun* run, const lengthTable* table, int p, int t) {
  sideRows out = exchangeSideRows(run, t, p, 0, table->lengths);
  unsigned char* real = calloc(run->recv[p][t].bytes + 1, 1);
  assert_non_null(real);
  for (int64_t i = 0; i < out.batch * out.realRows; i++)
    memset(real + rowOffset(&out, i), 1, out.rowBytes);
  return real;
}

void onePassCheckPadding(const exchangeRun* run, const lengthTable* table) {
  const scenario* s = run->s;
  for (int p = 0; p < s->nRanks; p++)
    for (int t = 0; t < s->nTensors; t++) {
      unsigned char* real = onePassRealBytes(run, table, p, t);
      for (size_t k = 0; k < run->recv[p][t].bytes; k++)
        if (!real[k] && run->recv[p][t].data[k] != ONE_PASS_UNTOUCHED)
          fail_msg("rank %d, tensor %d: padding byte %zu was written", p, t, k);
      free(real);
    }
}

int onePassNeedsHeadSum(const exchangeRun* run) {
  for (int t = 0; t < run->s->nTensors; t++)
    if (ulyssesPlanSide(run->plans[0], run->op, t, ULYSSES_RECV).kind == ULYSSES_COPY_HEAD_SUM)
      return 1;
  return 0;
}

ulyssesLayout_t onePassLayout(int64_t batch, int64_t heads, int64_t headDim, int64_t elementSize,
                              int packed, ulyssesOrder_t order) {
  ulyssesLayout_t layout;
  memset(&layout, 0, sizeof layout);
  layout.size = sizeof layout;
  layout.batch = batch;
  layout.heads = heads;
  layout.headDim = headDim;
  layout.elementSize = elementSize;
  layout.packed = packed;
  layout.order = order;
  return layout;
}

ulyssesLayout_t onePassKvLayout(int64_t batch, int64_t kvHeads, int64_t queryHeads, int64_t headDim,
                                ulyssesOrder_t order) {
  ulyssesLayout_t layout = onePassLayout(batch, kvHeads, headDim, 2, 1, order);
  layout.queryHeads = queryHeads;
  layout.dataType = ulyssesTypeBfloat16;
  return layout;
}
