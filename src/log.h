/* ULYSSES_DEBUG=WARN|INFO, after NCCL_DEBUG: one line per error (WARN) and
 * per plan and communicator (INFO) on standard error, with the rank where
 * the call knows it. Silent by default. The variable (src/env.h) is read
 * once. */
#ifndef ULYSSES_LOG_H_
#define ULYSSES_LOG_H_

typedef enum { ULYSSES_LOG_NONE = 0, ULYSSES_LOG_WARN = 1, ULYSSES_LOG_INFO = 2 } ulyssesLogLevel;

/* The level ULYSSES_DEBUG asks for (NONE when unset or unknown). */
ulyssesLogLevel ulyssesLogLevelFromString(const char* value);
ulyssesLogLevel ulyssesLogLevelNow(void);

/* The rank that this thread's current call works for, or -1: prefixed to
 * its log lines. */
void ulyssesLogSetRank(int rank);

void ulyssesLog(ulyssesLogLevel level, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

#endif /* ULYSSES_LOG_H_ */
