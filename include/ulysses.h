/*************************************************************************
 * ulysses: NCCL-native all-to-all exchanges for Ulysses sequence parallelism.
 *
 * This header is the whole public API. Every function returns a
 * ulyssesResult_t; ulyssesGetErrorString names a result and
 * ulyssesGetLastError gives the calling thread's detailed message (the
 * argument at fault and why). Asynchronous calls take the CUDA stream as
 * their last argument and never synchronise the host.
 ************************************************************************/

#ifndef ULYSSES_H_
#define ULYSSES_H_

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>
#include <nccl.h>

#define ULYSSES_MAJOR 0
#define ULYSSES_MINOR 1
#define ULYSSES_PATCH 0
#define ULYSSES_VERSION(X, Y, Z) ((X) * 10000 + (Y) * 100 + (Z))
#define ULYSSES_VERSION_CODE ULYSSES_VERSION(ULYSSES_MAJOR, ULYSSES_MINOR, ULYSSES_PATCH)

#if defined(__GNUC__)
#define ULYSSES_API __attribute__((visibility("default")))
#else
#define ULYSSES_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. Every bad-input class has its own code. A call that fails
 * on its arguments or its comm (every code but ulyssesErrorCudaError,
 * ulyssesErrorNcclError and ulyssesErrorPlanMismatch) has enqueued nothing
 * and written nothing: every check runs before the first enqueue. What a
 * late failure leaves behind is said under "Exchanges" below. */
typedef enum {
  ulyssesSuccess = 0,
  ulyssesErrorInvalidArgument = 1,       /* a value out of its documented range */
  ulyssesErrorNullPointer = 2,           /* a required pointer is NULL */
  ulyssesErrorMisalignedPointer = 3,     /* a pointer lacks its documented alignment */
  ulyssesErrorSizeOverflow = 4,          /* a size product overflows, or a tensor exceeds 2^56 bytes */
  ulyssesErrorInvalidLength = 5,         /* a sequence length < 0 or > ULYSSES_MAX_LENGTH */
  ulyssesErrorLengthExceedsCapacity = 6, /* a length above its capacity (reported asynchronously) */
  ulyssesErrorUnsupportedElementSize = 7,/* element size not 1, 2, 4, 8 or 16 bytes, or a
                                            dataType that does not fit it or cannot be summed */
  ulyssesErrorLayoutMismatch = 8,        /* the call's tensors disagree with the plan's */
  ulyssesErrorCommMismatch = 9,          /* the communicator's size or rank differs from the plan's */
  ulyssesErrorWorkspaceTooSmall = 10,    /* workspace smaller than ulyssesGetWorkspaceSize says */
  ulyssesErrorBufferOverlap = 11,        /* an output overlaps an input, another output or the workspace */
  ulyssesErrorCudaError = 12,            /* a CUDA runtime call failed */
  ulyssesErrorNcclError = 13,            /* an NCCL call failed */
  ulyssesErrorSystemError = 14,          /* out of host memory */
  ulyssesErrorUnsupported = 15,          /* e.g. an NCCL older than the library needs */
  ulyssesErrorHeadGroupMismatch = 16,    /* queryHeads is not a multiple of heads */
  ulyssesErrorPlanMismatch = 17,         /* the ranks' plans disagree (checkPlans) */
  ulyssesErrorInvalidUsage = 18,         /* a comm that was destroyed or aborted, or a call
                                            that waits for a stream being captured */
  ulyssesNumResults = 19
} ulyssesResult_t;

/* The longest sequence slice a rank may hold, in rows (positions). */
#define ULYSSES_MAX_LENGTH ((int64_t)INT32_MAX)
/* The most tensors one multi-tensor call moves. */
#define ULYSSES_MAX_TENSORS 8
/* The alignment the workspace pointer needs, in bytes. */
#define ULYSSES_WORKSPACE_ALIGNMENT 16

/* Names a result code ("ulyssesErrorNullPointer"). Never NULL. */
ULYSSES_API const char* ulyssesGetErrorString(ulyssesResult_t result);

/* The message of the calling thread's most recent call, if it failed: which
 * argument and why. Empty after a call that succeeded, except
 * ulyssesCommGetAsyncError, which leaves here the description of the
 * asynchronous error it reports (empty when it reports ulyssesSuccess).
 * Never NULL. */
