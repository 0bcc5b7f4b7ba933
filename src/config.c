#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* The bytes of the first version's config: size, magic and version. */
#define CONFIG_HEADER_BYTES (sizeof(size_t) + 2 * sizeof(unsigned int))

ulyssesResult_t ulyssesReadConfig(const ulyssesConfig_t* config, const char* checkEnvironment,
                                  ulyssesSettings* settings) {
  settings->checkPlans = checkEnvironment != NULL && strcmp(checkEnvironment, "1") == 0;
  if (config == NULL) return ulyssesSuccess;
  if (config->magic != ULYSSES_CONFIG_MAGIC)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "config was not initialised with ULYSSES_CONFIG_INITIALIZER (magic 0x%x)",
                       config->magic);
  if (config->size < CONFIG_HEADER_BYTES)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "config->size is %zu, too small for any version", config->size);
  if (config->size >= offsetof(ulyssesConfig_t, checkPlans) + sizeof config->checkPlans &&
      config->checkPlans != ULYSSES_CONFIG_UNDEF_INT) {
    if (config->checkPlans != 0 && config->checkPlans != 1)
      return ulyssesFail(ulyssesErrorInvalidArgument, "config->checkPlans is %d; it must be 0 or 1",
                         config->checkPlans);
    settings->checkPlans = config->checkPlans;
  }
  return ulyssesSuccess;
}
