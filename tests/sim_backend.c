#include "sim_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch_policy.h"

typedef enum { SIM_ALL_GATHER, SIM_GROUP_START, SIM_GROUP_END, SIM_SEND, SIM_RECV, SIM_TABLE, SIM_COPY } simOpKind;

static const char* const kindNames[] = {"ncclAllGather", "ncclGroupStart", "ncclGroupEnd",
                                        "ncclSend", "ncclRecv", "table kernel", "copy kernel"};

typedef struct {
  simOpKind kind;
  const void* sendbuff;
  void* recvbuff;
  size_t bytes;
  int peer;
  int64_t maxRuns;
  ulyssesTableArgs table;
  ulyssesCopyArgs copy;
} simOp;

typedef struct {
  simWorld* world;
  int rank;
  simOp* ops;
  int count;
  int capacity;
} simProgram;

struct simWorld {
  int nRanks;
  simProgram* programs;
};

simWorld* simCreate(int nRanks) {
  simWorld* world = calloc(1, sizeof *world);
  world->nRanks = nRanks;
  world->programs = calloc((size_t)nRanks, sizeof(simProgram));
  for (int r = 0; r < nRanks; r++) {
    world->programs[r].world = world;
    world->programs[r].rank = r;
  }
  return world;
}

void simDestroy(simWorld* world) {
  for (int r = 0; r < world->nRanks; r++) free(world->programs[r].ops);
  free(world->programs);
  free(world);
}

static simOp* record(simProgram* program, simOpKind kind) {
  if (program->count == program->capacity) {
    program->capacity = program->capacity ? 2 * program->capacity : 16;
    program->ops = realloc(program->ops, sizeof(simOp) * (size_t)program->capacity);
  }
  simOp* op = &program->ops[program->count++];
  memset(op, 0, sizeof *op);
  op->kind = kind;
  return op;
}

static ulyssesResult_t simAllGather(void* context, const void* sendbuff, void* recvbuff, size_t bytes) {
  simOp* op = record(context, SIM_ALL_GATHER);
  op->sendbuff = sendbuff;
  op->recvbuff = recvbuff;
  op->bytes = bytes;
  return ulyssesSuccess;
}

static ulyssesResult_t simGroupStart(void* context) {
  record(context, SIM_GROUP_START);
  return ulyssesSuccess;
}

static ulyssesResult_t simGroupEnd(void* context) {
  record(context, SIM_GROUP_END);
  return ulyssesSuccess;
}

static ulyssesResult_t simSend(void* context, const void* buff, size_t bytes, int peer) {
  simOp* op = record(context, SIM_SEND);
  op->sendbuff = buff;
  op->bytes = bytes;
  op->peer = peer;
  return ulyssesSuccess;
}

static ulyssesResult_t simRecv(void* context, void* buff, size_t bytes, int peer) {
  simOp* op = record(context, SIM_RECV);
  op->recvbuff = buff;
  op->bytes = bytes;
  op->peer = peer;
  return ulyssesSuccess;
}

static ulyssesResult_t simLaunchTable(void* context, const ulyssesTableArgs* args) {
  record(context, SIM_TABLE)->table = *args;
  return ulyssesSuccess;
}

static ulyssesResult_t simLaunchCopy(void* context, const ulyssesCopyArgs* args, int64_t maxRuns) {
  simOp* op = record(context, SIM_COPY);
  op->copy = *args;
  op->maxRuns = maxRuns;
  return ulyssesSuccess;
}

ulyssesBackend simBackendOf(simWorld* world, int rank) {
  /* No capture, no host gather and no one-pass launch: a simComm checks no
   * plans and takes no one pass. */
  ulyssesBackend backend = {.context = &world->programs[rank],
                            .allGather = simAllGather,
                            .groupStart = simGroupStart,
                            .groupEnd = simGroupEnd,
                            .send = simSend,
                            .recv = simRecv,
                            .launchTable = simLaunchTable,
                            .launchCopy = simLaunchCopy};
  return backend;
}

void simCommInit(simComm* comm, int nRanks, int rank) {
  memset(comm, 0, sizeof *comm);
  comm->comm.nRanks = nRanks;
  comm->comm.rank = rank;
  comm->comm.lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
  comm->comm.onePass = &comm->onePass;
  comm->onePass.support.commRanks = nRanks;
}

int simCountLaunches(const simWorld* world, int rank) {
  int launches = 0;
  const simProgram* program = &world->programs[rank];
  for (int i = 0; i < program->count; i++)
    launches += program->ops[i].kind == SIM_TABLE || program->ops[i].kind == SIM_COPY;
  return launches;
}

int simCountCalls(const simWorld* world, int rank) { return world->programs[rank].count; }

