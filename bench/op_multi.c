/* Several tensors, seq -> head: q with H heads and k, v with G (-G) heads
 * each, moved together by one ulyssesExchangeMulti (one pack launch, one NCCL
 * group, one unpack launch). Each tensor's heads are split over the ranks on
 * their own; this is not the kv-head replication of grouped-query attention. */
#include "common.h"

static int layouts(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  layouts[1] = benchLayout(config, config->kvHeads, 1);
  layouts[2] = benchLayout(config, config->kvHeads, 1);
  return 3;
}

static ulyssesResult_t run(const benchCall* call) {
  return ulyssesExchangeMulti(call->plan, ulyssesOpSeqToHead, call->nTensors, call->sendbuffs,
                              call->recvbuffs, call->workspace, call->workspaceSize, call->comm,
                              call->stream);
}

const benchOp benchOpMulti = {
    "multi", "q [B, L_r, H, D], k and v [B, L_r, G, D] -> head groups (ulyssesExchangeMulti)",
    ulyssesOpSeqToHead, layouts, benchAllToAllBytes, refSeqToHead, run};
