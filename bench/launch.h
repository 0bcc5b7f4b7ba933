/* How ulysses_perf's ranks find each other, besides the fork mode of
 * tests/gpu/launcher.h: under MPI (mpirun, srun --mpi) or under torchrun- and
 * SLURM-style environment variables. Plain C without CUDA or NCCL calls, so
 * that the CPU tests link it: the mode and rank from the environment, the GPU
 * of a local rank, and the ncclUniqueId handed from rank 0 to the others over
 * TCP or through a shared file (opaque bytes here). */
#ifndef ULYSSES_BENCH_LAUNCH_H_
#define ULYSSES_BENCH_LAUNCH_H_

#include <stddef.h>

#include "gpu_sharing.h"

typedef enum {
  BENCH_LAUNCH_AUTO, /* -L auto: from the environment */
  BENCH_LAUNCH_FORK, /* ulysses_perf forks its ranks on this host */
  BENCH_LAUNCH_MPI,  /* started by mpirun or srun --mpi */
  BENCH_LAUNCH_ENV   /* RANK, WORLD_SIZE, LOCAL_RANK (torchrun, SLURM scripts) */
} benchLaunchMode;

/* Where an env-mode rank gets the ncclUniqueId from. */
typedef enum { BENCH_ID_NONE, BENCH_ID_TCP, BENCH_ID_FILE } benchIdSource;

typedef struct {
  benchLaunchMode mode;
  /* env mode only (MPI fills its own after MPI_Init): */
  int rank;
  int nRanks;
  int localRank;
  int localSize; /* LOCAL_WORLD_SIZE; 0 when not set */
  benchIdSource idSource;
  const char* idFile; /* ULYSSES_ID_FILE (points into the environment) */
  const char* idHost; /* MASTER_ADDR (points into the environment) */
  int idPort;         /* ULYSSES_ID_PORT, else MASTER_PORT + 1 */
} benchLaunch;

/* "auto", "fork", "mpi", "env". */
const char* benchLaunchModeName(benchLaunchMode mode);
/* The -L value into *mode; 0 on success. */
int benchLaunchParseMode(const char* text, benchLaunchMode* mode);

/* The launch of this process from the NULL-terminated environment (name=value
 * strings) and the -L request: auto picks env when RANK and WORLD_SIZE are
 * set, else MPI when an MPI launcher's variables are (OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE, PMIX_RANK, MV2_COMM_WORLD_SIZE), else fork. mpiBuilt: whether the
 * binary has MPI. Returns 0, or 1 with a message naming the variable that is
 * missing or wrong in error[0..errorSize). */
int benchLaunchDetect(char* const* environment, benchLaunchMode requested, int mpiBuilt,
                      benchLaunch* launch, char* error, size_t errorSize);

/* The GPU of a local rank, as nccl-tests picks it: local rank i takes device
 * i. With more local ranks than devices (localSize known) they share them
 * round robin and *shared is 1: they share a GPU (gpu_sharing.h).
 * localSize 0 (unknown) and localRank >= deviceCount is an error (the ranks
 * of this host could not agree on sharing). Returns 0, or 1 with a message.
 * (MPI mode then asks the bus ids: benchMpiLocalDuplicates.) */
int benchLaunchDevice(int localRank, int localSize, int deviceCount, int* device, int* shared,
                      char* error, size_t errorSize);

/* Ranks sharing a GPU, in this process's own environment before NCCL reads
 * it: the mode of tests/gpu/gpu_sharing.h for a loaded NCCL of
 * loadedNcclVersion (P2P from 2.30, else sockets with
 * NCCL_HOSTID=ulyrank<rank>), each variable only where the user has not set
 * it, but for the socket mode's host id. *mode gets the mode taken. Returns 0
 * on success. */
int benchLaunchShareGpu(int rank, int loadedNcclVersion, gpuSharingMode* mode);

/* TCP handoff. Rank 0 listens on port (0: any free port, for tests) of every
 * address; *port gets the port bound. Returns a socket, or -1 after saying why
 * on stderr. */
int benchIdListen(int* port);
/* Rank 0 answers nRanks - 1 distinct ranks 1 .. nRanks - 1 with the id
 * bytes, then closes the socket. A peer that names another world size or a
 * rank out of range or twice is refused (it is told why) and the handoff
 * fails. Returns 0 when every rank got the id within timeoutSeconds. */
int benchIdServe(int listener, int nRanks, const void* id, size_t bytes, int timeoutSeconds);
/* Rank > 0 connects to host:port (retrying while rank 0 is not yet
 * listening), says who it is and reads the id. Returns 0 on success. */
int benchIdFetch(const char* host, int port, int rank, int nRanks, void* id, size_t bytes,
                 int timeoutSeconds);

/* File handoff on a file system all ranks see. Rank 0 writes the id with the
 * world size, atomically, and refuses a file that already exists (a stale one
 * from an earlier run would hand out a dead id); it removes it once every
 * rank has joined (benchIdRemoveFile). Others poll until it appears.
 * Each returns 0 on success, 1 after saying why on stderr. */
int benchIdWriteFile(const char* path, int nRanks, const void* id, size_t bytes);
int benchIdReadFile(const char* path, int nRanks, void* id, size_t bytes, int timeoutSeconds);
int benchIdRemoveFile(const char* path);

/* MPI (launch_mpi.c; without MPI each says so and fails). */
/* 1 when the binary was built with MPI (Meson option mpi). */
int benchMpiBuilt(void);
/* MPI_Init, then rank, size, and the local rank and size among the ranks of
 * this host (MPI_Comm_split_type, as nccl-tests counts them) into *launch.
 * Returns 0, or 1 after saying why on stderr. */
int benchMpiInit(int* argc, char*** argv, benchLaunch* launch);
/* *duplicates = 1 when another rank of this host passed the same key
 * (keyBytes bytes, the same on every rank): the ranks share a GPU. */
int benchMpiLocalDuplicates(const void* key, size_t keyBytes, int* duplicates);
/* bytes from rank 0 to every rank (the ncclUniqueId). */
int benchMpiBroadcast(void* bytes, size_t count);
/* After the last NCCL call; errors are ignored (the run is over). */
void benchMpiFinalize(void);

#endif /* ULYSSES_BENCH_LAUNCH_H_ */
