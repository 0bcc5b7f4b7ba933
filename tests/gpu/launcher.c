/* The rank launcher of launcher.h: fork + execve of P copies of a program,
 * a deadline on all of them, and the ncclUniqueId handed out through a file.
 * Where there are fewer CUDA devices than ranks, every rank gets the
 * environment of gpu_sharing.h: NCCL's multi-rank-per-GPU mode (P2P) where
 * the loaded NCCL has it, else one host id per rank over loopback sockets. */
#include "launcher.h"

#include "gpu_sharing.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

/* How the parent tells each rank how many CUDA devices it saw. */
#define DEVICE_COUNT_VARIABLE "ULYSSES_LAUNCHER_DEVICE_COUNT"
/* After one rank has failed, how long the others get before they are killed
 * (they may be waiting in NCCL for the rank that died). */
#define GRACE_AFTER_FAILURE_SECONDS 20
#define POLL_NANOSECONDS 10000000L /* 10 ms */

static double nowSeconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleepPoll(void) {
  struct timespec t = {0, POLL_NANOSECONDS};
  nanosleep(&t, NULL); /* an EINTR only shortens one poll */
}

static int startsWithName(const char* entry, const char* name) {
  size_t n = strlen(name);
  return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

static char* formatString(const char* format, ...) __attribute__((format(printf, 1, 2)));
static char* formatString(const char* format, ...) {
  va_list args;
  va_start(args, format);
  char* text = NULL;
  if (vasprintf(&text, format, args) < 0) text = NULL;
  va_end(args);
  return text;
}

static void freeStrings(char** strings) {
  if (strings == NULL) return;
  for (char** s = strings; *s != NULL; s++) free(*s);
  free(strings);
}

/* The environment of one rank: the parent's, without NCCL_HOSTID and our own
 * device-count variable, plus the device count and, when ranks share GPUs,
 * the variables of the sharing mode (those the user has set kept as the
 * user set them, but for the socket mode's host id). */
static char** buildEnvironment(int rank, int deviceCount, int sharedGpus, gpuSharingMode mode) {
  size_t count = 0;
  while (environ[count] != NULL) count++;
  char** env = calloc(count + GPU_SHARING_MAX_VARIABLES + 2, sizeof(char*));
  if (env == NULL) return NULL;
  size_t n = 0;
  for (size_t i = 0; i < count; i++) {
    if (startsWithName(environ[i], "NCCL_HOSTID") || startsWithName(environ[i], DEVICE_COUNT_VARIABLE))
      continue;
    if ((env[n++] = strdup(environ[i])) == NULL) goto failed;
  }
  if ((env[n++] = formatString("%s=%d", DEVICE_COUNT_VARIABLE, deviceCount)) == NULL) goto failed;
  if (sharedGpus) {
    gpuSharingVariable variables[GPU_SHARING_MAX_VARIABLES];
    int nVariables = gpuSharingVariables(mode, rank, variables);
    for (int v = 0; v < nVariables; v++) {
      if (!variables[v].overridesUser && getenv(variables[v].name) != NULL) continue;
      if ((env[n++] = formatString("%s=%s", variables[v].name, variables[v].value)) == NULL)
        goto failed;
    }
  }
  env[n] = NULL;
  return env;
failed:
  freeStrings(env);
  return NULL;
}

static char** buildArguments(const char* program, const char* const* args, int rank, int nRanks,
                             const char* idFile) {
  size_t extra = 0;
  if (args != NULL)
    while (args[extra] != NULL) extra++;
  char** argv = calloc(extra + 8, sizeof(char*));
  if (argv == NULL) return NULL;
  size_t n = 0;
  if ((argv[n++] = strdup(program)) == NULL) goto failed;
  for (size_t i = 0; i < extra; i++)
    if ((argv[n++] = strdup(args[i])) == NULL) goto failed;
  if ((argv[n++] = strdup("--rank")) == NULL) goto failed;
  if ((argv[n++] = formatString("%d", rank)) == NULL) goto failed;
  if ((argv[n++] = strdup("--nranks")) == NULL) goto failed;
  if ((argv[n++] = formatString("%d", nRanks)) == NULL) goto failed;
  if ((argv[n++] = strdup("--id-file")) == NULL) goto failed;
  if ((argv[n++] = strdup(idFile)) == NULL) goto failed;
  argv[n] = NULL;
  return argv;
failed:
  freeStrings(argv);
  return NULL;
}

static void describeStatus(int rank, int status) {
  if (WIFEXITED(status))
    fprintf(stderr, "launcher: rank %d exited with status %d\n", rank, WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    fprintf(stderr, "launcher: rank %d was killed by signal %d (%s)\n", rank, WTERMSIG(status),
            strsignal(WTERMSIG(status)));
  else
    fprintf(stderr, "launcher: rank %d ended with wait status 0x%x\n", rank, status);
}

int launcherRun(const char* program, const char* const* args, int nRanks, int timeoutSeconds) {
  if (program == NULL || nRanks < 1 || timeoutSeconds < 1) {
    fprintf(stderr, "launcher: bad arguments (program %s, %d ranks, timeout %d s)\n",
            program == NULL ? "NULL" : program, nRanks, timeoutSeconds);
    return 1;
  }
  int deviceCount = 0;
  if (cudaGetDeviceCount(&deviceCount) != cudaSuccess) deviceCount = 0;
  cudaGetLastError(); /* forget a "no device" error */
  int sharedGpus = deviceCount < nRanks;
  int ncclVersion = 0;
  if (ncclGetVersion(&ncclVersion) != ncclSuccess) ncclVersion = 0;
  const char* why = NULL;
  gpuSharingMode mode = gpuSharingChoose(ncclVersion, getenv("NCCL_MULTI_RANK_GPU_ENABLE"), &why);

  const char* tmp = getenv("TMPDIR");
  if (tmp == NULL || tmp[0] == '\0') tmp = "/tmp";
  char* directory = formatString("%s/ulysses-ranks-XXXXXX", tmp);
  if (directory == NULL || mkdtemp(directory) == NULL) {
    fprintf(stderr, "launcher: cannot make a temporary directory under %s: %s\n", tmp,
            strerror(errno));
    free(directory);
    return 1;
  }
  char* idFile = formatString("%s/nccl-unique-id", directory);
  char* idFileTmp = formatString("%s/nccl-unique-id.tmp", directory);
  pid_t* pids = calloc((size_t)nRanks, sizeof(pid_t));
  int* statuses = calloc((size_t)nRanks, sizeof(int));
  int* done = calloc((size_t)nRanks, sizeof(int));
  char*** argvs = calloc((size_t)nRanks, sizeof(char**));
  char*** envs = calloc((size_t)nRanks, sizeof(char**));
  int failed = 0;
  int started = 0;
  if (idFile == NULL || idFileTmp == NULL || pids == NULL || statuses == NULL || done == NULL ||
      argvs == NULL || envs == NULL) {
    fprintf(stderr, "launcher: out of memory\n");
    failed = 1;
    goto cleanup;
  }
  /* Everything the children need is built before the first fork: between
   * fork and execve a child calls only async-signal-safe functions. */
  for (int r = 0; r < nRanks; r++) {
    argvs[r] = buildArguments(program, args, r, nRanks, idFile);
    envs[r] = buildEnvironment(r, deviceCount, sharedGpus, mode);
    if (argvs[r] == NULL || envs[r] == NULL) {
      fprintf(stderr, "launcher: out of memory\n");
      failed = 1;
      goto cleanup;
    }
  }
  if (sharedGpus)
    fprintf(stderr,
            "launcher: %d rank(s) on %d CUDA device(s), NCCL %d loaded: ranks share a GPU over "
            "%s (%s); NCCL_DEBUG=INFO shows NCCL's transport\n",
            nRanks, deviceCount, ncclVersion, gpuSharingName(mode), why);

  pid_t parent = getpid();
  fflush(stdout);
  fflush(stderr);
  for (int r = 0; r < nRanks; r++) {
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "launcher: fork of rank %d failed: %s\n", r, strerror(errno));
      failed = 1;
      break;
    }
    if (pid == 0) {
      /* A rank must not outlive a parent that was killed (by Meson's timeout). */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(126);
      execve(argvs[r][0], argvs[r], envs[r]);
      static const char message[] = "launcher: execve of a rank failed\n";
      ssize_t ignored = write(STDERR_FILENO, message, sizeof message - 1);
      (void)ignored;
      _exit(127);
    }
    pids[r] = pid;
    started++;
  }

  double start = nowSeconds();
  double deadline = start + (failed ? 0 : timeoutSeconds);
  int timedOut = 0, graceKill = 0;
  int remaining = started;
  while (remaining > 0) {
    for (int r = 0; r < started; r++) {
      if (done[r]) continue;
      int status = 0;
      pid_t got = waitpid(pids[r], &status, WNOHANG);
      if (got == 0) continue;
      if (got < 0 && errno == EINTR) continue;
      done[r] = 1;
      remaining--;
      if (got < 0) {
        fprintf(stderr, "launcher: waitpid of rank %d failed: %s\n", r, strerror(errno));
        failed = 1;
      } else {
        statuses[r] = status;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
          describeStatus(r, status);
          if (!failed) {
            double graceEnd = nowSeconds() + GRACE_AFTER_FAILURE_SECONDS;
            if (graceEnd < deadline) {
              deadline = graceEnd;
              graceKill = 1;
            }
          }
          failed = 1;
        }
      }
    }
    if (remaining == 0) break;
    if (nowSeconds() >= deadline) {
      timedOut = 1;
      for (int r = 0; r < started; r++) {
        if (done[r]) continue;
        fprintf(stderr, "launcher: rank %d still running after %.0f s: killing it\n", r,
                nowSeconds() - start);
        kill(pids[r], SIGKILL);
      }
      /* SIGKILL cannot be caught: reap them all, blocking. */
      for (int r = 0; r < started; r++) {
        if (done[r]) continue;
        int status = 0;
        while (waitpid(pids[r], &status, 0) < 0 && errno == EINTR) {
        }
        done[r] = 1;
      }
      remaining = 0;
      failed = 1;
      break;
    }
    sleepPoll();
  }
  if (timedOut && graceKill)
    fprintf(stderr, "launcher: the other ranks were killed %d s after the first failure\n",
            GRACE_AFTER_FAILURE_SECONDS);
  else if (timedOut)
    fprintf(stderr, "launcher: %s with %d rank(s) timed out (limit %d s)\n", program, nRanks,
            timeoutSeconds);

