/* Real rows inside a padded buffer: the one model that the CPU tests, the GPU
 * suite and ulysses_perf share. Pure C, tested by test_rows.c.
 *
 * One side of one tensor holds batch entries of realRows real rows (L_r on
 * the sequence side, Ltot on the head side and for the gathered tensor) in a
 * buffer of slotRows rows per entry (the capacities C_r or Ctot; in exact
 * mode slotRows == realRows and the buffer is dense). Batch first
 * ([B, slot, ...]): entry b's real rows are buffer rows b * slotRows + s,
 * s < realRows, the rest of the entry padding. Sequence first
 * ([slot, B, ...]): the real rows are the buffer's prefix of
 * realRows * batch rows. A dense tensor ([B, real, ...] or [real, B, ...])
 * holds the real rows alone, in the same order. */
#ifndef ULYSSES_TESTS_ROWS_H_
#define ULYSSES_TESTS_ROWS_H_

#include <stddef.h>
#include <stdint.h>

#include "ulysses.h"

typedef struct {
  size_t rowBytes; /* packed * heads * headDim * elementSize of that side */
  int64_t batch;
  int64_t realRows; /* per batch entry */
  int64_t slotRows; /* per batch entry in the buffer */
  int sequenceFirst;
} sideRows;

/* Whether a tensor of op lies on the sequence side: the input (isSend) of
 * seq->head and of the all-gather, the output of head->seq. */
int rowsOnSequenceSide(ulyssesOp_t op, int isSend);

/* The dense tensor's bytes, and the buffer's. */
size_t sideRowsDenseBytes(const sideRows* side);
size_t sideRowsBufferBytes(const sideRows* side);
/* The bytes from the buffer's start to the end of its last real row (0 when
 * it has none). */
size_t sideRowsSpan(const sideRows* side);

/* The real rows as contiguous runs: one per batch entry (batch first) or one
 * in all (sequence first). Run `run` starts at bufferOffset in the buffer and
 * denseOffset in the dense tensor and is `bytes` long. */
int64_t sideRowsRunCount(const sideRows* side);
void sideRowsRun(const sideRows* side, int64_t run, size_t* bufferOffset, size_t* denseOffset,
                 size_t* bytes);

/* The byte offset in the buffer of the dense tensor's row denseRow. */
size_t rowOffset(const sideRows* side, int64_t denseRow);
/* The batch entry and the row within it (its sequence position) of the
 * buffer's row bufferRow. */
void sideRowsLocate(const sideRows* side, int64_t bufferRow, int64_t* entry, int64_t* row);

/* Copies the real rows of buffer into a dense tensor, or back. */
void densify(const sideRows* side, const void* buffer, void* dense);
void scatterDense(const sideRows* side, const void* dense, void* buffer);

#endif /* ULYSSES_TESTS_ROWS_H_ */
