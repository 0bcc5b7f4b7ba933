/* Grouped-query attention: q with H query heads, split on its own, and k, v
 * with G (-G) kv heads each (queryHeads = H, dataType from -d), moved together
 * by one ulyssesExchangeMulti. Rank j gets the kv heads its query heads read,
 * [floor(h_j / G'), ceil(h_{j+1} / G')) with G' = H / G: with fewer kv heads
 * than ranks, a kv head goes to several ranks, with no expanded copy.
 *  - gqa:     seq -> head (the forward);
 *  - gqa_bwd: head -> seq (the backward: q's gradient is moved, each kv
 *             head's gradient is the fp32 sum of its ranks' replicas).
 * The kv tensors are checked against refGqaSeqToHead / refGqaHeadToSeq, q
 * against the plain reference (common.c picks by the layouts' queryHeads). */
#include "common.h"

static int layouts(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  for (int t = 1; t < 3; t++) {
    layouts[t] = benchLayout(config, config->kvHeads, 1);
    layouts[t].queryHeads = config->heads;
    layouts[t].dataType = benchDataType(config->typeName);
  }
  return 3;
}

static ulyssesResult_t runForward(const benchCall* call) {
  return ulyssesExchangeMulti(call->plan, ulyssesOpSeqToHead, call->nTensors, call->sendbuffs,
                              call->recvbuffs, call->workspace, call->workspaceSize, call->comm,
                              call->stream);
}

static ulyssesResult_t runBackward(const benchCall* call) {
  return ulyssesExchangeMulti(call->plan, ulyssesOpHeadToSeq, call->nTensors, call->sendbuffs,
                              call->recvbuffs, call->workspace, call->workspaceSize, call->comm,
                              call->stream);
}

const benchOp benchOpGqa = {
    "gqa", "like multi, but k and v hold the G kv heads of grouped-query attention:\n"
    "                         rank j gets those its q heads read (ulyssesExchangeMulti)",
    ulyssesOpSeqToHead, layouts, benchAllToAllBytes, refSeqToHead, runForward};

const benchOp benchOpGqaBackward = {
    "gqa_bwd", "gqa's inverse, head -> seq: a kv head's replicas (its gradients) summed\n"
    "                         in fp32 (ulyssesExchangeMulti)",
    ulyssesOpHeadToSeq, layouts, benchAllToAllBytes, refHeadToSeq, runBackward};
