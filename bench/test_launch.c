/* ulysses_perf's launch modes on the CPU: the mode and rank from the
 * environment, the GPU of a local rank, and the ncclUniqueId handoff over TCP
 * on 127.0.0.1 and through a file, between real processes. */
/* cmocka.h needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"

/* The size of an ncclUniqueId; the handoff moves any bytes. */
#define ID_BYTES 128

static void fillId(unsigned char* id, int seed) {
  for (int i = 0; i < ID_BYTES; i++) id[i] = (unsigned char)(i * 7 + seed);
}

/*------------------------------------------------------------------------
 * The environment.
 *----------------------------------------------------------------------*/
static int detect(char* const* environment, benchLaunchMode requested, int mpiBuilt,
                  benchLaunch* launch, char* error) {
  error[0] = '\0';
  return benchLaunchDetect(environment, requested, mpiBuilt, launch, error, 256);
}

static void test_empty_environment_is_fork(void** state) {
  (void)state;
  char* environment[] = {"PATH=/usr/bin", "HOME=/root", NULL};
  benchLaunch launch;
  char error[256];
  assert_int_equal(detect(environment, BENCH_LAUNCH_AUTO, 1, &launch, error), 0);
  assert_int_equal(launch.mode, BENCH_LAUNCH_FORK);
}

static void test_torchrun_environment(void** state) {
  (void)state;
  char* environment[] = {"RANK=5",
                         "WORLD_SIZE=16",
                         "LOCAL_RANK=5",
                         "LOCAL_WORLD_SIZE=8",
                         "MASTER_ADDR=node007",
                         "MASTER_PORT=29500",
                         "RANKS=99",
                         "XRANK=3",
                         NULL};
  benchLaunch launch;
  char error[256];
  assert_int_equal(detect(environment, BENCH_LAUNCH_AUTO, 0, &launch, error), 0);
  assert_int_equal(launch.mode, BENCH_LAUNCH_ENV);
  assert_int_equal(launch.rank, 5);
  assert_int_equal(launch.nRanks, 16);
  assert_int_equal(launch.localRank, 5);
  assert_int_equal(launch.localSize, 8);
  assert_int_equal(launch.idSource, BENCH_ID_TCP);
  assert_string_equal(launch.idHost, "node007");
  assert_int_equal(launch.idPort, 29501); /* torchrun's store holds MASTER_PORT */
}

static void test_id_port_and_file_overrides(void** state) {
  (void)state;
  char* withPort[] = {"RANK=0",
                      "WORLD_SIZE=2",
                      "LOCAL_RANK=0",
                      "MASTER_ADDR=h",
                      "MASTER_PORT=29500",
                      "ULYSSES_ID_PORT=31000",
                      NULL};
  benchLaunch launch;
  char error[256];
  assert_int_equal(detect(withPort, BENCH_LAUNCH_AUTO, 0, &launch, error), 0);
  assert_int_equal(launch.idPort, 31000);
  assert_int_equal(launch.localSize, 0); /* LOCAL_WORLD_SIZE not set */

  char* withFile[] = {"RANK=1",
                      "WORLD_SIZE=2",
                      "LOCAL_RANK=0",
                      "MASTER_ADDR=h",
                      "MASTER_PORT=29500",
                      "ULYSSES_ID_FILE=/shared/id",
                      NULL};
  assert_int_equal(detect(withFile, BENCH_LAUNCH_AUTO, 0, &launch, error), 0);
  assert_int_equal(launch.idSource, BENCH_ID_FILE);
  assert_string_equal(launch.idFile, "/shared/id");

  /* The file alone is enough: no MASTER_ADDR needed. */
  char* fileOnly[] = {"RANK=1", "WORLD_SIZE=2", "LOCAL_RANK=1", "ULYSSES_ID_FILE=/s/id", NULL};
  assert_int_equal(detect(fileOnly, BENCH_LAUNCH_AUTO, 0, &launch, error), 0);
  assert_int_equal(launch.idSource, BENCH_ID_FILE);
}