ULYSSES_API const char* ulyssesGetLastError(void);

/* The version of the loaded library, as ULYSSES_VERSION_CODE. Compare it with
 * the header's ULYSSES_VERSION_CODE after dlopen. */
ULYSSES_API ulyssesResult_t ulyssesGetVersion(int* version);

/*------------------------------------------------------------------------
 * Communicator: wraps, never owns, the caller's NCCL communicator.
 *
 * Threads, with NCCL's rules as the model. Calls on different comms are
 * independent. On one comm:
 *  - the calls that enqueue work (the exchanges, ulyssesAllGatherLengths,
 *    ulyssesGatherLengthsHost) must not run concurrently from several
 *    threads, as NCCL requires of its communicator: one thread at a time;
 *  - ulyssesCommGetAsyncError, ulyssesCommClearAsyncError,
 *    ulyssesCommCount, ulyssesCommUserRank and ulyssesCommAbort may be
 *    called from any thread at any time, also while another thread is inside
 *    an exchange on comm (a watchdog): the abort never frees the NCCL
 *    communicator under a ulyssesCommGetAsyncError, and a call that starts
 *    after the abort returns ulyssesErrorInvalidUsage. A call already past
 *    that check is inside NCCL on the communicator being aborted, where
 *    NCCL's own rules apply (its abort is what unblocks a call waiting for a
 *    dead peer);
 *  - ulyssesCommDestroy may run while other threads are inside calls on
 *    comm: they finish with the memory they hold (the last one frees it)
 *    and calls that start after it return ulyssesErrorInvalidUsage. The NCCL
 *    communicator must outlive those calls (destroy it after they return).
 * Plans are immutable: any number of threads may use one plan at once, each
 * call with its own workspace. ulyssesPlanDestroy must not run while a call
 * uses the plan. The calls without a comm (plan creation and queries,
 * ulyssesPack and ulyssesUnpack, the version and error strings) may run on
 * any thread; ulyssesGetLastError is per thread.
 *----------------------------------------------------------------------*/
typedef struct ulyssesComm* ulyssesComm_t;

#define ULYSSES_CONFIG_MAGIC 0x756c7973u /* "ulys" */

#define ULYSSES_CONFIG_UNDEF_INT INT_MIN

/* Configuration for ulyssesCommCreate. Initialise with
 * ULYSSES_CONFIG_INITIALIZER: size, magic and version let later versions of
 * the library add fields that keep their defaults for older callers, and a
 * field left at ULYSSES_CONFIG_UNDEF_INT takes its default. version is the
 * caller's ULYSSES_VERSION_CODE; a config from a newer header than the
 * library's is read as far as the library knows it (the rest is ignored,
 * with a warning under ULYSSES_DEBUG=WARN). */
typedef struct {
  size_t size;
  unsigned int magic;
  unsigned int version;
  /* 1: before moving any data, every exchange all-gathers a fingerprint of
   * the plan (operation, layouts, every rank's lengths or capacities) and,
   * where the ranks' plans differ, returns ulyssesErrorPlanMismatch on every
   * rank instead of hanging or mixing data. Costs one small all-gather and a
   * host synchronisation per call. A capture cannot synchronise: there an
   * exchange whose plan (and op) passed the check eagerly on this comm before
   * goes ahead unchecked, as the graph replays exactly that plan, and any
   * other returns ulyssesErrorInvalidUsage before enqueuing anything (run it
   * once eagerly first, as NCCL needs anyway). 0: off. Default: the
   * environment variable ULYSSES_CHECK (1 to turn it on), else off. */
  int checkPlans;
  /* 1: exchanges whose outputs lie in ulyssesMemAlloc memory may take the
   * one-pass path ("One pass over NVLink" below); it needs the same value on
   * every rank. 0: never. Default: the environment variable ULYSSES_ONE_PASS
   * (1 to turn it on), else off. A config from a header without this field
   * (a smaller size) leaves the default. */
  int onePass;
} ulyssesConfig_t;

#define ULYSSES_CONFIG_INITIALIZER                                        \
  { sizeof(ulyssesConfig_t), ULYSSES_CONFIG_MAGIC, ULYSSES_VERSION_CODE, \
    ULYSSES_CONFIG_UNDEF_INT, ULYSSES_CONFIG_UNDEF_INT }

