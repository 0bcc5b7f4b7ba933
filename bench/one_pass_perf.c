/* one_pass_perf: the one-pass kernel's local launch (kernels/one_pass.cu,
 * onePassLocalKernel) on P simulated ranks of one GPU, the setup of
 * tests/gpu/test_one_pass_gpu (tests/gpu/one_pass_device.c). Each rank's
 * launch is timed against a cudaMemcpyAsync device to device of exactly the
 * bytes that launch writes, on the same stream, after the same warm-up, L2
 * flushed before every timed call: the ratio is the kernel's over the copy's,
 * launch by launch, each paying one ramp-up and one tail. Then the ranks'
 * sums, and the P launches back to back against one copy of all their bytes
 * (P ramp-ups and tails against one: what the test timed before). -h for
 * the flags. */
#include <stdlib.h>
#include <string.h>

#include "bench_commit.h"
#include "one_pass_device.h"
#include "util.h"

#define MAX_LIST 16
#define OP_COUNT 3
/* -c checks every P, op and grid at this many rows per rank (or -L's, if
 * fewer) first: the same launch parameters as the timed shape's (they follow
 * from the heads and the buffers' alignment, not the rows), at a cost the
 * host's element-by-element reference can afford; -c 2 also checks the timed
 * shape. Not a power of two, so that the chunks end anywhere. */
#define CHECK_ROWS 333

static const char* const opNames[OP_COUNT] = {"seq2head", "head2seq", "allgather"};
static const ulyssesOp_t ops[OP_COUNT] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq,
                                          ulyssesOpAllGather};

typedef struct {
  int64_t ranks[MAX_LIST]; /* -P */
  int nRankCounts;
  int ops[OP_COUNT]; /* -o: indices into opNames */
  int nOps;
  int64_t grids[MAX_LIST]; /* -G: blocks per launch */
  int nGrids;
  int64_t rowsPerRank;           /* -L */
  int64_t batch, heads, headDim; /* -B -H -D */
  const char* typeName;          /* -d */
  int elementSize;
  int64_t iterations, warmups; /* -n -w */
  int check;                   /* -c */
  int64_t flushMiB;            /* -F */
  int64_t device;              /* -g */
  const char* jsonPath;        /* -j */
} benchConfig;

typedef struct {
  const benchConfig* config;
  benchDevice gpu;
  int launches;    /* rank rows timed */
  double ratioSum; /* their ratios, summed */
  int sums;        /* sum rows timed */
  double sumRatioSum;
  double wrongTotal; /* wrong elements over every check */
} benchContext;

