#include "common.h"

#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher.h"

extern char** environ;

/* -c 1 checks a row only when its tensors, gathered over every rank, total at
 * most this: each rank process then builds every rank's input and output on
 * its CPU (about 1 s per 512 MiB). */
#define BENCH_CHECK_MAX_BYTES ((double)((int64_t)1 << 30))
/* The byte every output is set to before the checked call, so that an
 * element the library never wrote is counted as wrong. */
#define BENCH_POISON 0xA5
/* The byte of the padding rows of every input (capacity mode), which the
 * library must never read as data. */
#define BENCH_INPUT_PADDING 0x5A

/*------------------------------------------------------------------------
 * Help and arguments.
 *----------------------------------------------------------------------*/
static void printUsage(FILE* out, const char* program, const benchOp* const* ops, int nOps) {
  fprintf(out,
          "Usage: %s [flags]                       (fork mode: starts P ranks itself)\n"
          "       mpirun -np N %s [flags]          (MPI mode)\n"
          "       torchrun --nproc-per-node N --no-python %s [flags]\n"
          "                                         (env mode: any launcher that sets RANK,\n"
          "                                         WORLD_SIZE and LOCAL_RANK)\n"
          "Times one ulysses exchange over P rank processes, one row per total sequence\n"
          "length, the way nccl-tests times a collective, and NCCL's own all-to-all (or\n"
          "all-gather) of the same bytes beside it. Flags (defaults in brackets):\n"
          "  -p P        fork mode: rank processes [the number of GPUs]; with fewer GPUs than\n"
          "              ranks the ranks share GPUs (P2P from NCCL 2.30, else sockets): that\n"
          "              measures correctness, not speed (MPI and env modes: the launcher's\n"
          "              rank count; -p, if given, must equal it)\n"
          "  -b LEN      smallest total sequence length Ltot, all ranks together [1K]\n"
          "              (K, M, G: powers of 1024)\n"
          "  -e LEN      largest total sequence length [64K]\n"
          "  -f F        factor between successive lengths [2]\n"
          "  -B B        batch [1]\n"
          "  -H H        heads [32]\n"
          "  -D D        head dim [128]\n"
          "  -G G        heads of k and v for -o multi, gqa and gqa_bwd (q keeps H; gqa:\n"
          "              the kv heads, H a multiple of G) [max(1, H/4)]\n"
          "  -d TYPE     data type [bf16]: only its size matters, except for gqa and\n"
          "              gqa_bwd, which take bf16, fp16 (half) or fp32 (float) only (the kv\n"
          "              tensors' dataType, which gqa_bwd sums replicas in); all names:\n"
          "              %s\n"
          "  -o OP       operation [seq2head]:\n",
          program, program, program, benchTypeNames);
  for (int i = 0; i < nOps; i++)
    fprintf(out, "              %-10s %s\n", ops[i]->name, ops[i]->summary);
  fprintf(out,
          "  -m MODE     exact: every rank's length known on the host, only real rows\n"
          "              travel; capacity: each rank's capacity is the longest slice and\n"
          "              slots travel padded to it, lengths read on the device; every\n"
          "              tensor has capacity rows, BSHD [B, C, H, D] with each batch\n"
          "              entry's real rows first (SBHD: the real rows are the prefix)\n"
          "              [exact]\n"
          "  -l PATTERN  how Ltot is split over the ranks [equal]: equal; skew (L_r\n"
          "              proportional to r + 1); random (weights from -s); one (rank 0\n"
          "              holds half of Ltot, the others share the rest)\n"
          "  -s SEED     seed of -l random and of the data [1]\n"
          "  -O ORDER    bshd ([B, L, H, D]) or sbhd ([L, B, H, D]) [bshd]\n"
          "  -n N        timed iterations [20]\n"
          "  -w W        warm-up iterations [5]\n"
          "  -c 0|1      compare every rank's output with the CPU reference [1] (capacity\n"
          "              mode: inputs are the dense reference inputs scattered into the\n"
          "              padded layout, padding filled with 0x5A; only the real rows of\n"
          "              outputs are compared); rows whose tensors total more than 1 GiB\n"
          "              gathered print 'skip'. gqa, gqa_bwd: k and v hold finite floats of\n"
          "              -d (refFillFloats) and are compared bit for bit with\n"
          "              refGqaSeqToHead / refGqaHeadToSeq, q with the plain reference\n"
          "  -k 0|1|2    the library's plan check (ulyssesConfig_t.checkPlans: every call\n"
          "              first all-gathers a fingerprint of its plan and synchronises the\n"
          "              host to compare them) [0]: 0 off, 1 on, both overriding the\n"
          "              environment's ULYSSES_CHECK; 2 times every row twice, check off\n"
          "              then on (two ulyssesComms on the one NCCL communicator, the same\n"
          "              plan and buffers), and adds the columns check and ratio; -c 1 then\n"
          "              compares the outputs of both\n"
          "  -j FILE     also write one JSON object per row to FILE (JSON lines)\n"
          "  -T SEC      kill every rank after SEC seconds [300] (MPI and env modes: each\n"
          "              rank ends itself)\n"
          "  -L MODE     launch mode [auto]: auto, fork, mpi or env (below)\n"
          "  --path P    the outputs to exchange into [staged]: staged, from cudaMalloc;\n"
          "              onepass, from the collective ulyssesMemAlloc (ncclMemAlloc, an NCCL\n"
          "              symmetric window where the comm can take one pass; each tensor's\n"
          "              output the size of the largest rank's), so\n"
          "              that the library may move the data in one kernel over NVLink\n"
          "              (docs/one-pass.md). The library chooses the path, not this flag:\n"
          "              one pass needs ULYSSES_ONE_PASS=1 in every rank's environment\n"
          "              (the bench never sets it) and every rank reachable by load and\n"
          "              store; the path column says what each row takes and rank 0 prints\n"
          "              the library's reason (ulyssesGetExchangePath). A failed\n"
          "              ulyssesMemAlloc ends the run (exit 1). Also --path=P; not with\n"
          "              -k 2 (its second comm would not own the outputs)\n"
          "  -h          this help\n"
          "\n"
          "Launch modes (-L auto: env when RANK and WORLD_SIZE are set, else mpi when an\n"
          "MPI launcher's variables are, else fork):\n"
          "  fork  this process starts P rank processes on this host and hands them the\n"
          "        NCCL id through a file; one host only\n"
          "  mpi   under mpirun or srun --mpi (built with Meson's -Dmpi): rank and size from\n"
          "        MPI, the NCCL id broadcast through MPI, local rank i of a host on its GPU\n"
          "        i (as nccl-tests; i modulo the GPUs it sees); across nodes\n"
          "  env   RANK, WORLD_SIZE and LOCAL_RANK (torchrun sets them; under srun:\n"
          "        RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID),\n"
          "        LOCAL_WORLD_SIZE if known, local rank i on GPU i; the NCCL id from rank 0\n"
          "        over TCP at MASTER_ADDR, port MASTER_PORT + 1 (torchrun's own store holds\n"
          "        MASTER_PORT; ULYSSES_ID_PORT overrides), or, with ULYSSES_ID_FILE set,\n"
          "        through that file on a file system every rank sees (it must not exist\n"
          "        before the run; rank 0 removes it once all ranks have joined)\n"
          "  Ranks of a host that land on one GPU share it, as fork mode does: over P2P\n"
          "  (NCCL_MULTI_RANK_GPU_ENABLE=1) where the loaded NCCL is 2.30 or newer, else over\n"
          "  loopback sockets, one NCCL host id per rank; NCCL_MULTI_RANK_GPU_ENABLE=0 asks for\n"
          "  sockets. Correctness, not speed. mpi: ranks\n"
          "  whose devices have the same PCI bus id; env: more ranks (LOCAL_WORLD_SIZE)\n"
          "  than visible GPUs, so every rank must see all of its host's GPUs.\n"
          "\n"
          "Columns, one row per Ltot:\n"
          "  length   Ltot, the total sequence length\n"
          "  size     bytes credited to one rank: for the all-to-all ops the mean rank's\n"
          "           sequence-side tensor B*Ltot*T*H*D*E/P (every rank's send buffer\n"
          "           when lengths are equal, as nccl-tests' alltoall), summed over\n"
          "           the tensors (multi, gqa, gqa_bwd: B*Ltot*D*E*(H+2G)/P, the kv\n"
          "           tensors counted once with their G heads, replicas not counted);\n"
          "           for allgather the gathered tensor B*Ltot*T*H*D*E (as nccl-tests'\n"
          "           allgather)\n"
          "  count    size / element size\n"
          "  time     microseconds per call: -n calls back to back after -w warm-ups,\n"
          "           timed with CUDA events on each rank; the slowest rank's time\n"
          "  min avg  the fastest rank's time and the mean over ranks (nccl-tests' -a 2 and\n"
          "           -a 1); time - min is how long ranks wait for the slowest\n"
          "  algbw    size / time, GB/s (1e9 bytes)\n"
          "  busbw    algbw * (P-1)/P, nccl-tests' bus bandwidth for all-to-all and\n"
          "           all-gather: a rank's own share never leaves its GPU\n"
          "  wire     bytes each rank receives through NCCL, its own message included,\n"
          "           mean over ranks: the real rows in exact mode, the slots padded to\n"
          "           capacity in capacity mode (gqa: each replica of a shared kv head\n"
          "           counts)\n"
          "  padded   the same for the padded PyTorch reference, which pads every slice\n"
          "           to the longest and sends P*maxLen rows (the same heads, kv replicas\n"
          "           included); padded - wire is what the padding costs on the wire\n"
          "  nccl     NCCL's own collective of the size column's bytes per rank, equal\n"
          "           split, timed the same way (slowest rank): ncclAlltoAll where the\n"
          "           runtime has it, else grouped ncclSend/ncclRecv per peer (what\n"
          "           nccl-tests' alltoall_perf times); ncclAllGather for -o allgather;\n"
          "           each rank's share rounded down to whole elements\n"
          "  xnccl    time / nccl: what the exchange costs over NCCL's raw collective of\n"
          "           the same bytes (its local passes, several tensors, unequal lengths);\n"
          "           1.0 would be no cost at all\n"
          "  expandKV gqa and gqa_bwd only: wire for the same call with k and v expanded\n"
          "           to H heads first (repeat_kv / expandKV to Hq, then the plain split\n"
          "           of H heads: each kv head travels H/G times); expandKV - wire is what\n"
          "           sharing kv heads saves. (Repeating kv only to P heads, where G < P,\n"
          "           G divides P and P divides H, would send what the library sends.)\n"
          "  check    -k 2 only: the plan check's overhead per call, microseconds: the\n"
          "           slowest rank's time with the check on minus the slowest rank's time\n"
          "           with it off, timed one after the other (noise can make it negative;\n"
          "           time, algbw and busbw are the check-off figures; -k 1: they include\n"
          "           the check)\n"
          "  ratio    -k 2 only: time with the check on / time with it off\n"
          "  path     the path the library says the row's calls take, staged (pack,\n"
          "           NCCL, unpack) or onepass: ulyssesGetExchangePath on every rank (they\n"
          "           must agree, or the row fails before its first call)\n"
          "  #wrong   elements that differ from the CPU reference, summed over ranks\n"
          "           (N/A with -c 0; skip when the row is too large to check; -k 2: the\n"
          "           check-off and check-on outputs' together)\n"
          "The exit status is 0 when every rank ran and nothing was wrong, 1 otherwise,\n"
          "2 without a GPU.\n");
}

