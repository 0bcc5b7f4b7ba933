#include "fake_runtime.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "ulysses_launch.h"

fakeSettings fake;

#define MAX_EVENTS 4096
#define MAX_MESSAGES 256

static fakeEvent events[MAX_EVENTS];
static int eventCount;
static int pendingPolls;
static struct ncclComm* const theComm = (struct ncclComm*)(uintptr_t)0x5eed;

typedef struct {
  const void* sendbuff;
  void* recvbuff;
  size_t bytes;
  int peer;
} message;

static message sends[MAX_MESSAGES], receives[MAX_MESSAGES];
static int sendCount, receiveCount;

static void note(fakeEvent event) {
  if (eventCount < MAX_EVENTS) events[eventCount++] = event;
}

ncclComm_t fakeComm(void) { return theComm; }

void fakeReset(int nRanks, int rank) {
  memset(&fake, 0, sizeof fake);
  fake.nRanks = nRanks;
  fake.rank = rank;
  eventCount = 0;
  pendingPolls = 0;
  sendCount = receiveCount = 0;
}

int fakeEventCount(void) { return eventCount; }
fakeEvent fakeEventAt(int index) { return events[index]; }

int fakeCount(fakeEvent event) {
  int count = 0;
  for (int i = 0; i < eventCount; i++) count += events[i] == event;
  return count;
}

/* A call on a non-blocking communicator: in progress for a few polls. */
static ncclResult_t started(void) {
  if (fake.inProgressPolls == 0) return ncclSuccess;
  pendingPolls = fake.inProgressPolls;
  return ncclInProgress;
}

/*------------------------------------------------------------------------
 * CUDA
 *----------------------------------------------------------------------*/
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  *pointer = aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *pointer ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void* pointer) {
  free(pointer);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** pointer, size_t bytes, unsigned int flags) {
  (void)flags;
  return cudaMalloc(pointer, bytes);
}

cudaError_t cudaFreeHost(void* pointer) { return cudaFree(pointer); }

cudaError_t cudaHostGetDevicePointer(void** device, void* host, unsigned int flags) {
  (void)flags;
  *device = host;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* destination, const void* source, size_t bytes,
                            enum cudaMemcpyKind kind, cudaStream_t stream) {
  (void)kind;
  (void)stream;
  memmove(destination, source, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  (void)stream;
  note(FAKE_SYNCHRONIZE);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  (void)stream;
  *status = fake.capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

const char* cudaGetErrorName(cudaError_t error) { return error == cudaSuccess ? "cudaSuccess" : "cudaErrorFake"; }
const char* cudaGetErrorString(cudaError_t error) { return error == cudaSuccess ? "no error" : "a fake error"; }

/*------------------------------------------------------------------------
 * The kernels, on the CPU.
 *----------------------------------------------------------------------*/
cudaError_t ulyssesLaunchLengthTable(const ulyssesTableArgs* args, cudaStream_t stream) {
  (void)stream;
  note(FAKE_TABLE_KERNEL);
  int64_t lengthSum = args->chunkBegin == 0 ? 0 : args->offsets[args->chunkBegin];
  int64_t slotSum = args->chunkBegin == 0 ? 0 : args->slotOffsets[args->chunkBegin];
  if (args->chunkBegin == 0) args->offsets[0] = args->slotOffsets[0] = 0;
  for (int i = 0; i < args->chunkCount; i++) {
    int64_t length, slotLength;
    uint32_t bits = ulyssesTableEntry(args, i, &length, &slotLength);
    if (bits != 0 && args->status != NULL) *args->status |= bits;
    args->lengths[args->chunkBegin + i] = length;
    args->offsets[args->chunkBegin + i + 1] = lengthSum += length;
    args->slotOffsets[args->chunkBegin + i + 1] = slotSum += slotLength;
  }
  return cudaSuccess;
}

cudaError_t ulyssesLaunchCopy(const ulyssesCopyArgs* args, int64_t maxRuns, cudaStream_t stream) {
  (void)stream;
  (void)maxRuns;
  note(FAKE_COPY_KERNEL);
  for (int t = 0; t < args->nTensors; t++)
    for (int64_t chunk = 0; chunk < ulyssesCopyChunkCount(args, t); chunk++)
      for (int lane = 0; lane < args->runLanes; lane++)
        ulyssesCopyChunkThread(args, t, chunk, lane, args->runLanes,
                               ulyssesLaunchWordBytes(args), ulyssesLaunchSums(args));
  return cudaSuccess;
}

/*------------------------------------------------------------------------
 * NCCL
 *----------------------------------------------------------------------*/
ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  *count = fake.nRanks;
  return comm == theComm ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  *rank = fake.rank;
  return comm == theComm ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  *device = 0;
  return comm == theComm ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  (void)comm;
  note(FAKE_ASYNC_POLL);
  if (pendingPolls > 0) {
    pendingPolls--;
    *state = ncclInProgress;
  } else {
    *state = fake.asyncError;
  }
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) { return result == ncclSuccess ? "no error" : "fake NCCL error"; }
const char* ncclGetLastError(ncclComm_t comm) {
  (void)comm;
  return "the fake's last error";
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  (void)comm;
  note(FAKE_COMM_ABORT);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  (void)comm;
  (void)stream;
  (void)type;
  note(FAKE_ALL_GATHER);
  for (int r = 0; r < fake.nRanks; r++) {
    unsigned char* part = (unsigned char*)recvbuff + (size_t)r * count;
    if (r == fake.rank) memmove(part, sendbuff, count);
    else memset(part, fake.peerAllGatherByte, count);
  }
  return started();
}

ncclResult_t ncclGroupStart(void) {
  note(FAKE_GROUP_START);
  sendCount = receiveCount = 0;
  return ncclSuccess;
}

/* Self messages pair up in order, as NCCL pairs them. */
ncclResult_t ncclGroupEnd(void) {
  note(FAKE_GROUP_END);
  int s = 0;
  for (int v = 0; v < receiveCount; v++) {
    if (receives[v].peer != fake.rank) continue;
    while (s < sendCount && sends[s].peer != fake.rank) s++;
    if (s == sendCount || sends[s].bytes != receives[v].bytes) return ncclInvalidUsage;
    memmove(receives[v].recvbuff, sends[s].sendbuff, sends[s].bytes);
    s++;
  }
  return started();
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  (void)type;
  (void)comm;
  (void)stream;
  note(FAKE_SEND);
  if (fake.failNextSend != ncclSuccess) {
    ncclResult_t result = fake.failNextSend;
    fake.failNextSend = ncclSuccess;
    return result;
  }
  if (sendCount == MAX_MESSAGES) return ncclInternalError;
  sends[sendCount++] = (message){sendbuff, NULL, count, peer};
  return ncclSuccess;
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  (void)type;
  (void)comm;
  (void)stream;
  note(FAKE_RECV);
  if (receiveCount == MAX_MESSAGES) return ncclInternalError;
  receives[receiveCount++] = (message){NULL, recvbuff, count, peer};
  return ncclSuccess;
}