static void printUsage(FILE* out, const char* program) {
  fprintf(out,
          "Usage: %s [flags]\n"
          "Times the one-pass kernel's local launch (onePassLocalKernel) on P simulated\n"
          "ranks of one GPU (every rank's inputs and outputs on it, the peers' outputs\n"
          "written through tables of their addresses, no NCCL), rank by rank, each launch\n"
          "against cudaMemcpyAsync device to device of exactly the bytes it writes, on the\n"
          "same stream, with L2 flushed (a buffer larger than L2 written) before every\n"
          "timed call, outside the CUDA events. One tensor (q-like: no kv heads), exact\n"
          "plan, BSHD, -L rows on every rank. Flags (defaults in brackets):\n"
          "  -P LIST   simulated rank counts, comma-separated, 2 to %d [2,4,8]\n"
          "  -o LIST   ops, comma-separated: seq2head, head2seq, allgather [all three]\n"
          "  -L ROWS   sequence rows on every rank [4096] (K, M: powers of 1024)\n"
          "  -B B      batch [2]\n"
          "  -H H      heads [32]\n"
          "  -D D      head dim [128]\n"
          "  -d TYPE   data type, only its size matters [bf16]:\n"
          "            %s\n"
          "  -G LIST   blocks per launch (of %d threads), comma-separated [%d: the NCCL\n"
          "            launch's fixed grid, ULYSSES_ONE_PASS_BLOCKS]\n"
          "  -n N      timed iterations of each call [20]\n"
          "  -w W      warm-up iterations of each call [5]\n"
          "  -c 0|1|2  first check every rank's outputs, bit-exact, against the CPU\n"
          "            reference, for each P, op and grid, at %d rows per rank (-L's if\n"
          "            fewer; the launches' parameters do not depend on the rows); 2: also\n"
          "            at -L rows (slow: the reference goes element by element) [1]\n"
          "  -F MIB    L2 flush buffer in MiB, raised to 4x L2 if that is larger [256]\n"
          "  -g DEV    CUDA device [0]\n"
          "  -j FILE   also write one JSON object per row to FILE (JSON lines)\n"
          "  -h        this help\n"
          "\n"
          "Rows: rank r, that rank's launch alone; sum, the ranks' medians summed (kernel\n"
          "and memcpy); b2b, the P launches back to back between one pair of events\n"
          "against one memcpy of all their bytes. Columns: word, the instantiation\n"
          "onePassLocalKernel<word> (bytes per load and store; 0: each tensor's own);\n"
          "blocks of the grid; lanes per run and runs per chunk of the launch; bytes,\n"
          "what the launch writes (the sum of its runs' bytes, from the kernel's index\n"
          "map: the memcpy moves as many); times in microseconds, the median of -n calls\n"
          "each between two CUDA events; GB/s = 2 * bytes / time (read plus written, 1 GB\n"
          "= 1e9 bytes); ratio = memcpy time / kernel time.\n"
          "The exit status is 0 when everything ran and checked, 1 otherwise, 2 without\n"
          "a GPU.\n",
          program, HARNESS_MAX_RANKS, benchTypeNames, ULYSSES_ONE_PASS_THREADS,
          ULYSSES_ONE_PASS_BLOCKS, CHECK_ROWS);
}

/* A comma-separated list of op names into config->ops; 0 on success. */
static int parseOps(const char* text, benchConfig* config) {
  config->nOps = 0;
  const char* cursor = text;
  for (;;) {
    size_t length = strcspn(cursor, ",");
    int found = -1;
    for (int k = 0; k < OP_COUNT; k++)
      if (strlen(opNames[k]) == length && strncmp(cursor, opNames[k], length) == 0) found = k;
    if (found < 0 || config->nOps == OP_COUNT) return 1;
    config->ops[config->nOps++] = found;
    if (cursor[length] == '\0') return 0;
    cursor += length + 1;
  }
}

/* 0: parsed; 1: bad arguments; 2: -h printed the help. */
static int parseArgs(int argc, char** argv, benchConfig* config) {
  *config = (benchConfig){.ranks = {2, 4, 8},
                          .nRankCounts = 3,
                          .ops = {0, 1, 2},
                          .nOps = 3,
                          .grids = {ULYSSES_ONE_PASS_BLOCKS},
                          .nGrids = 1,
                          .rowsPerRank = 4096,
                          .batch = 2,
                          .heads = 32,
                          .headDim = 128,
                          .typeName = "bf16",
                          .elementSize = 2,
                          .iterations = 20,
                          .warmups = 5,
                          .check = 1,
                          .flushMiB = 256,
                          .device = 0,
                          .jsonPath = NULL};
  for (int i = 1; i < argc; i++) {
    const char* arg = argv[i];
    if (benchIsHelp(arg)) {
      printUsage(stdout, argv[0]);
      return 2;
    }
    const char* value = benchFlagValue(argc, argv, &i);
    if (value == NULL) return 1;
    int64_t number = 0;
    int bad = 0;
    switch (arg[1]) {
      case 'P':
        config->nRankCounts =
            benchParseIntList(value, 2, HARNESS_MAX_RANKS, config->ranks, MAX_LIST);
        bad = config->nRankCounts == 0;
        break;
      case 'o':
        bad = parseOps(value, config);
        break;
      case 'L':
        bad = benchParseSize(value, &config->rowsPerRank) || config->rowsPerRank < 1;
        break;
      case 'B':
        bad = benchParseInt(value, 1, INT32_MAX, &config->batch);
        break;
      case 'H':
        bad = benchParseInt(value, 1, INT32_MAX, &config->heads);
        break;
      case 'D':
        bad = benchParseInt(value, 1, 1 << 20, &config->headDim);
        break;
      case 'd':
        config->typeName = value;
        config->elementSize = benchTypeSize(value);
        bad = config->elementSize == 0;
        break;
      case 'G':
        config->nGrids = benchParseIntList(value, 1, INT32_MAX, config->grids, MAX_LIST);
        bad = config->nGrids == 0;
        break;
      case 'n':
        bad = benchParseInt(value, 1, 1 << 20, &config->iterations);
        break;
      case 'w':
        bad = benchParseInt(value, 0, 1 << 20, &config->warmups);
        break;
      case 'c':
        bad = benchParseInt(value, 0, 2, &number);
        config->check = (int)number;
        break;
      case 'F':
        bad = benchParseInt(value, 1, 1 << 20, &config->flushMiB);
        break;
      case 'g':
        bad = benchParseInt(value, 0, 1 << 16, &config->device);
        break;
      case 'j':
        config->jsonPath = value;
        break;
      default:
        bad = 1;
        break;
    }
    if (bad) {
      fprintf(stderr, "%s: bad flag or value: -%c %s (-h for help)\n", argv[0], arg[1], value);
      return 1;
    }
  }
  return 0;
}

