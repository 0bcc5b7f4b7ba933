/* rows.h: where the real rows of a padded buffer lie, the model the CPU
 * tests, the GPU suite and ulysses_perf share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

#include "rows.h"

static void testSequenceSideOfEachOp(void** state) {
  (void)state;
  assert_true(rowsOnSequenceSide(ulyssesOpSeqToHead, 1));
  assert_false(rowsOnSequenceSide(ulyssesOpSeqToHead, 0));
  assert_false(rowsOnSequenceSide(ulyssesOpHeadToSeq, 1));
  assert_true(rowsOnSequenceSide(ulyssesOpHeadToSeq, 0));
  assert_true(rowsOnSequenceSide(ulyssesOpAllGather, 1));
  assert_false(rowsOnSequenceSide(ulyssesOpAllGather, 0));
  assert_true(rowsOnSequenceSide(ulyssesOpSeqToHead, 2)); /* any nonzero isSend */
}

/* Both orders, dense and padded, no real rows, one and several entries. */
static const sideRows shapes[] = {
    {8, 1, 3, 3, 0}, {8, 1, 3, 3, 1}, {4, 3, 2, 5, 0}, {4, 3, 2, 5, 1}, {6, 2, 0, 4, 0},
    {6, 2, 0, 4, 1}, {2, 4, 1, 1, 0}, {3, 2, 5, 7, 1}, {1, 3, 4, 6, 0},
};
enum { SHAPES = sizeof shapes / sizeof shapes[0] };

static void testRunsAreTheRowsOfRowOffset(void** state) {
  (void)state;
  for (int k = 0; k < SHAPES; k++) {
    const sideRows* s = &shapes[k];
    size_t bufferBytes = sideRowsBufferBytes(s);
    assert_int_equal(sideRowsDenseBytes(s), (size_t)(s->batch * s->realRows) * s->rowBytes);
    assert_int_equal(bufferBytes, (size_t)(s->batch * s->slotRows) * s->rowBytes);
    /* Mark every byte the runs cover, then every byte the rows cover. */
    unsigned char* byRuns = calloc(bufferBytes + 1, 1);
    unsigned char* byRows = calloc(bufferBytes + 1, 1);
    size_t denseNext = 0;
    for (int64_t run = 0; run < sideRowsRunCount(s); run++) {
      size_t bufferOffset, denseOffset, bytes;
      sideRowsRun(s, run, &bufferOffset, &denseOffset, &bytes);
      assert_int_equal(denseOffset, denseNext); /* the dense tensor, in order */
      denseNext += bytes;
      assert_true(bufferOffset + bytes <= bufferBytes);
      memset(byRuns + bufferOffset, 1, bytes);
    }
    assert_int_equal(denseNext, sideRowsDenseBytes(s));
    size_t span = 0;
    for (int64_t i = 0; i < s->batch * s->realRows; i++) {
      size_t offset = rowOffset(s, i);
      memset(byRows + offset, 1, s->rowBytes);
      if (offset + s->rowBytes > span) span = offset + s->rowBytes;
      int64_t entry, row;
      sideRowsLocate(s, (int64_t)(offset / s->rowBytes), &entry, &row);
      int64_t back = s->sequenceFirst ? row * s->batch + entry : entry * s->realRows + row;
      if (back != i || row >= s->realRows || entry >= s->batch)
        fail_msg("shape %d: dense row %lld lies at entry %lld, row %lld", k, (long long)i,
                 (long long)entry, (long long)row);
    }
    assert_memory_equal(byRuns, byRows, bufferBytes + 1);
    assert_int_equal(sideRowsSpan(s), span);
    free(byRuns);
    free(byRows);
  }
}

static void testScatterAndDensifyTouchOnlyRealRows(void** state) {
  (void)state;
  for (int k = 0; k < SHAPES; k++) {
    const sideRows* s = &shapes[k];
    size_t denseBytes = sideRowsDenseBytes(s), bufferBytes = sideRowsBufferBytes(s);
    unsigned char* dense = malloc(denseBytes + 1);
    unsigned char* buffer = malloc(bufferBytes + 1);
    unsigned char* back = malloc(denseBytes + 1);
    for (size_t i = 0; i < denseBytes; i++) dense[i] = (unsigned char)(i * 7 + 1);
    memset(buffer, 0xEE, bufferBytes + 1);
    scatterDense(s, dense, buffer);
    for (int64_t i = 0; i < s->batch * s->realRows; i++)
      assert_memory_equal(buffer + rowOffset(s, i), dense + (size_t)i * s->rowBytes, s->rowBytes);
    size_t padding = 0;
    for (size_t i = 0; i < bufferBytes + 1; i++) padding += buffer[i] == 0xEE;
    assert_int_equal(padding, bufferBytes - denseBytes + 1); /* dense's bytes are never 0xEE */
    densify(s, buffer, back);
    assert_memory_equal(back, dense, denseBytes);
    free(dense);
    free(buffer);
    free(back);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testSequenceSideOfEachOp),
      cmocka_unit_test(testRunsAreTheRowsOfRowOffset),
      cmocka_unit_test(testScatterAndDensifyTouchOnlyRealRows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