static void test_mpi_detection(void** state) {
  (void)state;
  static char* const markers[] = {"OMPI_COMM_WORLD_SIZE=4", "PMI_SIZE=4", "PMIX_RANK=0",
                                  "MV2_COMM_WORLD_SIZE=4"};
  benchLaunch launch;
  char error[256];
  for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++) {
    char* environment[] = {"PATH=/bin", markers[i], NULL};
    assert_int_equal(detect(environment, BENCH_LAUNCH_AUTO, 1, &launch, error), 0);
    assert_int_equal(launch.mode, BENCH_LAUNCH_MPI);
    /* Without MPI in the binary: an error that says how to get it. */
    assert_int_equal(detect(environment, BENCH_LAUNCH_AUTO, 0, &launch, error), 1);
    assert_non_null(strstr(error, "-Dmpi=enabled"));
  }
  /* torchrun's per-worker variables win over an MPI launcher's inherited ones. */
  char* both[] = {
      "OMPI_COMM_WORLD_SIZE=2", "RANK=3", "WORLD_SIZE=8", "LOCAL_RANK=3", "MASTER_ADDR=a",
      "MASTER_PORT=1000",       NULL};
  assert_int_equal(detect(both, BENCH_LAUNCH_AUTO, 1, &launch, error), 0);
  assert_int_equal(launch.mode, BENCH_LAUNCH_ENV);
  /* -L overrides the environment. */
  assert_int_equal(detect(both, BENCH_LAUNCH_MPI, 1, &launch, error), 0);
  assert_int_equal(launch.mode, BENCH_LAUNCH_MPI);
  assert_int_equal(detect(both, BENCH_LAUNCH_FORK, 1, &launch, error), 0);
  assert_int_equal(launch.mode, BENCH_LAUNCH_FORK);
  char* none[] = {NULL};
  assert_int_equal(detect(none, BENCH_LAUNCH_MPI, 0, &launch, error), 1);
  assert_int_equal(detect(none, BENCH_LAUNCH_ENV, 1, &launch, error), 1);
  assert_non_null(strstr(error, "WORLD_SIZE is not set"));
}

typedef struct {
  char* environment[8];
  const char* says; /* what the message must name */
} badEnvironment;

static void test_bad_environments(void** state) {
  (void)state;
  static const badEnvironment cases[] = {
      {{"RANK=0", NULL}, "RANK is set but WORLD_SIZE is not"},
      {{"WORLD_SIZE=2", NULL}, "WORLD_SIZE is set but RANK is not"},
      {{"RANK=2", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=9", NULL},
       "RANK=\"2\""},
      {{"RANK=-1", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=9", NULL},
       "RANK=\"-1\""},
      {{"RANK=one", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=9", NULL},
       "RANK=\"one\""},
      {{"RANK=0", "WORLD_SIZE=0", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=9", NULL},
       "WORLD_SIZE=\"0\""},
      {{"RANK=0", "WORLD_SIZE=4097", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=9", NULL},
       "WORLD_SIZE=\"4097\""},
      {{"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=a", "MASTER_PORT=9", NULL}, "LOCAL_RANK is not set"},
      {{"RANK=0", "WORLD_SIZE=4", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2", "MASTER_ADDR=a",
        "MASTER_PORT=9", NULL},
       "LOCAL_RANK=\"2\""},
      {{"RANK=0", "WORLD_SIZE=4", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=5", "MASTER_ADDR=a",
        "MASTER_PORT=9", NULL},
       "LOCAL_WORLD_SIZE=\"5\""},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_PORT=9", NULL}, "MASTER_ADDR"},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=", "MASTER_PORT=9", NULL},
       "MASTER_ADDR"},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", NULL}, "MASTER_PORT"},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=65535", NULL},
       "MASTER_PORT=\"65535\""},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=0", NULL},
       "MASTER_PORT=\"0\""},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=a", "MASTER_PORT=9",
        "ULYSSES_ID_PORT=70000", NULL},
       "ULYSSES_ID_PORT=\"70000\""},
      {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "ULYSSES_ID_FILE=", NULL},
       "ULYSSES_ID_FILE is empty"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    benchLaunch launch;
    char error[256];
    if (detect(cases[i].environment, BENCH_LAUNCH_AUTO, 1, &launch, error) != 1 ||
        strstr(error, cases[i].says) == NULL)
      fail_msg("case %zu: want an error naming '%s', got '%s'", i, cases[i].says, error);
  }
}