/* Wraps ncclComm for use by this library. The caller keeps ncclComm alive
 * until ulyssesCommDestroy and destroys it itself. A non-blocking
 * communicator (ncclConfig_t.blocking = 0) works too: this call waits until
 * its initialisation has finished, and each exchange waits, on the host, for
 * NCCL to have enqueued its work before enqueuing the next kernel (never for
 * the GPU). config may be NULL for the defaults. Allocates a few bytes of
 * device and pinned host memory on ncclComm's device. Checks at run time that
 * the loaded NCCL is at least 2.18. */
ULYSSES_API ulyssesResult_t ulyssesCommCreate(ulyssesComm_t* comm, ncclComm_t ncclComm,
                                              const ulyssesConfig_t* config);

/* Frees what ulyssesCommCreate allocated. Work enqueued with comm must have
 * completed on the device. Does not touch the NCCL communicator. comm may be
 * NULL. Never waits for calls in progress on other threads: the last of them
 * to return frees comm. A call with a destroyed comm returns
 * ulyssesErrorInvalidUsage (as far as the library can tell: a new comm may be
 * given the same address once the old one is freed). */
ULYSSES_API ulyssesResult_t ulyssesCommDestroy(ulyssesComm_t comm);

/* Aborts the NCCL communicator comm wraps (ncclCommAbort: its pending work
 * is cancelled and it is freed; the caller must not use or destroy it
 * afterwards), for a job that has hit an error and must not hang. May be
 * called from another thread while an exchange is in progress. Later calls
 * on comm that enqueue work return ulyssesErrorInvalidUsage, and a second
 * abort too; ulyssesCommDestroy still frees comm itself. */
ULYSSES_API ulyssesResult_t ulyssesCommAbort(ulyssesComm_t comm);

/* The communicator's size and this process's rank in it. */
ULYSSES_API ulyssesResult_t ulyssesCommCount(ulyssesComm_t comm, int* nRanks);
ULYSSES_API ulyssesResult_t ulyssesCommUserRank(ulyssesComm_t comm, int* rank);

/* Without blocking: the NCCL communicator's asynchronous error as
 * ulyssesErrorNcclError (NCCL is asked on every call, so a watchdog sees an
 * ncclRemoteError however late it comes; after ulyssesCommAbort, the error
 * NCCL reported just before the abort), its message naming the device error
 * too if there is one; else the error a kernel of this communicator found
 * on the device, in this order: ulyssesErrorPlanMismatch (a one-pass
 * exchange found the ranks' outputs of a tensor in different
 * ulyssesMemAlloc allocations; it wrote nothing), then
 * ulyssesErrorLengthExceedsCapacity, then ulyssesErrorInvalidLength (a
 * capacity-mode length outside [0, capacity]; the kernels clamped it and
 * wrote nothing outside the buffers); else ulyssesSuccess. Device errors
 * stay set until ulyssesCommClearAsyncError. Under ULYSSES_DEBUG=WARN an
 * error is logged when a call first reports it, not on every poll. */
ULYSSES_API ulyssesResult_t ulyssesCommGetAsyncError(ulyssesComm_t comm, ulyssesResult_t* asyncError);

/* Clears the device errors of comm (a capacity-mode length outside
 * [0, capacity]) once the caller has handled them, so that
 * ulyssesCommGetAsyncError reports only later ones. Call it when the work
 * of comm enqueued so far has completed (e.g. after cudaStreamSynchronize):
 * the host's clear is not atomic against a kernel's update, so an error a
 * kernel reports while the clear runs may be erased, or keep the cleared
 * bits alive. NCCL's errors cannot be cleared: a communicator with one must
 * be aborted. Also allowed after an abort. */
ULYSSES_API ulyssesResult_t ulyssesCommClearAsyncError(ulyssesComm_t comm);

/*------------------------------------------------------------------------
 * Layouts and plans.
 *----------------------------------------------------------------------*/
typedef enum {
  ulyssesOrderBSHD = 0, /* batch first: [B, L, (3,) H, D] (DeepSpeed, VILA) */
  ulyssesOrderSBHD = 1  /* sequence first: [L, B, (3,) H, D] (Megatron) */
} ulyssesOrder_t;

/* How elements are read where the library computes with them: only head ->
 * seq of kv heads shared by several ranks (see queryHeads) sums; everything
 * else moves opaque bytes. */