/*------------------------------------------------------------------------
 * One (P, op): the simulated ranks, their launches and what each writes.
 *----------------------------------------------------------------------*/
typedef struct {
  scenario s;
  exchangeRun run;
  lengthTable table;
  onePassDevice device;
  ulyssesOnePassArgs args[HARNESS_MAX_RANKS]; /* each rank's launch, on the device's table */
  size_t bytes[HARNESS_MAX_RANKS];            /* what each rank's launch writes */
  size_t totalBytes;
  void* copySource; /* the memcpy's buffers, totalBytes each */
  void* copyDestination;
} rankSetup;

static void makeScenario(const benchConfig* config, int nRanks, int64_t rowsPerRank, scenario* s) {
  memset(s, 0, sizeof *s);
  s->nRanks = nRanks;
  for (int r = 0; r < nRanks; r++) s->lengths[r] = s->capacities[r] = rowsPerRank;
  s->nTensors = 1;
  s->layouts[0] = onePassLayout(config->batch, config->heads, config->headDim, config->elementSize,
                                1, ulyssesOrderBSHD);
}

/* The bytes a launch writes: its runs', counted on the host from the index
 * map the kernel walks (args with the host's copy of the length table). */
static size_t launchBytes(const ulyssesOnePassArgs* deviceArgs, const lengthTable* table) {
  ulyssesOnePassArgs args = *deviceArgs;
  args.lengths = table->lengths;
  args.offsets = table->offsets;
  args.slotOffsets = table->slotOffsets;
  size_t bytes = 0;
  for (int t = 0; t < args.nTensors; t++) {
    int64_t runs = ulyssesOnePassRunCount(&args, t);
    for (int64_t k = 0; k < runs; k++) bytes += (size_t)ulyssesOnePassRunAt(&args, t, k).bytes;
  }
  return bytes;
}

/* The device side of setup's run: 0 on success, 1 after saying why, 2 when
 * the GPU lacks the memory (nothing allocated). */
