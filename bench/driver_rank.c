/* ulysses_perf's ranks (driver.h): the parent that forks them, or a rank of
 * an MPI or env launch; each rank's communicator, comms and sweep. */
#include "driver.h"

#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher.h"

extern char** environ;

/* How this rank came to be: forked by ulysses_perf, or one of an MPI or env
 * launch. */
typedef struct {
  benchLaunchMode mode;
  launcherRank forked; /* fork mode */
  benchLaunch launch;  /* mpi and env modes */
} rankStart;

/* -T in the MPI and env modes, where no parent watches the ranks. */
static void timeoutExpired(int signal) {
  (void)signal;
  static const char message[] = "ulysses_perf: -T seconds passed: this rank ends itself\n";
  ssize_t ignored = write(STDERR_FILENO, message, sizeof message - 1);
  (void)ignored;
  _exit(1);
}

/* The GPU of this rank (shared, gpu_sharing.h, where its host has more ranks
 * than GPUs), the ncclUniqueId from rank 0 by MPI, TCP or file, and the
 * communicator. MPI and env modes; fork mode has launcherInitComm. */
static int initLaunchedComm(benchContext* c, const benchLaunch* launch) {
  const benchConfig* config = c->config;
  int timeout = (int)config->timeoutSeconds;
  int shared = 0;
  char error[256];
  int deviceCount = benchCountGpus("ulysses_perf");
  if (deviceCount == 0) return BENCH_EXIT_NO_GPU;
  if (benchLaunchDevice(launch->localRank, launch->localSize, deviceCount, &c->device, &shared,
                        error, sizeof error) != 0) {
    benchReportFailure(__FILE__, __LINE__, "local rank %d: %s", launch->localRank, error);
    return 1;
  }
  if (launch->mode == BENCH_LAUNCH_MPI) {
    /* A launcher that gives each rank its own GPU (srun --gpus-per-task 1)
     * leaves every rank one device 0: only the bus ids tell whether they differ. */
    char busId[BENCH_BUS_ID_BYTES];
    memset(busId, 0, sizeof busId);
    CUDACHECK(cudaDeviceGetPCIBusId(busId, sizeof busId - 1, c->device));
    BENCHCHECK(benchMpiLocalDuplicates(busId, sizeof busId, &shared));
  }
  int loadedNccl = 0;
  NCCLCHECK(ncclGetVersion(&loadedNccl));
  gpuSharingMode mode;
  if (shared && benchLaunchShareGpu(c->rank, loadedNccl, &mode) != 0) {
    benchReportFailure(__FILE__, __LINE__, "cannot set the variables of ranks sharing a GPU");
    return 1;
  }
  CUDACHECK(cudaSetDevice(c->device));
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (c->rank == 0) NCCLCHECK(ncclGetUniqueId(&id));
  if (launch->mode == BENCH_LAUNCH_MPI) {
    BENCHCHECK(benchMpiBroadcast(&id, sizeof id));
  } else if (launch->idSource == BENCH_ID_FILE) {
    if (c->rank == 0)
      BENCHCHECK(benchIdWriteFile(launch->idFile, c->nRanks, &id, sizeof id));
    else
      BENCHCHECK(benchIdReadFile(launch->idFile, c->nRanks, &id, sizeof id, timeout));
  } else if (c->rank == 0) {
    int port = launch->idPort;
    int listener = benchIdListen(&port);
    if (listener < 0) return 1;
    BENCHCHECK(benchIdServe(listener, c->nRanks, &id, sizeof id, timeout));
  } else {
    BENCHCHECK(
        benchIdFetch(launch->idHost, launch->idPort, c->rank, c->nRanks, &id, sizeof id, timeout));
  }
  if (launcherCommInitRank(&c->nccl, c->nRanks, id, c->rank, c->device, shared, timeout) != 0)
    return 1;
  /* Every rank has joined, so every rank has read the file. */
  if (c->rank == 0 && launch->mode == BENCH_LAUNCH_ENV && launch->idSource == BENCH_ID_FILE)
    BENCHCHECK(benchIdRemoveFile(launch->idFile));
  return 0;
}

