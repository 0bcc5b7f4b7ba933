/* The GPU suite's exchanges group: the table of layouts and lengths, in
 * exact and capacity mode; grouped-query attention (kv tensors checked
 * against reference_gqa.h: seq->head replicates kv heads to every rank whose
 * query heads read them, head->seq sums the replicas in fp32 in rank order,
 * so those inputs are finite floats of the layout's dataType); an opaque kv
 * tensor whose head->seq is refused; and table cases on a non-blocking NCCL
 * communicator. */
#include "suite.h"

#include <stdio.h>
#include <string.h>

typedef struct {
  const char* name;
  int nTensors;
  ulyssesLayout_t layouts[MAX_TENSORS];
  LengthPattern pattern;
  int64_t base;
  int misalign; /* bytes added before every user buffer (not the workspace) */
} Scenario;

static const Scenario scenarios[] = {
    {"bshd b1 h8 d64 e2, equal", 1, {LAYOUT(1, 8, 64, 2, 1, BSHD)}, LENGTHS_EQUAL, 4, 0},
    {"bshd b2 h8 d3 e4, skewed", 1, {LAYOUT(2, 8, 3, 4, 1, BSHD)}, LENGTHS_SKEWED, 2, 0},
    {"sbhd b2 h8 d64 e2, skewed", 1, {LAYOUT(2, 8, 64, 2, 1, SBHD)}, LENGTHS_SKEWED, 2, 0},
    {"sbhd b1 h5 d3 e1, some zero", 1, {LAYOUT(1, 5, 3, 1, 1, SBHD)}, LENGTHS_SOMEZERO, 3, 0},
    {"bshd b2 h3 d1 e8, rank 0 empty", 1, {LAYOUT(2, 3, 1, 8, 1, BSHD)}, LENGTHS_ONEZERO, 3, 0},
    {"sbhd b2 h7 d1 e1, all empty", 1, {LAYOUT(2, 7, 1, 1, 1, SBHD)}, LENGTHS_ALLZERO, 0, 0},
    {"packed bshd b2 h4 d64 e2, skewed", 1, {LAYOUT(2, 4, 64, 2, 3, BSHD)}, LENGTHS_SKEWED, 1, 0},
    {"packed sbhd b1 h6 d3 e4, some zero", 1, {LAYOUT(1, 6, 3, 4, 3, SBHD)}, LENGTHS_SOMEZERO, 2, 0},
    {"packed sbhd b2 h8 d64 e2, equal", 1, {LAYOUT(2, 8, 64, 2, 3, SBHD)}, LENGTHS_EQUAL, 3, 0},
    {"packed bshd b1 h3 d1 e1, rank 0 empty", 1, {LAYOUT(1, 3, 1, 1, 3, BSHD)}, LENGTHS_ONEZERO, 2, 0},
    {"bshd b2 h5 d3 e16, skewed", 1, {LAYOUT(2, 5, 3, 16, 1, BSHD)}, LENGTHS_SKEWED, 1, 0},
    {"sbhd b1 h12 d1 e16, equal", 1, {LAYOUT(1, 12, 1, 16, 1, SBHD)}, LENGTHS_EQUAL, 2, 0},
    {"bshd b2 h1 d64 e4, skewed", 1, {LAYOUT(2, 1, 64, 4, 1, BSHD)}, LENGTHS_SKEWED, 2, 0},
    {"bshd b1 h16 d64 e8, one row per rank", 1, {LAYOUT(1, 16, 64, 8, 1, BSHD)}, LENGTHS_EQUAL, 1, 0},
    {"misaligned bshd b2 h5 d64 e4, skewed", 1, {LAYOUT(2, 5, 64, 4, 1, BSHD)}, LENGTHS_SKEWED, 2, 4},
    {"misaligned sbhd b2 h8 d3 e2, some zero", 1, {LAYOUT(2, 8, 3, 2, 1, SBHD)}, LENGTHS_SOMEZERO, 2, 2},
    {"gqa bshd b2 q8 k2 v2 d64 e2, skewed", 3,
     {LAYOUT(2, 8, 64, 2, 1, BSHD), LAYOUT(2, 2, 64, 2, 1, BSHD), LAYOUT(2, 2, 64, 2, 1, BSHD)},
     LENGTHS_SKEWED, 2, 0},
    {"gqa sbhd b1 q8 k2 v2 d3 e4, some zero", 3,
     {LAYOUT(1, 8, 3, 4, 1, SBHD), LAYOUT(1, 2, 3, 4, 1, SBHD), LAYOUT(1, 2, 3, 4, 1, SBHD)},
     LENGTHS_SOMEZERO, 3, 0},
    {"gqa bshd b2 q12 k3 v3 d64 e2, rank 0 empty", 3,
     {LAYOUT(2, 12, 64, 2, 1, BSHD), LAYOUT(2, 3, 64, 2, 1, BSHD), LAYOUT(2, 3, 64, 2, 1, BSHD)},
     LENGTHS_ONEZERO, 2, 0},
    {"gqa sbhd b2 q4 k1 v1 d64 e2, all empty", 3,
     {LAYOUT(2, 4, 64, 2, 1, SBHD), LAYOUT(2, 1, 64, 2, 1, SBHD), LAYOUT(2, 1, 64, 2, 1, SBHD)},
     LENGTHS_ALLZERO, 0, 0},
    {"mixed bshd b2 h8 d64 e2 + packed sbhd b1 h3 d3 e1 + bshd b2 h2 d1 e8, skewed", 3,
     {LAYOUT(2, 8, 64, 2, 1, BSHD), LAYOUT(1, 3, 3, 1, 3, SBHD), LAYOUT(2, 2, 1, 8, 1, BSHD)},
     LENGTHS_SKEWED, 1, 0},
    {"larger bshd b2 h16 d128 e2, skewed", 1, {LAYOUT(2, 16, 128, 2, 1, BSHD)}, LENGTHS_SKEWED, 8, 0},
};
#define SCENARIO_COUNT ((int)(sizeof scenarios / sizeof scenarios[0]))

