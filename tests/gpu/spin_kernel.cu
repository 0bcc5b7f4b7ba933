/* A kernel that holds a stream until the host raises a flag in mapped pinned
 * memory, for the GPU tests' "no hidden synchronisation" check: work queued
 * behind it cannot finish, so a library call that waited for the stream
 * would wait for the flag that the host sets only after the call returns.
 * The kernel gives up after timeoutNs (reporting it) so a wrong library
 * fails the test instead of hanging it. */
#include <cuda_runtime.h>

static __device__ __forceinline__ unsigned long long globalTimerNs() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/* result: 1 when the flag was seen, 2 on timeout. */
static __global__ void spinUntilFlag(const volatile unsigned int* flag, volatile unsigned int* result,
                                     unsigned long long timeoutNs) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  unsigned long long start = globalTimerNs();
  for (;;) {
    if (*flag != 0u) {
      *result = 1u;
      break;
    }
    if (globalTimerNs() - start > timeoutNs) {
      *result = 2u;
      break;
    }
    __nanosleep(1000);
  }
  __threadfence_system();
}

extern "C" cudaError_t ulyssesTestLaunchSpin(const volatile unsigned int* flag,
                                             volatile unsigned int* result,
                                             unsigned long long timeoutNs, cudaStream_t stream) {
  spinUntilFlag<<<1, 1, 0, stream>>>(flag, result, timeoutNs);
  return cudaGetLastError();
}