/* Every flag takes a value, except -h. */
static int setFlag(benchConfig* config, char flag, const char* value, const benchOp* const* ops,
                   int nOps) {
  int64_t number = 0;
  switch (flag) {
    case 'p':
      if (benchParseInt(value, 1, 4096, &number)) return 1;
      config->nRanks = (int)number;
      return 0;
    case 'b': return benchParseSize(value, &config->minLength) || config->minLength < 1;
    case 'e': return benchParseSize(value, &config->maxLength) || config->maxLength < 1;
    case 'f': return benchParseInt(value, 2, 1 << 20, &config->stepFactor);
    case 'B': return benchParseSize(value, &config->batch) || config->batch < 1;
    case 'H': return benchParseInt(value, 1, INT32_MAX, &config->heads);
    case 'D': return benchParseSize(value, &config->headDim) || config->headDim < 1;
    case 'G': return benchParseInt(value, 1, INT32_MAX, &config->kvHeads);
    case 'd':
      config->typeName = value;
      config->elementSize = benchTypeSize(value);
      return config->elementSize == 0;
    case 'o':
      for (int i = 0; i < nOps; i++)
        if (strcmp(value, ops[i]->name) == 0) {
          config->op = ops[i];
          return 0;
        }
      return 1;
    case 'm':
      if (strcmp(value, "exact") == 0) config->capacityMode = 0;
      else if (strcmp(value, "capacity") == 0) config->capacityMode = 1;
      else return 1;
      return 0;
    case 'l':
      if (strcmp(value, "equal") == 0) config->pattern = BENCH_LENGTHS_EQUAL;
      else if (strcmp(value, "skew") == 0) config->pattern = BENCH_LENGTHS_SKEW;
      else if (strcmp(value, "random") == 0) config->pattern = BENCH_LENGTHS_RANDOM;
      else if (strcmp(value, "one") == 0) config->pattern = BENCH_LENGTHS_ONE;
      else return 1;
      return 0;
    case 's':
      if (benchParseInt(value, 0, INT64_MAX, &number)) return 1;
      config->seed = (uint64_t)number;
      return 0;
    case 'O':
      if (strcmp(value, "bshd") == 0) config->sbhd = 0;
      else if (strcmp(value, "sbhd") == 0) config->sbhd = 1;
      else return 1;
      return 0;
    case 'n': return benchParseInt(value, 1, INT32_MAX, &config->iterations);
    case 'w': return benchParseInt(value, 0, INT32_MAX, &config->warmups);
    case 'c':
      if (benchParseInt(value, 0, 1, &number)) return 1;
      config->check = (int)number;
      return 0;
    case 'k':
      if (benchParseInt(value, 0, 2, &number)) return 1;
      config->checkPlans = (int)number;
      return 0;
    case 'j': config->jsonPath = value; return 0;
    case 'T': return benchParseInt(value, 1, 7 * 24 * 3600, &config->timeoutSeconds);
    case 'L': return benchLaunchParseMode(value, &config->launchMode);
    default: return 1;
  }
}

/* --path's value into config->onePass; 0 on success. */
static int setPath(benchConfig* config, const char* value) {
  if (strcmp(value, "staged") == 0)
    config->onePass = 0;
  else if (strcmp(value, "onepass") == 0)
    config->onePass = 1;
  else
    return 1;
  return 0;
}

static int isLauncherFlag(const char* arg) {
  return strcmp(arg, "--rank") == 0 || strcmp(arg, "--nranks") == 0 ||
         strcmp(arg, "--id-file") == 0;
}

