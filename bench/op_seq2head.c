/* seq -> head: rank r's [B, L_r, H, D] becomes rank j's [B, Ltot, H_j, D]
 * (the first all-to-all around attention; VILA calls it for q, k and v). */
#include "common.h"

static int layouts(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  return 1;
}

static ulyssesResult_t run(const benchCall* call) {
  return ulyssesSeqToHead(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

const benchOp benchOpSeqToHead = {
    "seq2head", "[B, L_r, H, D] -> [B, Ltot, H/P, D] (ulyssesSeqToHead)",
    ulyssesOpSeqToHead, layouts, benchAllToAllBytes, refSeqToHead, run};
