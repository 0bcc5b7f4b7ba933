/* Every environment variable the library reads, declared here with its
 * default (after NCCL's NCCL_PARAM): nothing else in src/ calls getenv. */
#ifndef ULYSSES_ENV_H_
#define ULYSSES_ENV_H_

typedef enum {
  /* WARN or INFO: log lines on standard error (src/log.h); anything else is
   * silence. Read once, at the first log line. */
  ULYSSES_ENV_DEBUG,
  /* 1: the plan check of every exchange (config.checkPlans wins). Read at
   * each ulyssesCommCreate. */
  ULYSSES_ENV_CHECK,
  /* 1: the one-pass path where the comm can take it (config.onePass wins).
   * Read at each ulyssesCommCreate. */
  ULYSSES_ENV_ONE_PASS,
  /* rows: a head slice's copy walks its chunks tile by tile, every peer's
   * slice of the same rows side by side; peers (the default): peer by peer.
   * A variant for measuring the order (bench/RESULTS.md); read once, at the
   * first copy. */
  ULYSSES_ENV_COPY_ORDER,
  ULYSSES_ENV_COUNT
} ulyssesEnvSetting;

/* The variable's name ("ULYSSES_CHECK"). */
const char* ulyssesEnvName(ulyssesEnvSetting setting);
/* Its value now, or its default where it is unset. Never NULL. */
const char* ulyssesEnvValue(ulyssesEnvSetting setting);

#endif /* ULYSSES_ENV_H_ */
