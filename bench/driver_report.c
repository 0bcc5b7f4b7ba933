/* What ulysses_perf prints (driver.h): the header, one line per row of the
 * table, the JSON lines (-j) and the summary. */
#include "driver.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char* benchPathName(ulyssesPath_t path) {
  return path == ulyssesPathOnePass ? "onepass" : "staged";
}

static const char* patternName(benchPattern pattern) {
  static const char* const names[] = {"equal", "skew", "random", "one"};
  return names[pattern];
}

/* Gathers every rank's process, host and GPU into *all (nRanks entries, to
 * free). Ranks on one host with one PCI bus id share a GPU: the launcher's
 * one-GPU mode. */
static int describeRanks(benchContext* c, rankInfo** all) {
  rankInfo* info = &c->info;
  memset(info, 0, sizeof *info);
  info->pid = (int32_t)getpid();
  info->device = c->device;
  if (gethostname(info->host, sizeof info->host - 1) != 0) strcpy(info->host, "?");
  CUDACHECK(cudaDeviceGetPCIBusId(info->busId, sizeof info->busId, c->device));
  struct cudaDeviceProp properties;
  CUDACHECK(cudaGetDeviceProperties(&properties, c->device));
  memcpy(info->name, properties.name, sizeof info->name - 1); /* memset above: terminated */

  size_t allBytes = sizeof(rankInfo) * (size_t)c->nRanks;
  *all = benchHostAlloc(allBytes);
  HOSTCHECK(*all);
  void* deviceAll = NULL;
  CUDACHECK(cudaMalloc(&deviceAll, allBytes + sizeof(rankInfo)));
  void* deviceMine = (unsigned char*)deviceAll + allBytes;
  CUDACHECK(cudaMemcpyAsync(deviceMine, info, sizeof *info, cudaMemcpyHostToDevice, c->stream));
  NCCLCHECK(ncclAllGather(deviceMine, deviceAll, sizeof(rankInfo), ncclUint8, c->nccl, c->stream));
  CUDACHECK(cudaMemcpyAsync(*all, deviceAll, allBytes, cudaMemcpyDeviceToHost, c->stream));
  CUDACHECK(cudaStreamSynchronize(c->stream));
  CUDACHECK(cudaFree(deviceAll));

  c->sharedGpu = 0;
  for (int i = 0; i < c->nRanks; i++)
    for (int j = i + 1; j < c->nRanks; j++)
      if (strcmp((*all)[i].host, (*all)[j].host) == 0 &&
          strcmp((*all)[i].busId, (*all)[j].busId) == 0)
        c->sharedGpu = 1;
  return 0;
}

gpuSharingMode benchSharingMode(const benchContext* c) {
  return gpuSharingChoose(c->ncclVersion, getenv("NCCL_MULTI_RANK_GPU_ENABLE"), NULL);
}

/* Whether the op moves shared kv heads (some layout has queryHeads > 0): its
 * table has the expandKV column. */
static int opGrouped(const benchConfig* config) {
  ulyssesLayout_t layouts[ULYSSES_MAX_TENSORS];
  int nTensors = config->op->layouts(config, layouts);
  for (int t = 0; t < nTensors; t++)
    if (layouts[t].queryHeads > 0) return 1;
  return 0;
}

const char* benchNcclBaselineName(const benchContext* c) {
  if (c->config->op->direction == ulyssesOpAllGather) return "ncclAllGather";
  return c->ncclAlltoAll != NULL ? "ncclAlltoAll" : "ncclSend/ncclRecv";
}