int simCountSends(const simWorld* world, int rank) {
  int sends = 0;
  const simProgram* program = &world->programs[rank];
  for (int i = 0; i < program->count; i++) sends += program->ops[i].kind == SIM_SEND;
  return sends;
}

/* The table kernel, one chunk: the same per-thread functions, with the
 * block scan done sequentially between them. */
void simRunTable(const ulyssesTableArgs* args) {
  int64_t lengths[ULYSSES_TABLE_CHUNK], lengthPrefix = 0, slotPrefix = 0;
  int64_t lengthPrefixes[ULYSSES_TABLE_CHUNK], slotPrefixes[ULYSSES_TABLE_CHUNK];
  for (int i = 0; i < args->chunkCount; i++) {
    int64_t slotLength;
    uint32_t errorBits = ulyssesTableEntry(args, i, &lengths[i], &slotLength);
    if (errorBits != 0 && args->status != NULL) *args->status |= errorBits;
    lengthPrefix += lengths[i];
    slotPrefix += slotLength;
    lengthPrefixes[i] = lengthPrefix;
    slotPrefixes[i] = slotPrefix;
  }
  for (int i = 0; i < args->chunkCount; i++)
    ulyssesTableStore(args, i, lengths[i], lengthPrefixes[i], slotPrefixes[i]);
}

/* Resident blocks of the simulated GPU. */
#define SIM_WAVE_BLOCKS 5

/* The copy kernel: every (tensor, block, thread) of its launch. */
static int runCopy(const simOp* op, int rank, char* message, size_t messageSize) {
  const ulyssesCopyArgs* args = &op->copy;
  /* The kernel splits each warp into groups of runLanes lanes. */
  if (args->runLanes < 1 || args->runLanes > ULYSSES_WARP_LANES ||
      (args->runLanes & (args->runLanes - 1)) != 0) {
    snprintf(message, messageSize, "rank %d: %d lanes per run do not divide a warp", rank,
             args->runLanes);
    return 1;
  }
  for (int t = 0; t < args->nTensors; t++) {
    int64_t runs = ulyssesCopyRunCount(args, t);
    if (runs > op->maxRuns) {
      snprintf(message, messageSize,
               "rank %d: tensor %d has %lld runs on the device but the host bounded them by %lld",
               rank, t, (long long)runs, (long long)op->maxRuns);
      return 1;
    }
    if (args->tensors[t].chunkRuns < 1) {
      snprintf(message, messageSize, "rank %d: tensor %d has %lld runs per chunk", rank, t,
               (long long)args->tensors[t].chunkRuns);
      return 1;
    }
    if (args->tensors[t].hostRuns < runs) {
      snprintf(message, messageSize, "rank %d: tensor %d has %lld runs, its bound %lld", rank, t,
               (long long)runs, (long long)args->tensors[t].hostRuns);
      return 1;
    }
  }
  /* Every thread of the grid the launcher would launch on a GPU of a
   * few resident blocks, so that the grid-stride loops go round. */
  ulyssesCopyArgs shared = *args;
  int64_t blocks = ulyssesShareWave(&shared, SIM_WAVE_BLOCKS);
  for (int t = 0; t < args->nTensors; t++)
    for (int64_t block = 0; block < blocks; block++)
      for (int thread = 0; thread < ULYSSES_COPY_THREADS; thread++)
        ulyssesCopyBlockThread(&shared, t, block, thread, args->launchWordBytes,
                               args->launchSums);
  return 0;
}

/* Runs rank's local ops from *cursor up to its next communication op. */
static int runLocal(simProgram* program, int* cursor, char* message, size_t messageSize) {
  while (*cursor < program->count) {
    simOp* op = &program->ops[*cursor];
    if (op->kind == SIM_TABLE) simRunTable(&op->table);
    else if (op->kind == SIM_COPY) {
      if (runCopy(op, program->rank, message, messageSize)) return 1;
    } else break;
    (*cursor)++;
  }
  return 0;
}

static int runAllGather(simWorld* world, int* cursors, char* message, size_t messageSize) {
  size_t bytes = world->programs[0].ops[cursors[0]].bytes;
  for (int r = 0; r < world->nRanks; r++) {
    const simOp* op = &world->programs[r].ops[cursors[r]];
    if (op->bytes != bytes) {
      snprintf(message, messageSize, "ncclAllGather of %zu bytes on rank 0 but %zu on rank %d",
               bytes, op->bytes, r);
      return 1;
    }
  }
  for (int r = 0; r < world->nRanks; r++)
    for (int q = 0; q < world->nRanks; q++)
      memcpy((unsigned char*)world->programs[r].ops[cursors[r]].recvbuff + (size_t)q * bytes,
             world->programs[q].ops[cursors[q]].sendbuff, bytes);
  for (int r = 0; r < world->nRanks; r++) cursors[r]++;
  return 0;
}

