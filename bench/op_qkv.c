/* Packed q/k/v, seq -> head: [B, L_r, 3, H, D] -> [B, Ltot, 3, H_j, D] in one
 * exchange (the seed's 5-D variant, here with any lengths). */
#include "common.h"

static int layouts(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 3);
  return 1;
}

static ulyssesResult_t run(const benchCall* call) {
  return ulyssesSeqToHead(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

const benchOp benchOpQkv = {
    "qkv", "packed [B, L_r, 3, H, D] -> [B, Ltot, 3, H/P, D] (ulyssesSeqToHead)",
    ulyssesOpSeqToHead, layouts, benchAllToAllBytes, refSeqToHead, run};