/* Grouped-query attention: kv tensors (queryHeads = Hq, heads = Hkv) whose kv
 * heads several ranks may share. The shapes depend on P: one triple
 * (Hq, Hkv, P) for this P, and a second one with other sharing (a kv head
 * split between some ranks only, ranks without a query head). */
enum { GQA_SHAPE_MAIN = 0, GQA_SHAPE_OTHER = 1 };

static void gqaHeads(int shape, int64_t* queryHeads, int64_t* kvHeads) {
  /* MAIN: (8, 2, 1), (8, 1, 2), (28, 4, 3), (8, 1, 4), (28, 4, 8), else (4P, 2, P).
   * OTHER: (8, 1, 1); (6, 3, 2): kv head 1 on both ranks, 0 and 2 on one each;
   * (2, 1, 3): rank 2 owns no query head; (16, 2, 4): each kv head on two
   * ranks; (4, 2, 8): ranks 4..7 own none; else (8, 1, P). */
  static const int64_t mainShapes[9][2] = {{0, 0}, {8, 2}, {8, 1}, {28, 4}, {8, 1},
                                           {0, 0}, {0, 0}, {0, 0}, {28, 4}};
  static const int64_t otherShapes[9][2] = {{0, 0}, {8, 1}, {6, 3}, {2, 1}, {16, 2},
                                            {0, 0}, {0, 0}, {0, 0}, {4, 2}};
  const int64_t(*table)[2] = shape == GQA_SHAPE_MAIN ? mainShapes : otherShapes;
  if (gRanks < 9 && table[gRanks][0] > 0) {
    *queryHeads = table[gRanks][0];
    *kvHeads = table[gRanks][1];
  } else if (shape == GQA_SHAPE_MAIN) {
    *queryHeads = 4 * (int64_t)gRanks;
    *kvHeads = 2;
  } else {
    *queryHeads = 8;
    *kvHeads = 1;
  }
}

