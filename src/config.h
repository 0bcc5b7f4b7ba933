/* ulyssesConfig_t as the library reads it: checked, and resolved against the
 * environment, without touching CUDA or NCCL. */
#ifndef ULYSSES_CONFIG_H_
#define ULYSSES_CONFIG_H_

#include "ulysses.h"

typedef struct {
  int checkPlans;
} ulyssesSettings;

/* config may be NULL. checkEnvironment: ULYSSES_CHECK's value, or NULL. A
 * config from an older header (a smaller size) leaves the newer fields at
 * their defaults. */
ulyssesResult_t ulyssesReadConfig(const ulyssesConfig_t* config, const char* checkEnvironment,
                                  ulyssesSettings* settings);

#endif /* ULYSSES_CONFIG_H_ */
