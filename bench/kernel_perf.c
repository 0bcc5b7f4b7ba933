/* kernel_perf: the local stages alone (ulyssesPack, ulyssesUnpack), one
 * process, no NCCL, at LongVILA-like shapes: rank 0 of P simulated ranks,
 * the total length split by a pattern (-l), timed against cudaMemcpyAsync
 * device-to-device of the same bytes between the same buffers, in the same
 * run, with L2 flushed before every timed call (-h for the flags). */
#include <stdlib.h>
#include <string.h>

#include "launch_policy.h"
#include "pipeline.h"
#include "reference.h"
#include "ulysses_launch.h"
#include "ulysses.h"
#include "util.h"

#define MAX_LIST 16
/* -c verifies each (P, D) at this total length before the sweep. */
#define CHECK_LENGTH 4096
#define POISON 0xA5

typedef struct {
  int64_t minLength, maxLength, stepFactor; /* -b -e -f */
  int64_t ranks[MAX_LIST];                  /* -P */
  int nRankCounts;
  int64_t headDims[MAX_LIST];               /* -D */
  int nHeadDims;
  int64_t heads;                            /* -H */
  int64_t kvHeads;                          /* -K */
  int mode;                                 /* -m */
  int pattern;                              /* -l */
  int64_t batch;                            /* -B */
  const char* typeName;                     /* -d */
  int elementSize;
  int64_t iterations, warmups;              /* -n -w */
  int check;                                /* -c */
  int64_t flushMiB;                         /* -F */
  int64_t device;                           /* -g */
  const char* jsonPath;                     /* -j */
} kernelConfig;

typedef struct {
  const kernelConfig* config;
  benchDevice gpu;
  int rows;
  double ratioSum;
  double wrongTotal;
} kernelContext;

static const char* const opNames[] = {"seq2head", "head2seq", "gqa_head2seq", "qkv_seq2head"};
/* plain: the single-tensor stages; gqa: head -> seq's unpack of a kv tensor
 * (its replicas summed where ranks share kv heads); qkv: seq -> head's pack of
 * q, k and v in one call, against the sum of the three single-tensor packs. */
enum { MODE_PLAIN, MODE_GQA, MODE_QKV };
static const char* const modeNames[] = {"plain", "gqa", "qkv"};
/* How the total length is split over the ranks: equal (total / P each, the
 * first total % P one more); vila (VILA's rule: floor(total / P) each, the
 * remainder on the last rank); skew (multimodal: rank r holds about
 * (1.3 - 0.6 r / (P - 1)) total / P, rank 0, the one timed, the longest, the
 * remainder on the last). */
enum { PATTERN_EQUAL, PATTERN_VILA, PATTERN_SKEW };
static const char* const patternNames[] = {"equal", "vila", "skew"};
static const ulyssesOp_t ops[] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq};

static void printUsage(FILE* out, const char* program) {
  fprintf(out,
          "Usage: %s [flags]\n"
          "Times the local stages ulyssesPack and ulyssesUnpack of rank 0 of P simulated\n"
          "ranks (exact plan, lengths by -l, BSHD) against\n"
          "cudaMemcpyAsync device to device of the same bytes between the same buffers,\n"
          "with L2 flushed (a buffer larger than L2 written) before every timed call;\n"
          "the flush is outside the CUDA events. Flags (defaults in brackets):\n"
          "  -b LEN    smallest total sequence length [32K] (K, M, G: powers of 1024)\n"
          "  -e LEN    largest total sequence length [1M]\n"
          "  -f F      factor between successive lengths [2]\n"
          "  -P LIST   simulated rank counts, comma-separated [2,4,8,16]\n"
          "  -D LIST   head dims, comma-separated [64,128,256]\n"
          "  -H H      heads (grouped-query modes: query heads) [32]\n"
          "  -K K      kv heads of the grouped-query modes [4]\n"
          "  -m MODE   plain: seq2head pack and head2seq unpack of one tensor [plain];\n"
          "            gqa: head2seq unpack of a kv tensor of K heads read by H query\n"
          "            heads (a sum of replicas where ranks share a kv head; bytes =\n"
          "            (bytes read + bytes written) / 2, the memcpy moves as many);\n"
          "            qkv: seq2head pack of q (H heads), k and v (K heads each) in one\n"
          "            call, with the sum of the three single-tensor packs beside it\n"
          "            (-c checks the plain stages only: the GPU suite and ulysses_perf\n"
          "            -c 1 -o gqa / qkv check the others)\n"
          "  -l NAME   length pattern [equal]: equal (total-len / P\n"
          "            each); vila (floor(total-len / P) each, the remainder on the last\n"
          "            rank); skew (rank r about (1.3 - 0.6 r / (P - 1)) total-len / P:\n"
          "            rank 0, the one timed, 30%% above the mean, the last 30%% below)\n"
          "  -B B      batch [1]\n"
          "  -d TYPE   data type, only its size matters [bf16]:\n"
          "            %s\n"
          "  -n N      timed iterations [20]\n"
          "  -w W      warm-up iterations [5]\n"
          "  -c 0|1    first verify every stage against the CPU reference at total\n"
          "            length %d for each P and D [1]\n"
          "  -F MIB    L2 flush buffer in MiB, raised to 4x L2 if that is larger [256]\n"
          "  -g DEV    CUDA device [0]\n"
          "  -j FILE   also write one JSON object per row to FILE (JSON lines)\n"
          "  -h        this help\n"
          "\n"
          "Stages: seq2head pack (sequence slice -> one segment per peer, cut to its\n"
          "heads) and head2seq unpack (segments -> sequence slice) always run; seq2head\n"
          "unpack and head2seq pack move rows that are already contiguous in the user\n"
          "buffer when the batch is 1, so NCCL reads or writes the user buffer directly\n"
          "and the stage launches nothing (no copy, no length table): 'skipped (direct)'.\n"
          "Columns: bytes = the bytes the stage moves (the sum of its segments); time in\n"
          "microseconds, the mean of -n calls each between two CUDA events; GB/s =\n"
          "2 * bytes / time (bytes read plus bytes written, 1 GB = 1e9 bytes), for the\n"
          "stage and for the memcpy; ratio = stage GB/s / memcpy GB/s.\n"
          "The exit status is 0 when everything ran and verified, 1 otherwise, 2 without\n"
          "a GPU.\n",
          program, benchTypeNames, CHECK_LENGTH);
}