typedef enum {
  ulyssesTypeOpaque = 0,   /* bytes, moved and never interpreted */
  ulyssesTypeFloat32 = 1,  /* elementSize 4 */
  ulyssesTypeFloat16 = 2,  /* elementSize 2, IEEE binary16 */
  ulyssesTypeBfloat16 = 3  /* elementSize 2 */
} ulyssesDataType_t;

/* One tensor's shape, described on its sequence side. The sequence-side
 * tensor of rank r is [B, L_r, packed, heads, headDim] (BSHD) or
 * [L_r, B, packed, heads, headDim] (SBHD); its head side on rank j is the same
 * with Ltot rows and heads h_j .. h_{j+1}-1 only. Elements are moved as
 * elementSize opaque bytes.
 *
 * size: sizeof(ulyssesLayout_t) as the caller was compiled, in every entry of
 * a layouts array (the library steps through the array by layouts[0].size).
 * A later library that adds fields reads an older caller's smaller struct and
 * gives the missing fields their defaults (0); a caller compiled against a
 * newer header may pass a larger struct as long as the fields this library
 * does not know are 0. The smallest size accepted is
 * ULYSSES_LAYOUT_SIZE_MIN (a struct ending at order: queryHeads and dataType
 * then take their defaults, 0 and ulyssesTypeOpaque). */
typedef struct {
  size_t size;
  int64_t batch;       /* B >= 1 */
  int64_t heads;       /* 1 <= H <= 2^31 - 1; split over ranks in contiguous
                          groups, the lower ranks taking one extra head when P
                          does not divide H (ranks own no head when P > H) */
  int64_t headDim;     /* D >= 1 */
  int64_t elementSize; /* 1, 2, 4, 8 or 16 bytes */
  int packed;          /* 1, or 3 for packed q/k/v ([B, L, 3, H, D]) */
  ulyssesOrder_t order;
  /* Grouped-query attention: 0 for a tensor whose heads are split on their
   * own; otherwise this tensor holds the kv heads (heads = Hkv) read by
   * queryHeads = Hq query heads, a multiple of heads at most 2^31 - 1 (G =
   * Hq / Hkv per kv head). Rank j, owning query heads [h_j, h_{j+1}) of the
   * split of Hq, gets kv heads [floor(h_j / G), ceil(h_{j+1} / G)) (none when
   * it owns no query head): with fewer kv heads than ranks one kv head goes
   * to several ranks, without an expanded copy. head -> seq then sums the
   * ranks' replicas of each kv head: the first, then each next one in
   * increasing rank order, in fp32, rounded once to dataType (a NaN sum
   * becomes the canonical NaN). */
  int64_t queryHeads;
  ulyssesDataType_t dataType; /* needed where head -> seq sums replicas */
} ulyssesLayout_t;

/* The smallest ulyssesLayout_t.size accepted: the fields through order. */
#define ULYSSES_LAYOUT_SIZE_MIN offsetof(ulyssesLayout_t, queryHeads)

typedef enum {
  ulyssesOpSeqToHead = 0, /* [.., L_r, .., H] -> [.., Ltot, .., H_j] */
  ulyssesOpHeadToSeq = 1, /* the inverse (and the backward of SeqToHead) */
  ulyssesOpAllGather = 2  /* [.., L_r, ..] -> [.., Ltot, ..] on every rank */
} ulyssesOp_t;

/* A plan: the ranks' lengths and the tensors' layouts. Pure host data (no
 * CUDA or NCCL call, cheap enough to make every step); immutable, so one plan
 * serves concurrent calls that each have their own workspace. Making it
 * computes every op's messages and workspace layout once, in O(nTensors *
 * nRanks) time and memory, so that an exchange costs the host O(nTensors *
 * nRanks) (bench/host_perf measures both). */
typedef struct ulyssesPlan* ulyssesPlan_t;

/* Exact mode: the host knows every rank's length; only real rows cross the
 * wire. lengths (host, nRanks entries) is copied. Every rank must make its
 * plan with the same lengths and layouts. */
ULYSSES_API ulyssesResult_t ulyssesPlanCreateExact(ulyssesPlan_t* plan, int nRanks, int rank,
                                                   const int64_t* lengths, int nTensors,
                                                   const ulyssesLayout_t* layouts);

