/* gpu_sharing.h: which mode ranks sharing a GPU take, and its variables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

#include "gpu_sharing.h"

static void testModeFollowsNcclAndTheUser(void** state) {
  (void)state;
  static const struct {
    int version;
    const char* setting;
    gpuSharingMode mode;
    const char* phrase;
  } cases[] = {
      {22809, NULL, GPU_SHARING_SOCKETS, "older than 2.30"},
      {22999, "", GPU_SHARING_SOCKETS, "older than 2.30"},
      {23000, NULL, GPU_SHARING_P2P, "2.30 or newer"},
      {23203, NULL, GPU_SHARING_P2P, "2.30 or newer"},
      {23203, "0", GPU_SHARING_SOCKETS, "=0 is set"}, /* the user's setting wins */
      {22809, "1", GPU_SHARING_P2P, "is set"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char* why = NULL;
    gpuSharingMode mode = gpuSharingChoose(cases[i].version, cases[i].setting, &why);
    if (mode != cases[i].mode || why == NULL || strstr(why, cases[i].phrase) == NULL)
      fail_msg("case %zu: mode %d (%s), expected %d saying \"%s\"", i, (int)mode,
               why == NULL ? "NULL" : why, (int)cases[i].mode, cases[i].phrase);
  }
  assert_int_equal(gpuSharingChoose(23203, NULL, NULL), GPU_SHARING_P2P);
}

static const gpuSharingVariable* find(const gpuSharingVariable* variables, int n,
                                      const char* name) {
  for (int i = 0; i < n; i++)
    if (strcmp(variables[i].name, name) == 0) return &variables[i];
  return NULL;
}

static void testVariablesOfEachMode(void** state) {
  (void)state;
  gpuSharingVariable variables[GPU_SHARING_MAX_VARIABLES];
  int n = gpuSharingVariables(GPU_SHARING_P2P, 5, variables);
  assert_int_equal(n, 1);
  assert_string_equal(variables[0].name, "NCCL_MULTI_RANK_GPU_ENABLE");
  assert_string_equal(variables[0].value, "1");
  assert_int_equal(variables[0].overridesUser, 0);

  n = gpuSharingVariables(GPU_SHARING_SOCKETS, 5, variables);
  assert_true(n <= GPU_SHARING_MAX_VARIABLES);
  const gpuSharingVariable* hostId = find(variables, n, "NCCL_HOSTID");
  assert_non_null(hostId);
  assert_string_equal(hostId->value, "ulyrank5");
  assert_int_equal(hostId->overridesUser, 1);
  static const char* const socketMode[][2] = {
      {"NCCL_NET", "Socket"},     {"NCCL_SOCKET_IFNAME", "lo"}, {"NCCL_IB_DISABLE", "1"},
      {"NCCL_P2P_DISABLE", "1"},  {"NCCL_SHM_DISABLE", "1"},    {"NCCL_NVLS_ENABLE", "0"},
      {"NCCL_MNNVL_ENABLE", "0"},
  };
  for (size_t i = 0; i < sizeof socketMode / sizeof socketMode[0]; i++) {
    const gpuSharingVariable* v = find(variables, n, socketMode[i][0]);
    if (v == NULL) fail_msg("socket mode lacks %s", socketMode[i][0]);
    assert_string_equal(v->value, socketMode[i][1]);
    assert_int_equal(v->overridesUser, 0);
  }
  assert_null(find(variables, n, "NCCL_MULTI_RANK_GPU_ENABLE"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testModeFollowsNcclAndTheUser),
      cmocka_unit_test(testVariablesOfEachMode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
