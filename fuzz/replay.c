/* Runs the fuzz target once on each file named (or each file of each
 * directory named), without libFuzzer: the corpus as a regression test in
 * builds whose compiler has no libFuzzer (gcc), under the sanitizers when
 * the build has them. Exit status 0 when every input passed; a failed
 * invariant aborts. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static int runFile(const char* path) {
  FILE* file = fopen(path, "rb");
  if (file == NULL) {
    perror(path);
    return 1;
  }
  uint8_t* data = NULL;
  size_t size = 0, capacity = 0;
  for (;;) {
    if (size == capacity) {
      capacity = capacity ? 2 * capacity : 4096;
      uint8_t* grown = realloc(data, capacity);
      if (grown == NULL) {
        free(data);
        fclose(file);
        return 1;
      }
      data = grown;
    }
    size_t got = fread(data + size, 1, capacity - size, file);
    if (got == 0) break;
    size += got;
  }
  fclose(file);
  printf("%s (%zu bytes)\n", path, size);
  fflush(stdout);
  LLVMFuzzerTestOneInput(data, size);
  free(data);
  return 0;
}

static int compareNames(const void* a, const void* b) {
  return strcmp(*(char* const*)a, *(char* const*)b);
}

static int runPath(const char* path, int* count) {
  struct stat info;
  if (stat(path, &info) != 0) {
    perror(path);
    return 1;
  }
  if (!S_ISDIR(info.st_mode)) {
    (*count)++;
    return runFile(path);
  }
  DIR* dir = opendir(path);
  if (dir == NULL) {
    perror(path);
    return 1;
  }
  char** names = NULL;
  size_t n = 0;
  for (struct dirent* entry; (entry = readdir(dir)) != NULL;) {
    if (entry->d_name[0] == '.') continue;
    char** grown = realloc(names, (n + 1) * sizeof *names);
    if (grown == NULL) break;
    names = grown;
    size_t length = strlen(path) + strlen(entry->d_name) + 2;
    names[n] = malloc(length);
    if (names[n] == NULL) break;
    snprintf(names[n], length, "%s/%s", path, entry->d_name);
    n++;
  }
  closedir(dir);
  qsort(names, n, sizeof *names, compareNames);
  int failed = 0;
  for (size_t i = 0; i < n; i++) {
    failed |= runPath(names[i], count);
    free(names[i]);
  }
  free(names);
  return failed;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE_OR_DIRECTORY...\n", argv[0]);
    return 2;
  }
  int failed = 0, count = 0;
  for (int i = 1; i < argc; i++) failed |= runPath(argv[i], &count);
  printf("%d input(s) replayed%s\n", count, failed ? ", some unreadable" : ", all passed");
  return failed || count == 0;
}
