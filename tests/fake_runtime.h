/* A stand-in for the CUDA runtime and NCCL, linked instead of them, so that
 * the library's public entry points (src/comm.c, src/exchange.c,
 * src/one_pass_api.c, over src/cuda_backend.c) run on the CPU: host memory
 * stands for device memory, the kernel launchers run the kernels' per-thread
 * functions for every coordinate, and the NCCL calls of one simulated rank
 * are recorded. A communicator of one rank executes
 * its messages (self send and receive, all-gather); with more ranks, an
 * all-gather fills the other ranks' parts with fakePeerAllGatherByte and
 * messages to others are only recorded. With paired set, the ranks are
 * threads of the test, each with its communicator fakeRankComm(rank): an
 * all-gather waits for every rank and each group's messages are matched
 * with its peers' and copied, as NCCL would (and the one-pass kernel
 * stores into the peers' outputs). Every work item runs when it is enqueued
 * (a stream is always idle). */
#ifndef ULYSSES_TESTS_FAKE_RUNTIME_H_
#define ULYSSES_TESTS_FAKE_RUNTIME_H_

#include <stddef.h>

#include <nccl.h>

#define FAKE_MAX_RANKS 16

typedef enum {
  FAKE_ALL_GATHER, FAKE_GROUP_START, FAKE_GROUP_END, FAKE_SEND, FAKE_RECV, FAKE_ASYNC_POLL,
  FAKE_TABLE_KERNEL, FAKE_COPY_KERNEL, FAKE_COMM_ABORT, FAKE_SYNCHRONIZE, FAKE_DEV_COMM_CREATE,
  FAKE_ONE_PASS_KERNEL
} fakeEvent;

typedef struct {
  int nRanks;
  int rank;
  /* A non-blocking communicator: this many ncclCommGetAsyncError polls
   * answer ncclInProgress after a call that returned it. */
  int inProgressPolls;
  /* Returned by the next ncclSend, then reset. */
  ncclResult_t failNextSend;
  /* The n-th copy-kernel launch from now fails (0: none). */
  int failCopyLaunch;
  /* Answered by ncclCommGetAsyncError once no call is in progress. */
  ncclResult_t asyncError;
  /* cudaStreamIsCapturing says the stream is being captured. */
  int capturing;
  /* What the other ranks contribute to an all-gather, byte by byte... */
  unsigned char peerAllGatherByte;
  /* ...unless they echo this rank's contribution (ranks that agree), or,
   * where set, each contribute these bytes (as many as this rank's). */
  int peersEcho;
  const void* peerAllGatherBytes;
  /* The ranks are threads (see above); set after fakeReset. */
  int paired;
  /* Symmetric memory: returned by the next ncclMemAlloc or
   * ncclCommWindowRegister, then reset; windows registered and not
   * deregistered, allocations not freed, and the flags of the last window. */
  ncclResult_t failNextMemAlloc;
  ncclResult_t failNextWindowRegister;
  int liveWindows;
  int liveAllocations;
  int lastWindowFlags;
  /* The one-pass launchers (kernels/one_pass_launch.h): whether the build
   * has the NCCL kernel, what ncclDevCommCreate answers, the load/store
   * team it reports (0: the whole comm), device comms not destroyed. With
   * paired ranks the one-pass launch runs: each rank publishes its slot to
   * the others, waits for all, resolves the peers' outputs through the
   * windows registered in the same order on every rank, and stores into
   * them with the kernel's per-thread functions. */
  int onePassKernelBuilt;
  /* What ncclGetVersion answers (0: NCCL_VERSION_CODE, the headers'). */
  int loadedNcclVersion;
  ncclResult_t devCommResult;
  int lsaRanks;
  int liveDevComms;
  /* cudaStreamSynchronize calls made outside cudaStreamCaptureModeRelaxed:
   * in a process where another thread captures in global mode, each would
   * break that capture. */
  int globalModeSyncs;
} fakeSettings;

extern fakeSettings fake;
/* A communicator handle to pass as ncclComm_t: rank fake.rank's. */
ncclComm_t fakeComm(void);
/* Rank rank's communicator when fake.paired is set. */
ncclComm_t fakeRankComm(int rank);
void fakeReset(int nRanks, int rank);
/* Whether the calling thread's capture mode is global (the runtime's default). */
int fakeCaptureModeIsGlobal(void);
int fakeEventCount(void);
fakeEvent fakeEventAt(int index);
int fakeCount(fakeEvent event);

/* A gate: the next ncclAllGather or ncclCommGetAsyncError (event), on any
 * thread, stops once it has been recorded until fakeGateOpen; meanwhile the
 * call counts as in progress on its communicator. fakeGateWaitHeld returns
 * once a thread stops there. */
void fakeGateArm(fakeEvent event);
void fakeGateWaitHeld(void);
void fakeGateOpen(void);

/* Misuses of NCCL seen since fakeReset: ncclCommAbort while another call on
 * the communicator was in progress, a call on an aborted communicator, a
 * paired rank left waiting for its peers. */
int fakeViolations(void);

#endif /* ULYSSES_TESTS_FAKE_RUNTIME_H_ */