/* 0: parsed; 1: bad arguments (said why); 2: -h printed the help. */
static int parseArgs(int argc, char** argv, const benchOp* const* ops, int nOps,
                     benchConfig* config) {
  *config = (benchConfig){
      .nRanks = 0, .minLength = 1024, .maxLength = 64 * 1024, .stepFactor = 2, .batch = 1,
      .heads = 32, .headDim = 128, .kvHeads = 0, .typeName = "bf16", .elementSize = 2,
      .op = ops[0], .capacityMode = 0, .pattern = BENCH_LENGTHS_EQUAL, .seed = 1, .sbhd = 0,
      .iterations = 20, .warmups = 5, .check = 1, .checkPlans = 0, .jsonPath = NULL,
      .timeoutSeconds = 300, .launchMode = BENCH_LAUNCH_AUTO};
  for (int i = 1; i < argc; i++) {
    const char* arg = argv[i];
    if (isLauncherFlag(arg)) {
      i++; /* launcherParseRank reads these */
      continue;
    }
    if (strcmp(arg, "--path") == 0 || strncmp(arg, "--path=", 7) == 0) {
      const char* value = arg[6] == '=' ? arg + 7 : (i + 1 < argc ? argv[++i] : NULL);
      if (value == NULL) {
        fprintf(stderr, "%s: --path needs a value: onepass or staged (-h for help)\n", argv[0]);
        return 1;
      }
      if (setPath(config, value)) {
        fprintf(stderr,
                "%s: bad value of --path: '%s'; it must be onepass or staged (-h for help)\n",
                argv[0], value);
        return 1;
      }
      continue;
    }
    if (arg[0] != '-' || arg[1] == '\0') {
      fprintf(stderr, "%s: unexpected argument '%s' (-h for help)\n", argv[0], arg);
      return 1;
    }
    if (arg[1] == 'h' && arg[2] == '\0') {
      printUsage(stdout, argv[0], ops, nOps);
      return 2;
    }
    const char* value = arg[2] != '\0' ? arg + 2 : (i + 1 < argc ? argv[++i] : NULL);
    if (value == NULL) {
      fprintf(stderr, "%s: %s needs a value (-h for help)\n", argv[0], arg);
      return 1;
    }
    if (setFlag(config, arg[1], value, ops, nOps)) {
      fprintf(stderr, "%s: bad flag or value: -%c %s (-h for help)\n", argv[0], arg[1], value);
      return 1;
    }
  }
  if (benchCheckSweep(argv[0], config->minLength, config->maxLength)) return 1;
  if (config->onePass && config->checkPlans == 2) {
    fprintf(stderr,
            "%s: --path onepass with -k 2: the outputs from ulyssesMemAlloc belong to one comm, "
            "and -k 2 times a second one, which would take the staged path; use -k 0 or -k 1\n",
            argv[0]);
    return 1;
  }
  if (config->kvHeads == 0) config->kvHeads = config->heads / 4 > 0 ? config->heads / 4 : 1;
  /* Tensors with shared kv heads need a float type and whole groups. */
  ulyssesLayout_t layouts[ULYSSES_MAX_TENSORS];
  int nTensors = config->op->layouts(config, layouts);
  for (int t = 0; t < nTensors; t++) {
    if (layouts[t].queryHeads == 0) continue;
    if (layouts[t].dataType == ulyssesTypeOpaque) {
      fprintf(stderr,
              "%s: -o %s sums kv gradients as floats: -d must be bf16, fp16 (half) or fp32 "
              "(float), not %s\n",
              argv[0], config->op->name, config->typeName);
      return 1;
    }
    if (layouts[t].queryHeads % layouts[t].heads != 0) {
      fprintf(stderr, "%s: -o %s needs -H (%lld query heads) a multiple of -G (%lld kv heads)\n",
              argv[0], config->op->name, (long long)layouts[t].queryHeads,
              (long long)layouts[t].heads);
      return 1;
    }
  }
  return 0;
}

/*------------------------------------------------------------------------
 * Shapes, lengths and bytes.
 *----------------------------------------------------------------------*/
ulyssesLayout_t benchLayout(const benchConfig* config, int64_t heads, int packed) {
  ulyssesLayout_t layout;
  memset(&layout, 0, sizeof layout);
  layout.size = sizeof layout;
  layout.batch = config->batch;
  layout.heads = heads;
  layout.headDim = config->headDim;
  layout.elementSize = config->elementSize;
  layout.packed = packed;
  layout.order = config->sbhd ? ulyssesOrderSBHD : ulyssesOrderBSHD;
  return layout;
}

int benchUsesKvHeads(const benchOp* op) {
  return op == &benchOpMulti || op == &benchOpGqa || op == &benchOpGqaBackward;
}

ulyssesDataType_t benchDataType(const char* typeName) {
  if (strcmp(typeName, "bf16") == 0) return ulyssesTypeBfloat16;
  if (strcmp(typeName, "fp16") == 0 || strcmp(typeName, "half") == 0) return ulyssesTypeFloat16;
  if (strcmp(typeName, "fp32") == 0 || strcmp(typeName, "float") == 0) return ulyssesTypeFloat32;
  return ulyssesTypeOpaque;
}

double benchAllToAllBytes(double gatheredBytes, int nRanks) { return gatheredBytes / nRanks; }

double benchAllGatherBytes(double gatheredBytes, int nRanks) {
  (void)nRanks;
  return gatheredBytes;
}

/* Shares of totalLength proportional to weights; the rounding remainder (less
 * than nRanks rows) goes one row each to the first ranks. */
static void splitByWeights(int64_t totalLength, const int64_t* weights, int nRanks,
                           int64_t* lengths) {
  int64_t weightSum = 0, assigned = 0;
  for (int r = 0; r < nRanks; r++) weightSum += weights[r];
  for (int r = 0; r < nRanks; r++) {
    lengths[r] = (int64_t)((__int128)totalLength * weights[r] / weightSum);
    assigned += lengths[r];
  }
  for (int r = 0; assigned < totalLength; r = (r + 1) % nRanks, assigned++) lengths[r]++;
}

int benchLengths(benchPattern pattern, uint64_t seed, int64_t totalLength, int nRanks,
                 int64_t* lengths) {
  int64_t* weights = malloc(sizeof(int64_t) * (size_t)nRanks);
  HOSTCHECK(weights);
  uint64_t state = seed;
  for (int r = 0; r < nRanks; r++) {
    switch (pattern) {
      case BENCH_LENGTHS_SKEW: weights[r] = r + 1; break;
      case BENCH_LENGTHS_RANDOM: weights[r] = 1 + (int64_t)(refRandom(&state) % 1000); break;
      case BENCH_LENGTHS_ONE: weights[r] = r == 0 && nRanks > 1 ? nRanks - 1 : 1; break;
      default: weights[r] = 1; break;
    }
  }
  splitByWeights(totalLength, weights, nRanks, lengths);
  free(weights);
  return 0;
}

static const char* pathName(ulyssesPath_t path) {
  return path == ulyssesPathOnePass ? "onepass" : "staged";
}

static const char* patternName(benchPattern pattern) {
  static const char* const names[] = {"equal", "skew", "random", "one"};
  return names[pattern];
}

/* A tensor's shape for the references: kv is the plain shape; queryHeads
 * and type matter only where queryHeads > 0 (shared kv heads). */
static refGqaShape shapeOf(const ulyssesLayout_t* layout, int nRanks, const int64_t* lengths) {
  refGqaShape shape;
  memset(&shape, 0, sizeof shape);
  shape.kv.nRanks = nRanks;
  shape.kv.lengths = lengths;
  shape.kv.batch = layout->batch;
  shape.kv.heads = layout->heads;
  shape.kv.headDim = layout->headDim;
  shape.kv.elementSize = layout->elementSize;
  shape.kv.packed = layout->packed;
  shape.kv.sbhd = layout->order == ulyssesOrderSBHD;
  shape.queryHeads = layout->queryHeads;
  shape.type = layout->dataType == ulyssesTypeFloat32   ? REF_FLOAT32
               : layout->dataType == ulyssesTypeFloat16 ? REF_FLOAT16
                                                        : REF_BFLOAT16;
  return shape;
}

/* The heads of rank's head-side tensor: its group of the plain split, or the
 * kv heads its query heads read. */