/* value's index among count names, or -1. */
static int nameIndex(const char* value, const char* const* names, int count) {
  for (int k = 0; k < count; k++)
    if (strcmp(value, names[k]) == 0) return k;
  return -1;
}

/* The type a grouped-query sum adds in, from -d; opaque for the others. */
static ulyssesDataType_t benchDataType(const kernelConfig* config) {
  if (strcmp(config->typeName, "bf16") == 0) return ulyssesTypeBfloat16;
  if (strcmp(config->typeName, "fp16") == 0 || strcmp(config->typeName, "half") == 0)
    return ulyssesTypeFloat16;
  if (strcmp(config->typeName, "fp32") == 0 || strcmp(config->typeName, "float") == 0)
    return ulyssesTypeFloat32;
  return ulyssesTypeOpaque;
}

/* 0: parsed; 1: bad arguments; 2: -h printed the help. */
static int parseArgs(int argc, char** argv, kernelConfig* config) {
  *config = (kernelConfig){.minLength = 32 * 1024, .maxLength = 1024 * 1024, .stepFactor = 2,
                           .ranks = {2, 4, 8, 16}, .nRankCounts = 4, .headDims = {64, 128, 256},
                           .nHeadDims = 3, .heads = 32, .kvHeads = 4, .mode = MODE_PLAIN,
                           .pattern = PATTERN_EQUAL, .batch = 1,
                           .typeName = "bf16",
                           .elementSize = 2, .iterations = 20, .warmups = 5, .check = 1,
                           .flushMiB = 256, .device = 0, .jsonPath = NULL};
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
      case 'b': bad = benchParseSize(value, &config->minLength) || config->minLength < 1; break;
      case 'e': bad = benchParseSize(value, &config->maxLength) || config->maxLength < 1; break;
      case 'f': bad = benchParseInt(value, 2, 1 << 20, &config->stepFactor); break;
      case 'P':
        config->nRankCounts = benchParseIntList(value, 1, 4096, config->ranks, MAX_LIST);
        bad = config->nRankCounts == 0;
        break;
      case 'D':
        config->nHeadDims = benchParseIntList(value, 1, 1 << 20, config->headDims, MAX_LIST);
        bad = config->nHeadDims == 0;
        break;
      case 'H': bad = benchParseInt(value, 1, INT32_MAX, &config->heads); break;
      case 'K': bad = benchParseInt(value, 1, INT32_MAX, &config->kvHeads); break;
      case 'm': bad = (config->mode = nameIndex(value, modeNames, 3)) < 0; break;
      case 'l': bad = (config->pattern = nameIndex(value, patternNames, 3)) < 0; break;
      case 'B': bad = benchParseInt(value, 1, INT32_MAX, &config->batch); break;
      case 'd':
        config->typeName = value;
        config->elementSize = benchTypeSize(value);
        bad = config->elementSize == 0;
        break;
      case 'n': bad = benchParseInt(value, 1, 1 << 20, &config->iterations); break;
      case 'w': bad = benchParseInt(value, 0, 1 << 20, &config->warmups); break;
      case 'c':
        bad = benchParseInt(value, 0, 1, &number);
        config->check = (int)number;
        break;
      case 'F': bad = benchParseInt(value, 1, 1 << 20, &config->flushMiB); break;
      case 'g': bad = benchParseInt(value, 0, 1 << 16, &config->device); break;
      case 'j': config->jsonPath = value; break;
      default: bad = 1; break;
    }
    if (bad) {
      fprintf(stderr, "%s: bad flag or value: -%c %s (-h for help)\n", argv[0], arg[1], value);
      return 1;
    }
  }
  if (benchCheckSweep(argv[0], config->minLength, config->maxLength)) return 1;
  if (config->mode != MODE_PLAIN &&
      (config->heads % config->kvHeads != 0 || benchDataType(config) == ulyssesTypeOpaque)) {
    fprintf(stderr, "%s: -m %s needs H a multiple of K and a bf16, fp16 or fp32 type\n", argv[0],
            modeNames[config->mode]);
    return 1;
  }
  return 0;
}

/*------------------------------------------------------------------------
 * Shapes.
 *----------------------------------------------------------------------*/
typedef struct {
  int nRanks;
  int64_t totalLength;
  int64_t lengths[4096];
  int64_t offsets[4097];
  ulyssesLayout_t layout;
  refShape shape;
} kernelShape;

/* Rank r's rows of totalLength under pattern (patternNames). */
static int64_t patternLength(int pattern, int64_t totalLength, int nRanks, int r) {
  if (pattern == PATTERN_EQUAL) return totalLength / nRanks + (r < totalLength % nRanks ? 1 : 0);
  if (r < nRanks - 1)
    return pattern == PATTERN_VILA
               ? totalLength / nRanks
               : totalLength * (13 * (nRanks - 1) - 6 * r) / (10 * (int64_t)(nRanks - 1) * nRanks);
  int64_t rest = totalLength;
  for (int q = 0; q < nRanks - 1; q++) rest -= patternLength(pattern, totalLength, nRanks, q);
  return rest;
}

