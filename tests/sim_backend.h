/* A CPU stand-in for the pipeline's backend: P simulated ranks, host memory
 * as device memory. Each rank's calls are recorded; simExecute then runs the
 * ranks' programs in lock step, running every kernel's per-thread function for
 * every coordinate of its launch, and checks that the ranks' communication
 * matches: every rank reaches the same collective with the same size, and in
 * each group what rank r sends to p is, message by message, what p receives
 * from r. A mismatch is what hangs or corrupts a real NCCL job. */
#ifndef ULYSSES_SIM_BACKEND_H_
#define ULYSSES_SIM_BACKEND_H_

#include <stddef.h>

#include "comm.h"
#include "pipeline.h"

typedef struct simWorld simWorld;

simWorld* simCreate(int nRanks);
void simDestroy(simWorld* world);
/* The backend that records rank's calls. */
ulyssesBackend simBackendOf(simWorld* world, int rank);
/* One simulated rank's comm as the library's host code reads it (the
 * exchanges run through ulyssesEnqueueExchange, as the public ones do): its
 * size and rank, no plan check, one pass off. */
typedef struct {
  struct ulyssesComm comm;
  struct ulyssesOnePassState onePass;
} simComm;
void simCommInit(simComm* comm, int nRanks, int rank);
/* Runs and forgets what was recorded. Returns 0, or 1 with a description
 * of the first mismatch in message. */
int simExecute(simWorld* world, char* message, size_t messageSize);
/* The length-table kernel of one launch, on the CPU. */
void simRunTable(const ulyssesTableArgs* args);
/* Counts of what was recorded since the last simExecute, for tests that
 * check which passes a layout skips. */
int simCountLaunches(const simWorld* world, int rank);
/* Every call recorded for rank since the last simExecute. */
int simCountCalls(const simWorld* world, int rank);
/* The messages rank posted since the last simExecute. */
int simCountSends(const simWorld* world, int rank);

#endif /* ULYSSES_SIM_BACKEND_H_ */