static void test_mode_names(void** state) {
  (void)state;
  static const char* const names[] = {"auto", "fork", "mpi", "env"};
  for (size_t i = 0; i < 4; i++) {
    benchLaunchMode mode = BENCH_LAUNCH_AUTO;
    assert_int_equal(benchLaunchParseMode(names[i], &mode), 0);
    assert_string_equal(benchLaunchModeName(mode), names[i]);
  }
  benchLaunchMode mode = BENCH_LAUNCH_FORK;
  assert_int_equal(benchLaunchParseMode("torchrun", &mode), 1);
  assert_int_equal(benchLaunchParseMode("", &mode), 1);
  assert_int_equal(mode, BENCH_LAUNCH_FORK);
}

/*------------------------------------------------------------------------
 * The GPU of a local rank.
 *----------------------------------------------------------------------*/
static void test_device_choice(void** state) {
  (void)state;
  /* {localRank, localSize, devices, device, shared}; localSize 0: unknown */
  static const int cases[][5] = {
      {0, 8, 8, 0, 0}, {7, 8, 8, 7, 0}, {3, 0, 8, 3, 0}, {1, 2, 8, 1, 0},  /* one GPU each */
      {0, 4, 1, 0, 1}, {3, 4, 1, 0, 1}, {3, 4, 2, 1, 1}, {8, 16, 8, 0, 1}, /* shared */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int device = -1, shared = -1;
    char error[256] = "";
    assert_int_equal(benchLaunchDevice(cases[i][0], cases[i][1], cases[i][2], &device, &shared,
                                       error, sizeof error),
                     0);
    assert_int_equal(device, cases[i][3]);
    assert_int_equal(shared, cases[i][4]);
  }
  int device = -1, shared = -1;
  char error[256] = "";
  /* More local ranks than GPUs, but the host's rank count unknown: the ranks
   * could not agree on sharing. */
  assert_int_equal(benchLaunchDevice(1, 0, 1, &device, &shared, error, sizeof error), 1);
  assert_non_null(strstr(error, "LOCAL_WORLD_SIZE"));
  assert_int_equal(benchLaunchDevice(0, 1, 0, &device, &shared, error, sizeof error), 1);
  assert_non_null(strstr(error, "no CUDA device"));
}