static void makeShape(const kernelConfig* config, int nRanks, int64_t headDim, int64_t totalLength,
                      kernelShape* s) {
  s->nRanks = nRanks;
  s->totalLength = totalLength;
  s->offsets[0] = 0;
  for (int r = 0; r < nRanks; r++) {
    s->lengths[r] = patternLength(config->pattern, totalLength, nRanks, r);
    s->offsets[r + 1] = s->offsets[r] + s->lengths[r];
  }
  s->layout = (ulyssesLayout_t){.size = sizeof(ulyssesLayout_t), .batch = config->batch, .heads = config->heads, .headDim = headDim,
                                .elementSize = config->elementSize, .packed = 1,
                                .order = ulyssesOrderBSHD};
  s->shape = (refShape){.nRanks = nRanks, .lengths = s->lengths, .batch = config->batch,
                        .heads = config->heads, .headDim = headDim,
                        .elementSize = config->elementSize, .packed = 1, .sbhd = 0};
}

/* The user tensor a stage reads (pack) or writes (unpack) is rank 0's
 * sequence-side tensor where the stage cuts rows into head slices, else its
 * head-side tensor. */
static int userIsSequenceSide(ulyssesOp_t op, int isPack) {
  return (op == ulyssesOpSeqToHead) == (isPack != 0);
}

static size_t userBytes(const kernelShape* s, ulyssesOp_t op, int isPack) {
  return userIsSequenceSide(op, isPack) ? refSeqBytes(&s->shape, 0)
                                        : refHeadSideBytes(&s->shape, 0);
}

typedef struct {
  ulyssesSegment_t segments[4096];
  int direct;        /* every segment in the user buffer: the stage copies nothing */
  size_t bytes;      /* the sum of the workspace segments */
  size_t regionBegin;/* the lowest workspace offset among them */
} stageSegments;

static int getStageSegments(ulyssesPlan_t plan, ulyssesOp_t op, int isPack, int nRanks,
                            stageSegments* out) {
  out->segments[0].size = sizeof(ulyssesSegment_t);
  ULYSSESCHECK(ulyssesGetSegments(plan, op, 0, isPack, out->segments));
  out->direct = 1;
  out->bytes = 0;
  out->regionBegin = SIZE_MAX;
  for (int p = 0; p < nRanks; p++) {
    const ulyssesSegment_t* segment = &out->segments[p];
    if (segment->place != ulyssesSegmentInWorkspace) continue;
    out->direct = 0;
    out->bytes += segment->bytes;
    if (segment->offset < out->regionBegin) out->regionBegin = segment->offset;
  }
  if (out->direct) out->regionBegin = 0;
  return 0;
}

/* One timed call: a stage of nTensors tensors. */
typedef struct {
  ulyssesPlan_t plan;
  ulyssesOp_t op;
  int isPack;
  int nTensors;
  void* users[3];
  void* workspace;
  size_t workspaceSize;
} stageCall;

static int runCall(const stageCall* call, cudaStream_t stream) {
  if (call->isPack)
    ULYSSESCHECK(ulyssesPack(call->plan, call->op, call->nTensors,
                             (const void* const*)call->users, NULL, NULL, call->workspace,
                             call->workspaceSize, stream));
  else
    ULYSSESCHECK(ulyssesUnpack(call->plan, call->op, call->nTensors, call->users, NULL, NULL,
                               call->workspace, call->workspaceSize, stream));
  return 0;
}

static int runStage(ulyssesPlan_t plan, ulyssesOp_t op, int isPack, void* user, void* workspace,
                    size_t workspaceSize, cudaStream_t stream) {
  stageCall call = {plan, op, isPack, 1, {user}, workspace, workspaceSize};
  return runCall(&call, stream);
}

static int deviceAlloc(void** pointer, size_t bytes) {
  *pointer = NULL;
  if (bytes > 0) CUDACHECK(cudaMalloc(pointer, bytes));
  return 0;
}

/*------------------------------------------------------------------------
 * The launch parameters a stage chose: the library's own pipeline
 * (src/pipeline.c, linked in from its sources) run on a backend that keeps
 * the copy launch instead of launching it, with the stage's real buffers
 * (their alignment sets the word size); the grid, as the CUDA backend
 * shares the wave of resident blocks of the kernel the launch takes
 * (ulyssesCopyWave; this binary holds the same kernels' objects as the
 * library it was built with).
 *----------------------------------------------------------------------*/
typedef struct {
  int copies;
  ulyssesCopyArgs args;
  int64_t maxRuns;
  int wave;           /* resident blocks of the kernel the launch picks */
  int64_t gridBlocks; /* the grid's rows' length (its columns: one per tensor) */
} stageLaunch;

static ulyssesResult_t keepNoTable(void* context, const ulyssesTableArgs* args) {
  (void)context;
  (void)args;
  return ulyssesSuccess;
}

static ulyssesResult_t keepCopy(void* context, const ulyssesCopyArgs* args, int64_t maxRuns) {
  stageLaunch* launch = context;
  launch->copies++;
  launch->args = *args;
  launch->maxRuns = maxRuns;
  return ulyssesSuccess;
}

/* users: one buffer per tensor of the plan. */
static int captureLaunch(ulyssesPlan_t plan, ulyssesOp_t op, int isPack, void* const* users,
                         void* workspace, stageLaunch* launch) {
  memset(launch, 0, sizeof *launch);
  ulyssesBackend backend = {.context = launch, .launchTable = keepNoTable, .launchCopy = keepCopy};
  ulyssesCall call = {.plan = plan,
                      .op = op,
                      .nTensors = plan->nTensors,
                      .sendbuffs = (const void* const*)users,
                      .recvbuffs = users,
                      .workspace = workspace};
  ULYSSESCHECK(ulyssesRunStage(&call, isPack ? ULYSSES_SEND : ULYSSES_RECV, &backend));
  if (launch->copies > 0) {
    CUDACHECK(ulyssesCopyWave(&launch->args, &launch->wave));
    launch->gridBlocks = ulyssesShareWave(&launch->args, launch->wave);
  }
  return 0;
}

