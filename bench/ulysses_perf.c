/* ulysses_perf: the exchanges of the library over P rank processes, one row
 * per total sequence length, in the manner of nccl-tests (-h for the flags). */
#include "common.h"

int main(int argc, char** argv) { return benchMain(argc, argv, benchOps, benchOpCount); }
