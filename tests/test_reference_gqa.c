/* The grouped-query reference: its head-need map, hand-computed sums, and
 * its element-by-element formulation against the naive expandKV one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "reference_gqa.h"

/* The kv heads rank j needs, straight from the definition: the kv head of
 * each query head it owns. */
static void testKvMapMatchesDefinition(void** state) {
  (void)state;
  int64_t lengths[16] = {0};
  for (int64_t queryHeads = 1; queryHeads <= 64; queryHeads++)
    for (int64_t kvHeads = 1; kvHeads <= queryHeads; kvHeads++) {
      if (queryHeads % kvHeads != 0) continue;
      int64_t group = queryHeads / kvHeads;
      for (int nRanks = 1; nRanks <= 16; nRanks++) {
        refGqaShape shape = {{nRanks, lengths, 1, kvHeads, 1, 2, 1, 0}, queryHeads, REF_FLOAT16};
        int64_t firstQuery = 0;
        int64_t* needers = calloc((size_t)kvHeads, sizeof(int64_t));
        for (int j = 0; j < nRanks; j++) {
          int64_t owned = queryHeads / nRanks + (j < queryHeads % nRanks);
          int64_t begin = refKvBegin(&shape, j), count = refKvCount(&shape, j);
          if (owned == 0) {
            assert_int_equal(count, 0);
            continue;
          }
          assert_int_equal(begin, firstQuery / group);
          assert_int_equal(begin + count - 1, (firstQuery + owned - 1) / group);
          for (int64_t h = begin; h < begin + count; h++) needers[h]++;
          firstQuery += owned;
        }
        /* Every kv head is needed; a head is shared only where groups
         * straddle ranks. */
        for (int64_t h = 0; h < kvHeads; h++) assert_true(needers[h] >= 1);
        free(needers);
      }
    }
}

/* Hq = 4, Hkv = 1, P = 2: both ranks need kv head 0. */
static void testHandComputedReplicationAndSum(void** state) {
  (void)state;
  int64_t lengths[2] = {1, 1};
  refGqaShape shape = {{2, lengths, 1, 1, 1, 4, 1, 0}, 4, REF_FLOAT32};
  float in0 = 1.5f, in1 = 2.25f;
  const void* inputs[2] = {&in0, &in1};
  float out0[2], out1[2];
  void* outputs[2] = {out0, out1};
  refGqaSeqToHead(&shape, inputs, outputs);
  assert_true(out0[0] == 1.5f && out0[1] == 2.25f);
  assert_true(out1[0] == 1.5f && out1[1] == 2.25f);
  /* Backward: rank 0 receives 0.5 from itself and 0.25 from rank 1. */
  float grad0[2] = {0.5f, -1.0f}, grad1[2] = {0.25f, 4.0f};
  const void* grads[2] = {grad0, grad1};
  float back0, back1;
  void* backs[2] = {&back0, &back1};
  refGqaHeadToSeq(&shape, grads, backs);
  assert_true(back0 == 0.75f);
  assert_true(back1 == 3.0f);
}

/* bf16: the fp32 sum is rounded once, to nearest even. 1 + 2^-8 is a tie
 * between 1 and 1 + 2^-7 in bf16: it rounds to 1. Rounding each replica
 * first would have given a different result for 1 + 2^-9 + 2^-9. */
static void testBfloat16RoundsOnce(void** state) {
  (void)state;
  int64_t lengths[2] = {1, 0};
  refGqaShape shape = {{2, lengths, 1, 1, 1, 2, 1, 0}, 2, REF_BFLOAT16};
  /* Each rank owns one query head of the only group: both need kv head 0. */
  uint16_t one = 0x3f80, quarterUlp = 0x3b80; /* 1.0 and 2^-8 */
  const void* grads[2] = {&one, &quarterUlp};
  uint16_t back = 0;
  uint16_t unused = 0;
  void* backs[2] = {&back, &unused};
  refGqaHeadToSeq(&shape, grads, backs);
  assert_int_equal(back, 0x3f80);
  uint16_t threeEighthsUlp = 0x3bc0; /* 2^-8 + 2^-9: above the tie */
  const void* grads2[2] = {&one, &threeEighthsUlp};
  refGqaHeadToSeq(&shape, grads2, backs);
  assert_int_equal(back, 0x3f81);
}

