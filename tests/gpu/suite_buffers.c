/* The GPU suite's rank state, failure reports, and device buffers with guard
 * bytes and their real rows (suite.h). */
#include "suite.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int gRank = -1;
int gRanks = 0;
long gChecks = 0;
long gFailures = 0;
char gScenario[256] = "start-up";
cudaStream_t gStream = NULL;

void setScenario(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(gScenario, sizeof gScenario, format, args);
  va_end(args);
}

void reportFailure(const char* format, ...) {
  char text[512];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof text, format, args);
  va_end(args);
  printf("rank %d: scenario %s: %s\n", gRank, gScenario, text);
  gFailures++;
}

void fatal(const char* file, int line, const char* call, const char* error, const char* detail) {
  printf("rank %d: scenario %s: %s:%d: %s failed: %s (%s); ulyssesGetLastError: \"%s\"\n", gRank,
         gScenario, file, line, call, error, detail, ulyssesGetLastError());
  fflush(stdout);
  fflush(stderr);
  _exit(2);
}

void* xmalloc(size_t bytes) {
  void* p = malloc(bytes > 0 ? bytes : 1);
  if (p == NULL) {
    printf("rank %d: out of host memory (%zu bytes)\n", gRank, bytes);
    fflush(stdout);
    _exit(2);
  }
  return p;
}

double nowMs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

uint64_t mixSeed(uint64_t a, uint64_t b) {
  uint64_t state = a * UINT64_C(0x9E3779B97F4A7C15) ^ (b + UINT64_C(0x632BE59BD9B4E019));
  return refRandom(&state);
}

enum { NCCL_WAIT_SECONDS = 60 };

void ncclWaitDone(ncclComm_t comm, ncclResult_t result, const char* what, int line) {
  double started = nowMs();
  const struct timespec pause = {0, 100000};
  while (result == ncclInProgress) {
    if (nowMs() - started > NCCL_WAIT_SECONDS * 1e3)
      fatal(__FILE__, line, what, "ncclInProgress", "still in progress after the wait's limit");
    nanosleep(&pause, NULL);
    ncclResult_t queried = ncclCommGetAsyncError(comm, &result);
    if (queried != ncclSuccess)
      fatal(__FILE__, line, "ncclCommGetAsyncError", ncclGetErrorString(queried), what);
  }
  if (result != ncclSuccess)
    fatal(__FILE__, line, what, ncclGetErrorString(result), ncclGetLastError(comm));
}

/*------------------------------------------------------------------------
 * Device buffers.
 *----------------------------------------------------------------------*/
size_t bufTotal(const DevBuf* b) { return b->before + b->bytes + b->after; }

void bufCreate(DevBuf* b, size_t bytes, size_t before, int nullWhenEmpty, unsigned fill) {
  b->before = before;
  b->bytes = bytes;
  b->after = GUARD_BYTES;
  size_t total = bufTotal(b);
  CUDA_CHECK(cudaMalloc((void**)&b->device, total));
  b->image = xmalloc(total);
  b->actual = xmalloc(total);
  memset(b->image, GUARD_BYTE, before);
  memset(b->image + before, (int)fill, bytes);
  memset(b->image + before + bytes, GUARD_BYTE, b->after);
  b->user = bytes == 0 && nullWhenEmpty ? NULL : b->device + before;
}

void bufFree(DevBuf* b) {
  if (b->device != NULL) CUDA_CHECK(cudaFree(b->device));
  free(b->image);
  free(b->actual);
  memset(b, 0, sizeof *b);
}

void bufUpload(const DevBuf* b) {
  CUDA_CHECK(cudaMemcpyAsync(b->device, b->image, bufTotal(b), cudaMemcpyHostToDevice, gStream));
}

void bufDownload(DevBuf* b) {
  CUDA_CHECK(cudaMemcpyAsync(b->actual, b->device, bufTotal(b), cudaMemcpyDeviceToHost, gStream));
  CUDA_CHECK(cudaStreamSynchronize(gStream));
}

void bufAdopt(DevBuf* b) {
  bufDownload(b);
  memcpy(b->image, b->actual, bufTotal(b));
}

/* Compares bytes [lo, hi) of the allocation; one line for the first
 * difference. Returns 1 when they agree. */
static int compareRegion(const DevBuf* b, const char* what, const char* region, size_t lo,
                         size_t hi) {
  gChecks++;
  size_t differing = 0, first = 0;
  for (size_t i = lo; i < hi; i++)
    if (b->actual[i] != b->image[i]) {
      if (differing == 0) first = i;
      differing++;
    }
  if (differing == 0) return 1;
  reportFailure("%s: byte %lld differs (got 0x%02x, want 0x%02x); %zu of %zu bytes differ in the %s",
                what, (long long)first - (long long)b->before, b->actual[first], b->image[first],
                differing, hi - lo, region);
  return 0;
}

int bufCompare(const DevBuf* b, const char* what, int mode) {
  int ok = 1;
  size_t userEnd = b->before + b->bytes;
  ok &= compareRegion(b, what, "guard before the buffer", 0, b->before);
  if (mode == CHECK_ALL) ok &= compareRegion(b, what, "buffer", b->before, userEnd);
  ok &= compareRegion(b, what, "guard after the buffer", userEnd, bufTotal(b));
  return ok;
}

int bufCheck(DevBuf* b, const char* what, int mode) {
  bufDownload(b);
  return bufCompare(b, what, mode);
}

/*------------------------------------------------------------------------
 * Real rows.
 *----------------------------------------------------------------------*/
void bufScatterRows(DevBuf* b, const sideRows* m, const unsigned char* dense) {
  scatterDense(m, dense, b->image + b->before);
}

void bufSetInput(DevBuf* b, const sideRows* m, const unsigned char* dense, uint64_t junkSeed) {
  if (b->bytes > 0) refFillPattern(b->image + b->before, b->bytes, junkSeed);
  bufScatterRows(b, m, dense);
}

int bufCompareOutput(const DevBuf* b, const char* what, const sideRows* m) {
  int ok = 1;
  size_t userEnd = b->before + b->bytes;
  ok &= compareRegion(b, what, "guard before the buffer", 0, b->before);
  gChecks++;
  size_t differing = 0, realBytes = 0, first = 0;
  for (int64_t run = 0; run < sideRowsRunCount(m); run++) {
    size_t bufferOffset, denseOffset, bytes;
    sideRowsRun(m, run, &bufferOffset, &denseOffset, &bytes);
    realBytes += bytes;
    for (size_t i = b->before + bufferOffset; i < b->before + bufferOffset + bytes; i++)
      if (b->actual[i] != b->image[i]) {
        if (differing == 0) first = i;
        differing++;
      }
  }
  if (differing > 0) {
    size_t offset = first - b->before, row = offset / m->rowBytes;
    int64_t entry, position;
    sideRowsLocate(m, (int64_t)row, &entry, &position);
    reportFailure("%s: byte %zu (row %zu of the buffer: batch entry %lld, row %lld) differs (got "
                  "0x%02x, want 0x%02x); %zu of the %zu bytes of the real rows differ",
                  what, offset, row, (long long)entry, (long long)position, b->actual[first],
                  b->image[first], differing, realBytes);
    ok = 0;
  }
  ok &= compareRegion(b, what, "guard after the buffer", userEnd, bufTotal(b));
  return ok;
}