static int64_t headSideHeads(const refGqaShape* shape, int rank) {
  return shape->queryHeads > 0 ? refKvCount(shape, rank) : refHeadCount(&shape->kv, rank);
}

/* The head-side heads of every rank, summed: H for a plain tensor, more for
 * kv heads that several ranks share (each replica counts). */
static int64_t headSideHeadsSum(const refGqaShape* shape) {
  int64_t sum = 0;
  for (int j = 0; j < shape->kv.nRanks; j++) sum += headSideHeads(shape, j);
  return sum;
}

/* The bytes of rank's send (isSend) or receive tensor of direction. */
static size_t sideBytes(ulyssesOp_t direction, int isSend, const refGqaShape* gqaShape, int rank) {
  const refShape* shape = &gqaShape->kv;
  if (direction == ulyssesOpAllGather)
    return isSend ? refSeqBytes(shape, rank) : refGatherBytes(shape);
  int sequenceSide = (direction == ulyssesOpSeqToHead) == (isSend != 0);
  if (sequenceSide) return refSeqBytes(shape, rank);
  return (size_t)(shape->batch * refTotalLength(shape) * shape->packed *
                  headSideHeads(gqaShape, rank) * shape->headDim * shape->elementSize);
}

/* A dense tensor's data: finite floats of its dataType for shared kv heads
 * (head -> seq sums them), else bytes of a pattern. */
static void fillDense(const refGqaShape* shape, void* buffer, size_t bytes, uint64_t seed) {
  if (shape->queryHeads > 0)
    refFillFloats(buffer, bytes / (size_t)shape->kv.elementSize, shape->type, seed);
  else
    refFillPattern(buffer, bytes, seed);
}

static uint64_t dataSeed(uint64_t seed, int rank, int tensor) {
  return seed * 0x9E3779B97F4A7C15ull + (uint64_t)rank * ULYSSES_MAX_TENSORS + (uint64_t)tensor + 1;
}

static void* hostAlloc(size_t bytes) { return malloc(bytes > 0 ? bytes : 1); }

static int deviceAlloc(void** pointer, size_t bytes) {
  *pointer = NULL;
  if (bytes > 0) CUDACHECK(cudaMalloc(pointer, bytes));
  return 0;
}

/*------------------------------------------------------------------------
 * A rank.
 *----------------------------------------------------------------------*/
typedef struct {
  char host[64];
  char busId[32];
  char name[256];
  int32_t pid;
  int32_t device;
} rankInfo;

typedef struct {
  const benchConfig* config;
  int rank;
  int nRanks;
  int device;
  ncclComm_t nccl;
  ulyssesComm_t comm;        /* config.checkPlans = -k, or 0 with -k 2 */
  ulyssesComm_t checkedComm; /* -k 2: a second comm on nccl with config.checkPlans = 1 */
  cudaStream_t stream;
  double* deviceStats; /* a few doubles for the reductions over ranks */
  FILE* json;
  int sharedGpu;
  rankInfo info;
  int ncclVersion;
  int rows;
  int rowsChecked;
  double busBandwidthSum;
  double wrongTotal;
  double checkOverheadSum; /* -k 2: microseconds per call, summed over rows */
  double checkRatioSum;
  double ncclRatioSum;
  int onePassRows;            /* rows whose exchange took one pass */
  const char* lastPathReason; /* rank 0: the reason printed last, NULL before the first row */
  benchLaunchMode launchMode; /* fork, mpi or env */
  /* ncclAlltoAll where the loaded NCCL exports it (2.28 and later), else NULL. */
  ncclResult_t (*ncclAlltoAll)(const void*, void*, size_t, ncclDataType_t, ncclComm_t,
                               cudaStream_t);
} benchContext;

/* The most doubles one allReduce carries: a row's output sizes, one per tensor. */
#define BENCH_STATS ULYSSES_MAX_TENSORS
/* "0000:00:00.0" with room to spare. */
#define BENCH_BUS_ID_BYTES 64

/* values[0..count) reduced over every rank with op, in place. Synchronises. */
static int allReduce(benchContext* c, double* values, int count, ncclRedOp_t op) {
  CUDACHECK(cudaMemcpyAsync(c->deviceStats, values, sizeof(double) * (size_t)count,
                            cudaMemcpyHostToDevice, c->stream));
  NCCLCHECK(ncclAllReduce(c->deviceStats, c->deviceStats, (size_t)count, ncclDouble, op, c->nccl,
                          c->stream));
  CUDACHECK(cudaMemcpyAsync(values, c->deviceStats, sizeof(double) * (size_t)count,
                            cudaMemcpyDeviceToHost, c->stream));
  CUDACHECK(cudaStreamSynchronize(c->stream));
  return 0;
}

