/* head -> seq: rank j's [B, Ltot, H_j, D] becomes rank r's [B, L_r, H, D]
 * (the all-to-all after attention, and the backward of seq -> head). */
#include "common.h"

static int layouts(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  return 1;
}

static ulyssesResult_t run(const benchCall* call) {
  return ulyssesHeadToSeq(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

const benchOp benchOpHeadToSeq = {
    "head2seq", "[B, Ltot, H/P, D] -> [B, L_r, H, D] (ulyssesHeadToSeq)",
    ulyssesOpHeadToSeq, layouts, benchAllToAllBytes, refHeadToSeq, run};
