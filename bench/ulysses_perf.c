/* ulysses_perf: the exchanges of the library over P rank processes, one row
 * per total sequence length, in the manner of nccl-tests (-h for the flags). */
#include "common.h"

int main(int argc, char** argv) {
  static const benchOp* const ops[] = {&benchOpSeqToHead, &benchOpHeadToSeq, &benchOpQkv,
                                       &benchOpMulti, &benchOpGqa, &benchOpGqaBackward,
                                       &benchOpAllGather};
  return benchMain(argc, argv, ops, (int)(sizeof ops / sizeof ops[0]));
}