/* "sweep" (chunks of several runs), "run" (one run per group) or "sum"; a
 * head slice's chunks walked tile by tile (ULYSSES_COPY_ORDER=rows):
 * "tiles". */
static const char* launchPath(const ulyssesCopyArgs* a) {
  const ulyssesCopyTensor* x = &a->tensors[0];
  if (x->kind == ULYSSES_COPY_HEAD_SUM) return "sum";
  if (x->kind == ULYSSES_COPY_HEAD_SLICE && a->rowTiles) return "tiles";
  return x->chunkRuns > 1 ? "sweep" : "run";
}

/*------------------------------------------------------------------------
 * Verification: rank 0's segments against the CPU reference of every rank.
 *----------------------------------------------------------------------*/
/* What each of rank 0's workspace segments holds, from every rank's head-side
 * tensor: a head-slice segment for peer p is rows [0, L_0) of p's head-side
 * tensor in each batch entry; a row-scatter segment for peer r is rows
 * [off_r, off_r + L_r) of rank 0's head-side tensor. */
static int expectedSegments(const kernelShape* s, ulyssesOp_t op, int isPack,
                            const stageSegments* stage, unsigned char* const* headSides,
                            unsigned char* workspace) {
  int sequenceSide = userIsSequenceSide(op, isPack);
  size_t headBytes = (size_t)(s->layout.headDim * s->layout.elementSize);
  for (int p = 0; p < s->nRanks; p++) {
    size_t rowBytes = headBytes * (size_t)refHeadCount(&s->shape, sequenceSide ? p : 0);
    const unsigned char* source = headSides[sequenceSide ? p : 0];
    int64_t rowBegin = sequenceSide ? 0 : s->offsets[p];
    int64_t rows = sequenceSide ? s->lengths[0] : s->lengths[p];
    size_t blockBytes = (size_t)rows * rowBytes;
    if (stage->segments[p].bytes != blockBytes * (size_t)s->layout.batch) {
      benchReportFailure(__FILE__, __LINE__,
                         "segment %d of %s %s holds %zu bytes; the contract gives %zu", p,
                         opNames[op], isPack ? "pack" : "unpack", stage->segments[p].bytes,
                         blockBytes * (size_t)s->layout.batch);
      return 1;
    }
    for (int64_t b = 0; b < s->layout.batch; b++)
      memcpy(workspace + stage->segments[p].offset + (size_t)b * blockBytes,
             source + ((size_t)b * (size_t)s->totalLength + (size_t)rowBegin) * rowBytes,
             blockBytes);
  }
  return 0;
}

/* One stage at CHECK_LENGTH: pack compares the workspace segments with the
 * reference; unpack starts from reference segments and compares the user
 * tensor. */
/* The reference's two sides of a case: every rank's sequence side and head
 * side. */
typedef struct {
  unsigned char* const* seq;
  unsigned char* const* head;
} referenceSides;

static int checkStage(kernelContext* c, const kernelShape* s, ulyssesPlan_t plan, ulyssesOp_t op,
                      int isPack, const referenceSides* sides, double* wrong) {
  stageSegments stage;
  BENCHCHECK(getStageSegments(plan, op, isPack, s->nRanks, &stage));
  *wrong = -1;
  if (stage.direct) return 0;
  size_t workspaceSize = 0;
  ULYSSESCHECK(ulyssesGetWorkspaceSize(plan, op, &workspaceSize));
  size_t bytes = userBytes(s, op, isPack);
  const unsigned char* userExpected =
      userIsSequenceSide(op, isPack) ? sides->seq[0] : sides->head[0];
  unsigned char* segmentsExpected = calloc(workspaceSize, 1);
  unsigned char* got = malloc(workspaceSize > bytes ? workspaceSize : bytes);
  HOSTCHECK(segmentsExpected);
  HOSTCHECK(got);
  BENCHCHECK(expectedSegments(s, op, isPack, &stage, sides->head, segmentsExpected));
  void *user = NULL, *workspace = NULL;
  BENCHCHECK(deviceAlloc(&user, bytes));
  BENCHCHECK(deviceAlloc(&workspace, workspaceSize));
  /* All on the stream of the stage: it is non-blocking, so not ordered after
   * the legacy default stream of cudaMemset and cudaMemcpy. */
  if (isPack) {
    CUDACHECK(cudaMemcpyAsync(user, userExpected, bytes, cudaMemcpyHostToDevice, c->gpu.stream));
    CUDACHECK(cudaMemsetAsync(workspace, POISON, workspaceSize, c->gpu.stream));
  } else {
    CUDACHECK(cudaMemsetAsync(user, POISON, bytes, c->gpu.stream));
    CUDACHECK(cudaMemcpyAsync(workspace, segmentsExpected, workspaceSize, cudaMemcpyHostToDevice,
                              c->gpu.stream));
  }
  BENCHCHECK(runStage(plan, op, isPack, user, workspace, workspaceSize, c->gpu.stream));
  CUDACHECK(cudaStreamSynchronize(c->gpu.stream));
  *wrong = 0;
  if (isPack) {
    CUDACHECK(
        cudaMemcpyAsync(got, workspace, workspaceSize, cudaMemcpyDeviceToHost, c->gpu.stream));
    CUDACHECK(cudaStreamSynchronize(c->gpu.stream));
    for (int p = 0; p < s->nRanks; p++)
      *wrong += benchCountWrong(got + stage.segments[p].offset,
                           segmentsExpected + stage.segments[p].offset, stage.segments[p].bytes,
                           (int)s->layout.elementSize);
  } else {
    CUDACHECK(cudaMemcpyAsync(got, user, bytes, cudaMemcpyDeviceToHost, c->gpu.stream));
    CUDACHECK(cudaStreamSynchronize(c->gpu.stream));
    *wrong = benchCountWrong(got, userExpected, bytes, (int)s->layout.elementSize);
  }
  CUDACHECK(cudaFree(user));
  CUDACHECK(cudaFree(workspace));
  free(segmentsExpected);
  free(got);
  return 0;
}

