#include "fake_runtime.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "one_pass_launch.h"
#include "ulysses_launch.h"

fakeSettings fake;

#define MAX_EVENTS 4096
#define MAX_MESSAGES 256
/* Messages in flight from one paired rank to another. */
#define MAX_MAIL 64
/* A paired rank that waits this long for its peers reports a violation
 * instead of hanging the test. */
#define PAIR_TIMEOUT_SECONDS 20

/* Guards the events, the communicators' state and the violations. */
static pthread_mutex_t fakeLock = PTHREAD_MUTEX_INITIALIZER;
static fakeEvent events[MAX_EVENTS];
static int eventCount;
static int pendingPolls;
static int violations;
static struct ncclComm* const theComm = (struct ncclComm*)(uintptr_t)0x5eed;
static char rankHandles[FAKE_MAX_RANKS];
/* Per communicator (the paired ranks', then theComm's): calls in progress,
 * and whether it was aborted. */
static int inProgress[FAKE_MAX_RANKS + 1];
static int aborted[FAKE_MAX_RANKS + 1];
/* Each rank's windows in registration order (a deregistered one NULL), so
 * that the k-th collective registration of one rank finds its peers' k-th. */
#define FAKE_MAX_WINDOWS 64
static void* windowBases[FAKE_MAX_RANKS + 1][FAKE_MAX_WINDOWS];
static int windowCounts[FAKE_MAX_RANKS + 1];

typedef struct {
  const void* sendbuff;
  void* recvbuff;
  size_t bytes;
  int peer;
} message;

/* The group being built on this thread, as NCCL keeps it per thread. */
static _Thread_local message sends[MAX_MESSAGES], receives[MAX_MESSAGES];
static _Thread_local int sendCount, receiveCount, groupRank;

static void note(fakeEvent event) {
  pthread_mutex_lock(&fakeLock);
  if (eventCount < MAX_EVENTS) events[eventCount++] = event;
  pthread_mutex_unlock(&fakeLock);
}

static void violation(void) {
  pthread_mutex_lock(&fakeLock);
  violations++;
  pthread_mutex_unlock(&fakeLock);
}

ncclComm_t fakeComm(void) { return theComm; }
ncclComm_t fakeRankComm(int rank) { return (ncclComm_t)(void*)&rankHandles[rank]; }

/* The communicator's slot in inProgress and aborted; -1 for a stranger. */
static int slotOf(ncclComm_t comm) {
  if (comm == theComm) return FAKE_MAX_RANKS;
  uintptr_t at = (uintptr_t)(void*)comm, base = (uintptr_t)rankHandles;
  if (fake.paired && at >= base && at < base + (uintptr_t)fake.nRanks) return (int)(at - base);
  return -1;
}

static int rankOf(ncclComm_t comm) {
  int slot = slotOf(comm);
  return slot == FAKE_MAX_RANKS ? fake.rank : slot;
}

/* A call on comm begins: a stranger or an aborted communicator is misuse. */
static int enter(ncclComm_t comm) {
  int slot = slotOf(comm);
  pthread_mutex_lock(&fakeLock);
  if (slot < 0 || aborted[slot])
    violations++;
  else
    inProgress[slot]++;
  pthread_mutex_unlock(&fakeLock);
  return slot >= 0;
}

static void leave(ncclComm_t comm) {
  int slot = slotOf(comm);
  if (slot < 0) return;
  pthread_mutex_lock(&fakeLock);
  inProgress[slot]--;
  pthread_mutex_unlock(&fakeLock);
}

/*------------------------------------------------------------------------
 * The gate.
 *----------------------------------------------------------------------*/
static pthread_mutex_t gateLock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gateChanged = PTHREAD_COND_INITIALIZER;
static fakeEvent gateEvent;
static int gateArmed, gateHeld, gateOpened;

void fakeGateArm(fakeEvent event) {
  pthread_mutex_lock(&gateLock);
  gateEvent = event;
  gateArmed = 1;
  gateOpened = 0;
  pthread_mutex_unlock(&gateLock);
}

