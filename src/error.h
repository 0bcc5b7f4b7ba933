/* Result codes, the per-thread message, and the checking macros every call
 * goes through, so that an error path is one line and never forgotten. */
#ifndef ULYSSES_ERROR_H_
#define ULYSSES_ERROR_H_

#include "ulysses.h"

/* Records a printf-style message for ulyssesGetLastError, logs it under
 * ULYSSES_DEBUG=WARN and returns code. */
ulyssesResult_t ulyssesFail(ulyssesResult_t code, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

/* A bit of the comm's status word beside the public ULYSSES_STATUS_* ones:
 * the one-pass kernel's ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS. */
#define ULYSSES_STATUS_ONE_PASS_OUTPUTS 0x4u

/* What ulyssesCommGetAsyncError reports for the device status bits and
 * NCCL's asynchronous state (ncclErrorName: ncclGetErrorString's): NCCL's
 * error (ncclInProgress is no error), its message naming the device error
 * too if there is one; else the device error; else ulyssesSuccess. Sets the
 * message (empty for ulyssesSuccess) and logs nothing: the comm logs an
 * error when it first reports it, so that a watchdog's polls do not repeat
 * it. */
ulyssesResult_t ulyssesAsyncResult(uint32_t deviceStatus, ncclResult_t ncclAsync,
                                   const char* ncclErrorName);

/* Forgets the calling thread's message (at the start of each public call). */
void ulyssesClearError(void);

#define ULYSSES_CHECK(call)                                                \
  do {                                                                     \
    ulyssesResult_t ulyssesCheckResult_ = (call);                          \
    if (ulyssesCheckResult_ != ulyssesSuccess) return ulyssesCheckResult_; \
  } while (0)

#define ULYSSES_CHECK_GOTO(call, result, label) \
  do {                                          \
    (result) = (call);                          \
    if ((result) != ulyssesSuccess) goto label; \
  } while (0)

#endif /* ULYSSES_ERROR_H_ */
