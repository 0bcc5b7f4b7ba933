#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#include "env.h"

static ulyssesLogLevel level = ULYSSES_LOG_NONE;
static pthread_once_t levelOnce = PTHREAD_ONCE_INIT;
static _Thread_local int logRank = -1;

ulyssesLogLevel ulyssesLogLevelFromString(const char* value) {
  if (value == NULL) return ULYSSES_LOG_NONE;
  if (strcasecmp(value, "INFO") == 0 || strcasecmp(value, "TRACE") == 0) return ULYSSES_LOG_INFO;
  if (strcasecmp(value, "WARN") == 0) return ULYSSES_LOG_WARN;
  return ULYSSES_LOG_NONE;
}

static void readLevel(void) { level = ulyssesLogLevelFromString(ulyssesEnvValue(ULYSSES_ENV_DEBUG)); }

ulyssesLogLevel ulyssesLogLevelNow(void) {
  pthread_once(&levelOnce, readLevel);
  return level;
}

void ulyssesLogSetRank(int rank) { logRank = rank; }

void ulyssesLog(ulyssesLogLevel messageLevel, const char* format, ...) {
  if (messageLevel > ulyssesLogLevelNow()) return;
  char line[640];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof line, format, args);
  va_end(args);
  const char* tag = messageLevel == ULYSSES_LOG_WARN ? "WARN" : "INFO";
  /* One fprintf per line, so that lines of concurrent ranks do not mix. */
  if (logRank >= 0)
    fprintf(stderr, "ulysses %s [rank %d] %s\n", tag, logRank, line);
  else
    fprintf(stderr, "ulysses %s %s\n", tag, line);
}