void fakeGateWaitHeld(void) {
  pthread_mutex_lock(&gateLock);
  while (!gateHeld) pthread_cond_wait(&gateChanged, &gateLock);
  pthread_mutex_unlock(&gateLock);
}

void fakeGateOpen(void) {
  pthread_mutex_lock(&gateLock);
  gateOpened = 1;
  pthread_cond_broadcast(&gateChanged);
  pthread_mutex_unlock(&gateLock);
}

static void gatePass(fakeEvent event) {
  pthread_mutex_lock(&gateLock);
  if (gateArmed && event == gateEvent) {
    gateArmed = 0;
    gateHeld = 1;
    pthread_cond_broadcast(&gateChanged);
    while (!gateOpened) pthread_cond_wait(&gateChanged, &gateLock);
    gateHeld = 0;
  }
  pthread_mutex_unlock(&gateLock);
}

/*------------------------------------------------------------------------
 * Paired ranks: an all-gather is a barrier; a message waits in its
 * (sender, receiver) mailbox until the receiver's group takes it, and a
 * sender's group ends once its messages were taken.
 *----------------------------------------------------------------------*/
static pthread_mutex_t pairLock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pairChanged = PTHREAD_COND_INITIALIZER;
static int barrierArrived;
static unsigned barrierGeneration;
static const void* gatherSources[FAKE_MAX_RANKS];
static message mail[FAKE_MAX_RANKS][FAKE_MAX_RANKS][MAX_MAIL];
static int mailPosted[FAKE_MAX_RANKS][FAKE_MAX_RANKS], mailTaken[FAKE_MAX_RANKS][FAKE_MAX_RANKS];

/* Waits on pairChanged (pairLock held); 0 after PAIR_TIMEOUT_SECONDS. */
static int pairWait(const struct timespec* deadline) {
  if (pthread_cond_timedwait(&pairChanged, &pairLock, deadline) != ETIMEDOUT) return 1;
  violation();
  return 0;
}

static struct timespec pairDeadline(void) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += PAIR_TIMEOUT_SECONDS;
  return deadline;
}

/* Every paired rank arrives before any leaves (pairLock held). */
static int pairBarrier(void) {
  struct timespec deadline = pairDeadline();
  unsigned generation = barrierGeneration;
  if (++barrierArrived == fake.nRanks) {
    barrierArrived = 0;
    barrierGeneration++;
    pthread_cond_broadcast(&pairChanged);
    return 1;
  }
  while (generation == barrierGeneration)
    if (!pairWait(&deadline)) return 0;
  return 1;
}

static ncclResult_t pairedAllGather(const void* sendbuff, void* recvbuff, size_t count, int me) {
  pthread_mutex_lock(&pairLock);
  gatherSources[me] = sendbuff;
  int together = pairBarrier();
  for (int r = 0; r < fake.nRanks && together; r++)
    memmove((unsigned char*)recvbuff + (size_t)r * count, gatherSources[r], count);
  /* No rank may reuse its source before every rank has read it. */
  together = together && pairBarrier();
  pthread_mutex_unlock(&pairLock);
  return together ? ncclSuccess : ncclSystemError;
}

static ncclResult_t pairedGroupEnd(int me) {
  ncclResult_t result = ncclSuccess;
  struct timespec deadline = pairDeadline();
  pthread_mutex_lock(&pairLock);
  for (int s = 0; s < sendCount; s++) {
    int peer = sends[s].peer;
    if (peer == me) continue;
    if (mailPosted[me][peer] - mailTaken[me][peer] == MAX_MAIL) {
      result = ncclInternalError;
      break;
    }
    mail[me][peer][mailPosted[me][peer]++ % MAX_MAIL] = sends[s];
  }
  pthread_cond_broadcast(&pairChanged);
  for (int v = 0; v < receiveCount && result == ncclSuccess; v++) {
    int peer = receives[v].peer;
    if (peer == me) continue;
    while (mailPosted[peer][me] == mailTaken[peer][me] && result == ncclSuccess)
      if (!pairWait(&deadline)) result = ncclSystemError;
    if (result != ncclSuccess) break;
    const message* m = &mail[peer][me][mailTaken[peer][me]++ % MAX_MAIL];
    if (m->bytes != receives[v].bytes)
      result = ncclInvalidUsage;
    else
      memmove(receives[v].recvbuff, m->sendbuff, m->bytes);
    pthread_cond_broadcast(&pairChanged);
  }
  for (int peer = 0; peer < fake.nRanks && result == ncclSuccess; peer++)
    while (mailTaken[me][peer] < mailPosted[me][peer] && result == ncclSuccess)
      if (!pairWait(&deadline)) result = ncclSystemError;
  pthread_mutex_unlock(&pairLock);
  return result;
}

