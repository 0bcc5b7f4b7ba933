/* The operations of ulysses_perf, one entry each (-o), as nccl-tests gives
 * each op a file of its own: the tensors it moves (its layouts), the bytes
 * it is credited with, its CPU reference (the driver fills every rank's
 * inputs from their seeds and checks the outputs against it) and the one
 * library call it times. Ops that differ only in these share the functions
 * below. */
#include "common.h"

#include <string.h>

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

int benchUsesKvHeads(const benchOp* op) { return op->usesKvHeads; }

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

/*------------------------------------------------------------------------
 * What the ops move.
 *----------------------------------------------------------------------*/
/* One tensor of H heads. */
static int oneTensor(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  return 1;
}

/* Packed q/k/v: [B, L_r, 3, H, D] in one tensor (the seed's 5-D variant). */
static int packedQkv(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 3);
  return 1;
}

/* q with H heads and k, v with G (-G) heads each, each tensor's heads split
 * over the ranks on their own (not the kv-head replication of gqa). */
static int qkvTensors(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  layouts[1] = benchLayout(config, config->kvHeads, 1);
  layouts[2] = benchLayout(config, config->kvHeads, 1);
  return 3;
}

/* Grouped-query attention: q with H query heads, split on its own, and k, v
 * with G kv heads each (queryHeads = H, dataType from -d). Rank j gets the kv
 * heads its query heads read, [floor(h_j / G'), ceil(h_{j+1} / G')) with
 * G' = H / G: with fewer kv heads than ranks, a kv head goes to several
 * ranks, with no expanded copy. The kv tensors are checked against
 * refGqaSeqToHead / refGqaHeadToSeq, q against the op's reference (the
 * driver picks by the layouts' queryHeads). */
static int gqaTensors(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  for (int t = 1; t < 3; t++) {
    layouts[t] = benchLayout(config, config->kvHeads, 1);
    layouts[t].queryHeads = config->heads;
    layouts[t].dataType = benchDataType(config->typeName);
  }
  return 3;
}

/*------------------------------------------------------------------------
 * The library calls they time.
 *----------------------------------------------------------------------*/
static ulyssesResult_t runSeqToHead(const benchCall* call) {
  return ulyssesSeqToHead(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

static ulyssesResult_t runHeadToSeq(const benchCall* call) {
  return ulyssesHeadToSeq(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

static ulyssesResult_t runAllGather(const benchCall* call) {
  return ulyssesAllGather(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

/* Several tensors in one call: one pack launch, one NCCL group, one unpack. */
static ulyssesResult_t runMultiSeqToHead(const benchCall* call) {
  return ulyssesExchangeMulti(call->plan, ulyssesOpSeqToHead, call->nTensors, call->sendbuffs,
                              call->recvbuffs, call->workspace, call->workspaceSize, call->comm,
                              call->stream);
}

static ulyssesResult_t runMultiHeadToSeq(const benchCall* call) {
  return ulyssesExchangeMulti(call->plan, ulyssesOpHeadToSeq, call->nTensors, call->sendbuffs,
                              call->recvbuffs, call->workspace, call->workspaceSize, call->comm,
                              call->stream);
}

/*------------------------------------------------------------------------
 * The table (-o's values, in -h's order).
 *----------------------------------------------------------------------*/
const benchOp benchOps[] = {
    /* The first all-to-all around attention (VILA calls it for q, k and v). */
    {"seq2head", "[B, L_r, H, D] -> [B, Ltot, H/P, D] (ulyssesSeqToHead)", ulyssesOpSeqToHead,
     oneTensor, benchAllToAllBytes, refSeqToHead, runSeqToHead, 0},
    /* The all-to-all after attention, and the backward of seq -> head. */
    {"head2seq", "[B, Ltot, H/P, D] -> [B, L_r, H, D] (ulyssesHeadToSeq)", ulyssesOpHeadToSeq,
     oneTensor, benchAllToAllBytes, refHeadToSeq, runHeadToSeq, 0},
    {"qkv", "packed [B, L_r, 3, H, D] -> [B, Ltot, 3, H/P, D] (ulyssesSeqToHead)",
     ulyssesOpSeqToHead, packedQkv, benchAllToAllBytes, refSeqToHead, runSeqToHead, 0},
    {"multi", "q [B, L_r, H, D], k and v [B, L_r, G, D] -> head groups (ulyssesExchangeMulti)",
     ulyssesOpSeqToHead, qkvTensors, benchAllToAllBytes, refSeqToHead, runMultiSeqToHead, 1},
    /* The forward of grouped-query attention. */
    {"gqa",
     "like multi, but k and v hold the G kv heads of grouped-query attention:\n"
     "                         rank j gets those its q heads read (ulyssesExchangeMulti)",
     ulyssesOpSeqToHead, gqaTensors, benchAllToAllBytes, refSeqToHead, runMultiSeqToHead, 1},
    /* Its backward: q's gradient is moved, each kv head's gradient is the fp32
     * sum of its ranks' replicas. */
    {"gqa_bwd",
     "gqa's inverse, head -> seq: a kv head's replicas (its gradients) summed\n"
     "                         in fp32 (ulyssesExchangeMulti)",
     ulyssesOpHeadToSeq, gqaTensors, benchAllToAllBytes, refHeadToSeq, runMultiHeadToSeq, 1},
    /* Every rank gets the whole sequence (VILA's attention mask is H = D = 1). */
    {"allgather", "[B, L_r, H, D] -> [B, Ltot, H, D] on every rank (ulyssesAllGather)",
     ulyssesOpAllGather, oneTensor, benchAllGatherBytes, refAllGather, runAllGather, 0},
};

const int benchOpCount = (int)(sizeof benchOps / sizeof benchOps[0]);