typedef struct {
  const char* name;
  int shape;      /* GQA_SHAPE_* */
  int multi;      /* q (plain: Hq heads, queryHeads 0) + k + v in one ulyssesExchangeMulti */
  int64_t batch, headDim;
  ulyssesOrder_t order;
  ulyssesDataType_t kvType, vType; /* multi: k's (and q's) and v's types */
  LengthPattern pattern;
  int64_t base;
  int misalign;
} GqaScenario;

static const GqaScenario gqaScenarios[] = {
    {"kv bshd b2 d5 fp32, some zero, misaligned", GQA_SHAPE_MAIN, 0, 2, 5, BSHD,
     ulyssesTypeFloat32, ulyssesTypeFloat32, LENGTHS_SOMEZERO, 2, 3},
    {"kv sbhd b2 d64 fp16, rank 0 empty", GQA_SHAPE_OTHER, 0, 2, 64, SBHD, ulyssesTypeFloat16,
     ulyssesTypeFloat16, LENGTHS_ONEZERO, 2, 0},
    {"kv bshd b2 d3 bf16, skewed", GQA_SHAPE_OTHER, 0, 2, 3, BSHD, ulyssesTypeBfloat16,
     ulyssesTypeBfloat16, LENGTHS_SKEWED, 1, 0},
    {"q fp16 + k fp16 + v bf16, bshd b2 d64, some zero", GQA_SHAPE_MAIN, 1, 2, 64, BSHD,
     ulyssesTypeFloat16, ulyssesTypeBfloat16, LENGTHS_SOMEZERO, 3, 0},
    {"q bf16 + k bf16 + v fp32, sbhd b1 d8, rank 0 empty", GQA_SHAPE_OTHER, 1, 1, 8, SBHD,
     ulyssesTypeBfloat16, ulyssesTypeFloat32, LENGTHS_ONEZERO, 2, 0},
};
#define GQA_SCENARIO_COUNT ((int)(sizeof gqaScenarios / sizeof gqaScenarios[0]))

/* The table's scenario `index` in one mode (on the main comm, or on the
 * non-blocking one, `where` naming it). */
static void runTableCase(int index, int capacity, ulyssesComm_t comm, const char* where) {
  const Scenario* sc = &scenarios[index];
  setScenario("%s%d \"%s\" (%s)", where, index, sc->name, capacity ? "capacity" : "exact");
  double started = nowMs();
  int64_t lengths[MAX_RANKS], slots[MAX_RANKS];
  makeLengths(sc->pattern, sc->base, lengths);
  for (int r = 0; r < gRanks; r++) slots[r] = lengths[r] + (capacity ? (r + index) % 3 : 0);
  Case c;
  caseInit(&c, sc->nTensors, sc->layouts, lengths, slots, capacity);
  int64_t* deviceLength = capacity ? deviceLengthCreate(lengths[gRank]) : NULL;
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  const BufferStyle style = {GUARD_BYTES + (size_t)sc->misalign,
                             index % 2 == 1 /* zero-byte buffers: NULL */};
  runCase(&c, plan, mixSeed((uint64_t)index, (uint64_t)capacity), &style,
          index % 4 == 3 /* single tensors through ulyssesExchangeMulti too */, 1, comm);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (deviceLength != NULL) CUDA_CHECK(cudaFree(deviceLength));
  if (gRank == 0) printf("rank 0: scenario %s: done in %.0f ms\n", gScenario, nowMs() - started);
}

/* argument: index * 2 + capacity */
static void runTableScenario(const Suite* suite, int argument) {
  runTableCase(argument / 2, argument % 2, suite->comm, "");
}