/* Capacity mode: the host knows only a bound per rank (capacities, host,
 * nRanks entries, copied); this rank's real length is read at execution time
 * from deviceLocalLength (device memory, one int64_t, 8-byte aligned, kept
 * alive by the caller for the life of the plan) and all-gathered on the
 * stream. Slices travel padded to their capacity. Every tensor has capacity
 * rows: the sequence side of rank r is [B, C_r, ...] (SBHD: [C_r, B, ...]),
 * the head side and the gathered tensor [B, Ctot, ...] (SBHD: [Ctot, B, ...])
 * with Ctot = sum(capacities). The real rows lead: rows 0 .. L_r-1 of each
 * batch entry on the sequence side, rows 0 .. Ltot-1 (every rank's real rows,
 * back to back) on the head side; in SBHD the real rows are the buffer's
 * prefix. The rows after them are padding: never read as data, and in
 * outputs scratch that the library may overwrite. A length outside
 * [0, capacity] is clamped on the device and reported by
 * ulyssesCommGetAsyncError. CUDA-graph safe: lengths may change between
 * replays. */
ULYSSES_API ulyssesResult_t ulyssesPlanCreateCapacity(ulyssesPlan_t* plan, int nRanks, int rank,
                                                      const int64_t* capacities,
                                                      const int64_t* deviceLocalLength,
                                                      int nTensors, const ulyssesLayout_t* layouts);

/* plan may be NULL. */
ULYSSES_API ulyssesResult_t ulyssesPlanDestroy(ulyssesPlan_t plan);

/* The bytes the caller's buffers of tensor span for op: sendBytes for its
 * sendbuff, recvBytes for its recvbuff (either pointer may be NULL). */
ULYSSES_API ulyssesResult_t ulyssesGetBufferSizes(ulyssesPlan_t plan, ulyssesOp_t op, int tensor,
                                                  size_t* sendBytes, size_t* recvBytes);

/* Bytes of device workspace that op needs with plan (0 where every pass is
 * skipped and no length table is needed). */
ULYSSES_API ulyssesResult_t ulyssesGetWorkspaceSize(ulyssesPlan_t plan, ulyssesOp_t op,
                                                    size_t* workspaceSize);

/*------------------------------------------------------------------------
 * Exchanges. Each is enqueued on stream, in this order: (capacity mode) an
 * ncclAllGather of the lengths into the workspace, a small kernel writing the
 * length table (capacity mode, or an exact plan of more than 128 ranks; an
 * exact plan of up to 128 ranks passes its lengths in the copy kernels'
 * parameters), one pack kernel for all tensors, one NCCL group with an
 * ncclSend and an ncclRecv per peer (self included; pairs with zero bytes
 * are skipped on both sides) for each group of tensors that share the
 * workspace's messages (README, "Host time per call", says which tensors
 * share), one unpack kernel. A pass is skipped
 * where the layout makes the data contiguous already. No host
 * synchronisation, no allocation: capturable in a CUDA graph (run once
 * eagerly first, so that NCCL connects its peers).
 *
 * A failure: every argument, the comm and (with the plan check) the ranks'
 * agreement are checked before the first enqueue, so such a failure has
 * enqueued nothing and written nothing (ulyssesErrorPlanMismatch: only the
 * check's own all-gather ran, into the comm's memory, and has completed).
 * Only ulyssesErrorCudaError (a launch or CUDA call failed) and
 * ulyssesErrorNcclError (an NCCL call failed, or its group did) can come
 * after some stages were enqueued; those stages stay enqueued and run. They
 * may have written the workspace and any bytes of the recvbuffs (within
 * their ulyssesGetBufferSizes bytes), and (capacity mode) set the comm's
 * device error; never the sendbuffs or any byte outside the caller's
 * buffers. The recvbuffs' contents are then undefined: synchronise the
 * stream before reusing the workspace (that may report the CUDA error
 * again), and after ulyssesErrorNcclError treat the communicator as broken
 * (ulyssesCommGetAsyncError, then ulyssesCommAbort on every rank).
 *
 * sendbuff/recvbuff: device buffers shaped as the plan's layout says, of
 * ulyssesGetBufferSizes bytes (NULL is accepted only for a buffer of zero
 * bytes), of any alignment (16-byte aligned ones move fastest). Outputs must
 * not overlap inputs, each other or the workspace. workspace: device memory of at least
 * ulyssesGetWorkspaceSize(plan, op) bytes, ULYSSES_WORKSPACE_ALIGNMENT-aligned,
 * not used by another call until this one has completed on the stream.
 * comm's size and rank must equal the plan's.
 *----------------------------------------------------------------------*/