cleanup:
  if (idFile != NULL) unlink(idFile);
  if (idFileTmp != NULL) unlink(idFileTmp);
  if (rmdir(directory) != 0)
    fprintf(stderr, "launcher: could not remove %s: %s\n", directory, strerror(errno));
  for (int r = 0; r < nRanks; r++) {
    if (argvs != NULL) freeStrings(argvs[r]);
    if (envs != NULL) freeStrings(envs[r]);
  }
  free(argvs);
  free(envs);
  free(pids);
  free(statuses);
  free(done);
  free(idFile);
  free(idFileTmp);
  free(directory);
  return failed ? 1 : 0;
}

static int parseInt(const char* text, int* value) {
  char* end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 0 || v > 1000000) return 0;
  *value = (int)v;
  return 1;
}

int launcherParseRank(int argc, char** argv, launcherRank* rank) {
  int haveRank = 0, haveCount = 0, anyFlag = 0;
  memset(rank, 0, sizeof *rank);
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--rank") == 0 || strcmp(argv[i], "--nranks") == 0 ||
        strcmp(argv[i], "--id-file") == 0)
      anyFlag = 1;
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--rank") == 0 && parseInt(argv[i + 1], &rank->rank)) {
      haveRank = 1;
      i++;
    } else if (strcmp(argv[i], "--nranks") == 0 && parseInt(argv[i + 1], &rank->nRanks)) {
      haveCount = 1;
      i++;
    } else if (strcmp(argv[i], "--id-file") == 0) {
      rank->idFile = argv[i + 1];
      i++;
    }
  }
  if (!haveRank || !haveCount || rank->idFile == NULL || rank->nRanks < 1 ||
      rank->rank >= rank->nRanks) {
    if (!anyFlag) return 0;
    /* Half a rank's arguments: never fall back to the parent's role, which
     * would start ranks of its own. */
    fprintf(stderr, "launcher: malformed rank arguments (want --rank R --nranks P --id-file F, "
                    "0 <= R < P)\n");
    exit(2);
  }
  /* A rank's log must survive its being killed. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  int deviceCount = 0;
  const char* fromParent = getenv(DEVICE_COUNT_VARIABLE);
  if (fromParent == NULL || !parseInt(fromParent, &deviceCount)) {
    if (cudaGetDeviceCount(&deviceCount) != cudaSuccess) deviceCount = 0;
    cudaGetLastError();
  }
  rank->device = deviceCount > 0 ? rank->rank % deviceCount : 0;
  rank->deviceCount = deviceCount;
  return 1;
}

static int writeUniqueId(const launcherRank* rank, const ncclUniqueId* id) {
  char* tmpName = formatString("%s.tmp", rank->idFile);
  if (tmpName == NULL) return 0;
  int ok = 0;
  int fd = open(tmpName, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    const char* bytes = (const char*)id;
    size_t written = 0;
    while (written < sizeof *id) {
      ssize_t n = write(fd, bytes + written, sizeof *id - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      written += (size_t)n;
    }
    ok = written == sizeof *id;
    if (close(fd) != 0) ok = 0;
    if (ok && rename(tmpName, rank->idFile) != 0) ok = 0;
  }
  if (!ok)
    fprintf(stderr, "rank %d: writing the NCCL unique id to %s failed: %s\n", rank->rank,
            rank->idFile, strerror(errno));
  free(tmpName);
  return ok;
}

static int readUniqueId(const launcherRank* rank, ncclUniqueId* id, int timeoutSeconds) {
  double deadline = nowSeconds() + timeoutSeconds;
  for (;;) {
    int fd = open(rank->idFile, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char* bytes = (char*)id;
      size_t got = 0;
      while (got < sizeof *id) {
        ssize_t n = read(fd, bytes + got, sizeof *id - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
      }
      close(fd);
      if (got == sizeof *id) return 1;
      /* rename() makes the file appear whole: a short one is not ours. */
      fprintf(stderr, "rank %d: %s holds %zu bytes, not %zu\n", rank->rank, rank->idFile, got,
              sizeof *id);
      return 0;
    }
    if (errno != ENOENT) {
      fprintf(stderr, "rank %d: cannot open %s: %s\n", rank->rank, rank->idFile, strerror(errno));
      return 0;
    }
    if (nowSeconds() >= deadline) {
      fprintf(stderr, "rank %d: no NCCL unique id in %s after %d s\n", rank->rank, rank->idFile,
              timeoutSeconds);
      return 0;
    }
    sleepPoll();
  }
}

