#include "error.h"

#include <stdarg.h>
#include <stdio.h>

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
};

ULYSSES_API const char* ulyssesGetErrorString(ulyssesResult_t result) {
  if ((unsigned)result >= ulyssesNumResults) return "unknown ulyssesResult_t";
  return resultNames[result];
}

ULYSSES_API const char* ulyssesGetLastError(void) { return lastError; }

ulyssesResult_t ulyssesFail(ulyssesResult_t code, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(lastError, sizeof lastError, format, args);
  va_end(args);
  return code;
}

void ulyssesClearError(void) { lastError[0] = '\0'; }