ULYSSES_API ulyssesResult_t ulyssesSeqToHead(ulyssesPlan_t plan, const void* sendbuff, void* recvbuff,
                                             void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream);
ULYSSES_API ulyssesResult_t ulyssesHeadToSeq(ulyssesPlan_t plan, const void* sendbuff, void* recvbuff,
                                             void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream);
ULYSSES_API ulyssesResult_t ulyssesAllGather(ulyssesPlan_t plan, const void* sendbuff, void* recvbuff,
                                             void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream);

/* The same for nTensors tensors at once (q, k and v with their own head
 * counts): one pack launch, one NCCL group, one unpack launch. nTensors must
 * equal the plan's; sendbuffs[i] and recvbuffs[i] follow the plan's layouts[i]. */
ULYSSES_API ulyssesResult_t ulyssesExchangeMulti(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                 const void* const* sendbuffs, void* const* recvbuffs,
                                                 void* workspace, size_t workspaceSize,
                                                 ulyssesComm_t comm, cudaStream_t stream);

/* All-gathers this rank's length (device, one int64_t) into lengths (device,
 * nRanks int64_t) on stream: ncclAllGather, nothing else. */
ULYSSES_API ulyssesResult_t ulyssesAllGatherLengths(const int64_t* deviceLocalLength,
                                                    int64_t* deviceLengths, ulyssesComm_t comm,
                                                    cudaStream_t stream);

/* The one explicit, synchronising length exchange, for exact mode: gathers
 * every rank's localLength into hostLengths (nRanks entries) and waits for
 * stream. Call it once per step, not per exchange. Not for concurrent use on
 * one comm. While stream is being captured it returns
 * ulyssesErrorInvalidUsage before enqueuing anything (waiting would break
 * the capture); another thread's capture in cudaStreamCaptureModeGlobal
 * survives it (it waits in relaxed mode, as NCCL does; so does the plan
 * check). hostLengths is written only on success. */
ULYSSES_API ulyssesResult_t ulyssesGatherLengthsHost(int64_t localLength, int64_t* hostLengths,
                                                     ulyssesComm_t comm, cudaStream_t stream);

/*------------------------------------------------------------------------
 * The local stages alone, for a framework with its own transport.
 * ulyssesPack fills the workspace's send segments from sendbuffs;
 * ulyssesGetSegments says where each message lives; after the caller has
 * moved every send segment (tensor t, to peer p) into peer p's matching
 * receive segment (tensor t, from this rank), ulyssesUnpack scatters the
 * receive segments into recvbuffs. deviceLengths: capacity mode, every rank's
 * length on the device (nRanks int64_t, e.g. from ulyssesAllGatherLengths);
 * exact mode, NULL. Both stages of one exchange take the same workspace (of
 * ulyssesGetWorkspaceSize(plan, op) bytes). Neither stage calls NCCL.
 *----------------------------------------------------------------------*/
typedef enum {
  ulyssesSegmentInWorkspace = 0,  /* offset is from the workspace pointer */
  ulyssesSegmentInUserBuffer = 1  /* offset is from the tensor's sendbuff (send) or recvbuff (receive) */
} ulyssesSegmentPlace_t;

/* size: as in ulyssesLayout_t. The caller sets segments[0].size to
 * sizeof(ulyssesSegment_t); the library steps through the array by it, fills
 * the fields it knows, zeroes the rest of each entry and sets every entry's
 * size. */
typedef struct {
  size_t size;
  ulyssesSegmentPlace_t place;
  size_t offset;
  size_t bytes; /* equal on both sides of every pair; 0: nothing to move */
} ulyssesSegment_t;

/* The smallest ulyssesSegment_t.size accepted: every field of this version. */
#define ULYSSES_SEGMENT_SIZE_MIN (sizeof(ulyssesSegment_t))

/* For tensor, the send (isSend = 1) or receive segments, one per peer
 * (segments: nRanks entries of segments[0].size bytes each). In the
 * workspace the segments with one peer of consecutive tensors may follow
 * each other in tensor order (those of tensors of the same shape, the
 * ulyssesLayout_t fields equal but dataType, always do): where one ends at
 * the next one's offset on both sides of a pair, one message may carry
 * both. */
