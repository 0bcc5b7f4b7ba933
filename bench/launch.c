/* launch.h: the environment of an MPI- or torchrun-launched rank, and the
 * ncclUniqueId handoff over TCP or a shared file. */
#include "launch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The same limit as -p. */
#define MAX_RANKS 4096
#define POLL_MILLISECONDS 10
/* How long rank 0 waits for one connection's 16-byte request: a connection
 * that says nothing (a port scanner) must not hold up the ranks behind it. */
#define REQUEST_SECONDS 3.0
/* What a peer sends first, so that a stray connection or another program on
 * the port is not handed the id. */
static const char handoffMagic[8] = {'U', 'L', 'Y', 'S', 'I', 'D', '0', '1'};
/* rank 0's answer before the id */
enum { HANDOFF_OK = 0, HANDOFF_WORLD_SIZE = 1, HANDOFF_BAD_RANK = 2 };

const char* benchLaunchModeName(benchLaunchMode mode) {
  switch (mode) {
    case BENCH_LAUNCH_FORK:
      return "fork";
    case BENCH_LAUNCH_MPI:
      return "mpi";
    case BENCH_LAUNCH_ENV:
      return "env";
    default:
      return "auto";
  }
}

int benchLaunchParseMode(const char* text, benchLaunchMode* mode) {
  static const benchLaunchMode modes[] = {BENCH_LAUNCH_AUTO, BENCH_LAUNCH_FORK, BENCH_LAUNCH_MPI,
                                          BENCH_LAUNCH_ENV};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
    if (strcmp(text, benchLaunchModeName(modes[i])) == 0) {
      *mode = modes[i];
      return 0;
    }
  return 1;
}

static const char* lookup(char* const* environment, const char* name) {
  size_t n = strlen(name);
  for (char* const* entry = environment; entry != NULL && *entry != NULL; entry++)
    if (strncmp(*entry, name, n) == 0 && (*entry)[n] == '=') return *entry + n + 1;
  return NULL;
}

static int parseDecimal(const char* text, long min, long max, int* value) {
  char* end = NULL;
  errno = 0;
  long number = strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || number < min || number > max) return 1;
  *value = (int)number;
  return 0;
}

/* An environment being read, and where a bad value's message goes. */
typedef struct {
  char* const* environment;
  char* error;
  size_t errorSize;
} envReader;

/* name's value as an integer in [min, max] into *value; 0 when set and valid,
 * 1 (with a message) when set and invalid or, if required, not set; *value is
 * left alone when an optional name is not set. */
static int readInteger(const envReader* env, const char* name, long min, long max, int required,
                       int* value) {
  const char* text = lookup(env->environment, name);
  if (text == NULL) {
    if (!required) return 0;
    snprintf(env->error, env->errorSize, "%s is not set", name);
    return 1;
  }
  if (parseDecimal(text, min, max, value) == 0) return 0;
  snprintf(env->error, env->errorSize, "%s=\"%s\" is not an integer in [%ld, %ld]", name, text,
           min, max);
  return 1;
}

static int mpiLaunched(char* const* environment) {
  static const char* const markers[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                        "MV2_COMM_WORLD_SIZE"};
  for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
    if (lookup(environment, markers[i]) != NULL) return 1;
  return 0;
}