void fakeReset(int nRanks, int rank) {
  pthread_mutex_lock(&fakeLock);
  memset(&fake, 0, sizeof fake);
  fake.nRanks = nRanks;
  fake.rank = rank;
  eventCount = 0;
  pendingPolls = 0;
  violations = 0;
  memset(inProgress, 0, sizeof inProgress);
  memset(aborted, 0, sizeof aborted);
  memset(windowCounts, 0, sizeof windowCounts);
  pthread_mutex_unlock(&fakeLock);
  pthread_mutex_lock(&pairLock);
  barrierArrived = 0;
  memset(mailPosted, 0, sizeof mailPosted);
  memset(mailTaken, 0, sizeof mailTaken);
  pthread_mutex_unlock(&pairLock);
  sendCount = receiveCount = 0;
}

int fakeViolations(void) {
  pthread_mutex_lock(&fakeLock);
  int count = violations;
  pthread_mutex_unlock(&fakeLock);
  return count;
}

int fakeEventCount(void) {
  pthread_mutex_lock(&fakeLock);
  int count = eventCount;
  pthread_mutex_unlock(&fakeLock);
  return count;
}

fakeEvent fakeEventAt(int index) { return events[index]; }

int fakeCount(fakeEvent event) {
  pthread_mutex_lock(&fakeLock);
  int count = 0;
  for (int i = 0; i < eventCount; i++) count += events[i] == event;
  pthread_mutex_unlock(&fakeLock);
  return count;
}

/* A call on a non-blocking communicator: in progress for a few polls. */
static ncclResult_t started(void) {
  if (fake.inProgressPolls == 0) return ncclSuccess;
  pthread_mutex_lock(&fakeLock);
  pendingPolls = fake.inProgressPolls;
  pthread_mutex_unlock(&fakeLock);
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

/* The calling thread's capture mode, as the runtime keeps it per thread. */
static _Thread_local enum cudaStreamCaptureMode captureMode = cudaStreamCaptureModeGlobal;

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  enum cudaStreamCaptureMode previous = captureMode;
  captureMode = *mode;
  *mode = previous;
  return cudaSuccess;
}

int fakeCaptureModeIsGlobal(void) { return captureMode == cudaStreamCaptureModeGlobal; }

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  (void)stream;
  note(FAKE_SYNCHRONIZE);
  /* In global mode this would invalidate another thread's capture. */
  if (captureMode != cudaStreamCaptureModeRelaxed) {
    pthread_mutex_lock(&fakeLock);
    fake.globalModeSyncs++;
    pthread_mutex_unlock(&fakeLock);
  }
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  (void)stream;
  *status = fake.capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

const char* cudaGetErrorName(cudaError_t error) {
  return error == cudaSuccess ? "cudaSuccess" : "cudaErrorFake";
}
const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "a fake error";
}

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
    if (bits != 0 && args->status != NULL) __atomic_fetch_or(args->status, bits, __ATOMIC_RELAXED);
    args->lengths[args->chunkBegin + i] = length;
    args->offsets[args->chunkBegin + i + 1] = lengthSum += length;
    args->slotOffsets[args->chunkBegin + i + 1] = slotSum += slotLength;
  }
  return cudaSuccess;
}

/* Resident blocks of the stand-in GPU: a few, so that the grid-stride loops
 * go round. */
#define FAKE_WAVE_BLOCKS 3

