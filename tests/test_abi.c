/* The ABI as a framework sees it: the library loads with dlopen alone, every
 * function the header declares resolves, and it exports nothing else. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ulysses.h"

#define MAX_SYMBOLS 128

static const char* libraryPath;
static const char* headerPath;

typedef struct {
  char names[MAX_SYMBOLS][64];
  int count;
} symbolList;

static int contains(const symbolList* list, const char* name) {
  for (int i = 0; i < list->count; i++)
    if (strcmp(list->names[i], name) == 0) return 1;
  return 0;
}

static void add(symbolList* list, const char* name, size_t length) {
  assert_true(list->count < MAX_SYMBOLS);
  assert_true(length < sizeof list->names[0]);
  memcpy(list->names[list->count], name, length);
  list->names[list->count][length] = '\0';
  list->count++;
}

/* Every "ULYSSES_API <type> name(" declaration of the header. */
static void headerFunctions(symbolList* list) {
  FILE* header = fopen(headerPath, "r");
  assert_non_null(header);
  char line[512];
  while (fgets(line, sizeof line, header)) {
    if (strncmp(line, "ULYSSES_API ", 12) != 0) continue;
    char* paren = strchr(line, '(');
    assert_non_null(paren);
    char* end = paren;
    while (end > line && end[-1] == ' ') end--;
    char* begin = end;
    while (begin > line && (begin[-1] == '_' || (begin[-1] >= 'a' && begin[-1] <= 'z') ||
                            (begin[-1] >= 'A' && begin[-1] <= 'Z') ||
                            (begin[-1] >= '0' && begin[-1] <= '9')))
      begin--;
    add(list, begin, (size_t)(end - begin));
  }
  fclose(header);
}

/* The dynamic symbols the library defines, as nm -D lists them. */
static void exportedSymbols(symbolList* list) {
  char command[1024];
  snprintf(command, sizeof command, "nm -D --defined-only '%s'", libraryPath);
  FILE* nm = popen(command, "r");
  assert_non_null(nm);
  char line[512];
  while (fgets(line, sizeof line, nm)) {
    char address[64], type[8], name[256];
    if (sscanf(line, "%63s %7s %255s", address, type, name) != 3) continue;
    /* The version node itself (type A), not a symbol anyone can call. */
    if (strcmp(type, "A") == 0) continue;
    char* at = strchr(name, '@');
    add(list, name, at ? (size_t)(at - name) : strlen(name));
  }
  assert_int_equal(pclose(nm), 0);
}

static void testExportsAreExactlyTheHeader(void** state) {
  (void)state;
  symbolList declared = {0}, exported = {0};
  headerFunctions(&declared);
  exportedSymbols(&exported);
  assert_true(declared.count >= 20);
  for (int i = 0; i < exported.count; i++)
    if (!contains(&declared, exported.names[i]))
      fail_msg("the library exports %s, which the header does not declare", exported.names[i]);
  for (int i = 0; i < declared.count; i++)
    if (!contains(&exported, declared.names[i]))
      fail_msg("the header declares %s, which the library does not export", declared.names[i]);
}

static void testEveryFunctionResolves(void** state) {
  (void)state;
  void* library = dlopen(libraryPath, RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) fail_msg("dlopen(%s): %s", libraryPath, dlerror());
  symbolList declared = {0};
  headerFunctions(&declared);
  for (int i = 0; i < declared.count; i++)
    if (dlsym(library, declared.names[i]) == NULL)
      fail_msg("dlsym(%s): %s", declared.names[i], dlerror());

  /* Typed through the header's own declarations, as a framework would. */
  __typeof__(ulyssesGetVersion)* getVersion = (__typeof__(ulyssesGetVersion)*)dlsym(library, "ulyssesGetVersion");
  int version = 0;
  assert_int_equal(getVersion(&version), ulyssesSuccess);
  assert_int_equal(version, ULYSSES_VERSION_CODE);

  __typeof__(ulyssesGetErrorString)* errorString =
      (__typeof__(ulyssesGetErrorString)*)dlsym(library, "ulyssesGetErrorString");
  assert_string_equal(errorString(ulyssesErrorWorkspaceTooSmall), "ulyssesErrorWorkspaceTooSmall");

  /* Bad input is refused before any CUDA call, so it works without a GPU. */
  __typeof__(ulyssesPlanCreateExact)* createExact =
      (__typeof__(ulyssesPlanCreateExact)*)dlsym(library, "ulyssesPlanCreateExact");
  __typeof__(ulyssesGetLastError)* lastError =
      (__typeof__(ulyssesGetLastError)*)dlsym(library, "ulyssesGetLastError");
  ulyssesPlan_t plan = NULL;
  int64_t lengths[2] = {1, 2};
  ulyssesLayout_t layout = {.size = sizeof(ulyssesLayout_t), .batch = 1, .heads = 4, .headDim = 8, .elementSize = 2, .packed = 1,
                            .order = ulyssesOrderBSHD};
  assert_int_equal(createExact(&plan, 0, 0, lengths, 1, &layout), ulyssesErrorInvalidArgument);
  assert_non_null(strstr(lastError(), "nRanks"));
  __typeof__(ulyssesSeqToHead)* seqToHead = (__typeof__(ulyssesSeqToHead)*)dlsym(library, "ulyssesSeqToHead");
  assert_int_equal(seqToHead(NULL, NULL, NULL, NULL, 0, NULL, NULL), ulyssesErrorNullPointer);
  __typeof__(ulyssesCommCreate)* commCreate = (__typeof__(ulyssesCommCreate)*)dlsym(library, "ulyssesCommCreate");
  assert_int_equal(commCreate(NULL, NULL, NULL), ulyssesErrorNullPointer);

  /* An internal function stays internal. */
  assert_null(dlsym(library, "ulyssesRunExchange"));
  assert_null(dlsym(library, "ulyssesLaunchCopy"));
  dlclose(library);
}