int launcherInitComm(const launcherRank* rank, ncclComm_t* comm, int timeoutSeconds) {
  *comm = NULL;
  cudaError_t cudaResult = cudaSetDevice(rank->device);
  if (cudaResult != cudaSuccess) {
    fprintf(stderr, "rank %d: cudaSetDevice(%d) failed: %s\n", rank->rank, rank->device,
            cudaGetErrorString(cudaResult));
    return 1;
  }
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (rank->rank == 0) {
    ncclResult_t result = ncclGetUniqueId(&id);
    if (result != ncclSuccess) {
      fprintf(stderr, "rank 0: ncclGetUniqueId failed: %s (%s)\n", ncclGetErrorString(result),
              ncclGetLastError(NULL));
      return 1;
    }
    if (!writeUniqueId(rank, &id)) return 1;
  } else if (!readUniqueId(rank, &id, timeoutSeconds)) {
    return 1;
  }
  return launcherCommInitRank(comm, rank->nRanks, id, rank->rank, rank->device,
                              rank->deviceCount < rank->nRanks, timeoutSeconds);
}

typedef struct {
  int nRanks, rank, device;
  ncclUniqueId id;
  ncclComm_t comm;
  ncclResult_t result;
  char error[256];
  int done; /* written last, with __atomic */
} commInit;