/* Every stage of both directions for one (P, D): seq2head's inputs are
 * random sequence slices and its head sides come from refSeqToHead;
 * head2seq's inputs are random head sides and its slices come from
 * refHeadToSeq. */
static int checkShape(kernelContext* c, int nRanks, int64_t headDim) {
  static kernelShape s;
  makeShape(c->config, nRanks, headDim, CHECK_LENGTH, &s);
  ulyssesPlan_t plan;
  ULYSSESCHECK(ulyssesPlanCreateExact(&plan, nRanks, 0, s.lengths, 1, &s.layout));
  unsigned char** seqSides = calloc((size_t)nRanks, sizeof(unsigned char*));
  unsigned char** headSides = calloc((size_t)nRanks, sizeof(unsigned char*));
  HOSTCHECK(seqSides);
  HOSTCHECK(headSides);
  for (int p = 0; p < nRanks; p++) {
    seqSides[p] = malloc(refSeqBytes(&s.shape, p) + 1);
    headSides[p] = malloc(refHeadSideBytes(&s.shape, p) + 1);
    HOSTCHECK(seqSides[p]);
    HOSTCHECK(headSides[p]);
  }
  printf("# check P=%d D=%lld Ltot=%d:", nRanks, (long long)headDim, CHECK_LENGTH);
  for (int o = 0; o < 2; o++) {
    unsigned char** inputs = ops[o] == ulyssesOpSeqToHead ? seqSides : headSides;
    unsigned char** outputs = ops[o] == ulyssesOpSeqToHead ? headSides : seqSides;
    for (int p = 0; p < nRanks; p++) {
      size_t inputBytes = ops[o] == ulyssesOpSeqToHead ? refSeqBytes(&s.shape, p)
                                                       : refHeadSideBytes(&s.shape, p);
      refFillPattern(inputs[p], inputBytes, (uint64_t)(o * 4096 + p + 1));
    }
    if (ops[o] == ulyssesOpSeqToHead)
      refSeqToHead(&s.shape, (const void* const*)inputs, (void* const*)outputs);
    else
      refHeadToSeq(&s.shape, (const void* const*)inputs, (void* const*)outputs);
    for (int isPack = 1; isPack >= 0; isPack--) {
      double wrong = 0;
      const referenceSides sides = {seqSides, headSides};
      BENCHCHECK(checkStage(c, &s, plan, ops[o], isPack, &sides, &wrong));
      if (wrong < 0)
        printf(" %s %s skipped (direct);", opNames[o], isPack ? "pack" : "unpack");
      else
        printf(" %s %s %.0f wrong;", opNames[o], isPack ? "pack" : "unpack", wrong);
      if (wrong > 0) c->wrongTotal += wrong;
    }
  }
  printf("\n");
  for (int p = 0; p < nRanks; p++) {
    free(seqSides[p]);
    free(headSides[p]);
  }
  free(seqSides);
  free(headSides);
  ULYSSESCHECK(ulyssesPlanDestroy(plan));
  return 0;
}

/*------------------------------------------------------------------------
 * Timing.
 *----------------------------------------------------------------------*/
typedef struct {
  int nRanks;
  int64_t headDim, totalLength, localLength;
  int op;
  int isPack;
  const char* skipped; /* NULL when timed */
  size_t bytes;
  double stageUs, memcpyUs;
  double singlesUs; /* qkv: the three single-tensor stages' times, summed */
  stageLaunch launch;
} kernelRow;

/* A row of shape s, not yet timed. */
static kernelRow newRow(const kernelShape* s, int64_t headDim, int op, int isPack) {
  kernelRow row;
  memset(&row, 0, sizeof row);
  row.nRanks = s->nRanks;
  row.headDim = headDim;
  row.totalLength = s->totalLength;
  row.localLength = s->lengths[0];
  row.op = op;
  row.isPack = isPack;
  return row;
}