cudaError_t ulyssesCopyWave(const ulyssesCopyArgs* args, int* blocks) {
  (void)args;
  *blocks = FAKE_WAVE_BLOCKS;
  return cudaSuccess;
}

/* Every thread of the grid rows the backend gave the launch, as the GPU runs
 * them (a row's blocks past its gridBlocks have nothing to do). */
cudaError_t ulyssesLaunchCopy(const ulyssesCopyArgs* args, int64_t maxRuns, cudaStream_t stream) {
  (void)stream;
  (void)maxRuns;
  note(FAKE_COPY_KERNEL);
  pthread_mutex_lock(&fakeLock);
  int fails = fake.failCopyLaunch > 0 && --fake.failCopyLaunch == 0;
  pthread_mutex_unlock(&fakeLock);
  if (fails) return cudaErrorLaunchFailure;
  for (int t = 0; t < args->nTensors; t++)
    for (int64_t block = 0; block < args->tensors[t].gridBlocks; block++)
      for (int thread = 0; thread < ULYSSES_COPY_THREADS; thread++)
        ulyssesCopyBlockThread(args, t, block, thread, args->launchWordBytes, args->launchSums);
  return cudaSuccess;
}

/*------------------------------------------------------------------------
 * NCCL
 *----------------------------------------------------------------------*/
ncclResult_t ncclGetVersion(int* version) {
  *version = fake.loadedNcclVersion != 0 ? fake.loadedNcclVersion : NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  *count = fake.nRanks;
  return slotOf(comm) >= 0 ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  *rank = rankOf(comm);
  return slotOf(comm) >= 0 ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  *device = 0;
  return slotOf(comm) >= 0 ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  note(FAKE_ASYNC_POLL);
  if (!enter(comm)) return ncclInvalidArgument;
  gatePass(FAKE_ASYNC_POLL);
  pthread_mutex_lock(&fakeLock);
  if (pendingPolls > 0) {
    pendingPolls--;
    *state = ncclInProgress;
  } else {
    *state = fake.asyncError;
  }
  pthread_mutex_unlock(&fakeLock);
  leave(comm);
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  return result == ncclSuccess ? "no error" : "fake NCCL error";
}
const char* ncclGetLastError(ncclComm_t comm) {
  (void)comm;
  return "the fake's last error";
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  note(FAKE_COMM_ABORT);
  int slot = slotOf(comm);
  pthread_mutex_lock(&fakeLock);
  /* NCCL frees the communicator: a call still inside it would read freed
   * memory. */
  if (slot < 0 || aborted[slot] || inProgress[slot] > 0)
    violations++;
  else
    aborted[slot] = 1;
  pthread_mutex_unlock(&fakeLock);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  (void)stream;
  (void)type;
  note(FAKE_ALL_GATHER);
  if (!enter(comm)) return ncclInvalidArgument;
  gatePass(FAKE_ALL_GATHER);
  int me = rankOf(comm);
  ncclResult_t result = ncclSuccess;
  if (fake.paired) {
    result = pairedAllGather(sendbuff, recvbuff, count, me);
  } else {
    for (int r = 0; r < fake.nRanks; r++) {
      unsigned char* part = (unsigned char*)recvbuff + (size_t)r * count;
      if (r != me && fake.peerAllGatherBytes != NULL)
        memcpy(part, fake.peerAllGatherBytes, count);
      else if (r != me && !fake.peersEcho)
        memset(part, fake.peerAllGatherByte, count);
      else if (part != sendbuff)
        memmove(part, sendbuff, count);
    }
  }
  leave(comm);
  return result != ncclSuccess ? result : started();
}

ncclResult_t ncclGroupStart(void) {
  note(FAKE_GROUP_START);
  sendCount = receiveCount = 0;
  return ncclSuccess;
}

/* Self messages pair up in order, as NCCL pairs them; a paired rank's
 * messages to others go through the mailboxes. */
