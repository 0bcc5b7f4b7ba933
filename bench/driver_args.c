/* ulysses_perf's help and arguments (driver.h). */
#include "driver.h"

#include <limits.h>
#include <string.h>

/*------------------------------------------------------------------------
 * Help and arguments.
 *----------------------------------------------------------------------*/
static void printUsage(FILE* out, const char* program, const benchOp* ops, int nOps) {
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
    fprintf(out, "              %-10s %s\n", ops[i].name, ops[i].summary);
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
static int setFlag(benchConfig* config, char flag, const char* value, const benchOp* ops,
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
        if (strcmp(value, ops[i].name) == 0) {
          config->op = &ops[i];
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

int benchParseArgs(int argc, char** argv, const benchOp* ops, int nOps,
                     benchConfig* config) {
  *config = (benchConfig){
      .nRanks = 0, .minLength = 1024, .maxLength = 64 * 1024, .stepFactor = 2, .batch = 1,
      .heads = 32, .headDim = 128, .kvHeads = 0, .typeName = "bf16", .elementSize = 2,
      .op = &ops[0], .capacityMode = 0, .pattern = BENCH_LENGTHS_EQUAL, .seed = 1, .sbhd = 0,
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
    if (benchIsHelp(arg)) {
      printUsage(stdout, argv[0], ops, nOps);
      return 2;
    }
    const char* value = benchFlagValue(argc, argv, &i);
    if (value == NULL) return 1;
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