static void printRow(kernelContext* c, const kernelRow* row) {
  const kernelConfig* config = c->config;
  const char* stage = row->isPack ? "pack" : "unpack";
  double stageGbps = 0, memcpyGbps = 0, ratio = 0;
  if (row->skipped == NULL) {
    stageGbps = 2.0 * (double)row->bytes / (row->stageUs * 1e-6) / 1e9;
    memcpyGbps = 2.0 * (double)row->bytes / (row->memcpyUs * 1e-6) / 1e9;
    ratio = stageGbps / memcpyGbps;
    const ulyssesCopyArgs* a = &row->launch.args;
    printf(" %4d %7lld %10lld %10lld %9s %7s %13zu %11.1f %12.1f %11.1f %12.1f %7.3f  "
           "%s/%d/%lld/%d/%lld/%d\n",
           row->nRanks, (long long)row->headDim, (long long)row->totalLength,
           (long long)row->localLength, opNames[row->op], stage, row->bytes, row->stageUs,
           stageGbps, row->memcpyUs, memcpyGbps, ratio, launchPath(a), a->runLanes,
           (long long)a->tensors[0].chunkRuns, a->launchWordBytes,
           (long long)a->tensors[0].gridBlocks, row->launch.wave);
    if (row->singlesUs > 0)
      printf("#      the three single-tensor packs: %.1f us; one call / their sum: %.3f\n",
             row->singlesUs, row->stageUs / row->singlesUs);
    c->rows++;
    c->ratioSum += ratio;
  } else {
    printf(" %4d %7lld %10lld %10lld %9s %7s %13zu %s\n", row->nRanks, (long long)row->headDim,
           (long long)row->totalLength, (long long)row->localLength, opNames[row->op], stage,
           row->bytes, row->skipped);
  }
  if (c->gpu.json == NULL) return;
  FILE* f = c->gpu.json;
  fprintf(f, "{\"bench\":\"kernel_perf\",\"gpu\":");
  benchJsonString(f, c->gpu.name);
  fprintf(f, ",\"ranks\":%d,\"rank\":0,\"batch\":%lld,\"heads\":%lld,\"head_dim\":%lld,"
             "\"dtype\":\"%s\",\"element_size\":%d,\"total_length\":%lld,\"local_length\":%lld,"
             "\"op\":\"%s\",\"stage\":\"%s\",\"mode\":\"%s\",\"kv_heads\":%lld,"
             "\"pattern\":\"%s\",\"bytes\":%zu,"
             "\"flush_bytes\":%zu,\"iterations\":%lld,\"warmups\":%lld,",
          row->nRanks, (long long)config->batch, (long long)config->heads, (long long)row->headDim,
          config->typeName, config->elementSize, (long long)row->totalLength,
          (long long)row->localLength, opNames[row->op], stage, modeNames[config->mode],
          (long long)(config->mode == MODE_PLAIN ? 0 : config->kvHeads), patternNames[config->pattern],
          row->bytes, c->gpu.flushBytes, (long long)config->iterations, (long long)config->warmups);
  if (row->launch.copies > 0) {
    const ulyssesCopyArgs* a = &row->launch.args;
    fprintf(f, "\"launch\":{\"path\":\"%s\",\"row_tiles\":%d,\"lanes\":%d,\"word_bytes\":%d,"
               "\"sums\":%d,"
               "\"max_runs\":%lld,\"block_threads\":%d,\"wave\":%d,\"grid\":[%lld,%d],"
               "\"chunk_runs\":[",
            launchPath(a), a->rowTiles, a->runLanes, a->launchWordBytes, a->launchSums,
            (long long)row->launch.maxRuns, ULYSSES_COPY_THREADS,
            row->launch.wave, (long long)row->launch.gridBlocks, a->nTensors);
    for (int t = 0; t < a->nTensors; t++)
      fprintf(f, "%s%lld", t ? "," : "", (long long)a->tensors[t].chunkRuns);
    fprintf(f, "],\"row_blocks\":[");
    for (int t = 0; t < a->nTensors; t++)
      fprintf(f, "%s%lld", t ? "," : "", (long long)a->tensors[t].gridBlocks);
    fprintf(f, "]},");
  }
  if (row->singlesUs > 0)
    fprintf(f, "\"singles_us\":%.3f,\"multi_over_singles\":%.4f,", row->singlesUs,
            row->stageUs / row->singlesUs);
  if (row->skipped == NULL)
    fprintf(f, "\"skipped\":null,\"stage_us\":%.3f,\"stage_gbps\":%.2f,\"memcpy_us\":%.3f,"
               "\"memcpy_gbps\":%.2f,\"ratio\":%.4f}\n",
            row->stageUs, stageGbps, row->memcpyUs, memcpyGbps, ratio);
  else
    fprintf(f, "\"skipped\":\"%s\"}\n", row->skipped);
  fflush(f);
}

/* Mean microseconds of the call and of a memcpy of copyBytes, interleaved,
 * each call after a flush and between its own pair of events. */
static int runTimedCall(const void* call, cudaStream_t stream) { return runCall(call, stream); }

static int timeCall(kernelContext* c, const stageCall* call, void* copyDestination,
                    const void* copySource, size_t copyBytes, double* stageUs, double* memcpyUs) {
  const kernelConfig* config = c->config;
  int64_t n = config->iterations;
  benchTimedCall timed = {runTimedCall, call, copyDestination, copySource, copyBytes, n,
                          config->warmups};
  double* stageMs = malloc(sizeof(double) * (size_t)n);
  double* copyMs = malloc(sizeof(double) * (size_t)n);
  HOSTCHECK(stageMs);
  HOSTCHECK(copyMs);
  BENCHCHECK(benchTimeCall(&c->gpu, &timed, stageMs, copyMs));
  double stageSum = 0, copySum = 0;
  for (int64_t i = 0; i < n; i++) {
    stageSum += stageMs[i];
    copySum += copyMs[i];
  }
  free(stageMs);
  free(copyMs);
  *memcpyUs = copySum * 1000.0 / (double)n;
  *stageUs = stageSum * 1000.0 / (double)n;
  return 0;
}

/* A single-tensor stage against the memcpy of its bytes between the same
 * buffers. */
static int timeStage(kernelContext* c, const stageCall* call, const stageSegments* stage,
                     kernelRow* row) {
  void* user = call->users[0];
  void* region = (unsigned char*)call->workspace + stage->regionBegin;
  return timeCall(c, call, call->isPack ? region : user, call->isPack ? user : region, stage->bytes,
                  &row->stageUs, &row->memcpyUs);
}

