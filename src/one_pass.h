/* The one-pass exchange (docs/one-pass.md), its host side: which path an
 * exchange takes and why, the registry of the library's symmetric
 * allocations, and the arguments of the one-pass launch. Pure host code (no
 * CUDA, no NCCL call), so that the CPU tests reach every branch. */
#ifndef ULYSSES_ONE_PASS_H_
#define ULYSSES_ONE_PASS_H_

#include "one_pass_index.h"
#include "plan.h"

/* The first NCCL with the device API (nccl_device.h) the kernel is written for. */
#define ULYSSES_ONE_PASS_MIN_NCCL 22800
/* From 2.29 NCCL versions its device structs: a library built against
 * version V runs on any loaded NCCL >= V. Before, only on V itself. */
#define ULYSSES_ONE_PASS_VERSIONED_NCCL 22900

enum { ULYSSES_PATH_STAGED = 0, ULYSSES_PATH_ONE_PASS = 1 };

/* One allocation of ulyssesMemAlloc: collective, so the k-th allocation of
 * every rank has the same serial. */
typedef struct {
  const unsigned char* base;
  size_t bytes;
  uint64_t serial;
  void* window; /* its ncclWindow_t */
} ulyssesSymmetricBuffer;

typedef struct {
  ulyssesSymmetricBuffer* buffers;
  int count;
  int capacity;
  uint64_t nextSerial;
} ulyssesSymmetricRegistry;

/* Records an allocation; ulyssesErrorSystemError when out of host memory,
 * ulyssesErrorInvalidArgument when it overlaps one already recorded. */
ulyssesResult_t ulyssesSymmetricAdd(ulyssesSymmetricRegistry* registry, const void* base,
                                    size_t bytes, void* window);
/* Forgets the allocation that starts at base; *window is its window. 0 when
 * base starts no recorded allocation. */
int ulyssesSymmetricRemove(ulyssesSymmetricRegistry* registry, const void* base, void** window);
/* The allocation holding all of [begin, begin + bytes), or NULL. */
const ulyssesSymmetricBuffer* ulyssesSymmetricFind(const ulyssesSymmetricRegistry* registry,
                                                   const void* begin, size_t bytes);
void ulyssesSymmetricClear(ulyssesSymmetricRegistry* registry);

/* What the comm knows about one-pass support, fixed when it is created. */
typedef struct {
  int enabled;             /* ULYSSES_ONE_PASS=1 or config->onePass */
  int kernelReady;         /* the library has the one-pass kernel and its launch */
  int compiledNcclVersion; /* NCCL_VERSION_CODE the library was built with */
  int runtimeNcclVersion;  /* ncclGetVersion */
  int devCommReady;        /* ncclDevCommCreate succeeded */
  int lsaRanks;            /* ranks of the LSA team (load/store reachable) */
  int commRanks;
} ulyssesOnePassSupport;

/* The first reason this comm cannot take one pass whatever the call (the
 * setting, the build, the NCCL versions, the comm's size), or NULL: what
 * decides, at creation, whether to ask for NCCL's device comm. */
const char* ulyssesOnePassCommReason(const ulyssesOnePassSupport* support);

/* The path op takes with plan and these outputs (recvbuffs: the plan's
 * nTensors outputs), and why, as a static string: the first reason to fall
 * back, or why one pass is taken. Every input but the outputs' placement is
 * the same on every rank of a job whose ranks agree on the plan. */
int ulyssesChooseExchangePath(const ulyssesOnePassSupport* support,
                              const ulyssesSymmetricRegistry* registry,
                              const struct ulyssesPlan* plan, ulyssesOp_t op,
                              void* const* recvbuffs, const char** reason);

/* The one-pass launch of op for plan: inputs sendbuffs; peerOutputs[t], when
 * not NULL, the nRanks addresses of tensor t's outputs as this rank writes
 * them (the word size then divides them all; the kernel narrows it further
 * from the addresses it resolves itself). The length table's three arrays
 * (args->lengths, offsets, slotOffsets) are left NULL for the caller, which
 * knows where its table lives, as the pack and unpack launches do. */
void ulyssesOnePassFill(const struct ulyssesPlan* plan, ulyssesOp_t op,
                        const void* const* sendbuffs, unsigned char* const* const* peerOutputs,
                        ulyssesOnePassArgs* args);

/* The host's part of the NCCL launch for op with plan (after the path
 * choice said one pass): the publish step's slot and table values in *sync,
 * and windows[t], this rank's window of the allocation holding output t. */
void ulyssesOnePassFillSync(const struct ulyssesPlan* plan, ulyssesOp_t op,
                            const ulyssesSymmetricRegistry* registry, void* const* recvbuffs,
                            uint32_t* status, ulyssesOnePassSync* sync, void** windows);

/* The comm's one-pass state (struct ulyssesComm.onePass). */
struct ulyssesOnePassState {
  ulyssesOnePassSupport support;
  ulyssesSymmetricRegistry registry;
  void* devComm; /* ulyssesOnePassDevCommCreate's, or NULL */
};

#endif /* ULYSSES_ONE_PASS_H_ */