static void runGqaScenario(const Suite* suite, int argument) {
  int index = argument / 2, capacity = argument % 2;
  const GqaScenario* sc = &gqaScenarios[index];
  int64_t queryHeads = 0, kvHeads = 0;
  gqaHeads(sc->shape, &queryHeads, &kvHeads);
  setScenario("gqa %d \"%s\" Hq %lld Hkv %lld P %d (%s)", index, sc->name, (long long)queryHeads,
              (long long)kvHeads, gRanks, capacity ? "capacity" : "exact");
  double started = nowMs();
  ulyssesLayout_t layouts[MAX_TENSORS];
  int nTensors = 0;
  if (sc->multi) {
    layouts[nTensors++] = gqaLayout(sc->batch, queryHeads, sc->headDim, sc->order, 0, sc->kvType);
    layouts[nTensors++] =
        gqaLayout(sc->batch, kvHeads, sc->headDim, sc->order, queryHeads, sc->kvType);
    layouts[nTensors++] =
        gqaLayout(sc->batch, kvHeads, sc->headDim, sc->order, queryHeads, sc->vType);
  } else {
    layouts[nTensors++] =
        gqaLayout(sc->batch, kvHeads, sc->headDim, sc->order, queryHeads, sc->kvType);
  }
  int64_t lengths[MAX_RANKS], slots[MAX_RANKS];
  makeLengths(sc->pattern, sc->base, lengths);
  for (int r = 0; r < gRanks; r++) slots[r] = lengths[r] + (capacity ? (r + index + 1) % 3 : 0);
  Case c;
  caseInit(&c, nTensors, layouts, lengths, slots, capacity);
  int64_t* deviceLength = capacity ? deviceLengthCreate(lengths[gRank]) : NULL;
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  const BufferStyle style = {GUARD_BYTES + (size_t)sc->misalign, index % 2 == 0};
  runCase(&c, plan, mixSeed(500 + (uint64_t)index, (uint64_t)capacity), &style,
          !sc->multi && index % 2 == 1, sc->multi, suite->comm);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (deviceLength != NULL) CUDA_CHECK(cudaFree(deviceLength));
  if (gRank == 0) printf("rank 0: scenario %s: done in %.0f ms\n", gScenario, nowMs() - started);
}

/* head->seq of an opaque kv tensor whose kv head every rank shares (Hkv = 1,
 * Hq = 2P) has nothing to sum with: ulyssesErrorUnsupportedElementSize on
 * every rank (a plan-wide property, so no rank reaches NCCL), nothing
 * written. With P = 1 nothing is shared: the call moves the bytes. Then
 * exchanges every rank agrees on still work: seq->head of the same plan
 * (opaque replicas) and head->seq of a plain tensor. */