int benchPrintHeader(benchContext* c) {
  const benchConfig* config = c->config;
  int ulyssesVersion = 0, driver = 0, runtime = 0, deviceCount = 0;
  ULYSSESCHECK(ulyssesGetVersion(&ulyssesVersion));
  NCCLCHECK(ncclGetVersion(&c->ncclVersion));
  CUDACHECK(cudaDriverGetVersion(&driver));
  CUDACHECK(cudaRuntimeGetVersion(&runtime));
  CUDACHECK(cudaGetDeviceCount(&deviceCount));
  rankInfo* all = NULL;
  BENCHCHECK(describeRanks(c, &all));
  if (c->rank == 0) {
    char ncclText[32], ncclHeaderText[32], driverText[16], runtimeText[16];
    benchNcclVersionText(c->ncclVersion, ncclText, sizeof ncclText);
    benchNcclVersionText(NCCL_VERSION_CODE, ncclHeaderText, sizeof ncclHeaderText);
    benchCudaVersionText(driver, driverText, sizeof driverText);
    benchCudaVersionText(runtime, runtimeText, sizeof runtimeText);
    printf("# ulysses_perf: %s, %s mode, %s lengths, %s, batch %lld, heads %lld",
           config->op->name, config->capacityMode ? "capacity" : "exact",
           patternName(config->pattern), config->sbhd ? "SBHD" : "BSHD", (long long)config->batch,
           (long long)config->heads);
    if (benchUsesKvHeads(config->op)) printf(" (kv %lld)", (long long)config->kvHeads);
    printf(", head dim %lld, %s (%d bytes)\n", (long long)config->headDim, config->typeName,
           config->elementSize);
    static const char* const planCheckText[] = {"off", "on", "off and on (-k 2)"};
    printf("#  Ltot %lld .. %lld, x%lld; %lld warm-up and %lld timed iterations; check %d; "
           "plan check %s; seed %llu\n",
           (long long)config->minLength, (long long)config->maxLength,
           (long long)config->stepFactor, (long long)config->warmups,
           (long long)config->iterations, config->check, planCheckText[config->checkPlans],
           (unsigned long long)config->seed);
    printf("# ulysses %d.%d.%d | NCCL %s (built with %s) | CUDA driver %s, runtime %s\n",
           ulyssesVersion / 10000, ulyssesVersion / 100 % 100, ulyssesVersion % 100, ncclText,
           ncclHeaderText, driverText, runtimeText);
    printf("# GPU: %s (%d visible to rank 0)\n", c->info.name, deviceCount);
    for (int i = 0; i < c->nRanks; i++)
      printf("#  Rank %3d Pid %7d on %10s device %2d [%s] %s\n", i, (int)all[i].pid, all[i].host,
             (int)all[i].device, all[i].busId, all[i].name);
    printf("# %d rank(s); launch mode: %s; one-GPU shared mode: %s\n", c->nRanks,
           benchLaunchModeName(c->launchMode),
           c->sharedGpu ? gpuSharingName(benchSharingMode(c)) : "no");
    printf("# NCCL baseline (nccl, xnccl): %s of the size column's bytes per rank\n",
           benchNcclBaselineName(c));
    if (c->sharedGpu)
      printf("# NOTE: several ranks share one GPU (%s): these figures\n"
             "#       measure correctness and compare paths, not NVLink speed.\n",
             gpuSharingName(benchSharingMode(c)));
    printf(
        "# Path asked (--path): %s, outputs from %s; the library chooses the path taken\n"
        "#  (the path column, ulyssesGetExchangePath)\n",
        config->onePass ? "onepass" : "staged", config->onePass ? "ulyssesMemAlloc" : "cudaMalloc");
    const char* onePassEnv = getenv("ULYSSES_ONE_PASS");
    if (config->onePass && (onePassEnv == NULL || strcmp(onePassEnv, "1") != 0))
      printf(
          "# NOTE: ULYSSES_ONE_PASS is %s%s%s in rank 0's environment, not 1: the library keeps\n"
          "#       one pass off and every row takes the staged path. Set ULYSSES_ONE_PASS=1\n"
          "#       for every rank to let it choose one pass (the bench never sets it).\n",
          onePassEnv == NULL ? "unset" : "'", onePassEnv == NULL ? "" : onePassEnv,
          onePassEnv == NULL ? "" : "'");
    printf("#\n#%11s %14s %12s %6s %10s %9s %9s %12s %12s %14s %14s %10s %7s", "length", "size(B)",
           "count", "type", "time(us)", "min(us)", "avg(us)", "algbw(GB/s)", "busbw(GB/s)",
           "wire(B)", "padded(B)", "nccl(us)", "xnccl");
    if (opGrouped(config)) printf(" %14s", "expandKV(B)");
    if (config->checkPlans == 2) printf(" %10s %7s", "check(us)", "ratio");
    printf(" %7s %8s\n", "path", "#wrong");
  }
  free(all);
  return 0;
}

