/* The one function behind each kind of public call, pure host code over a
 * backend: the public entry points (src/exchange.c) run it on CUDA and NCCL,
 * the CPU tests, the fuzzer and bench/host_perf on theirs, so that they all
 * exercise the same path: validation, the path choice, the plan check, then
 * the one-pass launch or the staged pipeline. */
#ifndef ULYSSES_ENQUEUE_H_
#define ULYSSES_ENQUEUE_H_

#include "comm.h"

/* An exchange on call->comm: every argument validated, the path chosen (and
 * logged), with comm->checkPlans the ranks' plans compared, then the
 * exchange enqueued on backend. Nothing is enqueued when validation fails. */
ulyssesResult_t ulyssesEnqueueExchange(const ulyssesCall* call, const ulyssesBackend* backend);

/* A local stage (ulyssesPack: side ULYSSES_SEND, ulyssesUnpack:
 * ULYSSES_RECV), validated, then enqueued on backend. */
ulyssesResult_t ulyssesEnqueueStage(const ulyssesCall* call, ulyssesSide side,
                                    const ulyssesBackend* backend);

/* The path of an exchange on call->comm whose outputs have been checked
 * (ULYSSES_PATH_STAGED or _ONE_PASS) and why, logged under
 * ULYSSES_DEBUG=INFO. */
int ulyssesExchangePath(const ulyssesCall* call, const char** reason);

#endif /* ULYSSES_ENQUEUE_H_ */