static void runGqaOpaqueScenario(const Suite* suite, int argument) {
  (void)argument;
  ulyssesComm_t comm = suite->comm;
  setScenario("gqa opaque kv head shared by %d rank(s): head->seq", gRanks);
  double started = nowMs();
  ulyssesLayout_t kv = gqaLayout(2, 1, 4, BSHD, 2 * (int64_t)gRanks, ulyssesTypeOpaque);
  kv.elementSize = 2;
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = (r + 1) % 3; /* 1, 2, 0, 1, ... */
  Case c;
  caseInit(&c, 1, &kv, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  uint64_t seed = mixSeed(600, 0);
  const BufferStyle style = {GUARD_BYTES, 0};
  if (gRanks == 1) {
    exchangeChecked(&c, plan, ulyssesOpHeadToSeq, "head->seq (one rank: no replica to sum)",
                    &style, mixSeed(seed, 1), comm);
  } else {
    Exchange x;
    exchangePrepare(&x, &c, plan, ulyssesOpHeadToSeq, &style, mixSeed(seed, 1));
    char message[512];
    ulyssesResult_t got =
        exchangeRefused(&x, plan, "refused head->seq", comm, message, sizeof message);
    gChecks++;
    if (got != ulyssesErrorUnsupportedElementSize)
      reportFailure("ulyssesHeadToSeq of an opaque kv tensor with shared kv heads returned %s, "
                    "not ulyssesErrorUnsupportedElementSize",
                    ulyssesGetErrorString(got));
    exchangeFree(&x);
  }

  /* The same plan's seq->head: replication needs no dataType. */
  setScenario("gqa opaque kv head shared by %d rank(s): seq->head afterwards", gRanks);
  exchangeChecked(&c, plan, ulyssesOpSeqToHead, "seq->head", &style, mixSeed(seed, 3), comm);
  ULY_CHECK(ulyssesPlanDestroy(plan));

  /* A plain exchange on its own plan: the ranks are still in step. */
  setScenario("gqa opaque kv head shared by %d rank(s): plain head->seq afterwards", gRanks);
  const ulyssesLayout_t plain = LAYOUT(2, 3, 4, 4, 1, SBHD);
  for (int r = 0; r < gRanks; r++) lengths[r] = r + 1;
  caseInit(&c, 1, &plain, lengths, lengths, 0);
  plan = makePlan(&c, NULL);
  exchangeChecked(&c, plan, ulyssesOpHeadToSeq, "head->seq", &style, mixSeed(seed, 5), comm);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  checkNoAsyncError(comm);
  if (gRank == 0)
    printf("rank 0: scenario gqa opaque kv head shared by %d rank(s): done in %.0f ms\n", gRanks,
           nowMs() - started);
}

/* A non-blocking NCCL communicator (ncclConfig_t.blocking = 0, made by
 * ncclCommSplit of the main one): the library waits on the host where NCCL
 * answers ncclInProgress. Table scenarios in both modes on it, then its
 * teardown: ncclCommFinalize (waited for), ncclCommDestroy. */
static void runNonBlockingScenario(const Suite* suite, int argument) {
  (void)argument;
  setScenario("non-blocking NCCL communicator: ncclCommSplit");
  double started = nowMs();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t split = NULL;
  ncclResult_t splitting = ncclCommSplit(suite->nccl, 0, gRank, &split, &config);
  if (split == NULL)
    fatal(__FILE__, __LINE__, "ncclCommSplit (non-blocking)", ncclGetErrorString(splitting),
          "no communicator");
  NCCL_WAIT(split, splitting);
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, split, NULL));
  int count = -1, rank = -1;
  ULY_CHECK(ulyssesCommCount(comm, &count));
  ULY_CHECK(ulyssesCommUserRank(comm, &rank));
  gChecks++;
  if (count != gRanks || rank != gRank)
    reportFailure("the non-blocking comm says rank %d of %d", rank, count);

  /* One tensor, sequence first; and three tensors of mixed layouts. */
  const int picks[2] = {2, SCENARIO_COUNT - 2};
  for (int i = 0; i < 2; i++)
    for (int capacity = 0; capacity <= 1; capacity++)
      runTableCase(picks[i], capacity, comm, "non-blocking NCCL communicator: ");
  checkNoAsyncError(comm);

  setScenario("non-blocking NCCL communicator: teardown");
  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ULY_CHECK(ulyssesCommDestroy(comm));
  NCCL_WAIT(split, ncclCommFinalize(split));
  /* Local once finalised; the communicator is gone afterwards, so an
   * ncclInProgress here could not be waited for. */
  ncclResult_t destroyed = ncclCommDestroy(split);
  if (destroyed != ncclSuccess && destroyed != ncclInProgress)
    fatal(__FILE__, __LINE__, "ncclCommDestroy (non-blocking)", ncclGetErrorString(destroyed),
          "NCCL");
  if (gRank == 0)
    printf("rank 0: scenario non-blocking NCCL communicator: done in %.0f ms\n", nowMs() - started);
}

void addExchangeScenarios(ScenarioList* list) {
  for (int i = 0; i < SCENARIO_COUNT; i++)
    for (int capacity = 0; capacity <= 1; capacity++)
      scenarioAdd(list, "exchanges", runTableScenario, 2 * i + capacity, 0, "table-%d-%s", i,
                  capacity ? "capacity" : "exact");
  for (int i = 0; i < GQA_SCENARIO_COUNT; i++)
    for (int capacity = 0; capacity <= 1; capacity++)
      scenarioAdd(list, "exchanges", runGqaScenario, 2 * i + capacity, 0, "gqa-%d-%s", i,
                  capacity ? "capacity" : "exact");
  scenarioAdd(list, "exchanges", runGqaOpaqueScenario, 0, 0, "gqa-opaque");
  scenarioAdd(list, "exchanges", runNonBlockingScenario, 0, 0, "non-blocking");
}