ncclResult_t ncclGroupEnd(void) {
  note(FAKE_GROUP_END);
  int s = 0;
  for (int v = 0; v < receiveCount; v++) {
    if (receives[v].peer != groupRank) continue;
    while (s < sendCount && sends[s].peer != groupRank) s++;
    if (s == sendCount || sends[s].bytes != receives[v].bytes) return ncclInvalidUsage;
    memmove(receives[v].recvbuff, sends[s].sendbuff, sends[s].bytes);
    s++;
  }
  if (fake.paired && sendCount + receiveCount > 0) {
    ncclResult_t result = pairedGroupEnd(groupRank);
    if (result != ncclSuccess) return result;
  }
  return started();
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  (void)type;
  (void)stream;
  note(FAKE_SEND);
  if (!enter(comm)) return ncclInvalidArgument;
  leave(comm);
  groupRank = rankOf(comm);
  pthread_mutex_lock(&fakeLock);
  ncclResult_t failure = fake.failNextSend;
  fake.failNextSend = ncclSuccess;
  pthread_mutex_unlock(&fakeLock);
  if (failure != ncclSuccess) return failure;
  if (sendCount == MAX_MESSAGES) return ncclInternalError;
  sends[sendCount++] = (message){sendbuff, NULL, count, peer};
  return ncclSuccess;
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  (void)type;
  (void)stream;
  note(FAKE_RECV);
  if (!enter(comm)) return ncclInvalidArgument;
  leave(comm);
  groupRank = rankOf(comm);
  if (receiveCount == MAX_MESSAGES) return ncclInternalError;
  receives[receiveCount++] = (message){NULL, recvbuff, count, peer};
  return ncclSuccess;
}

/*------------------------------------------------------------------------
 * NCCL symmetric memory: host memory, and windows that only count.
 *----------------------------------------------------------------------*/
/* Returns the setting's failure once, then success. */
static ncclResult_t takeFailure(ncclResult_t* setting) {
  ncclResult_t result = *setting;
  *setting = ncclSuccess;
  return result;
}

ncclResult_t ncclMemAlloc(void** ptr, size_t size) {
  ncclResult_t result = takeFailure(&fake.failNextMemAlloc);
  if (result != ncclSuccess) return result;
  *ptr = aligned_alloc(256, (size + 255) / 256 * 256);
  if (*ptr == NULL) return ncclSystemError;
  fake.liveAllocations++;
  return ncclSuccess;
}

ncclResult_t ncclMemFree(void* ptr) {
  free(ptr);
  fake.liveAllocations--;
  return ncclSuccess;
}

ncclResult_t ncclCommWindowRegister(ncclComm_t comm, void* buff, size_t size, ncclWindow_t* win,
                                    int winFlags) {
  (void)size;
  int slot = slotOf(comm);
  if (slot < 0 || buff == NULL) return ncclInvalidArgument;
  ncclResult_t result = takeFailure(&fake.failNextWindowRegister);
  if (result != ncclSuccess) return result;
  pthread_mutex_lock(&fakeLock);
  if (windowCounts[slot] == FAKE_MAX_WINDOWS) {
    pthread_mutex_unlock(&fakeLock);
    return ncclInternalError;
  }
  windowBases[slot][windowCounts[slot]++] = buff;
  *win = (ncclWindow_t)buff;
  fake.lastWindowFlags = winFlags;
  fake.liveWindows++;
  pthread_mutex_unlock(&fakeLock);
  return ncclSuccess;
}

ncclResult_t ncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win) {
  int slot = slotOf(comm);
  if (slot < 0 || win == NULL) return ncclInvalidArgument;
  pthread_mutex_lock(&fakeLock);
  for (int k = windowCounts[slot] - 1; k >= 0; k--)
    if (windowBases[slot][k] == (void*)win) {
      windowBases[slot][k] = NULL;
      break;
    }
  fake.liveWindows--;
  pthread_mutex_unlock(&fakeLock);
  return ncclSuccess;
}

/*------------------------------------------------------------------------
 * The one-pass launchers.
 *----------------------------------------------------------------------*/
/* controls[r][p]: the slot rank p published to rank r. */
static ulyssesOnePassSlot controls[FAKE_MAX_RANKS][FAKE_MAX_RANKS];

int ulyssesOnePassKernelBuilt(void) { return fake.onePassKernelBuilt; }