static void test_share_gpu_environment(void** state) {
  (void)state;
  static const char* const names[] = {"NCCL_HOSTID",       "NCCL_NET",          "NCCL_IB_DISABLE",
                                      "NCCL_P2P_DISABLE",  "NCCL_SHM_DISABLE",  "NCCL_NVLS_ENABLE",
                                      "NCCL_MNNVL_ENABLE", "NCCL_SOCKET_IFNAME"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unsetenv(names[i]);
  setenv("NCCL_HOSTID", "left-by-a-parent", 1);
  setenv("NCCL_SOCKET_IFNAME", "eth9", 1); /* the user's choice wins */
  unsetenv("NCCL_MULTI_RANK_GPU_ENABLE");
  gpuSharingMode mode = GPU_SHARING_P2P;
  assert_int_equal(benchLaunchShareGpu(3, 22809, &mode), 0);
  assert_int_equal(mode, GPU_SHARING_SOCKETS);
  assert_null(getenv("NCCL_MULTI_RANK_GPU_ENABLE"));
  assert_string_equal(getenv("NCCL_HOSTID"), "ulyrank3");
  assert_string_equal(getenv("NCCL_SOCKET_IFNAME"), "eth9");
  assert_string_equal(getenv("NCCL_NET"), "Socket");
  assert_string_equal(getenv("NCCL_P2P_DISABLE"), "1");
  assert_string_equal(getenv("NCCL_SHM_DISABLE"), "1");
  assert_string_equal(getenv("NCCL_IB_DISABLE"), "1");
  assert_string_equal(getenv("NCCL_NVLS_ENABLE"), "0");
  assert_string_equal(getenv("NCCL_MNNVL_ENABLE"), "0");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unsetenv(names[i]);

  /* From NCCL 2.30: one host, P2P between the ranks, no socket variables. */
  setenv("NCCL_HOSTID", "left-by-a-parent", 1);
  assert_int_equal(benchLaunchShareGpu(3, 23203, &mode), 0);
  assert_int_equal(mode, GPU_SHARING_P2P);
  assert_string_equal(getenv("NCCL_MULTI_RANK_GPU_ENABLE"), "1");
  assert_string_equal(getenv("NCCL_HOSTID"), "left-by-a-parent");
  assert_null(getenv("NCCL_NET"));
  assert_null(getenv("NCCL_P2P_DISABLE"));
  /* ...unless the user turned that mode off. */
  setenv("NCCL_MULTI_RANK_GPU_ENABLE", "0", 1);
  assert_int_equal(benchLaunchShareGpu(3, 23203, &mode), 0);
  assert_int_equal(mode, GPU_SHARING_SOCKETS);
  assert_string_equal(getenv("NCCL_HOSTID"), "ulyrank3");
  assert_string_equal(getenv("NCCL_P2P_DISABLE"), "1");
  unsetenv("NCCL_MULTI_RANK_GPU_ENABLE");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unsetenv(names[i]);
}

/*------------------------------------------------------------------------
 * The TCP handoff between processes.
 *----------------------------------------------------------------------*/
/* A child that fetches as rank of nRanks and exits 0 when it got rank 0's
 * id (seed 42), 1 when the fetch failed, 2 when the bytes differ. */
static pid_t startFetcher(const char* host, int port, int rank, int nRanks, int timeout) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    unsigned char got[ID_BYTES], want[ID_BYTES];
    memset(got, 0, sizeof got);
    fillId(want, 42);
    if (benchIdFetch(host, port, rank, nRanks, got, sizeof got, timeout) != 0) _exit(1);
    _exit(memcmp(got, want, sizeof got) == 0 ? 0 : 2);
  }
  assert_true(pid > 0);
  return pid;
}

