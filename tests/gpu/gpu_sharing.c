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