static int runRank(const benchConfig* config, const rankStart* start) {
  benchContext c;
  memset(&c, 0, sizeof c);
  c.config = config;
  c.launchMode = start->mode;
  if (start->mode == BENCH_LAUNCH_FORK) {
    c.rank = start->forked.rank;
    c.nRanks = start->forked.nRanks;
    c.device = start->forked.device;
    benchRank = c.rank;
    if (launcherInitComm(&start->forked, &c.nccl, (int)config->timeoutSeconds) != 0) return 1;
  } else {
    c.rank = start->launch.rank;
    c.nRanks = start->launch.nRanks;
    benchRank = c.rank;
    int initialised = initLaunchedComm(&c, &start->launch);
    if (initialised != 0) return initialised;
  }
  /* Resolved at run time: the NCCL loaded may be older than the header. */
  void* alltoall = dlsym(RTLD_DEFAULT, "ncclAlltoAll");
  memcpy(&c.ncclAlltoAll, &alltoall, sizeof alltoall);
  CUDACHECK(cudaSetDevice(c.device));
  CUDACHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
  CUDACHECK(cudaMalloc((void**)&c.deviceStats, sizeof(double) * BENCH_STATS));
  /* An explicit checkPlans: ULYSSES_CHECK in the environment does not apply. */
  ulyssesConfig_t commConfig = ULYSSES_CONFIG_INITIALIZER;
  commConfig.checkPlans = config->checkPlans == 1;
  ULYSSESCHECK(ulyssesCommCreate(&c.comm, c.nccl, &commConfig));
  if (config->checkPlans == 2) {
    commConfig.checkPlans = 1;
    ULYSSESCHECK(ulyssesCommCreate(&c.checkedComm, c.nccl, &commConfig));
  }
  if (c.rank == 0 && config->jsonPath != NULL) {
    c.json = fopen(config->jsonPath, "w");
    if (c.json == NULL) {
      benchReportFailure(__FILE__, __LINE__, "cannot open %s for writing", config->jsonPath);
      return 1;
    }
  }
  BENCHCHECK(benchPrintHeader(&c));
  for (int64_t length = config->minLength; length <= config->maxLength;) {
    BENCHCHECK(benchRunRow(&c, length));
    if (length > config->maxLength / config->stepFactor) break;
    length *= config->stepFactor;
  }
  if (c.rank == 0) benchPrintSummary(&c);
  if (c.json != NULL) fclose(c.json);
  ULYSSESCHECK(ulyssesCommDestroy(c.comm));
  ULYSSESCHECK(ulyssesCommDestroy(c.checkedComm)); /* NULL unless -k 2 */
  CUDACHECK(cudaFree(c.deviceStats));
  CUDACHECK(cudaStreamSynchronize(c.stream));
  NCCLCHECK(ncclCommDestroy(c.nccl));
  CUDACHECK(cudaStreamDestroy(c.stream));
  return c.wrongTotal == 0 ? 0 : 1;
}

/*------------------------------------------------------------------------
 * The parent.
 *----------------------------------------------------------------------*/
static int launchRanks(const benchConfig* config, char** argv) {
  int gpus = benchCountGpus("ulysses_perf");
  if (gpus == 0) return BENCH_EXIT_NO_GPU;
  int nRanks = config->nRanks > 0 ? config->nRanks : gpus;
  /* The ranks run this very binary, whatever the working directory. */
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    benchReportFailure(__FILE__, __LINE__, "cannot resolve /proc/self/exe");
    return 1;
  }
  self[n] = '\0';
  /* argv[argc] is NULL: the parent's own flags go to every rank as they are. */
  return launcherRun(self, (const char* const*)(argv + 1), nRanks, (int)config->timeoutSeconds) == 0
             ? 0
             : 1;
}

int benchMain(int argc, char** argv, const benchOp* ops, int nOps) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  benchConfig config;
  int parsed = benchParseArgs(argc, argv, ops, nOps, &config);
  if (parsed == 2) return 0;
  if (parsed != 0) return 1;
  rankStart start;
  memset(&start, 0, sizeof start);
  start.mode = BENCH_LAUNCH_FORK;
  if (launcherParseRank(argc, argv, &start.forked)) { /* a rank of fork mode */
    config.nRanks = start.forked.nRanks;
    return runRank(&config, &start);
  }
  char error[512];
  if (benchLaunchDetect(environ, config.launchMode, benchMpiBuilt(), &start.launch, error,
                        sizeof error) != 0) {
    fprintf(stderr, "%s: %s launch: %s\n", argv[0], benchLaunchModeName(start.launch.mode), error);
    return 1;
  }
  start.mode = start.launch.mode;
  if (start.mode == BENCH_LAUNCH_FORK) return launchRanks(&config, argv);
  if (start.mode == BENCH_LAUNCH_MPI && benchMpiInit(&argc, &argv, &start.launch) != 0) return 1;
  if (config.nRanks > 0 && config.nRanks != start.launch.nRanks) {
    fprintf(stderr, "%s: -p %d, but the %s launch has %d rank(s)\n", argv[0], config.nRanks,
            benchLaunchModeName(start.mode), start.launch.nRanks);
    return 1;
  }
  config.nRanks = start.launch.nRanks;
  signal(SIGALRM, timeoutExpired);
  alarm((unsigned)config.timeoutSeconds);
  int status = runRank(&config, &start);
  alarm(0);
  /* After a failure, mpirun ends the other ranks; MPI_Finalize could wait for them. */
  if (start.mode == BENCH_LAUNCH_MPI && status == 0) benchMpiFinalize();
  return status;
}