static int exitCode(pid_t pid) {
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static void test_tcp_handoff(void** state) {
  (void)state;
  int port = 0;
  int listener = benchIdListen(&port);
  assert_true(listener >= 0);
  assert_true(port > 0);
  /* Both address families that a MASTER_ADDR may resolve to. */
  pid_t first = startFetcher("127.0.0.1", port, 1, 3, 20);
  pid_t second = startFetcher("localhost", port, 2, 3, 20);
  unsigned char id[ID_BYTES];
  fillId(id, 42);
  assert_int_equal(benchIdServe(listener, 3, id, sizeof id, 20), 0);
  assert_int_equal(exitCode(first), 0);
  assert_int_equal(exitCode(second), 0);
}

static void test_tcp_handoff_peer_before_rank0(void** state) {
  (void)state;
  /* A rank that starts first retries until rank 0 listens. */
  int port = 0;
  int probe = benchIdListen(&port);
  assert_true(probe >= 0);
  close(probe);
  pid_t early = startFetcher("127.0.0.1", port, 1, 2, 20);
  struct timespec pause = {0, 300 * 1000000L};
  nanosleep(&pause, NULL);
  int listener = benchIdListen(&port);
  assert_true(listener >= 0);
  unsigned char id[ID_BYTES];
  fillId(id, 42);
  assert_int_equal(benchIdServe(listener, 2, id, sizeof id, 20), 0);
  assert_int_equal(exitCode(early), 0);
}

static void test_tcp_handoff_world_size_mismatch(void** state) {
  (void)state;
  int port = 0;
  int listener = benchIdListen(&port);
  assert_true(listener >= 0);
  pid_t wrong = startFetcher("127.0.0.1", port, 1, 3, 20); /* rank 0 has 2 */
  unsigned char id[ID_BYTES];
  fillId(id, 42);
  assert_int_equal(benchIdServe(listener, 2, id, sizeof id, 20), 1);
  assert_int_equal(exitCode(wrong), 1);
}

static void test_tcp_handoff_rank_twice(void** state) {
  (void)state;
  int port = 0;
  int listener = benchIdListen(&port);
  assert_true(listener >= 0);
  pid_t one = startFetcher("127.0.0.1", port, 1, 3, 5);
  pid_t two = startFetcher("127.0.0.1", port, 1, 3, 5);
  unsigned char id[ID_BYTES];
  fillId(id, 42);
  assert_int_equal(benchIdServe(listener, 3, id, sizeof id, 20), 1);
  /* One got the id, the other was told it asked twice. */
  assert_int_equal(exitCode(one) + exitCode(two), 1);
}

/* A plain connection to 127.0.0.1:port, or -1. */
static int connectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in address;
  memset(&address, 0, sizeof address);
  address.sin_family = AF_INET;
  address.sin_port = htons((uint16_t)port);
  address.sin_addr.s_addr = htonl(0x7f000001);
  if (fd < 0 || connect(fd, (struct sockaddr*)&address, sizeof address) != 0) return -1;
  return fd;
}

static void test_tcp_handoff_ignores_strangers_and_times_out(void** state) {
  (void)state;
  int port = 0;
  int listener = benchIdListen(&port);
  assert_true(listener >= 0);
  fflush(stdout);
  fflush(stderr);
  pid_t stranger = fork();
  if (stranger == 0) {
    /* Rank 0's listening socket, inherited, would keep connections queued
     * after rank 0 is done. */
    close(listener);
    /* Not ranks: one connection that says nothing, one that says something
     * else (16 bytes, as much as a request). Both are dropped without the id,
     * the silent one after a few seconds, not at the end of the handoff's
     * timeout; then this process asks properly as rank 1. */
    int silent = connectLoopback(port);
    int talker = connectLoopback(port);
    if (silent < 0 || talker < 0) _exit(3);
    static const char junk[] = "GET / HTTP/1.0\r\n";
    if (write(talker, junk, sizeof junk - 1) != 16) _exit(3);
    char answer[8];
    if (read(silent, answer, sizeof answer) > 0 || read(talker, answer, sizeof answer) != 0)
      _exit(4);
    close(silent);
    close(talker);
    unsigned char got[ID_BYTES], want[ID_BYTES];
    fillId(want, 42);
    if (benchIdFetch("127.0.0.1", port, 1, 2, got, sizeof got, 20) != 0) _exit(1);
    _exit(memcmp(got, want, sizeof got) == 0 ? 0 : 2);
  }
  unsigned char id[ID_BYTES];
  fillId(id, 42);
  struct timespec begin, end;
  clock_gettime(CLOCK_MONOTONIC, &begin);
  assert_int_equal(benchIdServe(listener, 2, id, sizeof id, 60), 0);
  clock_gettime(CLOCK_MONOTONIC, &end);
  assert_true(end.tv_sec - begin.tv_sec < 30);
  assert_int_equal(exitCode(stranger), 0);

  /* Nobody comes: rank 0 gives up after its timeout. */
  listener = benchIdListen(&port);
  assert_true(listener >= 0);
  assert_int_equal(benchIdServe(listener, 2, id, sizeof id, 1), 1);
  /* Nobody listens: a rank gives up after its timeout. */
  unsigned char got[ID_BYTES];
  assert_int_equal(benchIdFetch("127.0.0.1", port, 1, 2, got, sizeof got, 1), 1);
  /* An address that does not resolve fails the same way. */
  assert_int_equal(benchIdFetch("no-such-host.invalid", port, 1, 2, got, sizeof got, 1), 1);
}