static int setupDevice(rankSetup* setup) {
  const scenario* s = &setup->s;
  size_t sendBytes = 0, recvBytes = 0;
  for (int r = 0; r < s->nRanks; r++) {
    sendBytes += setup->run.send[r][0].bytes;
    recvBytes += setup->run.recv[r][0].bytes;
  }
  size_t freeBytes = 0, totalBytes = 0;
  CUDACHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
  /* Every real row of every output is written once: the launches' bytes sum
   * to the outputs' (exact plan), and the memcpy's two buffers hold as many. */
  if ((double)(sendBytes + 3 * recvBytes) > 0.95 * (double)freeBytes) return 2;
  CUDACHECK(onePassDeviceSetup(&setup->device, &setup->run, &setup->table));
  setup->totalBytes = 0;
  for (int r = 0; r < s->nRanks; r++) {
    onePassDeviceArgs(&setup->run, &setup->device, r, &setup->args[r]);
    setup->bytes[r] = launchBytes(&setup->args[r], &setup->table);
    setup->totalBytes += setup->bytes[r];
  }
  if (setup->totalBytes != recvBytes) {
    benchReportFailure(__FILE__, __LINE__,
                       "the launches write %zu bytes, the outputs hold %zu: the bench's model "
                       "of the exact plan is wrong",
                       setup->totalBytes, recvBytes);
    return 1;
  }
  CUDACHECK(cudaMalloc(&setup->copySource, setup->totalBytes));
  CUDACHECK(cudaMalloc(&setup->copyDestination, setup->totalBytes));
  CUDACHECK(cudaMemset(setup->copySource, 1, setup->totalBytes));
  /* The copies above ran on the legacy default stream, which the bench's
   * non-blocking stream does not wait for. */
  CUDACHECK(cudaDeviceSynchronize());
  return 0;
}

static void teardownSetup(rankSetup* setup) {
  cudaFree(setup->copySource);
  cudaFree(setup->copyDestination);
  onePassDeviceTeardown(&setup->device, &setup->s);
  exchangeTeardown(&setup->run);
}

/*------------------------------------------------------------------------
 * The check: every rank's outputs against the CPU reference.
 *----------------------------------------------------------------------*/
/* Launches every rank once into outputs set to ONE_PASS_UNTOUCHED and counts
 * the elements that differ from expected (exchangeReference's). The plan
 * being exact, the real rows fill every output: no padding to watch. */
static int checkLaunches(benchContext* c, rankSetup* setup, int blocks, void* const* expected,
                         double* wrong) {
  const scenario* s = &setup->s;
  for (int r = 0; r < s->nRanks; r++)
    CUDACHECK(cudaMemsetAsync(setup->device.outputs[r][0], ONE_PASS_UNTOUCHED,
                              setup->run.recv[r][0].bytes, c->gpu.stream));
  for (int r = 0; r < s->nRanks; r++)
    CUDACHECK(ulyssesLaunchOnePassLocal(&setup->args[r], blocks, c->gpu.stream));
  CUDACHECK(cudaStreamSynchronize(c->gpu.stream));
  CUDACHECK(onePassDeviceFetch(&setup->run, &setup->device));
  *wrong = 0;
  for (int r = 0; r < s->nRanks; r++) {
    const guardedBuffer* out = &setup->run.recv[r][0];
    sideRows rows = exchangeSideRows(&setup->run, 0, r, 0, setup->table.lengths);
    for (int64_t i = 0; i < rows.batch * rows.realRows; i++)
      *wrong += benchCountWrong(out->data + rowOffset(&rows, i),
                                   (const unsigned char*)expected[r] + (size_t)i * rows.rowBytes,
                                   rows.rowBytes, (int)s->layouts[0].elementSize);
  }
  return 0;
}

/*------------------------------------------------------------------------
 * Timing.
 *----------------------------------------------------------------------*/
/* One timed kernel call: count ranks' launches from first on, one after
 * another. */
typedef struct {
  const ulyssesOnePassArgs* args;
  int first, count;
  int blocks;
} kernelCall;

typedef struct {
  void* destination;
  const void* source;
  size_t bytes;
} copyCall;

static int launchKernel(const kernelCall* call, cudaStream_t stream) {
  for (int r = call->first; r < call->first + call->count; r++)
    CUDACHECK(ulyssesLaunchOnePassLocal(&call->args[r], call->blocks, stream));
  return 0;
}

