#include "env.h"

#include <stdlib.h>

static const struct {
  const char* name;
  const char* defaultValue;
} settings[ULYSSES_ENV_COUNT] = {
    [ULYSSES_ENV_DEBUG] = {"ULYSSES_DEBUG", "NONE"},
    [ULYSSES_ENV_CHECK] = {"ULYSSES_CHECK", "0"},
    [ULYSSES_ENV_ONE_PASS] = {"ULYSSES_ONE_PASS", "0"},
    [ULYSSES_ENV_COPY_ORDER] = {"ULYSSES_COPY_ORDER", "peers"},
};

const char* ulyssesEnvName(ulyssesEnvSetting setting) { return settings[setting].name; }

const char* ulyssesEnvValue(ulyssesEnvSetting setting) {
  const char* value = getenv(settings[setting].name);
  return value != NULL ? value : settings[setting].defaultValue;
}
