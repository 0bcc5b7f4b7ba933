/* Run by mpirun -np 2 in the cpu suite, no GPU: ulysses_perf's MPI launch
 * gives every process its rank, the world size, its local rank and size on
 * this host, rank 0's id bytes, and sees when two local ranks name the same
 * GPU. Exit 0 when all of that holds. */
#include <stdio.h>
#include <string.h>

#include "launch.h"

#define ID_BYTES 128

int main(int argc, char** argv) {
  benchLaunch launch;
  memset(&launch, 0, sizeof launch);
  if (!benchMpiBuilt()) {
    fprintf(stderr, "built without MPI\n");
    return 1;
  }
  if (benchMpiInit(&argc, &argv, &launch) != 0) return 1;
  unsigned char id[ID_BYTES];
  for (int i = 0; i < ID_BYTES; i++) id[i] = launch.rank == 0 ? (unsigned char)(i * 5 + 1) : 0;
  if (benchMpiBroadcast(id, sizeof id) != 0) return 1;
  int wrong = 0;
  for (int i = 0; i < ID_BYTES; i++) wrong += id[i] != (unsigned char)(i * 5 + 1);
  /* The same key on both ranks (one GPU shared), then a key per rank. */
  char key[16] = "0000:01:00.0";
  int sameKey = -1, ownKey = -1;
  if (benchMpiLocalDuplicates(key, sizeof key, &sameKey) != 0) return 1;
  key[0] = (char)('a' + launch.rank);
  if (benchMpiLocalDuplicates(key, sizeof key, &ownKey) != 0) return 1;
  /* mpirun -np 2 on one host: both ranks are local. */
  int ok = wrong == 0 && sameKey == 1 && ownKey == 0 && launch.nRanks == 2 && launch.rank >= 0 &&
           launch.rank < 2 && launch.localSize == 2 && launch.localRank == launch.rank;
  printf(
      "rank %d of %d, local %d of %d, %d id byte(s) wrong, shared key seen %d, own key %d: "
      "%s\n",
      launch.rank, launch.nRanks, launch.localRank, launch.localSize, wrong, sameKey, ownKey,
      ok ? "ok" : "FAILED");
  benchMpiFinalize();
  return ok ? 0 : 1;
}