static int parseEnvLaunch(char* const* environment, benchLaunch* launch, char* error,
                          size_t errorSize) {
  const envReader env = {environment, error, errorSize};
  if (readInteger(&env, "WORLD_SIZE", 1, MAX_RANKS, 1, &launch->nRanks) ||
      readInteger(&env, "RANK", 0, launch->nRanks - 1, 1, &launch->rank) ||
      readInteger(&env, "LOCAL_WORLD_SIZE", 1, launch->nRanks, 0, &launch->localSize))
    return 1;
  if (lookup(environment, "LOCAL_RANK") == NULL) {
    snprintf(error, errorSize,
             "LOCAL_RANK is not set (torchrun sets it; under srun: LOCAL_RANK=$SLURM_LOCALID)");
    return 1;
  }
  int localRanks = launch->localSize > 0 ? launch->localSize : launch->nRanks;
  if (readInteger(&env, "LOCAL_RANK", 0, localRanks - 1, 1, &launch->localRank)) return 1;

  launch->idFile = lookup(environment, "ULYSSES_ID_FILE");
  if (launch->idFile != NULL) {
    if (launch->idFile[0] == '\0') {
      snprintf(error, errorSize, "ULYSSES_ID_FILE is empty");
      return 1;
    }
    launch->idSource = BENCH_ID_FILE;
    return 0;
  }
  launch->idHost = lookup(environment, "MASTER_ADDR");
  if (launch->idHost == NULL || launch->idHost[0] == '\0' ||
      lookup(environment, "MASTER_PORT") == NULL) {
    snprintf(error, errorSize,
             "no way to hand out the NCCL id: set MASTER_ADDR and MASTER_PORT (rank 0 listens "
             "on MASTER_PORT + 1), or ULYSSES_ID_FILE to a path that every rank sees");
    return 1;
  }
  int masterPort = 0;
  if (readInteger(&env, "MASTER_PORT", 1, 65534, 1, &masterPort)) return 1;
  /* torchrun's own TCPStore holds MASTER_PORT itself. */
  launch->idPort = masterPort + 1;
  if (readInteger(&env, "ULYSSES_ID_PORT", 1, 65535, 0, &launch->idPort)) return 1;
  launch->idSource = BENCH_ID_TCP;
  return 0;
}

int benchLaunchDetect(char* const* environment, benchLaunchMode requested, int mpiBuilt,
                      benchLaunch* launch, char* error, size_t errorSize) {
  memset(launch, 0, sizeof *launch);
  int haveRank = lookup(environment, "RANK") != NULL;
  int haveWorld = lookup(environment, "WORLD_SIZE") != NULL;
  benchLaunchMode mode = requested;
  if (mode == BENCH_LAUNCH_AUTO) {
    if (haveRank != haveWorld) {
      snprintf(error, errorSize, "%s is set but %s is not: set both for the env launch mode",
               haveRank ? "RANK" : "WORLD_SIZE", haveRank ? "WORLD_SIZE" : "RANK");
      return 1;
    }
    mode = haveRank                   ? BENCH_LAUNCH_ENV
           : mpiLaunched(environment) ? BENCH_LAUNCH_MPI
                                      : BENCH_LAUNCH_FORK;
  }
  launch->mode = mode;
  if (mode == BENCH_LAUNCH_MPI && !mpiBuilt) {
    snprintf(error, errorSize,
             "started by an MPI launcher, but this ulysses_perf was built without MPI "
             "(meson setup -Dmpi=enabled with an MPI installed), or set RANK, WORLD_SIZE, "
             "LOCAL_RANK, MASTER_ADDR and MASTER_PORT and pass -L env");
    return 1;
  }
  if (mode == BENCH_LAUNCH_ENV) return parseEnvLaunch(environment, launch, error, errorSize);
  return 0;
}

int benchLaunchDevice(int localRank, int localSize, int deviceCount, int* device, int* shared,
                      char* error, size_t errorSize) {
  *device = 0;
  *shared = 0;
  if (deviceCount < 1) {
    snprintf(error, errorSize, "no CUDA device");
    return 1;
  }
  if (localSize > deviceCount) {
    *shared = 1;
    *device = localRank % deviceCount;
    return 0;
  }
  if (localRank >= deviceCount) {
    snprintf(error, errorSize,
             "local rank %d but %d CUDA device(s): set LOCAL_WORLD_SIZE so that the ranks of "
             "this host share the GPUs (over NCCL's socket transport)",
             localRank, deviceCount);
    return 1;
  }
  *device = localRank;
  return 0;
}