/* Struct sizes across versions, through the loaded library: a layout from a
 * header whose ulyssesLayout_t ended at order (ULYSSES_LAYOUT_SIZE_MIN) makes
 * the same plan as today's, and a segment array of a later header's larger
 * entries is filled at its stride. */
static void testStructSizesAcrossVersions(void** state) {
  (void)state;
  void* library = dlopen(libraryPath, RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) fail_msg("dlopen(%s): %s", libraryPath, dlerror());
  __typeof__(ulyssesPlanCreateExact)* createExact =
      (__typeof__(ulyssesPlanCreateExact)*)dlsym(library, "ulyssesPlanCreateExact");
  __typeof__(ulyssesPlanDestroy)* destroy =
      (__typeof__(ulyssesPlanDestroy)*)dlsym(library, "ulyssesPlanDestroy");
  __typeof__(ulyssesGetSegments)* getSegments =
      (__typeof__(ulyssesGetSegments)*)dlsym(library, "ulyssesGetSegments");
  assert_non_null(createExact);
  assert_non_null(destroy);
  assert_non_null(getSegments);

  struct {
    size_t size;
    int64_t batch, heads, headDim, elementSize;
    int packed;
    ulyssesOrder_t order;
  } first = {0, 2, 6, 8, 2, 1, ulyssesOrderBSHD};
  first.size = sizeof first;
  assert_int_equal(sizeof first, ULYSSES_LAYOUT_SIZE_MIN);
  ulyssesLayout_t current = {.size = sizeof current, .batch = 2, .heads = 6, .headDim = 8,
                             .elementSize = 2, .packed = 1, .order = ulyssesOrderBSHD};
  int64_t lengths[3] = {4, 0, 5};
  ulyssesPlan_t firstPlan = NULL, currentPlan = NULL;
  assert_int_equal(createExact(&firstPlan, 3, 2, lengths, 1, (const ulyssesLayout_t*)&first),
                   ulyssesSuccess);
  assert_int_equal(createExact(&currentPlan, 3, 2, lengths, 1, &current), ulyssesSuccess);

  struct {
    ulyssesSegment_t known;
    uint64_t later[2];
  } later[3];
  ulyssesSegment_t segments[3];
  for (int isSend = 0; isSend < 2; isSend++) {
    memset(later, 0xee, sizeof later);
    later[0].known.size = sizeof later[0];
    segments[0].size = sizeof segments[0];
    assert_int_equal(getSegments(firstPlan, ulyssesOpSeqToHead, 0, isSend, &later[0].known),
                     ulyssesSuccess);
    assert_int_equal(getSegments(currentPlan, ulyssesOpSeqToHead, 0, isSend, segments),
                     ulyssesSuccess);
    for (int p = 0; p < 3; p++) {
      assert_int_equal(later[p].known.size, sizeof later[0]);
      assert_int_equal(later[p].known.place, segments[p].place);
      assert_int_equal(later[p].known.offset, segments[p].offset);
      assert_int_equal(later[p].known.bytes, segments[p].bytes);
      assert_int_equal(later[p].later[0] | later[p].later[1], 0);
    }
  }
  destroy(firstPlan);
  destroy(currentPlan);
  dlclose(library);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LIBRARY.so HEADER.h\n", argv[0]);
    return 2;
  }
  libraryPath = argv[1];
  headerPath = argv[2];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testExportsAreExactlyTheHeader),
      cmocka_unit_test(testEveryFunctionResolves),
      cmocka_unit_test(testStructSizesAcrossVersions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