/*------------------------------------------------------------------------
 * The file handoff between processes.
 *----------------------------------------------------------------------*/
static char* tempPath(char* directory, size_t bytes) {
  snprintf(directory, bytes, "/tmp/ulysses-launch-test-XXXXXX");
  assert_non_null(mkdtemp(directory));
  return directory;
}

static void test_file_handoff(void** state) {
  (void)state;
  char directory[64], path[128];
  tempPath(directory, sizeof directory);
  snprintf(path, sizeof path, "%s/nccl-id", directory);
  fflush(stdout);
  fflush(stderr);
  /* The reader starts first and polls. */
  pid_t reader = fork();
  if (reader == 0) {
    unsigned char got[ID_BYTES], want[ID_BYTES];
    fillId(want, 9);
    if (benchIdReadFile(path, 4, got, sizeof got, 20) != 0) _exit(1);
    _exit(memcmp(got, want, sizeof got) == 0 ? 0 : 2);
  }
  struct timespec pause = {0, 200 * 1000000L};
  nanosleep(&pause, NULL);
  unsigned char id[ID_BYTES];
  fillId(id, 9);
  assert_int_equal(benchIdWriteFile(path, 4, id, sizeof id), 0);
  assert_int_equal(exitCode(reader), 0);

  /* A file left by an earlier run is refused, not replaced. */
  unsigned char other[ID_BYTES];
  fillId(other, 10);
  assert_int_equal(benchIdWriteFile(path, 4, other, sizeof other), 1);
  unsigned char got[ID_BYTES];
  assert_int_equal(benchIdReadFile(path, 4, got, sizeof got, 1), 0);
  assert_memory_equal(got, id, sizeof id);
  /* Another world size: refused. */
  assert_int_equal(benchIdReadFile(path, 8, got, sizeof got, 1), 1);

  assert_int_equal(benchIdRemoveFile(path), 0);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(benchIdRemoveFile(path), 0); /* already gone: fine */
  /* Nothing there: the reader gives up after its timeout. */
  assert_int_equal(benchIdReadFile(path, 4, got, sizeof got, 1), 1);

  /* A file that is not ours, or cut short. */
  FILE* f = fopen(path, "w");
  assert_non_null(f);
  fputs("not an id", f);
  fclose(f);
  assert_int_equal(benchIdReadFile(path, 4, got, sizeof got, 1), 1);
  assert_int_equal(unlink(path), 0);
  /* No temporary files left behind. */
  assert_int_equal(rmdir(directory), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_environment_is_fork),
      cmocka_unit_test(test_torchrun_environment),
      cmocka_unit_test(test_id_port_and_file_overrides),
      cmocka_unit_test(test_mpi_detection),
      cmocka_unit_test(test_bad_environments),
      cmocka_unit_test(test_mode_names),
      cmocka_unit_test(test_device_choice),
      cmocka_unit_test(test_share_gpu_environment),
      cmocka_unit_test(test_tcp_handoff),
      cmocka_unit_test(test_tcp_handoff_peer_before_rank0),
      cmocka_unit_test(test_tcp_handoff_world_size_mismatch),
      cmocka_unit_test(test_tcp_handoff_rank_twice),
      cmocka_unit_test(test_tcp_handoff_ignores_strangers_and_times_out),
      cmocka_unit_test(test_file_handoff),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
