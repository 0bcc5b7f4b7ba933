/* One exchange of a scenario over P simulated ranks, through the library's
 * real pipeline and the recording backend. */
#ifndef ULYSSES_TESTS_EXCHANGE_RUN_H_
#define ULYSSES_TESTS_EXCHANGE_RUN_H_

#include "enqueue.h"
#include "harness.h"
#include "sim_backend.h"

typedef struct {
  const scenario* s;
  ulyssesOp_t op;
  simWorld* world;
  simComm comms[HARNESS_MAX_RANKS];
  ulyssesPlan_t plans[HARNESS_MAX_RANKS];
  int64_t deviceLengths[HARNESS_MAX_RANKS]; /* capacity mode: each rank's "device" length */
  uint32_t status[HARNESS_MAX_RANKS];
  size_t workspaceBytes[HARNESS_MAX_RANKS];
  guardedBuffer send[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  guardedBuffer recv[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  guardedBuffer workspace[HARNESS_MAX_RANKS];
  /* The pointer arrays of exchangeCallOf's calls. */
  const void* sendbuffs[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
  void* recvbuffs[HARNESS_MAX_RANKS][ULYSSES_MAX_TENSORS];
} exchangeRun;

/* Plans for every rank, buffers sized by the slots (capacities in capacity
 * mode), inputs filled from seed, outputs pre-filled with a pattern. */
void exchangeSetup(exchangeRun* run, const scenario* s, ulyssesOp_t op, uint64_t seed);
void exchangeTeardown(exchangeRun* run);
/* Bytes of tensor t's send or receive buffer on rank r, for lengths. */
size_t exchangeBufferBytes(const scenario* s, ulyssesOp_t op, int t, int r, int isSend,
                           const int64_t* lengths);
/* The rows of tensor t's send or receive buffer on rank r, whose real rows
 * follow lengths. */
sideRows exchangeSideRows(const exchangeRun* run, int t, int r, int isSend, const int64_t* lengths);
/* Fails the test unless the real rows of a and b are equal. */
void expectSameRealRows(const sideRows* side, const void* a, const void* b, const char* what);
/* Rank r's exchange of the run: its plan, buffers, workspace, status and
 * comm, as the public entry points fill it. */
ulyssesCall exchangeCallOf(exchangeRun* run, int r);
/* Rank r's local stage: exchangeCallOf with the capacity-mode
 * device lengths and status where the plan has them, no comm. */
ulyssesCall exchangeStageCallOf(exchangeRun* run, int r, const int64_t* deviceLengths);
/* Enqueues every rank's exchange on the recording backend and executes them;
 * fails the test on any error or mismatch. */
void exchangeExecute(exchangeRun* run);
/* The reference's output of tensor t on every rank for lengths, from the
 * real rows of run's inputs: expected[r] holds rank r's real rows, dense
 * (malloc'ed: the caller frees each). */
void exchangeReference(const exchangeRun* run, int t, const int64_t* lengths, void** expected);
/* Compares the real rows of every rank's outputs with the reference for
 * lengths and checks every guard zone. */
void exchangeCheck(const exchangeRun* run, const int64_t* lengths);

#endif /* ULYSSES_TESTS_EXCHANGE_RUN_H_ */