static int runShape(kernelContext* c, int nRanks, int64_t headDim, int64_t totalLength) {
  static kernelShape s;
  makeShape(c->config, nRanks, headDim, totalLength, &s);
  ulyssesPlan_t plan;
  ULYSSESCHECK(ulyssesPlanCreateExact(&plan, nRanks, 0, s.lengths, 1, &s.layout));
  for (int o = 0; o < 2; o++) {
    size_t workspaceSize = 0;
    ULYSSESCHECK(ulyssesGetWorkspaceSize(plan, ops[o], &workspaceSize));
    for (int isPack = 1; isPack >= 0; isPack--) {
      static stageSegments stage;
      BENCHCHECK(getStageSegments(plan, ops[o], isPack, nRanks, &stage));
      kernelRow row = newRow(&s, headDim, o, isPack);
      row.bytes = stage.bytes;
      if (stage.direct) {
        row.bytes = userBytes(&s, ops[o], isPack);
        row.skipped = "skipped (direct)";
        printRow(c, &row);
        continue;
      }
      size_t bytes = userBytes(&s, ops[o], isPack);
      size_t freeBytes = 0, totalBytes = 0;
      CUDACHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
      if ((double)(bytes + workspaceSize) > 0.95 * (double)freeBytes) {
        row.skipped = "skipped (not enough GPU memory)";
        printRow(c, &row);
        continue;
      }
      if (stage.regionBegin + stage.bytes > workspaceSize || stage.bytes != bytes) {
        benchReportFailure(__FILE__, __LINE__,
                           "%s %s: segments of %zu bytes from workspace offset %zu do not match "
                           "the workspace (%zu bytes) and the tensor (%zu bytes)",
                           opNames[o], isPack ? "pack" : "unpack", stage.bytes, stage.regionBegin,
                           workspaceSize, bytes);
        return 1;
      }
      void *user = NULL, *workspace = NULL;
      BENCHCHECK(deviceAlloc(&user, bytes));
      BENCHCHECK(deviceAlloc(&workspace, workspaceSize));
      BENCHCHECK(captureLaunch(plan, ops[o], isPack, &user, workspace, &row.launch));
      CUDACHECK(cudaMemsetAsync(user, 1, bytes, c->gpu.stream));
      CUDACHECK(cudaMemsetAsync(workspace, 2, workspaceSize, c->gpu.stream));
      const stageCall call = {plan, ops[o], isPack, 1, {user}, workspace, workspaceSize};
      BENCHCHECK(timeStage(c, &call, &stage, &row));
      CUDACHECK(cudaFree(user));
      CUDACHECK(cudaFree(workspace));
      printRow(c, &row);
    }
  }
  ULYSSESCHECK(ulyssesPlanDestroy(plan));
  return 0;
}

/*------------------------------------------------------------------------
 * The grouped-query modes (-m gqa, qkv).
 *----------------------------------------------------------------------*/
/* The bytes of tensor t's workspace segments on one side. */
static int workspaceBytes(ulyssesPlan_t plan, ulyssesOp_t op, int t, int isPack, int nRanks,
                          size_t* bytes) {
  static stageSegments stage;
  stage.segments[0].size = sizeof(ulyssesSegment_t);
  ULYSSESCHECK(ulyssesGetSegments(plan, op, t, isPack, stage.segments));
  *bytes = 0;
  for (int p = 0; p < nRanks; p++)
    if (stage.segments[p].place == ulyssesSegmentInWorkspace) *bytes += stage.segments[p].bytes;
  return 0;
}

static int runGroupedShape(kernelContext* c, int nRanks, int64_t headDim, int64_t totalLength) {
  const kernelConfig* config = c->config;
  static kernelShape s;
  makeShape(config, nRanks, headDim, totalLength, &s);
  ulyssesLayout_t kv = s.layout;
  kv.heads = config->kvHeads;
  kv.queryHeads = config->heads;
  kv.dataType = benchDataType(config);
  ulyssesLayout_t layouts[3] = {s.layout, kv, kv};
  layouts[0].dataType = kv.dataType;
  int qkv = config->mode == MODE_QKV, nTensors = qkv ? 3 : 1;
  ulyssesOp_t op = qkv ? ulyssesOpSeqToHead : ulyssesOpHeadToSeq;
  int isPack = qkv;
  ulyssesPlan_t plan, singles[3];
  ULYSSESCHECK(ulyssesPlanCreateExact(&plan, nRanks, 0, s.lengths, nTensors, qkv ? layouts : &kv));
  for (int t = 0; t < nTensors && qkv; t++)
    ULYSSESCHECK(ulyssesPlanCreateExact(&singles[t], nRanks, 0, s.lengths, 1, &layouts[t]));
  size_t workspaceSize = 0, segmentBytes = 0, userBytesTotal = 0;
  ULYSSESCHECK(ulyssesGetWorkspaceSize(plan, op, &workspaceSize));
  kernelRow row = newRow(&s, headDim, qkv ? 3 : 2, isPack);
  stageCall call = {plan, op, isPack, nTensors, {NULL}, NULL, workspaceSize};
  for (int t = 0; t < nTensors; t++) {
    size_t bytes;
    BENCHCHECK(workspaceBytes(plan, op, t, isPack, nRanks, &bytes));
    segmentBytes += bytes;
    size_t user = (size_t)(config->batch * s.lengths[0] * layouts[qkv ? t : 1].heads * headDim *
                           config->elementSize);
    userBytesTotal += user;
    BENCHCHECK(deviceAlloc(&call.users[t], user));
    CUDACHECK(cudaMemsetAsync(call.users[t], 0, user, c->gpu.stream));
  }
  /* qkv: the bytes the pack writes; gqa: half of what the unpack reads (every
   * replica) and writes, so that the memcpy of row.bytes moves as much. */
  row.bytes = qkv ? segmentBytes : (segmentBytes + userBytesTotal) / 2;
  size_t freeBytes = 0, totalBytes = 0;
  CUDACHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
  void *copySource = NULL, *copyDestination = NULL;
  if ((double)(userBytesTotal + workspaceSize + 2 * row.bytes) > 0.95 * (double)freeBytes) {
    row.skipped = "skipped (not enough GPU memory)";
  } else if (segmentBytes == 0) {
    row.skipped = "skipped (direct)";
  } else {
    BENCHCHECK(deviceAlloc(&call.workspace, workspaceSize));
    BENCHCHECK(deviceAlloc(&copySource, row.bytes));
    BENCHCHECK(deviceAlloc(&copyDestination, row.bytes));
    CUDACHECK(cudaMemsetAsync(call.workspace, 0, workspaceSize, c->gpu.stream));
    CUDACHECK(cudaMemsetAsync(copySource, 1, row.bytes, c->gpu.stream));
    BENCHCHECK(captureLaunch(plan, op, isPack, call.users, call.workspace, &row.launch));
    BENCHCHECK(timeCall(c, &call, copyDestination, copySource, row.bytes, &row.stageUs,
                        &row.memcpyUs));
    for (int t = 0; t < nTensors && qkv; t++) {
      size_t singleWorkspace = 0;
      ULYSSESCHECK(ulyssesGetWorkspaceSize(singles[t], op, &singleWorkspace));
      stageCall single = {singles[t], op, isPack, 1, {call.users[t]}, call.workspace,
                          singleWorkspace};
      double stageUs, memcpyUs;
      BENCHCHECK(timeCall(c, &single, copyDestination, copySource, row.bytes, &stageUs, &memcpyUs));
      row.singlesUs += stageUs;
    }
  }
  printRow(c, &row);
  for (int t = 0; t < nTensors; t++) CUDACHECK(cudaFree(call.users[t]));
  CUDACHECK(cudaFree(call.workspace));
  CUDACHECK(cudaFree(copySource));
  CUDACHECK(cudaFree(copyDestination));
  for (int t = 0; t < nTensors && qkv; t++) ULYSSESCHECK(ulyssesPlanDestroy(singles[t]));
  ULYSSESCHECK(ulyssesPlanDestroy(plan));
  return 0;
}

