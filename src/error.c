#include "error.h"

#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static _Thread_local char lastError[512];

static const char* const resultNames[ulyssesNumResults] = {
    [ulyssesSuccess] = "ulyssesSuccess",
    [ulyssesErrorInvalidArgument] = "ulyssesErrorInvalidArgument",
    [ulyssesErrorNullPointer] = "ulyssesErrorNullPointer",
    [ulyssesErrorMisalignedPointer] = "ulyssesErrorMisalignedPointer",
    [ulyssesErrorSizeOverflow] = "ulyssesErrorSizeOverflow",
    [ulyssesErrorInvalidLength] = "ulyssesErrorInvalidLength",
    [ulyssesErrorLengthExceedsCapacity] = "ulyssesErrorLengthExceedsCapacity",
    [ulyssesErrorUnsupportedElementSize] = "ulyssesErrorUnsupportedElementSize",
    [ulyssesErrorLayoutMismatch] = "ulyssesErrorLayoutMismatch",
    [ulyssesErrorCommMismatch] = "ulyssesErrorCommMismatch",
    [ulyssesErrorWorkspaceTooSmall] = "ulyssesErrorWorkspaceTooSmall",
    [ulyssesErrorBufferOverlap] = "ulyssesErrorBufferOverlap",
    [ulyssesErrorCudaError] = "ulyssesErrorCudaError",
    [ulyssesErrorNcclError] = "ulyssesErrorNcclError",
    [ulyssesErrorSystemError] = "ulyssesErrorSystemError",
    [ulyssesErrorUnsupported] = "ulyssesErrorUnsupported",
    [ulyssesErrorHeadGroupMismatch] = "ulyssesErrorHeadGroupMismatch",
    [ulyssesErrorPlanMismatch] = "ulyssesErrorPlanMismatch",
    [ulyssesErrorInvalidUsage] = "ulyssesErrorInvalidUsage",
};

ULYSSES_API const char* ulyssesGetErrorString(ulyssesResult_t result) {
  if ((unsigned)result >= ulyssesNumResults) return "unknown ulyssesResult_t";
  return resultNames[result];
}

ULYSSES_API const char* ulyssesGetLastError(void) { return lastError; }

static void recordMessage(const char* format, va_list args) {
  vsnprintf(lastError, sizeof lastError, format, args);
}

ulyssesResult_t ulyssesFail(ulyssesResult_t code, const char* format, ...) {
  va_list args;
  va_start(args, format);
  recordMessage(format, args);
  va_end(args);
  ulyssesLog(ULYSSES_LOG_WARN, "%s: %s", resultNames[code], lastError);
  return code;
}

/* ulyssesFail without the log line. */
static __attribute__((format(printf, 2, 3))) ulyssesResult_t describe(ulyssesResult_t code, const char* format, ...) {
  va_list args;
  va_start(args, format);
  recordMessage(format, args);
  va_end(args);
  return code;
}

ulyssesResult_t ulyssesAsyncResult(uint32_t deviceStatus, ncclResult_t ncclAsync,
                                   const char* ncclErrorName) {
  const char* deviceError =
      deviceStatus & ULYSSES_STATUS_ONE_PASS_OUTPUTS
          ? "a one-pass exchange found the ranks' outputs of a tensor in different "
            "ulyssesMemAlloc allocations; it wrote nothing"
      : deviceStatus & ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY
          ? "a capacity-mode length was above its capacity; it was clamped"
      : deviceStatus & ULYSSES_STATUS_NEGATIVE_LENGTH
          ? "a capacity-mode length was negative; it was taken as 0"
          : NULL;
  /* NCCL's error first: a broken communicator is what a watchdog must act on
   * (abort), and a clamped length must not hide it. */
  if (ncclAsync != ncclSuccess && ncclAsync != ncclInProgress)
    return describe(ulyssesErrorNcclError, "NCCL reports an asynchronous error: %s%s%s",
                    ncclErrorName, deviceError ? "; on the device, also: " : "",
                    deviceError ? deviceError : "");
  if (deviceStatus & ULYSSES_STATUS_ONE_PASS_OUTPUTS)
    return describe(ulyssesErrorPlanMismatch, "%s", deviceError);
  if (deviceStatus & ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY)
    return describe(ulyssesErrorLengthExceedsCapacity, "%s", deviceError);
  if (deviceStatus & ULYSSES_STATUS_NEGATIVE_LENGTH)
    return describe(ulyssesErrorInvalidLength, "%s", deviceError);
  return ulyssesSuccess;
}

void ulyssesClearError(void) {
  lastError[0] = '\0';
  ulyssesLogSetRank(-1);
}