static void compareRefAndNaive(const refGqaShape* shape, uint64_t seed) {
  int nRanks = shape->kv.nRanks;
  size_t elementSize = (size_t)shape->kv.elementSize;
  void *seqInputs[16], *headOutputs[16], *naiveHeadOutputs[16], *headInputs[16], *seqOutputs[16],
      *naiveSeqOutputs[16];
  for (int r = 0; r < nRanks; r++) {
    size_t seqBytes = refSeqBytes(&shape->kv, r), headBytes = refGqaHeadSideBytes(shape, r);
    seqInputs[r] = malloc(seqBytes + 1);
    refFillFloats(seqInputs[r], seqBytes / elementSize, shape->type, seed + (uint64_t)r);
    headInputs[r] = malloc(headBytes + 1);
    refFillFloats(headInputs[r], headBytes / elementSize, shape->type, seed * 7 + (uint64_t)r);
    headOutputs[r] = calloc(headBytes + 1, 1);
    naiveHeadOutputs[r] = calloc(headBytes + 1, 1);
    seqOutputs[r] = calloc(seqBytes + 1, 1);
    naiveSeqOutputs[r] = calloc(seqBytes + 1, 1);
  }
  refGqaSeqToHead(shape, (const void* const*)seqInputs, headOutputs);
  naiveGqaSeqToHead(shape, (const void* const*)seqInputs, naiveHeadOutputs);
  refGqaHeadToSeq(shape, (const void* const*)headInputs, seqOutputs);
  naiveGqaHeadToSeq(shape, (const void* const*)headInputs, naiveSeqOutputs);
  for (int r = 0; r < nRanks; r++) {
    assert_memory_equal(headOutputs[r], naiveHeadOutputs[r], refGqaHeadSideBytes(shape, r));
    assert_memory_equal(seqOutputs[r], naiveSeqOutputs[r], refSeqBytes(&shape->kv, r));
    free(seqInputs[r]);
    free(headInputs[r]);
    free(headOutputs[r]);
    free(naiveHeadOutputs[r]);
    free(seqOutputs[r]);
    free(naiveSeqOutputs[r]);
  }
}

static void testRefMatchesNaive(void** state) {
  (void)state;
  static const int64_t named[][3] = {{32, 8, 16}, {28, 4, 8}, {28, 4, 3}, {8, 1, 4}, {8, 2, 1}, {6, 3, 5}};
  static const refFloatType types[] = {REF_FLOAT32, REF_FLOAT16, REF_BFLOAT16};
  uint64_t random = 0x9aa;
  for (int i = 0; i < 240; i++) {
    int64_t queryHeads, kvHeads;
    int nRanks;
    if (i < 6 * 3) {
      queryHeads = named[i / 3][0];
      kvHeads = named[i / 3][1];
      nRanks = (int)named[i / 3][2];
    } else {
      kvHeads = 1 + (int64_t)(refRandom(&random) % 6);
      queryHeads = kvHeads * (1 + (int64_t)(refRandom(&random) % 6));
      nRanks = 1 + (int)(refRandom(&random) % 12);
    }
    refFloatType type = types[i % 3];
    int64_t lengths[16];
    for (int r = 0; r < nRanks; r++) lengths[r] = (int64_t)(refRandom(&random) % 4);
    refGqaShape shape = {{nRanks, lengths, 1 + (int64_t)(refRandom(&random) % 2), kvHeads,
                          1 + (int64_t)(refRandom(&random) % 3), type == REF_FLOAT32 ? 4 : 2,
                          refRandom(&random) % 3 == 0 ? 3 : 1, (int)(refRandom(&random) % 2)},
                         queryHeads, type};
    compareRefAndNaive(&shape, (uint64_t)i);
  }
}

/* With one rank every kv head goes to it alone: the plain exchange. */
static void testSingleRankIsPlain(void** state) {
  (void)state;
  int64_t lengths[1] = {3};
  refGqaShape shape = {{1, lengths, 2, 4, 2, 2, 1, 0}, 8, REF_FLOAT16};
  size_t bytes = refSeqBytes(&shape.kv, 0);
  unsigned char* input = malloc(bytes);
  unsigned char* output = malloc(bytes);
  unsigned char* back = malloc(bytes);
  refFillFloats(input, bytes / 2, REF_FLOAT16, 3);
  const void* inputs[1] = {input};
  void* outputs[1] = {output};
  refGqaSeqToHead(&shape, inputs, outputs);
  assert_memory_equal(output, input, bytes);
  const void* grads[1] = {output};
  void* backs[1] = {back};
  refGqaHeadToSeq(&shape, grads, backs);
  assert_memory_equal(back, input, bytes);
  free(input);
  free(output);
  free(back);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testKvMapMatchesDefinition), cmocka_unit_test(testHandComputedReplicationAndSum),
      cmocka_unit_test(testBfloat16RoundsOnce),     cmocka_unit_test(testRefMatchesNaive),
      cmocka_unit_test(testSingleRankIsPlain),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