ULYSSES_API ulyssesResult_t ulyssesGetSegments(ulyssesPlan_t plan, ulyssesOp_t op, int tensor,
                                               int isSend, ulyssesSegment_t* segments);

/* Bits that the stages OR into *deviceStatus when a capacity-mode length is
 * outside [0, capacity] (they clamp it and write nothing out of bounds). */
#define ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY 0x1u
#define ULYSSES_STATUS_NEGATIVE_LENGTH 0x2u

/* deviceStatus: capacity mode, one uint32_t of device (or mapped host) memory
 * that the caller zeroes and reads; exact mode, NULL. The stages OR into it
 * with device-scope atomics (atomic among the threads of the stream's
 * device, not against the host). A failure is as for the exchanges: CUDA
 * errors only after the checks; the enqueued stages may then have written
 * the workspace, the recvbuffs and deviceStatus. */
ULYSSES_API ulyssesResult_t ulyssesPack(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                        const void* const* sendbuffs, const int64_t* deviceLengths,
                                        uint32_t* deviceStatus, void* workspace,
                                        size_t workspaceSize, cudaStream_t stream);
ULYSSES_API ulyssesResult_t ulyssesUnpack(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                          void* const* recvbuffs, const int64_t* deviceLengths,
                                          uint32_t* deviceStatus, void* workspace,
                                          size_t workspaceSize, cudaStream_t stream);

/*------------------------------------------------------------------------
 * One pass over NVLink (experimental; docs/one-pass.md). An exchange whose
 * outputs all lie in memory from ulyssesMemAlloc, on a comm whose ranks all
 * reach each other by load and store, may move its data in one kernel that
 * writes straight into the peers' outputs, instead of pack, NCCL and unpack.
 * Off by default: ULYSSES_ONE_PASS=1 in every rank's environment, or
 * config.onePass = 1, when the comm is created turns it on. It has not run
 * on GPUs that reach each other by load and store (its kernel ran on one GPU
 * with simulated ranks only): turn it on to test it, not to train with it.
 * Every rank must pass its outputs in ulyssesMemAlloc memory, or none: a
 * rank on the one-pass path waits for its peers' kernels (ULYSSES_CHECK=1
 * turns that disagreement into ulyssesErrorPlanMismatch). The outputs of a
 * tensor on all ranks must lie in the same collective allocation (else
 * ulyssesCommGetAsyncError reports ulyssesErrorPlanMismatch and nothing was
 * written). ulyssesGetExchangePath says which path a call takes and why.
 *----------------------------------------------------------------------*/
typedef enum {
  ulyssesPathStaged = 0, /* pack, one NCCL group, unpack (the exchanges above) */
  ulyssesPathOnePass = 1 /* one kernel writing into the peers' symmetric outputs */
} ulyssesPath_t;

/* Collective: every rank of comm calls it, with the same size, in the same
 * order as its other ulyssesMemAlloc and ulyssesMemFree calls on comm.
 * Allocates size bytes of device memory on comm's device (ncclMemAlloc),
 * registered as an NCCL symmetric window that the peers can address where
 * the comm can take one pass (elsewhere plain memory, which the staged path
 * takes as any other). Not for concurrent use with other calls on comm. */
ULYSSES_API ulyssesResult_t ulyssesMemAlloc(ulyssesComm_t comm, size_t size, void** ptr);

/* Collective, like ulyssesMemAlloc: frees ptr, which ulyssesMemAlloc on comm
 * returned; work that uses it must have completed. ptr may be NULL.
 * ulyssesCommDestroy frees what is left (so call it on every rank). */
ULYSSES_API ulyssesResult_t ulyssesMemFree(ulyssesComm_t comm, void* ptr);

/* The path that ulyssesExchangeMulti(plan, op, nTensors, ..., recvbuffs, ...,
 * comm, ...) takes, and why (*reason: a static string; reason may be NULL).
 * The arguments are checked as the exchange checks them (the buffers' sizes
 * and overlaps excepted). */
ULYSSES_API ulyssesResult_t ulyssesGetExchangePath(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                   void* const* recvbuffs, ulyssesComm_t comm,
                                                   ulyssesPath_t* path, const char** reason);

#ifdef __cplusplus
}
#endif

#endif /* ULYSSES_H_ */
