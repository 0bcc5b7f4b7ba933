/*
 * The GPU suite's driver: every exchange of the library, run by P real rank
 * processes over NCCL, checked byte for byte against the CPU reference.
 *
 * One binary, two modes:
 *  - parent (no --rank): skips with exit code 77 when there is no CUDA
 *    device; otherwise one cmocka test per P in {1, 2, 3, 4, 8}, each
 *    starting P rank processes of this same binary through the launcher,
 *    then the rank-failure test, which needs a launch of its own.
 *  - rank (--rank R --nranks P --id-file F): joins the NCCL communicator and
 *    runs the selected scenarios in order.
 *
 * Selection: --group G (one Meson test per group: exchanges, graphs,
 * errors, one-pass, stress; all of them without it); ULYSSES_TEST_SCENARIOS,
 * a comma-separated list of names, each a scenario's name or the start of
 * names up to a '-' ("table" selects every table-*); ULYSSES_TEST_RANKS,
 * rank counts ("1,2") and "failure" (the rank-failure test); --list prints
 * the selected scenarios, group and name, and exits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher.h"
#include "suite.h"

enum {
  RUN_TIMEOUT_SECONDS = 300, /* per P, parent side */
  RANK_ALARM_SECONDS = 280,  /* a rank's own last resort, below the launcher's limit */
  ID_FILE_TIMEOUT_SECONDS = 120,
};

static const char* const groups[] = {"exchanges", "graphs", "errors", "one-pass", "stress"};
enum { GROUP_COUNT = sizeof groups / sizeof groups[0] };

void scenarioAdd(ScenarioList* list, const char* group, ScenarioFunction run, int argument,
                 int ownRanks, const char* nameFormat, ...) {
  if (list->count == MAX_SCENARIOS) {
    printf("more than %d scenarios: raise MAX_SCENARIOS\n", MAX_SCENARIOS);
    exit(2);
  }
  ScenarioEntry* e = &list->entries[list->count++];
  e->group = group;
  e->run = run;
  e->argument = argument;
  e->ownRanks = ownRanks;
  va_list args;
  va_start(args, nameFormat);
  vsnprintf(e->name, sizeof e->name, nameFormat, args);
  va_end(args);
}

static ScenarioList gAll;

static void listAll(void) {
  addExchangeScenarios(&gAll);
  addGraphScenarios(&gAll);
  addErrorScenarios(&gAll);
  addOnePassScenarios(&gAll);
  addStressScenarios(&gAll);
}

/* Whether the list item item[0, length) selects name: the name itself, or
 * its start up to a '-'. */
static int itemSelects(const char* item, size_t length, const char* name) {
  size_t nameLength = strlen(name);
  return length > 0 && length <= nameLength && strncmp(item, name, length) == 0 &&
         (name[length] == '\0' || name[length] == '-');
}

/* Whether an item of the comma-separated list selects name. */
static int listSelects(const char* list, const char* name) {
  for (const char* p = list;; p++) {
    size_t length = strcspn(p, ",");
    if (itemSelects(p, length, name)) return 1;
    p += length;
    if (*p == '\0') return 0;
  }
}

static const char* gGroup;    /* --group, or NULL: every group */
static const char* gAlone;    /* --alone NAME: a rank of that scenario's own launch */

static int entrySelected(const ScenarioEntry* e) {
  if (gGroup != NULL && strcmp(gGroup, e->group) != 0) return 0;
  const char* names = getenv("ULYSSES_TEST_SCENARIOS");
  return names == NULL || *names == '\0' || listSelects(names, e->name);
}

/* Whether the ranks of the table's rank counts run e: selected, not a launch
 * of its own, and under a soak (the stress run alone, for as long as it was
 * asked) only the stress run. */
static int entryRunsInTable(const ScenarioEntry* e) {
  return e->ownRanks == 0 && entrySelected(e) &&
         (soakSeconds() == 0 || strcmp(e->name, "stress") == 0);
}

/* The rank counts of the table, and the names ULYSSES_TEST_RANKS takes. */
static const int rankCounts[] = {1, 2, 3, 4, 8};
static const char* const rankNames[] = {"1", "2", "3", "4", "8", "failure"};

/* Whether every item of the environment's list variable selects one of
 * names (count of them). An item that selects nothing is a typo that would
 * drop its part of a run and still pass: say which, and what names them. */
static int everyItemSelects(const char* variable, const char* const* names, int count,
                            const char* hint) {
  const char* list = getenv(variable);
  if (list == NULL) return 1;
  for (const char* p = list;; p++) {
    size_t length = strcspn(p, ",");
    int any = 0;
    for (int i = 0; i < count && !any; i++) any = itemSelects(p, length, names[i]);
    if (!any && length > 0) {
      printf("%s=%s: '%.*s' selects nothing; %s\n", variable, list, (int)length, p, hint);
      return 0;
    }
    p += length;
    if (*p == '\0') return 1;
  }
}

