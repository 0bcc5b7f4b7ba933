/* Shared by the one-pass tests (CPU and GPU): the length table the one-pass
 * kernel builds from the lengths every rank published, and which bytes of an
 * output the real rows hold. */
#ifndef ULYSSES_TESTS_ONE_PASS_RUN_H_
#define ULYSSES_TESTS_ONE_PASS_RUN_H_

#include "exchange_run.h"
#include "one_pass.h"

/* What the one-pass kernel leaves alone reads back as this. */
#define ONE_PASS_UNTOUCHED 0xC3

typedef struct {
  int64_t lengths[HARNESS_MAX_RANKS];
  int64_t offsets[HARNESS_MAX_RANKS + 1];
  int64_t slotOffsets[HARNESS_MAX_RANKS + 1];
  uint32_t status;
} lengthTable;

/* From run->deviceLengths in capacity mode (clamped, status bits set), the
 * scenario's lengths in exact mode. */
void onePassBuildTable(const exchangeRun* run, lengthTable* table);
/* 1 for each byte of rank p's output of tensor t that a real row holds, else
 * 0 (calloc'ed: the caller frees it). */
unsigned char* onePassRealBytes(const exchangeRun* run, const lengthTable* table, int p, int t);
/* Fails the test where a byte of an output outside the real rows changed. */
void onePassCheckPadding(const exchangeRun* run, const lengthTable* table);
/* Whether op with the run's scenario needs the head sum (staged only). */
int onePassNeedsHeadSum(const exchangeRun* run);

/* A layout with the given fields, the others 0. */
ulyssesLayout_t onePassLayout(int64_t batch, int64_t heads, int64_t headDim, int64_t elementSize,
                              int packed, ulyssesOrder_t order);
/* kvHeads bf16 kv heads read by queryHeads query heads. */
ulyssesLayout_t onePassKvLayout(int64_t batch, int64_t kvHeads, int64_t queryHeads, int64_t headDim,
                                ulyssesOrder_t order);

#endif /* ULYSSES_TESTS_ONE_PASS_RUN_H_ */