static int run(const kernelConfig* config) {
  kernelContext c;
  memset(&c, 0, sizeof c);
  c.config = config;
  BENCHCHECK(benchOpenDevice(&c.gpu, config->device, config->flushMiB, config->jsonPath));
  int ulyssesVersion = 0;
  ULYSSESCHECK(ulyssesGetVersion(&ulyssesVersion));
  printf("# kernel_perf: ulyssesPack / ulyssesUnpack of rank 0 of P vs cudaMemcpyAsync D2D\n");
  benchPrintDevice(&c.gpu);
  printf("# ulysses %d.%d.%d | CUDA driver %s, runtime %s\n", ulyssesVersion / 10000,
         ulyssesVersion / 100 % 100, ulyssesVersion % 100, c.gpu.driverText, c.gpu.runtimeText);
  printf("# batch %lld, heads %lld, %s (%d bytes), BSHD, exact plan, lengths: %s; "
         "%lld warm-up and %lld timed iterations\n",
         (long long)config->batch, (long long)config->heads, config->typeName, config->elementSize,
         patternNames[config->pattern], (long long)config->warmups, (long long)config->iterations);
  printf("# GB/s counts bytes read plus bytes written (2 * bytes); ratio = stage / memcpy\n");

  if (config->mode != MODE_PLAIN)
    printf("# mode %s: %lld query heads, %lld kv heads (-c checks the plain stages only)\n",
           modeNames[config->mode], (long long)config->heads, (long long)config->kvHeads);
  for (int d = 0; d < config->nHeadDims && config->check && config->mode == MODE_PLAIN; d++)
    for (int r = 0; r < config->nRankCounts; r++)
      BENCHCHECK(checkShape(&c, (int)config->ranks[r], config->headDims[d]));
  printf("# launch (of the first tensor): path (run: one run per group; sweep: chunks of\n"
         "# runs; tiles: a head slice's chunks tile by tile, ULYSSES_COPY_ORDER=rows; sum) /\n"
         "# lanes per group / runs per chunk / word bytes / blocks of its grid row / the wave\n"
         "# of resident blocks (%d SMs) the launcher shares between the rows\n",
         c.gpu.properties.multiProcessorCount);
  printf("#\n# %4s %7s %10s %10s %9s %7s %13s %11s %12s %11s %12s %7s  %s\n", "P", "headDim",
         "total-len", "local-len", "op", "stage", "bytes", "stage(us)", "stage(GB/s)",
         "memcpy(us)", "memcpy(GB/s)", "ratio", "launch");
  for (int d = 0; d < config->nHeadDims; d++)
    for (int r = 0; r < config->nRankCounts; r++)
      for (int64_t length = config->minLength; length <= config->maxLength;) {
        if (config->mode == MODE_PLAIN)
          BENCHCHECK(runShape(&c, (int)config->ranks[r], config->headDims[d], length));
        else
          BENCHCHECK(runGroupedShape(&c, (int)config->ranks[r], config->headDims[d], length));
        if (length > config->maxLength / config->stepFactor) break;
        length *= config->stepFactor;
      }
  if (config->check && config->mode == MODE_PLAIN)
    printf("# Wrong elements       : %.0f %s\n", c.wrongTotal, c.wrongTotal == 0 ? "OK" : "FAILED");
  printf("# Avg ratio to memcpy  : %.3f over %d timed rows\n#\n",
         c.rows > 0 ? c.ratioSum / c.rows : 0.0, c.rows);
  BENCHCHECK(benchCloseDevice(&c.gpu));
  return c.wrongTotal == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  kernelConfig config;
  int parsed = parseArgs(argc, argv, &config);
  if (parsed == 2) return 0;
  if (parsed != 0) return 1;
  if (benchCountGpus("kernel_perf") == 0) return BENCH_EXIT_NO_GPU;
  return run(&config);
}
