/* The CUDA runtime as one_pass_perf uses it, on the CPU: host memory stands
 * for device memory, every call runs when it is made (a stream is always
 * idle), events hold the host's clock, and ulyssesLaunchOnePassLocal runs
 * the kernel's per-thread functions (kernels/one_pass_index.h) for every
 * chunk and lane in the word size of the instantiation the GPU launch would
 * take. Linked instead of CUDA so that the cpu suite runs the bench's setup,
 * byte counts, check and rows without a GPU; its times mean nothing. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "one_pass_launch.h"

struct CUevent_st {
  double seconds;
};

static int streams; /* handles given out, so each stream is a distinct non-NULL value */

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* properties, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  memset(properties, 0, sizeof *properties);
  strcpy(properties->name, "CPU stand-in (one_pass_perf_standin.c)");
  properties->multiProcessorCount = 1;
  properties->l2CacheSize = 1 << 20;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* totalBytes) {
  *freeBytes = *totalBytes = (size_t)1 << 32;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  /* 256-byte aligned, as cudaMalloc's are: the word sizes follow from it. */
  *pointer = aligned_alloc(256, (bytes + 255) / 256 * 256);
  return *pointer != NULL ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void* pointer) {
  free(pointer);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* destination, const void* source, size_t bytes,
                       enum cudaMemcpyKind kind) {
  (void)kind;
  memmove(destination, source, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* destination, const void* source, size_t bytes,
                            enum cudaMemcpyKind kind, cudaStream_t stream) {
  (void)stream;
  return cudaMemcpy(destination, source, bytes, kind);
}

cudaError_t cudaMemset(void* pointer, int value, size_t bytes) {
  memset(pointer, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t stream) {
  (void)stream;
  return cudaMemset(pointer, value, bytes);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  (void)flags;
  *stream = (cudaStream_t)(size_t)(++streams);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  (void)stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  (void)stream;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = calloc(1, sizeof **event);
  return *event != NULL ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  free(event);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  (void)stream;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  event->seconds = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* milliseconds, cudaEvent_t begin, cudaEvent_t end) {
  *milliseconds = (float)((end->seconds - begin->seconds) * 1e3);
  return cudaSuccess;
}

const char* cudaGetErrorName(cudaError_t error) {
  return error == cudaSuccess ? "cudaSuccess" : "cudaError (CPU stand-in)";
}

const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "error (CPU stand-in)";
}

const char* ncclGetErrorString(ncclResult_t result) {
  return result == ncclSuccess ? "no error" : "error (CPU stand-in)";
}

const char* ncclGetLastError(ncclComm_t comm) {
  (void)comm;
  return "";
}

cudaError_t ulyssesLaunchOnePassLocal(const ulyssesOnePassArgs* args, int blocks,
                                      cudaStream_t stream) {
  (void)stream;
  if (blocks < 0) return cudaErrorInvalidValue;
  for (int t = 0; t < args->nTensors; t++)
    for (int64_t chunk = 0; chunk < ulyssesOnePassChunkCount(args, t); chunk++)
      for (int lane = 0; lane < args->runLanes; lane++)
        ulyssesOnePassChunkThread(args, t, chunk, lane, args->runLanes, args->launchWordBytes);
  return cudaSuccess;
}
