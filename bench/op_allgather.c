/* Sequence all-gather: every rank gets [B, Ltot, H, D] from the ranks'
 * [B, L_r, H, D] (VILA's attention mask is the case H = D = 1). */
#include "common.h"

static int layouts(const benchConfig* config, ulyssesLayout_t* layouts) {
  layouts[0] = benchLayout(config, config->heads, 1);
  return 1;
}

static ulyssesResult_t run(const benchCall* call) {
  return ulyssesAllGather(call->plan, call->sendbuffs[0], call->recvbuffs[0], call->workspace,
                          call->workspaceSize, call->comm, call->stream);
}

const benchOp benchOpAllGather = {
    "allgather", "[B, L_r, H, D] -> [B, Ltot, H, D] on every rank (ulyssesAllGather)",
    ulyssesOpAllGather, layouts, benchAllGatherBytes, refAllGather, run};
