#include "rows.h"

#include <string.h>

int rowsOnSequenceSide(ulyssesOp_t op, int isSend) {
  int sendSide = isSend != 0;
  return op == ulyssesOpAllGather ? sendSide : (op == ulyssesOpSeqToHead) == sendSide;
}

size_t sideRowsDenseBytes(const sideRows* side) {
  return (size_t)(side->batch * side->realRows) * side->rowBytes;
}

size_t sideRowsBufferBytes(const sideRows* side) {
  return (size_t)(side->batch * side->slotRows) * side->rowBytes;
}

size_t sideRowsSpan(const sideRows* side) {
  if (side->batch == 0 || side->realRows == 0) return 0;
  if (side->sequenceFirst) return sideRowsDenseBytes(side);
  return (size_t)((side->batch - 1) * side->slotRows + side->realRows) * side->rowBytes;
}

int64_t sideRowsRunCount(const sideRows* side) { return side->sequenceFirst ? 1 : side->batch; }

void sideRowsRun(const sideRows* side, int64_t run, size_t* bufferOffset, size_t* denseOffset,
                 size_t* bytes) {
  if (side->sequenceFirst) {
    *bufferOffset = 0;
    *denseOffset = 0;
    *bytes = sideRowsDenseBytes(side);
  } else {
    *bufferOffset = (size_t)(run * side->slotRows) * side->rowBytes;
    *denseOffset = (size_t)(run * side->realRows) * side->rowBytes;
    *bytes = (size_t)side->realRows * side->rowBytes;
  }
}

size_t rowOffset(const sideRows* side, int64_t denseRow) {
  int64_t row = denseRow;
  if (!side->sequenceFirst)
    row = denseRow / side->realRows * side->slotRows + denseRow % side->realRows;
  return (size_t)row * side->rowBytes;
}

void sideRowsLocate(const sideRows* side, int64_t bufferRow, int64_t* entry, int64_t* row) {
  if (side->sequenceFirst) {
    *entry = bufferRow % side->batch;
    *row = bufferRow / side->batch;
  } else {
    *entry = bufferRow / side->slotRows;
    *row = bufferRow % side->slotRows;
  }
}

/* Every run between the buffer and the dense tensor, toBuffer saying which way. */
static void copyRuns(const sideRows* side, unsigned char* buffer, unsigned char* dense,
                     int toBuffer) {
  for (int64_t run = 0; run < sideRowsRunCount(side); run++) {
    size_t bufferOffset, denseOffset, bytes;
    sideRowsRun(side, run, &bufferOffset, &denseOffset, &bytes);
    if (bytes == 0) continue;
    if (toBuffer)
      memcpy(buffer + bufferOffset, dense + denseOffset, bytes);
    else
      memcpy(dense + denseOffset, buffer + bufferOffset, bytes);
  }
}

void densify(const sideRows* side, const void* buffer, void* dense) {
  copyRuns(side, (unsigned char*)(uintptr_t)buffer, dense, 0);
}

void scatterDense(const sideRows* side, const void* dense, void* buffer) {
  copyRuns(side, buffer, (unsigned char*)(uintptr_t)dense, 1);
}