ncclResult_t ulyssesOnePassDevCommCreate(ncclComm_t comm, int nRanks, void** devComm,
                                         int* lsaRanks) {
  if (!enter(comm)) return ncclInvalidArgument;
  note(FAKE_DEV_COMM_CREATE);
  ncclResult_t result = fake.devCommResult;
  if (result == ncclSuccess) {
    *devComm = malloc(1);
    *lsaRanks = fake.lsaRanks > 0 ? fake.lsaRanks : nRanks;
    pthread_mutex_lock(&fakeLock);
    fake.liveDevComms++;
    pthread_mutex_unlock(&fakeLock);
  }
  leave(comm);
  return result;
}

ncclResult_t ulyssesOnePassDevCommDestroy(ncclComm_t comm, void* devComm) {
  if (!enter(comm)) return ncclInvalidArgument;
  free(devComm);
  pthread_mutex_lock(&fakeLock);
  fake.liveDevComms--;
  pthread_mutex_unlock(&fakeLock);
  leave(comm);
  return ncclSuccess;
}

/* The window index of base on rank me, or -1. */
static int windowIndex(int me, const void* base) {
  for (int k = windowCounts[me] - 1; k >= 0; k--)
    if (windowBases[me][k] == base) return k;
  return -1;
}

/* Rank me's launch among paired ranks (pairLock held), as the kernel does it
 * with every block at once: publish, barrier, resolve, store, barrier. */
static cudaError_t pairedOnePass(const ulyssesOnePassArgs* args, const ulyssesOnePassSync* sync,
                                 void* const* windows, int me) {
  ulyssesOnePassSlot mine = sync->mine;
  if (sync->capacityMode) mine.length = *sync->localLength;
  for (int p = 0; p < args->nRanks; p++) controls[p][me] = mine;
  if (!pairBarrier()) return cudaErrorLaunchTimeout;
  int64_t lengths[FAKE_MAX_RANKS], offsets[FAKE_MAX_RANKS + 1], slotOffsets[FAKE_MAX_RANKS + 1];
  uint32_t status = ulyssesOnePassResolve(sync, args->nRanks, args->nTensors, controls[me], lengths,
                                          offsets, slotOffsets);
  if (status != 0) __atomic_fetch_or(sync->status, status, __ATOMIC_RELAXED);
  ulyssesOnePassArgs local = *args;
  local.lengths = lengths;
  local.offsets = offsets;
  local.slotOffsets = slotOffsets;
  unsigned char* peers[ULYSSES_KERNEL_MAX_TENSORS][FAKE_MAX_RANKS];
  for (int t = 0; t < args->nTensors; t++) {
    int k = windowIndex(me, windows[t]);
    for (int p = 0; p < args->nRanks; p++)
      peers[t][p] = k < 0 || windowBases[p][k] == NULL
                        ? NULL
                        : (unsigned char*)windowBases[p][k] + controls[me][p].offsets[t];
    local.tensors[t].peerOutputs = peers[t];
  }
  if (!(status & ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS)) {
    ulyssesOnePassNarrowWords(&local);
    for (int t = 0; t < local.nTensors; t++)
      for (int64_t chunk = 0; chunk < ulyssesOnePassChunkCount(&local, t); chunk++)
        for (int lane = 0; lane < local.runLanes; lane++)
          ulyssesOnePassChunkThread(&local, t, chunk, lane, local.runLanes, 0);
  }
  return pairBarrier() ? cudaSuccess : cudaErrorLaunchTimeout;
}

cudaError_t ulyssesLaunchOnePassNccl(const ulyssesOnePassArgs* args, const ulyssesOnePassSync* sync,
                                     const void* devComm, void* const* windows,
                                     cudaStream_t stream) {
  (void)stream;
  note(FAKE_ONE_PASS_KERNEL);
  if (devComm == NULL || sync->status == NULL) return cudaErrorInvalidValue;
  if (!fake.paired) return cudaSuccess;
  pthread_mutex_lock(&pairLock);
  cudaError_t result = pairedOnePass(args, sync, windows, args->rank);
  pthread_mutex_unlock(&pairLock);
  return result;
}