/* The n-th send from r to p pairs with the n-th receive posted by p from r,
 * as NCCL pairs them. */
static int runGroup(simWorld* world, int* cursors, char* message, size_t messageSize) {
  int* groupEnd = calloc((size_t)world->nRanks, sizeof(int));
  int failed = 0;
  for (int r = 0; r < world->nRanks && !failed; r++) {
    simProgram* program = &world->programs[r];
    int i = cursors[r] + 1;
    while (i < program->count && program->ops[i].kind != SIM_GROUP_END) {
      simOpKind kind = program->ops[i].kind;
      if (kind != SIM_SEND && kind != SIM_RECV) {
        snprintf(message, messageSize, "rank %d: %s inside an NCCL group", r, kindNames[kind]);
        failed = 1;
        break;
      }
      if (program->ops[i].peer < 0 || program->ops[i].peer >= world->nRanks) {
        snprintf(message, messageSize, "rank %d: %s to peer %d", r, kindNames[kind],
                 program->ops[i].peer);
        failed = 1;
        break;
      }
      i++;
    }
    if (!failed && i == program->count) {
      snprintf(message, messageSize, "rank %d: ncclGroupStart without ncclGroupEnd", r);
      failed = 1;
    }
    groupEnd[r] = i;
  }
  for (int r = 0; r < world->nRanks && !failed; r++)
    for (int p = 0; p < world->nRanks && !failed; p++) {
      const simProgram* sender = &world->programs[r];
      const simProgram* receiver = &world->programs[p];
      int s = cursors[r] + 1, v = cursors[p] + 1, messages = 0;
      for (;;) {
        while (s < groupEnd[r] && !(sender->ops[s].kind == SIM_SEND && sender->ops[s].peer == p)) s++;
        while (v < groupEnd[p] &&
               !(receiver->ops[v].kind == SIM_RECV && receiver->ops[v].peer == r)) v++;
        int haveSend = s < groupEnd[r], haveRecv = v < groupEnd[p];
        if (!haveSend && !haveRecv) break;
        if (haveSend != haveRecv) {
          snprintf(message, messageSize,
                   "message %d from rank %d to rank %d: %s posts it but %s does not (a hang)",
                   messages, r, p, haveSend ? "the sender" : "the receiver",
                   haveSend ? "the receiver" : "the sender");
          failed = 1;
          break;
        }
        if (sender->ops[s].bytes != receiver->ops[v].bytes) {
          snprintf(message, messageSize,
                   "message %d from rank %d to rank %d: %zu bytes sent, %zu bytes received",
                   messages, r, p, sender->ops[s].bytes, receiver->ops[v].bytes);
          failed = 1;
          break;
        }
        memcpy(receiver->ops[v].recvbuff, sender->ops[s].sendbuff, sender->ops[s].bytes);
        s++;
        v++;
        messages++;
      }
    }
  for (int r = 0; r < world->nRanks; r++) cursors[r] = groupEnd[r] + 1;
  free(groupEnd);
  return failed;
}

int simExecute(simWorld* world, char* message, size_t messageSize) {
  int* cursors = calloc((size_t)world->nRanks, sizeof(int));
  int failed = 0;
  message[0] = '\0';
  while (!failed) {
    for (int r = 0; r < world->nRanks && !failed; r++)
      failed = runLocal(&world->programs[r], &cursors[r], message, messageSize);
    if (failed) break;
    int finished = 0;
    for (int r = 0; r < world->nRanks; r++) finished += cursors[r] == world->programs[r].count;
    if (finished == world->nRanks) break;
    if (finished > 0) {
      snprintf(message, messageSize, "some ranks finished while others wait in a collective");
      failed = 1;
      break;
    }
    simOpKind kind = world->programs[0].ops[cursors[0]].kind;
    for (int r = 1; r < world->nRanks && !failed; r++)
      if (world->programs[r].ops[cursors[r]].kind != kind) {
        snprintf(message, messageSize, "rank 0 is in %s while rank %d is in %s", kindNames[kind],
                 r, kindNames[world->programs[r].ops[cursors[r]].kind]);
        failed = 1;
      }
    if (failed) break;
    if (kind == SIM_ALL_GATHER) failed = runAllGather(world, cursors, message, messageSize);
    else if (kind == SIM_GROUP_START) failed = runGroup(world, cursors, message, messageSize);
    else {
      snprintf(message, messageSize, "rank 0: %s outside a group", kindNames[kind]);
      failed = 1;
    }
  }
  for (int r = 0; r < world->nRanks; r++) world->programs[r].count = 0;
  free(cursors);
  return failed;
}