static int compareDoubles(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* values, int64_t count) {
  qsort(values, (size_t)count, sizeof *values, compareDoubles);
  return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static int runKernel(const void* call, cudaStream_t stream) { return launchKernel(call, stream); }

/* Median microseconds of the kernel call and of the copy (benchTimeCall). */
static int timeCalls(benchContext* c, const kernelCall* kernel, const copyCall* copy,
                     double* kernelUs, double* copyUs) {
  int64_t n = c->config->iterations;
  benchTimedCall timed = {runKernel, kernel, copy->destination, copy->source, copy->bytes, n,
                          c->config->warmups};
  double* kernelMs = malloc(sizeof(double) * (size_t)n);
  double* copyMs = malloc(sizeof(double) * (size_t)n);
  HOSTCHECK(kernelMs);
  HOSTCHECK(copyMs);
  BENCHCHECK(benchTimeCall(&c->gpu, &timed, kernelMs, copyMs));
  *kernelUs = median(kernelMs, n) * 1000.0;
  *copyUs = median(copyMs, n) * 1000.0;
  free(kernelMs);
  free(copyMs);
  return 0;
}

/*------------------------------------------------------------------------
 * Rows.
 *----------------------------------------------------------------------*/
enum { ROW_RANK, ROW_SUM, ROW_BACK_TO_BACK };
static const char* const rowKinds[] = {"rank", "sum", "b2b"};

typedef struct {
  int nRanks;
  int op;
  int kind;
  int rank;      /* ROW_RANK */
  int wordBytes; /* -1: the ranks' launches differ */
  int blocks;
  int runLanes;      /* -1: they differ */
  int64_t chunkRuns; /* -1: they differ */
  size_t bytes;
  double kernelUs, copyUs;
  double wrong;        /* its grid's checks (every rank's outputs); -1: not checked */
  const char* skipped; /* NULL when timed */
} benchRow;

/* The launch columns of rank r's launch, or of every rank's where they agree. */
static void describeLaunches(const rankSetup* setup, int first, int count, benchRow* row) {
  for (int r = first; r < first + count; r++) {
    const ulyssesOnePassArgs* a = &setup->args[r];
    int wordBytes = a->launchWordBytes;
    if (r == first) {
      row->wordBytes = wordBytes;
      row->runLanes = a->runLanes;
      row->chunkRuns = a->tensors[0].chunkRuns;
      continue;
    }
    if (wordBytes != row->wordBytes) row->wordBytes = -1;
    if (a->runLanes != row->runLanes) row->runLanes = -1;
    if (a->tensors[0].chunkRuns != row->chunkRuns) row->chunkRuns = -1;
  }
}

static void printColumn(long long value) {
  if (value < 0)
    printf(" %6s", "mixed");
  else
    printf(" %6lld", value);
}

/* "name":value, or null where the ranks' launches differ (value < 0). */
static void printJsonLaunchField(FILE* f, const char* name, long long value) {
  if (value < 0)
    fprintf(f, "\"%s\":null,", name);
  else
    fprintf(f, "\"%s\":%lld,", name, value);
}

static void printJsonRow(benchContext* c, const benchRow* row, double ratio) {
  const benchConfig* config = c->config;
  FILE* f = c->gpu.json;
  fprintf(f, "{\"bench\":\"one_pass_perf\",\"gpu\":");
  benchJsonString(f, c->gpu.name);
  fprintf(f, ",\"commit\":");
  benchJsonString(f, ULYSSES_BENCH_COMMIT);
  fprintf(f, ",\"ranks\":%d,\"op\":\"%s\",\"row\":\"%s\",", row->nRanks, opNames[row->op],
          rowKinds[row->kind]);
  if (row->kind == ROW_RANK)
    fprintf(f, "\"rank\":%d,", row->rank);
  else
    fprintf(f, "\"rank\":null,");
  fprintf(f,
          "\"batch\":%lld,\"heads\":%lld,\"head_dim\":%lld,\"dtype\":\"%s\","
          "\"element_size\":%d,\"rows_per_rank\":%lld,\"order\":\"BSHD\",\"mode\":\"exact\","
          "\"kernel\":\"onePassLocalKernel\",\"blocks\":%d,\"threads\":%d,\"bytes\":%zu,"
          "\"flush_bytes\":%zu,\"iterations\":%lld,\"warmups\":%lld,\"statistic\":\"median\",",
          (long long)config->batch, (long long)config->heads, (long long)config->headDim,
          config->typeName, config->elementSize, (long long)config->rowsPerRank, row->blocks,
          ULYSSES_ONE_PASS_THREADS, row->bytes, c->gpu.flushBytes, (long long)config->iterations,
          (long long)config->warmups);
  /* word_bytes: the instantiation, onePassLocalKernel<word_bytes>. */
  printJsonLaunchField(f, "word_bytes", row->wordBytes);
  printJsonLaunchField(f, "run_lanes", row->runLanes);
  printJsonLaunchField(f, "chunk_runs", row->chunkRuns);
  if (row->wrong >= 0)
    fprintf(f, "\"wrong\":%.0f,", row->wrong);
  else
    fprintf(f, "\"wrong\":null,");
  if (row->skipped == NULL)
    fprintf(f,
            "\"skipped\":null,\"kernel_us\":%.3f,\"kernel_gbps\":%.2f,\"memcpy_us\":%.3f,"
            "\"memcpy_gbps\":%.2f,\"ratio\":%.4f}\n",
            row->kernelUs, 2.0 * (double)row->bytes / (row->kernelUs * 1e3), row->copyUs,
            2.0 * (double)row->bytes / (row->copyUs * 1e3), ratio);
  else
    fprintf(f, "\"skipped\":\"%s\"}\n", row->skipped);
  fflush(f);
}

static void printRow(benchContext* c, const benchRow* row) {
  char rank[16];
  if (row->kind == ROW_RANK)
    snprintf(rank, sizeof rank, "%d", row->rank);
  else
    snprintf(rank, sizeof rank, "%s", rowKinds[row->kind]);
  printf(" %4d %9s %5s", row->nRanks, opNames[row->op], rank);
  double ratio = 0;
  if (row->skipped != NULL) {
    printf("  %s\n", row->skipped);
  } else {
    printColumn(row->wordBytes);
    printColumn(row->blocks);
    printColumn(row->runLanes);
    printColumn(row->chunkRuns);
    ratio = row->copyUs / row->kernelUs;
    printf(" %13zu %11.1f %12.1f %11.1f %12.1f %7.3f\n", row->bytes, row->kernelUs,
           2.0 * (double)row->bytes / (row->kernelUs * 1e3), row->copyUs,
           2.0 * (double)row->bytes / (row->copyUs * 1e3), ratio);
    if (row->kind == ROW_RANK) {
      c->launches++;
      c->ratioSum += ratio;
    } else if (row->kind == ROW_SUM) {
      c->sums++;
      c->sumRatioSum += ratio;
    }
  }
  if (c->gpu.json != NULL) printJsonRow(c, row, ratio);
}

/* Every timed row of one grid: each rank's launch, the sum, back to back;
 * wrong: the grid's checks, -1 without. */
static int runGrid(benchContext* c, rankSetup* setup, int op, int blocks, double wrong) {
  int nRanks = setup->s.nRanks;
  benchRow row = {.nRanks = nRanks, .op = op, .blocks = blocks, .wrong = wrong};
  benchRow sum = row;
  sum.kind = ROW_SUM;
  describeLaunches(setup, 0, nRanks, &sum);
  for (int r = 0; r < nRanks; r++) {
    benchRow rankRow = row;
    rankRow.kind = ROW_RANK;
    rankRow.rank = r;
    rankRow.bytes = setup->bytes[r];
    describeLaunches(setup, r, 1, &rankRow);
    const kernelCall kernel = {setup->args, r, 1, blocks};
    const copyCall copy = {setup->copyDestination, setup->copySource, setup->bytes[r]};
    BENCHCHECK(timeCalls(c, &kernel, &copy, &rankRow.kernelUs, &rankRow.copyUs));
    printRow(c, &rankRow);
    sum.bytes += rankRow.bytes;
    sum.kernelUs += rankRow.kernelUs;
    sum.copyUs += rankRow.copyUs;
  }
  printRow(c, &sum);
  benchRow backToBack = sum;
  backToBack.kind = ROW_BACK_TO_BACK;
  const kernelCall kernel = {setup->args, 0, nRanks, blocks};
  const copyCall copy = {setup->copyDestination, setup->copySource, setup->totalBytes};
  BENCHCHECK(timeCalls(c, &kernel, &copy, &backToBack.kernelUs, &backToBack.copyUs));
  printRow(c, &backToBack);
  return 0;
}

/* The simulated ranks of op at rowsPerRank rows each, on the device: 0, 1
 * after saying why, 2 when the GPU lacks the memory (then setup holds
 * nothing). */
static int prepareSetup(benchContext* c, int nRanks, int op, int64_t rowsPerRank,
                        rankSetup* setup) {
  memset(setup, 0, sizeof *setup);
  makeScenario(c->config, nRanks, rowsPerRank, &setup->s);
  /* The library's own message where the shape makes no plan (exchangeSetup
   * would fail a cmocka assertion instead). */
  ulyssesPlan_t plan;
  ULYSSESCHECK(ulyssesPlanCreateExact(&plan, nRanks, 0, setup->s.lengths, 1, setup->s.layouts));
  ULYSSESCHECK(ulyssesPlanDestroy(plan));
  exchangeSetup(&setup->run, &setup->s, ops[op], (uint64_t)(nRanks * OP_COUNT + op));
  if (onePassNeedsHeadSum(&setup->run)) {
    benchReportFailure(__FILE__, __LINE__, "%s needs the head sum: not a one-pass op here",
                       opNames[op]);
    return 1;
  }
  onePassBuildTable(&setup->run, &setup->table);
  int device = setupDevice(setup);
  if (device == 2) exchangeTeardown(&setup->run);
  return device;
}

/* Every grid's launches of setup checked against the CPU reference: adds
 * each grid's wrong elements to wrong[g]. */
static int checkGrids(benchContext* c, rankSetup* setup, int op, double* wrong) {
  const benchConfig* config = c->config;
  void* expected[HARNESS_MAX_RANKS] = {NULL};
  exchangeReference(&setup->run, 0, setup->table.lengths, expected);
  for (int g = 0; g < config->nGrids; g++) {
    double gridWrong = 0;
    BENCHCHECK(checkLaunches(c, setup, (int)config->grids[g], expected, &gridWrong));
    printf("# check P=%d %s, %lld rows per rank, blocks=%lld: %.0f wrong elements\n",
           setup->s.nRanks, opNames[op], (long long)setup->s.lengths[0],
           (long long)config->grids[g], gridWrong);
    wrong[g] += gridWrong;
    c->wrongTotal += gridWrong;
  }
  for (int r = 0; r < setup->s.nRanks; r++) free(expected[r]);
  return 0;
}

static void printSkipped(benchContext* c, int nRanks, int op) {
  benchRow row = {.nRanks = nRanks,
                  .op = op,
                  .kind = ROW_SUM,
                  .wrong = -1,
                  .skipped = "skipped (not enough GPU memory)"};
  printRow(c, &row);
}

static int runOp(benchContext* c, int nRanks, int op) {
  const benchConfig* config = c->config;
  static rankSetup setup;
  double wrong[MAX_LIST];
  for (int g = 0; g < config->nGrids; g++) wrong[g] = config->check ? 0 : -1;
  int64_t checkRows = config->rowsPerRank < CHECK_ROWS ? config->rowsPerRank : CHECK_ROWS;
  if (config->check) {
    int prepared = prepareSetup(c, nRanks, op, checkRows, &setup);
    if (prepared == 1) return 1;
    if (prepared == 0) {
      BENCHCHECK(checkGrids(c, &setup, op, wrong));
      teardownSetup(&setup);
    }
  }
  int prepared = prepareSetup(c, nRanks, op, config->rowsPerRank, &setup);
  if (prepared == 2) printSkipped(c, nRanks, op);
  if (prepared != 0) return prepared == 1;
  if (config->check == 2 && config->rowsPerRank != checkRows)
    BENCHCHECK(checkGrids(c, &setup, op, wrong));
  for (int g = 0; g < config->nGrids; g++)
    BENCHCHECK(runGrid(c, &setup, op, (int)config->grids[g], wrong[g]));
  teardownSetup(&setup);
  return 0;
}

static int run(const benchConfig* config) {
  benchContext c;
  memset(&c, 0, sizeof c);
  c.config = config;
  BENCHCHECK(benchOpenDevice(&c.gpu, config->device, config->flushMiB, config->jsonPath));
  printf(
      "# one_pass_perf: onePassLocalKernel on P simulated ranks of one GPU, each rank's\n"
      "# launch vs cudaMemcpyAsync D2D of the bytes it writes, on the same stream\n");
  benchPrintDevice(&c.gpu);
  /* The header's version: the bench is built from the tree's sources, not
   * against libulysses.so. */
  printf("# ulysses %d.%d.%d, commit %s | CUDA driver %s, runtime %s\n", ULYSSES_MAJOR,
         ULYSSES_MINOR, ULYSSES_PATCH, ULYSSES_BENCH_COMMIT, c.gpu.driverText, c.gpu.runtimeText);
  printf(
      "# batch %lld, heads %lld, head dim %lld, %s (%d bytes), BSHD, exact plan, %lld rows "
      "on every rank\n# %lld warm-up and %lld timed iterations of each call, the median\n",
      (long long)config->batch, (long long)config->heads, (long long)config->headDim,
      config->typeName, config->elementSize, (long long)config->rowsPerRank,
      (long long)config->warmups, (long long)config->iterations);
  printf(
      "# word: onePassLocalKernel<word>; blocks of %d threads; lanes per run; runs per chunk\n"
      "# bytes: what the launch writes (the memcpy moves as many); GB/s = 2 * bytes / time;\n"
      "# ratio = memcpy time / kernel time; sum: the ranks' medians summed; b2b: the P\n"
      "# launches back to back against one memcpy of all their bytes\n",
      ULYSSES_ONE_PASS_THREADS);
  if (config->check)
    printf(
        "# check (-c %d): every rank launched once, each output against the CPU reference,\n"
        "# per P, op and grid, at %lld rows per rank%s\n",
        config->check,
        (long long)(config->rowsPerRank < CHECK_ROWS ? config->rowsPerRank : CHECK_ROWS),
        config->check == 2 ? " and at the timed rows" : "");
  printf("#\n# %4s %9s %5s %6s %6s %6s %6s %13s %11s %12s %11s %12s %7s\n", "P", "op", "rank",
         "word", "blocks", "lanes", "chunk", "bytes", "kernel(us)", "kernel(GB/s)", "memcpy(us)",
         "memcpy(GB/s)", "ratio");
  for (int r = 0; r < config->nRankCounts; r++)
    for (int o = 0; o < config->nOps; o++)
      BENCHCHECK(runOp(&c, (int)config->ranks[r], config->ops[o]));
  if (config->check)
    printf("# Wrong elements       : %.0f %s\n", c.wrongTotal, c.wrongTotal == 0 ? "OK" : "FAILED");
  printf("# Avg ratio per launch : %.3f over %d launches\n",
         c.launches > 0 ? c.ratioSum / c.launches : 0.0, c.launches);
  printf("# Avg ratio of the sums: %.3f over %d sums\n#\n",
         c.sums > 0 ? c.sumRatioSum / c.sums : 0.0, c.sums);
  BENCHCHECK(benchCloseDevice(&c.gpu));
  return c.wrongTotal == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  benchConfig config;
  int parsed = parseArgs(argc, argv, &config);
  if (parsed == 2) return 0;
  if (parsed != 0) return 1;
  if (benchCountGpus("one_pass_perf") == 0) return BENCH_EXIT_NO_GPU;
  return run(&config);
}
