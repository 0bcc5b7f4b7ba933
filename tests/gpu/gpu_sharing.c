#include "gpu_sharing.h"

#include <stdio.h>
#include <string.h>

gpuSharingMode gpuSharingChoose(int loadedNcclVersion, const char* multiRankSetting,
                                const char** why) {
  const char* unused;
  if (why == NULL) why = &unused;
  if (multiRankSetting != NULL && multiRankSetting[0] != '\0') {
    if (strcmp(multiRankSetting, "0") == 0) {
      *why = "NCCL_MULTI_RANK_GPU_ENABLE=0 is set";
      return GPU_SHARING_SOCKETS;
    }
    *why = "NCCL_MULTI_RANK_GPU_ENABLE is set";
    return GPU_SHARING_P2P;
  }
  if (loadedNcclVersion < GPU_SHARING_P2P_NCCL) {
    *why = "the loaded NCCL is older than 2.30, which first shares a GPU between ranks";
    return GPU_SHARING_SOCKETS;
  }
  *why = "the loaded NCCL is 2.30 or newer";
  return GPU_SHARING_P2P;
}

static int add(gpuSharingVariable* out, int n, const char* name, const char* value,
               int overridesUser) {
  out[n].name = name;
  snprintf(out[n].value, sizeof out[n].value, "%s", value);
  out[n].overridesUser = overridesUser;
  return n + 1;
}

int gpuSharingVariables(gpuSharingMode mode, int rank, gpuSharingVariable* out) {
  int n = 0;
  if (mode == GPU_SHARING_P2P) return add(out, n, "NCCL_MULTI_RANK_GPU_ENABLE", "1", 0);
  char hostId[32];
  snprintf(hostId, sizeof hostId, "ulyrank%d", rank);
  n = add(out, n, "NCCL_HOSTID", hostId, 1);
  n = add(out, n, "NCCL_NET", "Socket", 0);
  n = add(out, n, "NCCL_SOCKET_IFNAME", "lo", 0);
  n = add(out, n, "NCCL_IB_DISABLE", "1", 0);
  n = add(out, n, "NCCL_P2P_DISABLE", "1", 0);
  n = add(out, n, "NCCL_SHM_DISABLE", "1", 0);
  n = add(out, n, "NCCL_NVLS_ENABLE", "0", 0);
  n = add(out, n, "NCCL_MNNVL_ENABLE", "0", 0);
  return n;
}

const char* gpuSharingName(gpuSharingMode mode) {
  return mode == GPU_SHARING_P2P ? "P2P (NCCL_MULTI_RANK_GPU_ENABLE=1)"
                                 : "loopback sockets, one host id per rank";
}

void gpuSharingInitAdvice(char* out, size_t size, int nRanks, int sharedGpu, gpuSharingMode mode,
                          const char* ncclError, int timeoutSeconds) {
  char outcome[320];
  if (ncclError != NULL)
    snprintf(outcome, sizeof outcome, "failed: %s", ncclError);
  else
    snprintf(outcome, sizeof outcome, "gave no answer within %d s", timeoutSeconds);
  const char* sharing = !sharedGpu ? "each rank on a GPU of its own" : gpuSharingName(mode);
  const char* advice =
      !sharedGpu ? "check that every rank started (the lines above) and reaches the others"
      : mode == GPU_SHARING_P2P
          ? "NCCL's multi-rank-per-GPU mode is experimental and may refuse this many ranks on one "
            "GPU: try fewer ranks, or NCCL_MULTI_RANK_GPU_ENABLE=0 for loopback sockets"
          : "try fewer ranks, or an NCCL of 2.30 or newer, whose ranks share a GPU over P2P";
  snprintf(out, size,
           "NCCL's communicator of %d rank(s) %s; ranks: %s. %s; NCCL_DEBUG=INFO shows NCCL's side",
           nRanks, outcome, sharing, advice);
}