static void* initInThread(void* argument) {
  commInit* init = argument;
  cudaError_t selected = cudaSetDevice(init->device);
  if (selected != cudaSuccess) {
    init->result = ncclUnhandledCudaError;
    snprintf(init->error, sizeof init->error, "cudaSetDevice(%d): %s", init->device,
             cudaGetErrorString(selected));
  } else {
    init->result = ncclCommInitRank(&init->comm, init->nRanks, init->id, init->rank);
    if (init->result != ncclSuccess)
      snprintf(init->error, sizeof init->error, "%s (%s)", ncclGetErrorString(init->result),
               ncclGetLastError(NULL));
  }
  __atomic_store_n(&init->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

int launcherCommInitRank(ncclComm_t* comm, int nRanks, ncclUniqueId id, int rank, int device,
                         int sharedGpu, int timeoutSeconds) {
  *comm = NULL;
  int ncclVersion = 0;
  if (ncclGetVersion(&ncclVersion) != ncclSuccess) ncclVersion = 0;
  gpuSharingMode mode = gpuSharingChoose(ncclVersion, getenv("NCCL_MULTI_RANK_GPU_ENABLE"), NULL);
  /* Never freed where the thread may still run: it is stuck in NCCL then. */
  commInit* init = calloc(1, sizeof *init);
  if (init == NULL) {
    fprintf(stderr, "rank %d: out of memory\n", rank);
    return 1;
  }
  init->nRanks = nRanks;
  init->rank = rank;
  init->device = device;
  init->id = id;
  pthread_t thread;
  int started = pthread_create(&thread, NULL, initInThread, init);
  if (started != 0) {
    fprintf(stderr, "rank %d: cannot start the thread of ncclCommInitRank: %s\n", rank,
            strerror(started));
    free(init);
    return 1;
  }
  double deadline = nowSeconds() + timeoutSeconds;
  while (!__atomic_load_n(&init->done, __ATOMIC_ACQUIRE) && nowSeconds() < deadline) sleepPoll();
  char advice[768];
  if (!__atomic_load_n(&init->done, __ATOMIC_ACQUIRE)) {
    gpuSharingInitAdvice(advice, sizeof advice, nRanks, sharedGpu, mode, NULL, timeoutSeconds);
    fprintf(stderr, "rank %d: %s\n", rank, advice);
    fflush(stdout);
    fflush(stderr);
    _exit(2);
  }
  pthread_join(thread, NULL);
  int ok = init->result == ncclSuccess;
  if (ok) {
    *comm = init->comm;
  } else {
    gpuSharingInitAdvice(advice, sizeof advice, nRanks, sharedGpu, mode, init->error,
                         timeoutSeconds);
    fprintf(stderr, "rank %d (device %d): %s\n", rank, device, advice);
  }
  free(init);
  return ok ? 0 : 1;
}
