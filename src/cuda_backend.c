/* The pipeline's backend on CUDA and NCCL: the calls of one ulyssesCall, on
 * its stream and its comm's NCCL communicator. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "error.h"
#include "launch_policy.h"
#include "one_pass_launch.h"
#include "ulysses_launch.h"

ulyssesResult_t ulyssesCudaCheck(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorCudaError, "%s failed: %s (%s)", what, cudaGetErrorName(error),
                     cudaGetErrorString(error));
}

ulyssesResult_t ulyssesNcclCheck(ncclResult_t result, ncclComm_t comm, const char* what) {
  while (result == ncclInProgress) {
    sched_yield();
    if (ncclCommGetAsyncError(comm, &result) != ncclSuccess) result = ncclInternalError;
  }
  if (result == ncclSuccess) return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorNcclError, "%s failed: %s (%s)", what, ncclGetErrorString(result),
                     ncclGetLastError(comm));
}

ulyssesResult_t ulyssesEnterDevice(int device, ulyssesDeviceGuard* guard) {
  guard->switched = 0;
  ULYSSES_CHECK(ulyssesCudaCheck(cudaGetDevice(&guard->previous), "cudaGetDevice"));
  if (guard->previous == device) return ulyssesSuccess;
  ULYSSES_CHECK(ulyssesCudaCheck(cudaSetDevice(device), "cudaSetDevice"));
  guard->switched = 1;
  return ulyssesSuccess;
}

void ulyssesLeaveDevice(const ulyssesDeviceGuard* guard) {
  if (guard->switched) cudaSetDevice(guard->previous);
}

static ulyssesResult_t cudaAllGather(void* context, const void* sendbuff, void* recvbuff,
                                     size_t bytes) {
  const ulyssesCall* c = context;
  return ulyssesNcclCheck(
      ncclAllGather(sendbuff, recvbuff, bytes, ncclUint8, c->comm->nccl, c->stream), c->comm->nccl,
      "ncclAllGather");
}

static ulyssesResult_t cudaGroupStart(void* context) {
  const ulyssesCall* c = context;
  return ulyssesNcclCheck(ncclGroupStart(), c->comm->nccl, "ncclGroupStart");
}

static ulyssesResult_t cudaGroupEnd(void* context) {
  const ulyssesCall* c = context;
  return ulyssesNcclCheck(ncclGroupEnd(), c->comm->nccl, "ncclGroupEnd");
}

static ulyssesResult_t cudaSend(void* context, const void* buff, size_t bytes, int peer) {
  const ulyssesCall* c = context;
  return ulyssesNcclCheck(ncclSend(buff, bytes, ncclUint8, peer, c->comm->nccl, c->stream),
                          c->comm->nccl, "ncclSend");
}

static ulyssesResult_t cudaRecv(void* context, void* buff, size_t bytes, int peer) {
  const ulyssesCall* c = context;
  return ulyssesNcclCheck(ncclRecv(buff, bytes, ncclUint8, peer, c->comm->nccl, c->stream),
                          c->comm->nccl, "ncclRecv");
}

static ulyssesResult_t cudaLaunchTable(void* context, const ulyssesTableArgs* args) {
  const ulyssesCall* c = context;
  return ulyssesCudaCheck(ulyssesLaunchLengthTable(args, c->stream),
                          "the length-table kernel launch");
}

/* The pipeline chose all of the launch but its grid, which needs what only
 * the device knows: the wave of resident blocks of the kernel the launch
 * takes (ulyssesCopyWave), shared between the tensors' grid rows by the
 * host's rule (ulyssesShareWave). A launch without runs launches nothing and
 * asks the device nothing. */
static ulyssesResult_t cudaLaunchCopy(void* context, const ulyssesCopyArgs* args, int64_t maxRuns) {
  const ulyssesCall* c = context;
  const char* what = args->toSegments ? "the pack kernel launch" : "the unpack kernel launch";
  ulyssesCopyArgs shared = *args;
  if (maxRuns > 0) {
    int wave;
    ULYSSES_CHECK(ulyssesCudaCheck(ulyssesCopyWave(args, &wave), what));
    ulyssesShareWave(&shared, wave);
  }
  return ulyssesCudaCheck(ulyssesLaunchCopy(&shared, maxRuns, c->stream), what);
}

static ulyssesResult_t cudaCapturing(void* context, int* capturing) {
  const ulyssesCall* c = context;
  enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  ULYSSES_CHECK(
      ulyssesCudaCheck(cudaStreamIsCapturing(c->stream, &capture), "cudaStreamIsCapturing"));
  *capturing = capture != cudaStreamCaptureStatusNone;
  return ulyssesSuccess;
}

/* Through the comm's length scratch (nRanks + 1 words): this rank's value
 * into its first word, all-gathered into the others, then to the host. The
 * copies to pageable host memory and the wait for the stream would
 * invalidate another thread's capture in cudaStreamCaptureModeGlobal; this
 * thread's own stream is not being captured (the caller checked), so, as
 * NCCL does around its own host waits, this thread relaxes its capture mode
 * for them. values is written only once they have arrived. */
static ulyssesResult_t cudaGatherToHost(void* context, const void* value, void* values) {
  const ulyssesCall* c = context;
  struct ulyssesComm* comm = c->comm;
  size_t gatheredBytes = sizeof(int64_t) * (size_t)comm->nRanks;
  int64_t* arrived = malloc(gatheredBytes);
  if (arrived == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory");
  enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  int64_t* gathered = comm->lengthScratch + 1;
  ulyssesResult_t result;
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaMemcpyAsync(comm->lengthScratch, value, sizeof(int64_t),
                                       cudaMemcpyHostToDevice, c->stream),
                       "cudaMemcpyAsync of this rank's value"),
      result, done);
  ULYSSES_CHECK_GOTO(cudaAllGather(context, comm->lengthScratch, gathered, sizeof(int64_t)),
                     result, done);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMemcpyAsync(arrived, gathered, gatheredBytes,
                                                      cudaMemcpyDeviceToHost, c->stream),
                                      "cudaMemcpyAsync of the gathered values"),
                     result, done);
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize"), result, done);
  memcpy(values, arrived, gatheredBytes);
done:
  cudaThreadExchangeStreamCaptureMode(&mode);
  free(arrived);
  return result;
}

static ulyssesResult_t cudaLaunchOnePass(void* context, const ulyssesOnePassArgs* args,
                                         const ulyssesOnePassSync* sync, void* const* windows) {
  const ulyssesCall* c = context;
  return ulyssesCudaCheck(ulyssesLaunchOnePassNccl(args, sync, c->comm->onePass->devComm,
                                                   windows, c->stream),
                          "the one-pass kernel's launch");
}

ulyssesBackend ulyssesCudaBackend(const ulyssesCall* call) {
  ulyssesBackend backend = {(void*)(uintptr_t)call, cudaAllGather,  cudaGroupStart, cudaGroupEnd,
                            cudaSend,               cudaRecv,       cudaLaunchTable, cudaLaunchCopy,
                            cudaCapturing,          cudaGatherToHost, cudaLaunchOnePass};
  return backend;
}