static void writeJson(benchContext* c, const benchRow* row, const rowResult* r) {
  const benchConfig* config = c->config;
  FILE* f = c->json;
  char ncclText[32];
  benchNcclVersionText(c->ncclVersion, ncclText, sizeof ncclText);
  fprintf(f,
          "{\"bench\":\"ulysses_perf\",\"op\":\"%s\",\"mode\":\"%s\",\"pattern\":\"%s\","
          "\"order\":\"%s\",\"ranks\":%d,\"launch\":\"%s\",\"shared_gpu\":%s,"
          "\"gpu_sharing\":\"%s\",\"gpu\":",
          config->op->name, config->capacityMode ? "capacity" : "exact",
          patternName(config->pattern), config->sbhd ? "sbhd" : "bshd", c->nRanks,
          benchLaunchModeName(c->launchMode), c->sharedGpu ? "true" : "false",
          !c->sharedGpu                        ? "none"
          : benchSharingMode(c) == GPU_SHARING_P2P ? "p2p"
                                               : "sockets");
  benchJsonString(f, c->info.name);
  fprintf(f, ",\"nccl\":\"%s\",\"batch\":%lld,\"heads\":%lld,", ncclText, (long long)config->batch,
          (long long)config->heads);
  if (benchUsesKvHeads(config->op))
    fprintf(f, "\"kv_heads\":%lld,", (long long)config->kvHeads);
  fprintf(f, "\"head_dim\":%lld,\"dtype\":\"%s\",\"element_size\":%d,\"total_length\":%lld,"
             "\"max_length\":%lld,\"lengths\":[",
          (long long)config->headDim, config->typeName, config->elementSize,
          (long long)row->totalLength, (long long)row->maxLength);
  for (int rank = 0; rank < c->nRanks; rank++)
    fprintf(f, "%s%lld", rank ? "," : "", (long long)row->lengths[rank]);
  fprintf(f,
          "],\"bytes\":%.1f,\"count\":%.1f,\"iterations\":%lld,\"warmups\":%lld,"
          "\"time_us\":%.3f,\"time_min_us\":%.3f,\"time_avg_us\":%.3f,\"time_max_us\":%.3f,"
          "\"algbw_gbps\":%.4f,\"busbw_gbps\":%.4f,\"wire_bytes\":%.1f,"
          "\"padded_bytes\":%.1f,",
          r->bytes, r->bytes / config->elementSize, (long long)config->iterations,
          (long long)config->warmups, r->slowest, r->minTime, r->avgTime, r->slowest, r->algbw,
          r->busbw, r->wire, r->padded);
  fprintf(f, "\"nccl_op\":\"%s\",\"nccl_bytes\":%.1f,\"nccl_time_us\":%.3f,\"nccl_ratio\":%.4f,",
          benchNcclBaselineName(c), r->ncclBytes, r->ncclTime,
          r->ncclTime > 0 ? r->slowest / r->ncclTime : 0.0);
  if (row->grouped) fprintf(f, "\"expand_kv_bytes\":%.1f,", r->expandWire);
  fprintf(f, "\"check_plans\":%d,\"path_requested\":\"%s\",\"path\":\"%s\",\"path_reason\":",
          config->checkPlans, config->onePass ? "onepass" : "staged", benchPathName(row->path));
  benchJsonString(f, row->pathReason);
  fputc(',', f);
  if (config->checkPlans == 2)
    fprintf(f, "\"time_checked_us\":%.3f,\"check_overhead_us\":%.3f,\"check_ratio\":%.4f,",
            r->slowestChecked, r->slowestChecked - r->slowest,
            r->slowest > 0 ? r->slowestChecked / r->slowest : 0.0);
  fprintf(f, "\"checked\":%s,\"wrong\":", r->checked ? "true" : "false");
  if (r->checked)
    fprintf(f, "%.0f}\n", r->wrong);
  else
    fprintf(f, "null}\n");
  fflush(f);
}