/* A selection that selects nothing is a typo: say so on the CPU too. */
static int checkSelection(void) {
  const char* scenarioNames[MAX_SCENARIOS];
  for (int i = 0; i < gAll.count; i++) scenarioNames[i] = gAll.entries[i].name;
  if (!everyItemSelects("ULYSSES_TEST_SCENARIOS", scenarioNames, gAll.count,
                        "--list names them") ||
      !everyItemSelects("ULYSSES_TEST_RANKS", rankNames,
                        (int)(sizeof rankNames / sizeof rankNames[0]),
                        "it takes 1, 2, 3, 4, 8 and failure"))
    return 0;
  if (gGroup != NULL) {
    int known = 0;
    for (int g = 0; g < GROUP_COUNT; g++) known |= strcmp(gGroup, groups[g]) == 0;
    if (!known) {
      printf("--group %s: no such group (exchanges, graphs, errors, one-pass, stress)\n", gGroup);
      return 0;
    }
  }
  for (int i = 0; i < gAll.count; i++)
    if (entrySelected(&gAll.entries[i])) return 1;
  printf("ULYSSES_TEST_SCENARIOS=%s selects no scenario%s%s; --list names them\n",
         getenv("ULYSSES_TEST_SCENARIOS"), gGroup != NULL ? " of group " : "",
         gGroup != NULL ? gGroup : "");
  return 0;
}

/*------------------------------------------------------------------------
 * Rank mode.
 *----------------------------------------------------------------------*/
/* Last resort against a hang: name the scenario and die. Only
 * async-signal-safe calls; one write() so that the ranks' lines do not mix. */
static size_t appendText(char* line, size_t used, size_t size, const char* text) {
  while (*text != '\0' && used + 1 < size) line[used++] = *text++;
  line[used] = '\0';
  return used;
}

static void onAlarm(int signalNumber) {
  (void)signalNumber;
  char digits[16], reversed[16];
  int n = 0, r = gRank < 0 ? 0 : gRank;
  do {
    reversed[n++] = (char)('0' + r % 10);
    r /= 10;
  } while (r > 0 && n < 15);
  for (int i = 0; i < n; i++) digits[i] = reversed[n - 1 - i];
  digits[n] = '\0';
  char line[512];
  size_t used = 0;
  used = appendText(line, used, sizeof line, "rank ");
  used = appendText(line, used, sizeof line, digits);
  used = appendText(line, used, sizeof line,
                    ": alarm: still running after the rank's time limit (a hang?), in scenario ");
  used = appendText(line, used, sizeof line, gScenario);
  used = appendText(line, used, sizeof line, "\n");
  ssize_t ignored = write(STDOUT_FILENO, line, used);
  (void)ignored;
  _exit(3);
}

static const ScenarioEntry* findAlone(void) {
  for (int i = 0; i < gAll.count; i++)
    if (gAll.entries[i].ownRanks > 0 && strcmp(gAll.entries[i].name, gAlone) == 0)
      return &gAll.entries[i];
  printf("rank %d: --alone %s: no scenario of that name runs alone\n", gRank, gAlone);
  exit(2);
}

static int rankMain(const launcherRank* me) {
  gRank = me->rank;
  gRanks = me->nRanks;
  signal(SIGALRM, onAlarm);
  alarm(RANK_ALARM_SECONDS);
  if (gRanks > MAX_RANKS) {
    printf("rank %d: %d ranks; this test handles at most %d\n", gRank, gRanks, MAX_RANKS);
    return 2;
  }
  const ScenarioEntry* alone = gAlone != NULL ? findAlone() : NULL;
  double started = nowMs();
  Suite suite = {NULL, NULL};
  if (launcherInitComm(me, &suite.nccl, ID_FILE_TIMEOUT_SECONDS) != 0) return 2;
  if (gRank == 0)
    printf("rank 0: %d rank(s), NCCL communicator ready in %.0f ms\n", gRanks, nowMs() - started);
  CUDA_CHECK(cudaStreamCreateWithFlags(&gStream, cudaStreamNonBlocking));
  if (alone != NULL) {
    alone->run(&suite, alone->argument); /* it ends the process */
    return 2;
  }

  setScenario("comm");
  int version = 0;
  ULY_CHECK(ulyssesGetVersion(&version));
  if (version != ULYSSES_VERSION_CODE)
    reportFailure("ulyssesGetVersion gives %d, the header %d", version, ULYSSES_VERSION_CODE);
  ULY_CHECK(ulyssesCommCreate(&suite.comm, suite.nccl, NULL));
  int count = -1, rank = -1;
  ULY_CHECK(ulyssesCommCount(suite.comm, &count));
  ULY_CHECK(ulyssesCommUserRank(suite.comm, &rank));
  gChecks++;
  if (count != gRanks || rank != gRank)
    reportFailure("the comm says rank %d of %d", rank, count);
  checkNoAsyncError(suite.comm);

  for (int i = 0; i < gAll.count; i++)
    if (entryRunsInTable(&gAll.entries[i])) gAll.entries[i].run(&suite, gAll.entries[i].argument);

  /* Graphs are gone already; then our comm, then NCCL's. */
  setScenario("teardown");
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ULY_CHECK(ulyssesCommDestroy(suite.comm));
  CUDA_CHECK(cudaStreamDestroy(gStream));
  NCCL_CHECK(ncclCommDestroy(suite.nccl));
  alarm(0);
  printf("rank %d: %s: %ld checks, %ld failed (%.1f s)\n", gRank, gFailures ? "FAILED" : "passed",
         gChecks, gFailures, (nowMs() - started) * 1e-3);
  fflush(stdout);
  return gFailures ? 1 : 0;
}

