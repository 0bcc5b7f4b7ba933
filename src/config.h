/* ulyssesConfig_t as the library reads it: checked, and resolved against the
 * environment, without touching CUDA or NCCL. */
#ifndef ULYSSES_CONFIG_H_
#define ULYSSES_CONFIG_H_

#include "ulysses.h"

typedef struct {
  int checkPlans;
  int onePass;
} ulyssesSettings;

/* config may be NULL. checkEnvironment, onePassEnvironment: ULYSSES_CHECK's
 * and ULYSSES_ONE_PASS's values, or NULL. A config from an older header (a
 * smaller size) leaves the newer fields at their defaults. */
ulyssesResult_t ulyssesReadConfig(const ulyssesConfig_t* config, const char* checkEnvironment,
                                  const char* onePassEnvironment, ulyssesSettings* settings);

#endif /* ULYSSES_CONFIG_H_ */
