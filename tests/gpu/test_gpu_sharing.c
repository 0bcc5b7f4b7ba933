/* gpu_sharing.h: which mode ranks sharing a GPU take, its variables, and the
 * message when NCCL's communicator does not come up. */
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

/* Every message names the rank count, the sharing and something to try. */
static void testInitAdviceNamesRanksModeAndRemedy(void** state) {
  (void)state;
  static const struct {
    int sharedGpu;
    gpuSharingMode mode;
    const char* error; /* NULL: a timeout */
    const char* phrases[3];
  } cases[] = {
      {1, GPU_SHARING_P2P, NULL,
       {"gave no answer within 90 s", "P2P (NCCL_MULTI_RANK_GPU_ENABLE=1)",
        "NCCL_MULTI_RANK_GPU_ENABLE=0"}},
      {1, GPU_SHARING_P2P, "ncclInvalidUsage (too many ranks)",
       {"failed: ncclInvalidUsage (too many ranks)", "P2P", "try fewer ranks"}},
      {1, GPU_SHARING_SOCKETS, NULL,
       {"within 90 s", "loopback sockets", "2.30 or newer"}},
      {0, GPU_SHARING_SOCKETS, "ncclSystemError",
       {"failed: ncclSystemError", "a GPU of its own", "every rank started"}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[512];
    gpuSharingInitAdvice(text, sizeof text, 8, cases[i].sharedGpu, cases[i].mode, cases[i].error,
                         90);
    if (strstr(text, "of 8 rank(s)") == NULL) fail_msg("case %zu: no rank count: %s", i, text);
    for (int k = 0; k < 3; k++)
      if (strstr(text, cases[i].phrases[k]) == NULL)
        fail_msg("case %zu: \"%s\" lacks \"%s\"", i, text, cases[i].phrases[k]);
  }
  char tiny[8];
  gpuSharingInitAdvice(tiny, sizeof tiny, 8, 1, GPU_SHARING_P2P, NULL, 90);
  assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testModeFollowsNcclAndTheUser),
      cmocka_unit_test(testVariablesOfEachMode),
      cmocka_unit_test(testInitAdviceNamesRanksModeAndRemedy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