/*------------------------------------------------------------------------
 * Parent mode.
 *----------------------------------------------------------------------*/
static char gSelf[PATH_MAX];

/* ULYSSES_TEST_RANKS="1,2" runs only those rank counts (the sanitizer runs
 * on the device take that subset to fit their time), "failure" the
 * rank-failure test; unset, all of them. */
static int ranksSelected(const char* name) {
  const char* selected = getenv("ULYSSES_TEST_RANKS");
  return selected == NULL || *selected == '\0' || listSelects(selected, name);
}

static void runWithRanks(void** state) {
  int nRanks = *(const int*)*state;
  char name[16];
  snprintf(name, sizeof name, "%d", nRanks);
  int any = 0;
  for (int i = 0; i < gAll.count; i++) any |= entryRunsInTable(&gAll.entries[i]);
  if (!any || !ranksSelected(name)) skip();
  printf("[ gpu      ] %s: %d rank(s)\n", gGroup != NULL ? gGroup : "every group", nRanks);
  fflush(stdout);
  const char* const args[] = {"--group", gGroup, NULL};
  assert_int_equal(launcherRun(gSelf, gGroup != NULL ? args : NULL, nRanks, RUN_TIMEOUT_SECONDS),
                   0);
}

/* A scenario with a launch of its own: the rank failure (three ranks, the
 * last of which dies; the others exit 0 only if they noticed and aborted in
 * time). */
static void runAlone(void** state) {
  const ScenarioEntry* e = *state;
  if (e == NULL || !entrySelected(e) || !ranksSelected("failure")) skip();
  printf("[ gpu      ] %s, %d rank(s)\n", e->name, e->ownRanks);
  fflush(stdout);
  const char* const args[] = {"--alone", e->name, NULL};
  assert_int_equal(launcherRun(gSelf, args, e->ownRanks, FAILURE_NOTICE_SECONDS + 60), 0);
}

static const char* argumentAfter(int argc, char** argv, const char* flag) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], flag) == 0) return argv[i + 1];
  return NULL;
}

int main(int argc, char** argv) {
  listAll();
  gGroup = argumentAfter(argc, argv, "--group");
  gAlone = argumentAfter(argc, argv, "--alone");
  launcherRank me;
  if (launcherParseRank(argc, argv, &me)) return rankMain(&me);
  if (!checkSelection()) return 2;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--list") == 0) {
      for (int k = 0; k < gAll.count; k++)
        if (entrySelected(&gAll.entries[k]))
          printf("%s %s%s\n", gAll.entries[k].group, gAll.entries[k].name,
                 gAll.entries[k].ownRanks > 0 ? " (a launch of its own)" : "");
      return 0;
    }

  int devices = 0;
  cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    printf("no CUDA device: skipping the GPU suite%s%s (cudaGetDeviceCount: %s, %d device(s))\n",
           gGroup != NULL ? "'s group " : "", gGroup != NULL ? gGroup : "",
           cudaGetErrorName(error), devices);
    return 77; /* Meson's skip code */
  }
  ssize_t n = readlink("/proc/self/exe", gSelf, sizeof gSelf - 1);
  if (n <= 0) {
    snprintf(gSelf, sizeof gSelf, "%s", argv[0]);
  } else {
    gSelf[n] = '\0';
  }
  const ScenarioEntry* failure = NULL;
  for (int i = 0; i < gAll.count; i++)
    if (strcmp(gAll.entries[i].name, "rank-failure") == 0) failure = &gAll.entries[i];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate(runWithRanks, (void*)&rankCounts[0]),
      cmocka_unit_test_prestate(runWithRanks, (void*)&rankCounts[1]),
      cmocka_unit_test_prestate(runWithRanks, (void*)&rankCounts[2]),
      cmocka_unit_test_prestate(runWithRanks, (void*)&rankCounts[3]),
      cmocka_unit_test_prestate(runWithRanks, (void*)&rankCounts[4]),
      cmocka_unit_test_prestate(runAlone, (void*)failure),
  };
  return cmocka_run_group_tests_name(gGroup != NULL ? gGroup : "gpu", tests, NULL, NULL);
}