void benchPrintRow(benchContext* c, const benchRow* row, const rowResult* r) {
  const benchConfig* config = c->config;
  int both = config->checkPlans == 2;
  int64_t totalLength = row->totalLength;
  double overhead = r->slowestChecked - r->slowest;
  double ratio = r->slowest > 0 ? r->slowestChecked / r->slowest : 0;
  double ncclRatio = r->ncclTime > 0 ? r->slowest / r->ncclTime : 0;
  if (c->lastPathReason == NULL || strcmp(c->lastPathReason, row->pathReason) != 0) {
    if (config->onePass && row->path != ulyssesPathOnePass)
      printf(
          "# NOTE: --path onepass was asked, but from Ltot %lld the library takes the staged\n"
          "#       path: %s\n",
          (long long)totalLength, row->pathReason);
    else
      printf("# From Ltot %lld the %s path: %s\n", (long long)totalLength, benchPathName(row->path),
             row->pathReason);
    c->lastPathReason = row->pathReason;
  }
  char wrongText[32];
  if (r->checked) snprintf(wrongText, sizeof wrongText, "%.0f", r->wrong);
  else snprintf(wrongText, sizeof wrongText, "%s", config->check ? "skip" : "N/A");
  printf(" %11lld %14.0f %12.0f %6s %10.1f %9.1f %9.1f %12.2f %12.2f %14.0f %14.0f %10.1f %7.3f",
         (long long)totalLength, r->bytes, r->bytes / config->elementSize, config->typeName,
         r->slowest, r->minTime, r->avgTime, r->algbw, r->busbw, r->wire, r->padded, r->ncclTime,
         ncclRatio);
  if (row->grouped) printf(" %14.0f", r->expandWire);
  if (both) printf(" %10.1f %7.3f", overhead, ratio);
  printf(" %7s %8s\n", benchPathName(row->path), wrongText);
  if (c->json != NULL) writeJson(c, row, r);
}

void benchPrintSummary(const benchContext* c) {
  const benchConfig* config = c->config;
  if (config->check)
    printf("# Rows checked         : %d of %d\n# Wrong elements       : %.0f %s\n", c->rowsChecked,
           c->rows, c->wrongTotal, c->wrongTotal == 0 ? "OK" : "FAILED");
  printf("# Avg bus bandwidth    : %g\n", c->rows > 0 ? c->busBandwidthSum / c->rows : 0.0);
  printf("# Avg time / NCCL's    : %g (%s)\n", c->rows > 0 ? c->ncclRatioSum / c->rows : 0.0,
         benchNcclBaselineName(c));
  if (config->checkPlans == 2)
    printf("# Avg plan check       : %g us per call, ratio %g\n",
           c->rows > 0 ? c->checkOverheadSum / c->rows : 0.0,
           c->rows > 0 ? c->checkRatioSum / c->rows : 0.0);
  printf("# Rows in one pass     : %d of %d (--path %s)\n", c->onePassRows, c->rows,
         config->onePass ? "onepass" : "staged");
  if (c->sharedGpu)
    printf("# (one-GPU shared mode, %s: correctness, not speed)\n",
           gpuSharingName(benchSharingMode(c)));
  printf("#\n");
}