int benchLaunchShareGpu(int rank, int loadedNcclVersion, gpuSharingMode* mode) {
  *mode = gpuSharingChoose(loadedNcclVersion, getenv("NCCL_MULTI_RANK_GPU_ENABLE"), NULL);
  gpuSharingVariable variables[GPU_SHARING_MAX_VARIABLES];
  int n = gpuSharingVariables(*mode, rank, variables);
  for (int i = 0; i < n; i++)
    if (setenv(variables[i].name, variables[i].value, variables[i].overridesUser) != 0) return 1;
  return 0;
}

/*------------------------------------------------------------------------
 * TCP handoff.
 *----------------------------------------------------------------------*/
static double nowSeconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int millisecondsLeft(double deadline) {
  double left = (deadline - nowSeconds()) * 1000.0;
  return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left + 1;
}

/* All of buffer's bytes through fd (writing or reading) before the deadline;
 * 0 on success, 1 on a timeout, an error or an early end of the stream. */
static int transferAll(int fd, void* buffer, size_t bytes, int writing, double deadline) {
  unsigned char* cursor = buffer;
  while (bytes > 0) {
    struct pollfd p = {fd, writing ? POLLOUT : POLLIN, 0};
    int ready = poll(&p, 1, millisecondsLeft(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return 1;
    ssize_t n = writing ? send(fd, cursor, bytes, MSG_NOSIGNAL) : recv(fd, cursor, bytes, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return 1;
    cursor += n;
    bytes -= (size_t)n;
  }
  return 0;
}

static int listenOn(int family, int port) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int bound;
  if (family == AF_INET6) {
    /* Both IPv4 and IPv6 peers, where the kernel allows it. */
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 address;
    memset(&address, 0, sizeof address);
    address.sin6_family = AF_INET6;
    address.sin6_addr = in6addr_any;
    address.sin6_port = htons((uint16_t)port);
    bound = bind(fd, (struct sockaddr*)&address, sizeof address);
  } else {
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    address.sin_port = htons((uint16_t)port);
    bound = bind(fd, (struct sockaddr*)&address, sizeof address);
  }
  if (bound != 0 || listen(fd, 128) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int benchIdListen(int* port) {
  int fd = listenOn(AF_INET6, *port);
  if (fd < 0 && errno != EADDRINUSE) fd = listenOn(AF_INET, *port);
  if (fd < 0) {
    fprintf(stderr, "rank 0: cannot listen on port %d for the NCCL id handoff: %s\n", *port,
            strerror(errno));
    return -1;
  }
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(fd, (struct sockaddr*)&address, &length) == 0)
    *port = ntohs(address.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&address)->sin6_port
                                                : ((struct sockaddr_in*)&address)->sin_port);
  return fd;
}

/* What a peer sends: the magic, its rank, the world size it was given. */
typedef struct {
  char magic[8];
  uint32_t rank;
  uint32_t nRanks;
} handoffRequest;

int benchIdServe(int listener, int nRanks, const void* id, size_t bytes, int timeoutSeconds) {
  double deadline = nowSeconds() + timeoutSeconds;
  unsigned char* served = calloc((size_t)nRanks, 1);
  int failed = served == NULL;
  int remaining = nRanks - 1;
  while (!failed && remaining > 0) {
    struct pollfd p = {listener, POLLIN, 0};
    int ready = poll(&p, 1, millisecondsLeft(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      fprintf(stderr, "rank 0: %d of %d rank(s) did not ask for the NCCL id within %d s\n",
              remaining, nRanks - 1, timeoutSeconds);
      failed = 1;
      break;
    }
    int peer = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (peer < 0) continue; /* the peer may have gone already: it retries */
    handoffRequest request;
    /* A connection that is not a rank (a port scanner, a health check) is dropped. */
    double requestDeadline = nowSeconds() + REQUEST_SECONDS;
    if (requestDeadline > deadline) requestDeadline = deadline;
    if (transferAll(peer, &request, sizeof request, 0, requestDeadline) != 0 ||
        memcmp(request.magic, handoffMagic, sizeof handoffMagic) != 0) {
      close(peer);
      continue;
    }
    uint32_t rank = ntohl(request.rank), theirs = ntohl(request.nRanks);
    uint32_t answer = HANDOFF_OK;
    if (theirs != (uint32_t)nRanks) {
      fprintf(stderr, "rank 0: rank %u says the world has %u rank(s), rank 0 has %d\n", rank,
              theirs, nRanks);
      answer = HANDOFF_WORLD_SIZE;
    } else if (rank < 1 || rank >= (uint32_t)nRanks || served[rank]) {
      fprintf(stderr, "rank 0: rank %u asked for the NCCL id %s\n", rank,
              rank < 1 || rank >= (uint32_t)nRanks ? "but is out of range" : "twice");
      answer = HANDOFF_BAD_RANK;
    }
    uint32_t wire = htonl(answer);
    int sent = transferAll(peer, &wire, sizeof wire, 1, deadline) == 0 &&
               (answer != HANDOFF_OK || transferAll(peer, (void*)id, bytes, 1, deadline) == 0);
    close(peer);
    if (answer != HANDOFF_OK) {
      failed = 1;
    } else if (sent) {
      served[rank] = 1;
      remaining--;
    }
  }
  free(served);
  close(listener);
  return failed;
}

/* A connected socket to host:port, or -1 with *why saying what failed. */
static int connectOnce(const char* host, int port, char* why, size_t whyBytes) {
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* addresses = NULL;
  int resolved = getaddrinfo(host, service, &hints, &addresses);
  if (resolved != 0) {
    snprintf(why, whyBytes, "%s: %s", host, gai_strerror(resolved));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo* a = addresses; a != NULL && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      snprintf(why, whyBytes, "socket: %s", strerror(errno));
    } else if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      snprintf(why, whyBytes, "%s", strerror(errno));
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(addresses);
  return fd;
}

int benchIdFetch(const char* host, int port, int rank, int nRanks, void* id, size_t bytes,
                 int timeoutSeconds) {
  double deadline = nowSeconds() + timeoutSeconds;
  handoffRequest request;
  memcpy(request.magic, handoffMagic, sizeof handoffMagic);
  request.rank = htonl((uint32_t)rank);
  request.nRanks = htonl((uint32_t)nRanks);
  char why[256] = "no answer";
  while (nowSeconds() < deadline) {
    int fd = connectOnce(host, port, why, sizeof why);
    if (fd < 0) {
      struct timespec pause = {0, POLL_MILLISECONDS * 1000000L};
      nanosleep(&pause, NULL);
      continue;
    }
    uint32_t answer = 0;
    int ok = transferAll(fd, &request, sizeof request, 1, deadline) == 0 &&
             transferAll(fd, &answer, sizeof answer, 0, deadline) == 0;
    answer = ntohl(answer);
    if (ok && answer == HANDOFF_OK) ok = transferAll(fd, id, bytes, 0, deadline) == 0;
    close(fd);
    if (ok && answer == HANDOFF_OK) return 0;
    if (ok) {
      fprintf(stderr, "rank %d: rank 0 at %s:%d refused the NCCL id: %s\n", rank, host, port,
              answer == HANDOFF_WORLD_SIZE ? "it has another WORLD_SIZE"
                                           : "this rank is out of range or asked twice");
      return 1;
    }
    fprintf(stderr, "rank %d: the NCCL id handoff with %s:%d broke off\n", rank, host, port);
    return 1;
  }
  fprintf(stderr, "rank %d: no NCCL id from rank 0 at %s:%d within %d s (%s)\n", rank, host, port,
          timeoutSeconds, why);
  return 1;
}

/*------------------------------------------------------------------------
 * File handoff.
 *----------------------------------------------------------------------*/
/* The file: the magic, the world size (4 bytes, big-endian), the id. */
#define FILE_HEADER_BYTES (sizeof handoffMagic + sizeof(uint32_t))

int benchIdWriteFile(const char* path, int nRanks, const void* id, size_t bytes) {
  size_t total = FILE_HEADER_BYTES + bytes;
  unsigned char* content = malloc(total);
  size_t nameBytes = strlen(path) + 32;
  char* tmpName = malloc(nameBytes);
  if (content == NULL || tmpName == NULL) {
    free(content);
    free(tmpName);
    fprintf(stderr, "rank 0: out of memory\n");
    return 1;
  }
  uint32_t world = htonl((uint32_t)nRanks);
  memcpy(content, handoffMagic, sizeof handoffMagic);
  memcpy(content + sizeof handoffMagic, &world, sizeof world);
  memcpy(content + FILE_HEADER_BYTES, id, bytes);
  snprintf(tmpName, nameBytes, "%s.%ld.tmp", path, (long)getpid());
  int ok = 0;
  int fd = open(tmpName, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    size_t written = 0;
    while (written < total) {
      ssize_t n = write(fd, content + written, total - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      written += (size_t)n;
    }
    ok = written == total;
    if (close(fd) != 0) ok = 0;
    /* link() never replaces: a file left by an earlier run is refused,
     * where rename() would hide it from rank 0 but not from a rank that
     * already read it. */
    if (ok && link(tmpName, path) != 0) {
      fprintf(stderr, "rank 0: cannot create %s: %s%s\n", path, strerror(errno),
              errno == EEXIST ? " (left by an earlier run? remove it)" : "");
      ok = -1;
    }
    unlink(tmpName);
  }
  if (ok == 0)
    fprintf(stderr, "rank 0: writing the NCCL id to %s failed: %s\n", tmpName, strerror(errno));
  free(content);
  free(tmpName);
  return ok == 1 ? 0 : 1;
}

int benchIdReadFile(const char* path, int nRanks, void* id, size_t bytes, int timeoutSeconds) {
  double deadline = nowSeconds() + timeoutSeconds;
  size_t total = FILE_HEADER_BYTES + bytes;
  unsigned char* content = malloc(total + 1);
  if (content == NULL) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  int result = 1;
  for (;;) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      /* One byte more than the file should hold, to see a longer one. */
      size_t got = 0;
      for (;;) {
        ssize_t n = read(fd, content + got, total + 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got == total + 1) break;
      }
      close(fd);
      uint32_t world = 0;
      if (got == total) memcpy(&world, content + sizeof handoffMagic, sizeof world);
      if (got != total || memcmp(content, handoffMagic, sizeof handoffMagic) != 0) {
        fprintf(stderr, "%s is not an NCCL id file of ulysses_perf\n", path);
      } else if (ntohl(world) != (uint32_t)nRanks) {
        fprintf(stderr, "%s is for %u rank(s), this rank was told %d (a stale file?)\n", path,
                ntohl(world), nRanks);
      } else {
        memcpy(id, content + FILE_HEADER_BYTES, bytes);
        result = 0;
      }
      break;
    }
    if (errno != ENOENT) {
      fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
      break;
    }
    if (nowSeconds() >= deadline) {
      fprintf(stderr, "no NCCL id in %s after %d s\n", path, timeoutSeconds);
      break;
    }
    struct timespec pause = {0, POLL_MILLISECONDS * 1000000L};
    nanosleep(&pause, NULL);
  }
  free(content);
  return result;
}

int benchIdRemoveFile(const char* path) {
  if (unlink(path) == 0 || errno == ENOENT) return 0;
  fprintf(stderr, "rank 0: cannot remove %s: %s\n", path, strerror(errno));
  return 1;
}
