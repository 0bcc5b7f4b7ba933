#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

/* The bytes of the first version's config: size, magic and version. */
#define CONFIG_HEADER_BYTES (sizeof(size_t) + 2 * sizeof(unsigned int))
/* The first version with a config. */
#define CONFIG_FIRST_VERSION ULYSSES_VERSION(0, 1, 0)

/* A 0-or-1 field that the caller's config has (its size covers it) and set. */
static ulyssesResult_t readSwitch(const ulyssesConfig_t* config, size_t offset, const char* name,
                                  int* setting) {
  if (config->size < offset + sizeof(int)) return ulyssesSuccess;
  int value;
  memcpy(&value, (const unsigned char*)config + offset, sizeof value);
  if (value == ULYSSES_CONFIG_UNDEF_INT) return ulyssesSuccess;
  if (value != 0 && value != 1)
    return ulyssesFail(ulyssesErrorInvalidArgument, "config->%s is %d; it must be 0 or 1", name,
                       value);
  *setting = value;
  return ulyssesSuccess;
}

ulyssesResult_t ulyssesReadConfig(const ulyssesConfig_t* config, const char* checkEnvironment,
                                  const char* onePassEnvironment, ulyssesSettings* settings) {
  settings->checkPlans = checkEnvironment != NULL && strcmp(checkEnvironment, "1") == 0;
  settings->onePass = onePassEnvironment != NULL && strcmp(onePassEnvironment, "1") == 0;
  if (config == NULL) return ulyssesSuccess;
  if (config->magic != ULYSSES_CONFIG_MAGIC)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "config was not initialised with ULYSSES_CONFIG_INITIALIZER (magic 0x%x)",
                       config->magic);
  if (config->size < CONFIG_HEADER_BYTES)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "config->size is %zu, too small for any version", config->size);
  /* The size says which fields the caller's header had; the version, which
   * header it was, so that a config from a newer one is noticed. */
  if (config->version < CONFIG_FIRST_VERSION)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "config->version is %u; ULYSSES_CONFIG_INITIALIZER sets it to the header's "
                       "ULYSSES_VERSION_CODE (at least %d)",
                       config->version, CONFIG_FIRST_VERSION);
  /* A newer header's config may carry fields this library cannot honour. */
  if (config->version > ULYSSES_VERSION_CODE && config->size > sizeof(ulyssesConfig_t))
    ulyssesLog(ULYSSES_LOG_WARN,
               "config comes from ulysses %u's header, newer than this library (%d): its "
               "fields past the first %zu bytes are ignored",
               config->version, ULYSSES_VERSION_CODE, sizeof(ulyssesConfig_t));
  ULYSSES_CHECK(readSwitch(config, offsetof(ulyssesConfig_t, checkPlans), "checkPlans",
                           &settings->checkPlans));
  return readSwitch(config, offsetof(ulyssesConfig_t, onePass), "onePass", &settings->onePass);
}