static int barrier(benchContext* c) {
  double one = 1.0;
  return allReduce(c, &one, 1, ncclSum);
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
  *all = hostAlloc(allBytes);
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

/* How ranks sharing a GPU talk: what the launcher (launcher.c, or
 * benchLaunchShareGpu) chose, from the loaded NCCL and the environment it
 * left. */
static gpuSharingMode sharingMode(const benchContext* c) {
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

static const char* ncclBaselineName(const benchContext* c) {
  if (c->config->op->direction == ulyssesOpAllGather) return "ncclAllGather";
  return c->ncclAlltoAll != NULL ? "ncclAlltoAll" : "ncclSend/ncclRecv";
}

static int printHeader(benchContext* c) {
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
           c->sharedGpu ? gpuSharingName(sharingMode(c)) : "no");
    printf("# NCCL baseline (nccl, xnccl): %s of the size column's bytes per rank\n",
           ncclBaselineName(c));
    if (c->sharedGpu)
      printf("# NOTE: several ranks share one GPU (%s): these figures\n"
             "#       measure correctness and compare paths, not NVLink speed.\n",
             gpuSharingName(sharingMode(c)));
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

/*------------------------------------------------------------------------
 * A row.
 *----------------------------------------------------------------------*/
/* Where the real rows of a rank's send (isSend) or receive tensor lie in its
 * buffer: `entries` blocks of `rows` real rows, each block `strideRows` rows
 * after the previous one. Exact mode keeps them dense. Capacity mode gives
 * every tensor capacity rows: a BSHD buffer holds B entries of C rows (C_r on
 * the sequence side, Ctot = sum of capacities on the head side and for the
 * gathered tensor), the real rows (L_r, or Ltot) first in each; SBHD keeps its
 * real rows as one prefix, so it is one block either way. */
typedef struct {
  int64_t entries;
  int64_t rows;
  int64_t strideRows;
  size_t rowBytes;
} realRows;

static realRows realRowsOf(ulyssesOp_t direction, int isSend, const refGqaShape* realGqaShape,
                           const refShape* slotShape, int rank) {
  const refShape* realShape = &realGqaShape->kv;
  int sequenceSide = direction == ulyssesOpAllGather
                         ? isSend
                         : (direction == ulyssesOpSeqToHead) == (isSend != 0);
  int64_t heads = sequenceSide || direction == ulyssesOpAllGather
                      ? realShape->heads
                      : headSideHeads(realGqaShape, rank);
  int64_t length = sequenceSide ? realShape->lengths[rank] : refTotalLength(realShape);
  int64_t capacity = sequenceSide ? slotShape->lengths[rank] : refTotalLength(slotShape);
  realRows r;
  r.rowBytes = (size_t)(realShape->packed * heads * realShape->headDim * realShape->elementSize);
  if (realShape->sbhd) {
    r.entries = 1;
    r.rows = length * realShape->batch;
    r.strideRows = capacity * realShape->batch;
  } else {
    r.entries = realShape->batch;
    r.rows = length;
    r.strideRows = capacity;
  }
  return r;
}

/* The bytes from the buffer's start to the end of its last real row. */
static size_t realRowsSpan(const realRows* r) {
  if (r->entries == 0 || r->rows == 0 || r->rowBytes == 0) return 0;
  return ((size_t)(r->entries - 1) * (size_t)r->strideRows + (size_t)r->rows) * r->rowBytes;
}

/* Copies the real rows between a dense host tensor ([B, L, ...] or
 * [L, B, ...]) and a device buffer laid out as r says: toDevice scatters
 * dense into buffer, else gathers buffer into dense. On stream, synchronised. */
static int copyRealRows(const realRows* r, unsigned char* dense, unsigned char* buffer,
                        int toDevice, cudaStream_t stream) {
  size_t blockBytes = (size_t)r->rows * r->rowBytes;
  if (blockBytes == 0) return 0;
  if (r->rows == r->strideRows) { /* dense already: one copy */
    blockBytes *= (size_t)r->entries;
    if (toDevice)
      CUDACHECK(cudaMemcpyAsync(buffer, dense, blockBytes, cudaMemcpyHostToDevice, stream));
    else
      CUDACHECK(cudaMemcpyAsync(dense, buffer, blockBytes, cudaMemcpyDeviceToHost, stream));
  } else {
    size_t strideBytes = (size_t)r->strideRows * r->rowBytes;
    for (int64_t e = 0; e < r->entries; e++) {
      unsigned char* d = dense + (size_t)e * blockBytes;
      unsigned char* b = buffer + (size_t)e * strideBytes;
      if (toDevice)
        CUDACHECK(cudaMemcpyAsync(b, d, blockBytes, cudaMemcpyHostToDevice, stream));
      else
        CUDACHECK(cudaMemcpyAsync(d, b, blockBytes, cudaMemcpyDeviceToHost, stream));
    }
  }
  CUDACHECK(cudaStreamSynchronize(stream)); /* before dense is freed or read */
  return 0;
}

typedef struct {
  int64_t totalLength;
  int64_t maxLength;
  int64_t* lengths;  /* real lengths */
  int64_t* slots;    /* exact: the lengths; capacity: the capacities */
  int nTensors;
  ulyssesLayout_t layouts[ULYSSES_MAX_TENSORS];
  size_t sendBytes[ULYSSES_MAX_TENSORS]; /* buffer sizes, from ulyssesGetBufferSizes */
  size_t recvBytes[ULYSSES_MAX_TENSORS];
  realRows sendRows[ULYSSES_MAX_TENSORS]; /* where the real rows lie in the buffers */
  realRows recvRows[ULYSSES_MAX_TENSORS];
  int64_t* deviceLocalLength;
  benchCall call;
  double gatheredBytes; /* every tensor gathered over every rank, real lengths */
  double paddedGatheredBytes; /* the same with every slice padded to maxLength */
  double wireBytes;     /* this rank's receive segments through NCCL */
  int grouped;          /* some tensor has shared kv heads (queryHeads > 0) */
  double expandWireBytes; /* wireBytes with kv tensors expanded to queryHeads heads */
  /* --path onepass: the comm whose ulyssesMemAlloc gave recvbuffs (they go
   * back through ulyssesMemFree on it); NULL: they are from cudaMalloc. */
  ulyssesComm_t symmetricComm;
  ulyssesPath_t path;     /* what ulyssesGetExchangePath says the row's calls take */
  const char* pathReason; /* and why (a static string of the library) */
} benchRow;

/* Every fill goes on the bench's stream, which is non-blocking and so not
 * ordered after the legacy default stream that cudaMemset and cudaMemcpy use.
 * The dense input of this rank is scattered into its real rows; the padding
 * rows (capacity mode) get BENCH_INPUT_PADDING, which the library must never
 * read as data. */
static int fillInputs(benchContext* c, benchRow* row) {
  for (int t = 0; t < row->nTensors; t++) {
    void* sendbuff = (void*)(uintptr_t)row->call.sendbuffs[t];
    if (row->sendBytes[t] > 0)
      CUDACHECK(cudaMemsetAsync(sendbuff, BENCH_INPUT_PADDING, row->sendBytes[t], c->stream));
    size_t realBytes = (size_t)row->sendRows[t].entries * (size_t)row->sendRows[t].rows *
                       row->sendRows[t].rowBytes;
    if (realBytes == 0) continue;
    unsigned char* host = hostAlloc(realBytes);
    HOSTCHECK(host);
    refGqaShape shape = shapeOf(&row->layouts[t], c->nRanks, row->lengths);
    fillDense(&shape, host, realBytes, dataSeed(c->config->seed, c->rank, t));
    BENCHCHECK(copyRealRows(&row->sendRows[t], host, sendbuff, 1, c->stream));
    free(host);
  }
  CUDACHECK(cudaStreamSynchronize(c->stream));
  return 0;
}

/* The wire bytes of the same call with every kv tensor expanded to its
 * queryHeads heads and split as a plain tensor (expandKV before the
 * exchange): from a second plan, which is host data only. */
static int expandedWire(benchContext* c, benchRow* row, ulyssesSegment_t* segments) {
  ulyssesLayout_t expanded[ULYSSES_MAX_TENSORS];
  for (int t = 0; t < row->nTensors; t++) {
    expanded[t] = row->layouts[t];
    if (expanded[t].queryHeads > 0) expanded[t].heads = expanded[t].queryHeads;
    expanded[t].queryHeads = 0;
    expanded[t].dataType = ulyssesTypeOpaque;
  }
  ulyssesPlan_t plan = NULL;
  if (c->config->capacityMode)
    ULYSSESCHECK(ulyssesPlanCreateCapacity(&plan, c->nRanks, c->rank, row->slots,
                                           row->deviceLocalLength, row->nTensors, expanded));
  else
    ULYSSESCHECK(ulyssesPlanCreateExact(&plan, c->nRanks, c->rank, row->lengths, row->nTensors,
                                        expanded));
  row->expandWireBytes = 0;
  for (int t = 0; t < row->nTensors; t++) {
    segments[0].size = sizeof(ulyssesSegment_t);
    ULYSSESCHECK(ulyssesGetSegments(plan, c->config->op->direction, t, 0, segments));
    for (int p = 0; p < c->nRanks; p++) row->expandWireBytes += (double)segments[p].bytes;
  }
  ULYSSESCHECK(ulyssesPlanDestroy(plan));
  return 0;
}

/* --path onepass: every output from the collective ulyssesMemAlloc on the
 * row's comm, tensor by tensor on every rank. It takes one size on every rank,
 * so each tensor gets the largest rank's output; a tensor whose output is
 * empty on every rank gets none (a size of 0 is refused; such a tensor keeps
 * the exchange on the staged path, which the path column then shows). */
static int allocateSymmetricOutputs(benchContext* c, benchRow* row) {
  double largest[BENCH_STATS];
  for (int t = 0; t < row->nTensors; t++) largest[t] = (double)row->recvBytes[t];
  BENCHCHECK(allReduce(c, largest, row->nTensors, ncclMax));
  row->symmetricComm = row->call.comm;
  for (int t = 0; t < row->nTensors; t++) {
    size_t bytes = (size_t)largest[t];
    if (bytes == 0) continue;
    ulyssesResult_t result = ulyssesMemAlloc(row->symmetricComm, bytes, &row->call.recvbuffs[t]);
    if (result != ulyssesSuccess) {
      benchReportFailure(__FILE__, __LINE__,
                         "--path onepass: ulyssesMemAlloc of %zu bytes (tensor %d's output at "
                         "Ltot %lld) failed: %s: %s (it needs ncclMemAlloc, that is cuMem, and on "
                         "a comm that can take one pass an NCCL symmetric window; --path staged "
                         "needs neither)",
                         bytes, t, (long long)row->totalLength, ulyssesGetErrorString(result),
                         ulyssesGetLastError());
      return 1;
    }
  }
  return 0;
}

/* The row's path from ulyssesGetExchangePath on every rank. The ranks must
 * agree: one rank in one pass and another staged would wait for each other
 * forever, so a disagreement fails the row before its first call. */
static int exchangePath(benchContext* c, benchRow* row) {
  const benchCall* call = &row->call;
  ULYSSESCHECK(ulyssesGetExchangePath(call->plan, c->config->op->direction, call->nTensors,
                                      call->recvbuffs, call->comm, &row->path, &row->pathReason));
  double path = row->path == ulyssesPathOnePass ? 1.0 : 0.0;
  double extremes[2] = {path, -path}; /* the maximum and minus the minimum */
  BENCHCHECK(allReduce(c, extremes, 2, ncclMax));
  if (extremes[0] != -extremes[1]) {
    benchReportFailure(__FILE__, __LINE__,
                       "at Ltot %lld the ranks' exchanges would take different paths; this "
                       "rank's: %s (%s)",
                       (long long)row->totalLength, pathName(row->path), row->pathReason);
    return 1;
  }
  return 0;
}

static int setupRow(benchContext* c, int64_t totalLength, benchRow* row) {
  const benchConfig* config = c->config;
  const benchOp* op = config->op;
  int nRanks = c->nRanks, rank = c->rank;
  memset(row, 0, sizeof *row);
  row->totalLength = totalLength;
  row->lengths = malloc(sizeof(int64_t) * (size_t)nRanks);
  row->slots = malloc(sizeof(int64_t) * (size_t)nRanks);
  HOSTCHECK(row->lengths);
  HOSTCHECK(row->slots);
  BENCHCHECK(benchLengths(config->pattern, config->seed, totalLength, nRanks, row->lengths));
  for (int r = 0; r < nRanks; r++)
    if (row->lengths[r] > row->maxLength) row->maxLength = row->lengths[r];
  for (int r = 0; r < nRanks; r++)
    row->slots[r] = config->capacityMode ? row->maxLength : row->lengths[r];

  row->nTensors = op->layouts(config, row->layouts);
  benchCall* call = &row->call;
  call->nTensors = row->nTensors;
  call->comm = c->comm;
  call->stream = c->stream;
  if (config->capacityMode) {
    CUDACHECK(cudaMalloc((void**)&row->deviceLocalLength, sizeof(int64_t)));
    CUDACHECK(cudaMemcpyAsync(row->deviceLocalLength, &row->lengths[rank], sizeof(int64_t),
                              cudaMemcpyHostToDevice, c->stream));
    CUDACHECK(cudaStreamSynchronize(c->stream));
    ULYSSESCHECK(ulyssesPlanCreateCapacity(&call->plan, nRanks, rank, row->slots,
                                           row->deviceLocalLength, row->nTensors, row->layouts));
  } else {
    ULYSSESCHECK(ulyssesPlanCreateExact(&call->plan, nRanks, rank, row->lengths, row->nTensors,
                                        row->layouts));
  }

  ulyssesSegment_t* segments = malloc(sizeof(ulyssesSegment_t) * (size_t)nRanks);
  HOSTCHECK(segments);
  for (int t = 0; t < row->nTensors; t++) {
    refGqaShape realShape = shapeOf(&row->layouts[t], nRanks, row->lengths);
    refGqaShape slotShape = shapeOf(&row->layouts[t], nRanks, row->slots);
    ULYSSESCHECK(ulyssesGetBufferSizes(call->plan, op->direction, t, &row->sendBytes[t],
                                       &row->recvBytes[t]));
    row->sendRows[t] = realRowsOf(op->direction, 1, &realShape, &slotShape.kv, rank);
    row->recvRows[t] = realRowsOf(op->direction, 0, &realShape, &slotShape.kv, rank);
    if (realRowsSpan(&row->sendRows[t]) > row->sendBytes[t] ||
        realRowsSpan(&row->recvRows[t]) > row->recvBytes[t]) {
      benchReportFailure(__FILE__, __LINE__,
                         "tensor %d: ulyssesGetBufferSizes gives %zu send and %zu receive bytes; "
                         "the real rows span %zu and %zu",
                         t, row->sendBytes[t], row->recvBytes[t],
                         realRowsSpan(&row->sendRows[t]), realRowsSpan(&row->recvRows[t]));
      return 1;
    }
    void* sendbuff = NULL;
    BENCHCHECK(deviceAlloc(&sendbuff, row->sendBytes[t]));
    if (!config->onePass) BENCHCHECK(deviceAlloc(&call->recvbuffs[t], row->recvBytes[t]));
    call->sendbuffs[t] = sendbuff;
    double gathered = (double)refGatherBytes(&realShape.kv);
    row->gatheredBytes += gathered;
    /* Padded: every slice padded to maxLength, the heads the library moves
     * (a shared kv head once per rank that reads it). */
    double replication = op->direction == ulyssesOpAllGather
                             ? 1.0
                             : (double)headSideHeadsSum(&realShape) / (double)realShape.kv.heads;
    row->paddedGatheredBytes +=
        gathered / (double)totalLength * (double)row->maxLength * nRanks * replication;
    segments[0].size = sizeof(ulyssesSegment_t);
    ULYSSESCHECK(ulyssesGetSegments(call->plan, op->direction, t, 0, segments));
    for (int p = 0; p < nRanks; p++) row->wireBytes += (double)segments[p].bytes;
    if (row->layouts[t].queryHeads > 0) row->grouped = 1;
  }
  if (row->grouped) BENCHCHECK(expandedWire(c, row, segments));
  free(segments);
  if (config->onePass) BENCHCHECK(allocateSymmetricOutputs(c, row));
  ULYSSESCHECK(ulyssesGetWorkspaceSize(call->plan, op->direction, &call->workspaceSize));
  BENCHCHECK(deviceAlloc(&call->workspace, call->workspaceSize));
  BENCHCHECK(exchangePath(c, row));
  return fillInputs(c, row);
}

/* The row's device buffers and plan; its host arrays stay for the table. */
static int freeRowDevice(benchRow* row) {
  /* ulyssesMemFree needs the calls that use the outputs completed. */
  if (row->symmetricComm != NULL) CUDACHECK(cudaStreamSynchronize(row->call.stream));
  for (int t = 0; t < row->nTensors; t++) {
    CUDACHECK(cudaFree((void*)(uintptr_t)row->call.sendbuffs[t]));
    if (row->symmetricComm != NULL)
      ULYSSESCHECK(ulyssesMemFree(row->symmetricComm, row->call.recvbuffs[t]));
    else
      CUDACHECK(cudaFree(row->call.recvbuffs[t]));
  }
  CUDACHECK(cudaFree(row->call.workspace));
  CUDACHECK(cudaFree(row->deviceLocalLength));
  ULYSSESCHECK(ulyssesPlanDestroy(row->call.plan));
  return 0;
}

static void freeRowHost(benchRow* row) {
  free(row->lengths);
  free(row->slots);
}

/* Microseconds per call of enqueue(argument) on this rank: -n calls back to
 * back after -w warm-ups, between two CUDA events; the ranks start together.
 * enqueue returns 0 or 1, as a CHECK macro does. */
static int timeCalls(benchContext* c, int (*enqueue)(void* argument), void* argument,
                     double* microseconds) {
  const benchConfig* config = c->config;
  for (int64_t i = 0; i < config->warmups; i++) BENCHCHECK(enqueue(argument));
  BENCHCHECK(barrier(c));
  cudaEvent_t start, stop;
  CUDACHECK(cudaEventCreate(&start));
  CUDACHECK(cudaEventCreate(&stop));
  CUDACHECK(cudaEventRecord(start, c->stream));
  for (int64_t i = 0; i < config->iterations; i++) BENCHCHECK(enqueue(argument));
  CUDACHECK(cudaEventRecord(stop, c->stream));
  CUDACHECK(cudaEventSynchronize(stop));
  float milliseconds = 0;
  CUDACHECK(cudaEventElapsedTime(&milliseconds, start, stop));
  CUDACHECK(cudaEventDestroy(start));
  CUDACHECK(cudaEventDestroy(stop));
  *microseconds = (double)milliseconds * 1000.0 / (double)config->iterations;
  return 0;
}

typedef struct {
  const benchOp* op;
  const benchCall* call;
} timedExchange;

static int enqueueExchange(void* argument) {
  const timedExchange* exchange = argument;
  ULYSSESCHECK(exchange->op->run(exchange->call));
  return 0;
}

/* The library call of the row through comm, timed. */
static int timeRow(benchContext* c, benchRow* row, ulyssesComm_t comm, double* microseconds) {
  row->call.comm = comm;
  timedExchange exchange = {c->config->op, &row->call};
  return timeCalls(c, enqueueExchange, &exchange, microseconds);
}

/* NCCL's own collective of the same bytes: the baseline of the xnccl column. */
typedef struct {
  const benchContext* context;
  void* sendbuff;
  void* recvbuff;
  size_t chunkBytes; /* what each rank sends each peer (all-gather: contributes) */
} ncclBaseline;

static int enqueueNccl(void* argument) {
  const ncclBaseline* b = argument;
  const benchContext* c = b->context;
  if (c->config->op->direction == ulyssesOpAllGather) {
    NCCLCHECK(
        ncclAllGather(b->sendbuff, b->recvbuff, b->chunkBytes, ncclUint8, c->nccl, c->stream));
  } else if (c->ncclAlltoAll != NULL) {
    NCCLCHECK(
        c->ncclAlltoAll(b->sendbuff, b->recvbuff, b->chunkBytes, ncclUint8, c->nccl, c->stream));
  } else {
    /* alltoall_perf's fallback: one group of a send and a receive per peer. */
    NCCLCHECK(ncclGroupStart());
    for (int p = 0; p < c->nRanks; p++) {
      size_t offset = (size_t)p * b->chunkBytes;
      NCCLCHECK(ncclSend((const unsigned char*)b->sendbuff + offset, b->chunkBytes, ncclUint8, p,
                         c->nccl, c->stream));
      NCCLCHECK(ncclRecv((unsigned char*)b->recvbuff + offset, b->chunkBytes, ncclUint8, p, c->nccl,
                         c->stream));
    }
    NCCLCHECK(ncclGroupEnd());
  }
  return 0;
}

/* NCCL's collective of rankBytes per rank (the size column), split equally
 * into nRanks chunks of whole elements, timed as the exchange is; *sentBytes
 * gets what one rank actually sends (or contributes). */
static int timeNccl(benchContext* c, double rankBytes, double* microseconds, double* sentBytes) {
  size_t elementSize = (size_t)c->config->elementSize;
  ncclBaseline b = {c, NULL, NULL, 0};
  b.chunkBytes = (size_t)(rankBytes / c->nRanks / (double)elementSize) * elementSize;
  int allGather = c->config->op->direction == ulyssesOpAllGather;
  size_t sendBytes = b.chunkBytes * (allGather ? 1 : (size_t)c->nRanks);
  /* Never NULL, even for an empty chunk, so NCCL's argument checks always pass. */
  BENCHCHECK(deviceAlloc(&b.sendbuff, sendBytes > 0 ? sendBytes : 16));
  BENCHCHECK(deviceAlloc(&b.recvbuff, b.chunkBytes > 0 ? b.chunkBytes * (size_t)c->nRanks : 16));
  if (sendBytes > 0) CUDACHECK(cudaMemsetAsync(b.sendbuff, 0, sendBytes, c->stream));
  BENCHCHECK(timeCalls(c, enqueueNccl, &b, microseconds));
  CUDACHECK(cudaFree(b.sendbuff));
  CUDACHECK(cudaFree(b.recvbuff));
  *sentBytes = (double)sendBytes;
  return 0;
}

static double countWrong(const unsigned char* got, const unsigned char* expected, size_t bytes,
                         int elementSize) {
  if (memcmp(got, expected, bytes) == 0) return 0;
  double wrong = 0;
  for (size_t i = 0; i < bytes; i += (size_t)elementSize)
    if (memcmp(got + i, expected + i, (size_t)elementSize) != 0) wrong++;
  return wrong;
}

/* One more call into poisoned outputs through each of comms[0..nComms), the
 * real rows of every tensor of this rank gathered into dense tensors, then
 * each against the CPU reference of all ranks' dense inputs (each rank
 * rebuilds them from their seeds). The padding rows of outputs (capacity
 * mode) are the library's scratch: not checked. */
#define BENCH_MAX_COMMS 2
static int checkRow(benchContext* c, benchRow* row, const ulyssesComm_t* comms, int nComms,
                    double* wrong) {
  const benchOp* op = c->config->op;
  int nRanks = c->nRanks;
  unsigned char* got[BENCH_MAX_COMMS][ULYSSES_MAX_TENSORS];
  memset(got, 0, sizeof got);
  for (int k = 0; k < nComms; k++) {
    for (int t = 0; t < row->nTensors; t++)
      if (row->recvBytes[t] > 0)
        CUDACHECK(
            cudaMemsetAsync(row->call.recvbuffs[t], BENCH_POISON, row->recvBytes[t], c->stream));
    row->call.comm = comms[k];
    ULYSSESCHECK(op->run(&row->call));
    CUDACHECK(cudaStreamSynchronize(c->stream));
    for (int t = 0; t < row->nTensors; t++) {
      refGqaShape shape = shapeOf(&row->layouts[t], nRanks, row->lengths);
      got[k][t] = hostAlloc(sideBytes(op->direction, 0, &shape, c->rank));
      HOSTCHECK(got[k][t]);
      BENCHCHECK(copyRealRows(&row->recvRows[t], got[k][t], row->call.recvbuffs[t], 0, c->stream));
    }
  }

  void** inputs = calloc((size_t)nRanks, sizeof(void*));
  void** outputs = calloc((size_t)nRanks, sizeof(void*));
  HOSTCHECK(inputs);
  HOSTCHECK(outputs);
  *wrong = 0;
  for (int t = 0; t < row->nTensors; t++) {
    refGqaShape shape = shapeOf(&row->layouts[t], nRanks, row->lengths);
    for (int p = 0; p < nRanks; p++) {
      size_t inputBytes = sideBytes(op->direction, 1, &shape, p);
      inputs[p] = hostAlloc(inputBytes);
      outputs[p] = hostAlloc(sideBytes(op->direction, 0, &shape, p));
      HOSTCHECK(inputs[p]);
      HOSTCHECK(outputs[p]);
      fillDense(&shape, inputs[p], inputBytes, dataSeed(c->config->seed, p, t));
    }
    if (shape.queryHeads > 0 && op->direction == ulyssesOpSeqToHead)
      refGqaSeqToHead(&shape, (const void* const*)inputs, outputs);
    else if (shape.queryHeads > 0 && op->direction == ulyssesOpHeadToSeq)
      refGqaHeadToSeq(&shape, (const void* const*)inputs, outputs);
    else
      op->reference(&shape.kv, (const void* const*)inputs, outputs);
    size_t outputBytes = sideBytes(op->direction, 0, &shape, c->rank);
    for (int k = 0; k < nComms; k++) {
      *wrong += countWrong(got[k][t], outputs[c->rank], outputBytes, c->config->elementSize);
      free(got[k][t]);
    }
    for (int p = 0; p < nRanks; p++) {
      free(inputs[p]);
      free(outputs[p]);
    }
  }
  free(inputs);
  free(outputs);
  return 0;
}

/* What runRow reduced over the ranks, for the table and the JSON line. */
typedef struct {
  double bytes;
  double minTime;        /* microseconds per call: the fastest rank's */
  double avgTime;        /* the mean over ranks */
  double slowest;        /* the slowest rank's: the time column */
  double slowestChecked; /* -k 2: the slowest rank's with the plan check on */
  double algbw;
  double busbw;
  double wire;
  double padded;
  double expandWire;
  double ncclTime;  /* the slowest rank's */
  double ncclBytes; /* what one rank sent (all-gather: contributed) in it */
  int checked;
  double wrong;
} rowResult;

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
          : sharingMode(c) == GPU_SHARING_P2P ? "p2p"
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
          ncclBaselineName(c), r->ncclBytes, r->ncclTime,
          r->ncclTime > 0 ? r->slowest / r->ncclTime : 0.0);
  if (row->grouped) fprintf(f, "\"expand_kv_bytes\":%.1f,", r->expandWire);
  fprintf(f, "\"check_plans\":%d,\"path_requested\":\"%s\",\"path\":\"%s\",\"path_reason\":",
          config->checkPlans, config->onePass ? "onepass" : "staged", pathName(row->path));
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

/* Whether an exchange through comm failed on the device. */
static int checkAsyncError(ulyssesComm_t comm, int64_t totalLength) {
  ulyssesResult_t asyncError = ulyssesSuccess;
  ULYSSESCHECK(ulyssesCommGetAsyncError(comm, &asyncError));
  if (asyncError != ulyssesSuccess) {
    benchReportFailure(__FILE__, __LINE__, "asynchronous error at Ltot %lld: %s: %s",
                       (long long)totalLength, ulyssesGetErrorString(asyncError),
                       ulyssesGetLastError());
    return 1;
  }
  return 0;
}

static int runRow(benchContext* c, int64_t totalLength) {
  const benchConfig* config = c->config;
  int both = config->checkPlans == 2;
  ulyssesComm_t comms[BENCH_MAX_COMMS] = {c->comm, c->checkedComm};
  int nComms = both ? 2 : 1;
  benchRow row;
  BENCHCHECK(setupRow(c, totalLength, &row));
  double times[BENCH_MAX_COMMS] = {0, 0}; /* check off, on (-k 2) */
  for (int k = 0; k < nComms; k++) BENCHCHECK(timeRow(c, &row, comms[k], &times[k]));
  rowResult r;
  memset(&r, 0, sizeof r);
  r.checked = config->check && row.gatheredBytes <= BENCH_CHECK_MAX_BYTES;
  if (r.checked) BENCHCHECK(checkRow(c, &row, comms, nComms, &r.wrong));
  for (int k = 0; k < nComms; k++) BENCHCHECK(checkAsyncError(comms[k], totalLength));
  r.bytes = config->op->bytes(row.gatheredBytes, c->nRanks);
  r.padded = config->op->bytes(row.paddedGatheredBytes, c->nRanks);
  /* The exchange's buffers go before NCCL's are made: the peak is one set. */
  BENCHCHECK(freeRowDevice(&row));
  double ncclTime = 0;
  BENCHCHECK(timeNccl(c, r.bytes, &ncclTime, &r.ncclBytes));

  /* Maxima of the times and of their negatives (the minimum), one reduction. */
  double maxima[4] = {times[0], times[1], ncclTime, -times[0]};
  BENCHCHECK(allReduce(c, maxima, 4, ncclMax));
  r.slowest = maxima[0];
  r.slowestChecked = maxima[1];
  r.ncclTime = maxima[2];
  r.minTime = -maxima[3];
  double sums[4] = {r.wrong, row.wireBytes, row.expandWireBytes, times[0]};
  BENCHCHECK(allReduce(c, sums, 4, ncclSum));
  r.wrong = sums[0];
  r.wire = sums[1] / c->nRanks;
  r.expandWire = sums[2] / c->nRanks;
  r.avgTime = sums[3] / c->nRanks;
  r.algbw = r.slowest > 0 ? r.bytes / (r.slowest * 1e-6) / 1e9 : 0;
  r.busbw = r.algbw * (double)(c->nRanks - 1) / (double)c->nRanks;
  double overhead = r.slowestChecked - r.slowest;
  double ratio = r.slowest > 0 ? r.slowestChecked / r.slowest : 0;
  double ncclRatio = r.ncclTime > 0 ? r.slowest / r.ncclTime : 0;
  c->rows++;
  c->busBandwidthSum += r.busbw;
  c->checkOverheadSum += overhead;
  c->checkRatioSum += ratio;
  c->ncclRatioSum += ncclRatio;
  if (r.checked) {
    c->rowsChecked++;
    c->wrongTotal += r.wrong;
  }
  if (row.path == ulyssesPathOnePass) c->onePassRows++;
  if (c->rank == 0) {
    if (c->lastPathReason == NULL || strcmp(c->lastPathReason, row.pathReason) != 0) {
      if (config->onePass && row.path != ulyssesPathOnePass)
        printf(
            "# NOTE: --path onepass was asked, but from Ltot %lld the library takes the staged\n"
            "#       path: %s\n",
            (long long)totalLength, row.pathReason);
      else
        printf("# From Ltot %lld the %s path: %s\n", (long long)totalLength, pathName(row.path),
               row.pathReason);
      c->lastPathReason = row.pathReason;
    }
    char wrongText[32];
    if (r.checked) snprintf(wrongText, sizeof wrongText, "%.0f", r.wrong);
    else snprintf(wrongText, sizeof wrongText, "%s", config->check ? "skip" : "N/A");
    printf(" %11lld %14.0f %12.0f %6s %10.1f %9.1f %9.1f %12.2f %12.2f %14.0f %14.0f %10.1f %7.3f",
           (long long)totalLength, r.bytes, r.bytes / config->elementSize, config->typeName,
           r.slowest, r.minTime, r.avgTime, r.algbw, r.busbw, r.wire, r.padded, r.ncclTime,
           ncclRatio);
    if (row.grouped) printf(" %14.0f", r.expandWire);
    if (both) printf(" %10.1f %7.3f", overhead, ratio);
    printf(" %7s %8s\n", pathName(row.path), wrongText);
    if (c->json != NULL) writeJson(c, &row, &r);
  }
  freeRowHost(&row);
  return 0;
}

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

/* The GPU of this rank (the one-GPU socket mode where its host has more ranks
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
  BENCHCHECK(printHeader(&c));
  for (int64_t length = config->minLength; length <= config->maxLength;) {
    BENCHCHECK(runRow(&c, length));
    if (length > config->maxLength / config->stepFactor) break;
    length *= config->stepFactor;
  }
  if (c.rank == 0) {
    if (config->check)
      printf("# Rows checked         : %d of %d\n# Wrong elements       : %.0f %s\n", c.rowsChecked,
             c.rows, c.wrongTotal, c.wrongTotal == 0 ? "OK" : "FAILED");
    printf("# Avg bus bandwidth    : %g\n", c.rows > 0 ? c.busBandwidthSum / c.rows : 0.0);
    printf("# Avg time / NCCL's    : %g (%s)\n", c.rows > 0 ? c.ncclRatioSum / c.rows : 0.0,
           ncclBaselineName(&c));
    if (config->checkPlans == 2)
      printf("# Avg plan check       : %g us per call, ratio %g\n",
             c.rows > 0 ? c.checkOverheadSum / c.rows : 0.0,
             c.rows > 0 ? c.checkRatioSum / c.rows : 0.0);
    printf("# Rows in one pass     : %d of %d (--path %s)\n", c.onePassRows, c.rows,
           config->onePass ? "onepass" : "staged");
    if (c.sharedGpu)
      printf("# (one-GPU shared mode, %s: correctness, not speed)\n",
             gpuSharingName(sharingMode(&c)));
    printf("#\n");
  }
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

int benchMain(int argc, char** argv, const benchOp* const* ops, int nOps) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  benchConfig config;
  int parsed = parseArgs(argc, argv, ops, nOps, &config);
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
