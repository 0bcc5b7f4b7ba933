/* launch.h's MPI part: compiled with ULYSSES_BENCH_MPI where Meson found MPI,
 * else functions that say MPI is missing. Kept apart so that launch.c and its
 * tests never need mpi.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"

#ifdef ULYSSES_BENCH_MPI
#include <mpi.h>

static int checkMpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return 0;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) snprintf(text, sizeof text, "?");
  fprintf(stderr, "%s failed: %s\n", call, text);
  return 1;
}

int benchMpiBuilt(void) { return 1; }

int benchMpiInit(int* argc, char*** argv, benchLaunch* launch) {
  if (checkMpi(MPI_Init(argc, argv), "MPI_Init") ||
      checkMpi(MPI_Comm_rank(MPI_COMM_WORLD, &launch->rank), "MPI_Comm_rank") ||
      checkMpi(MPI_Comm_size(MPI_COMM_WORLD, &launch->nRanks), "MPI_Comm_size"))
    return 1;
  MPI_Comm local;
  if (checkMpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, launch->rank,
                                   MPI_INFO_NULL, &local),
               "MPI_Comm_split_type") ||
      checkMpi(MPI_Comm_rank(local, &launch->localRank), "MPI_Comm_rank (local)") ||
      checkMpi(MPI_Comm_size(local, &launch->localSize), "MPI_Comm_size (local)"))
    return 1;
  return checkMpi(MPI_Comm_free(&local), "MPI_Comm_free");
}

int benchMpiLocalDuplicates(const void* key, size_t keyBytes, int* duplicates) {
  *duplicates = 0;
  MPI_Comm local;
  int rank = 0, size = 0;
  if (checkMpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank") ||
      checkMpi(
          MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type") ||
      checkMpi(MPI_Comm_size(local, &size), "MPI_Comm_size (local)"))
    return 1;
  unsigned char* keys = malloc(keyBytes * (size_t)size);
  if (keys == NULL) {
    fprintf(stderr, "out of memory\n");
    MPI_Comm_free(&local);
    return 1;
  }
  int failed =
      checkMpi(MPI_Allgather(key, (int)keyBytes, MPI_BYTE, keys, (int)keyBytes, MPI_BYTE, local),
               "MPI_Allgather (local)");
  for (int i = 0; !failed && i < size; i++)
    for (int j = i + 1; j < size; j++)
      if (memcmp(keys + (size_t)i * keyBytes, keys + (size_t)j * keyBytes, keyBytes) == 0)
        *duplicates = 1;
  free(keys);
  return checkMpi(MPI_Comm_free(&local), "MPI_Comm_free") || failed;
}

int benchMpiBroadcast(void* bytes, size_t count) {
  return checkMpi(MPI_Bcast(bytes, (int)count, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
}

void benchMpiFinalize(void) { MPI_Finalize(); }

#else

int benchMpiBuilt(void) { return 0; }

int benchMpiInit(int* argc, char*** argv, benchLaunch* launch) {
  (void)argc;
  (void)argv;
  (void)launch;
  fprintf(stderr, "this ulysses_perf was built without MPI (meson setup -Dmpi=enabled)\n");
  return 1;
}

int benchMpiLocalDuplicates(const void* key, size_t keyBytes, int* duplicates) {
  (void)key;
  (void)keyBytes;
  *duplicates = 0;
  return 1;
}

int benchMpiBroadcast(void* bytes, size_t count) {
  (void)bytes;
  (void)count;
  return 1;
}

void benchMpiFinalize(void) {}

#endif
