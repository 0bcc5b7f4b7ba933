#!/bin/sh
# one_pass_perf's flags on the CPU: they are parsed before any GPU is looked
# for, so -h after them shows whether they were accepted (exit 0), a bad value
# must end the run with exit 1 and a message naming it, and with no device
# visible the run must stop with exit 2 and say it needs a GPU.
perf=$1
. "$(dirname "$0")/expect.sh"

expect 0 '-P LIST .*\[2,4,8\]' -h
expect 0 '-G LIST .*\[264' -h
expect 0 'Usage:' -P 2,4,8,16 -o seq2head,head2seq,allgather -L 4K -B 2 -H 32 -D 128 -d bf16 \
  -G 132,264,528 -n 5 -w 0 -c 1 -F 64 -g 0 -j /dev/null -h
expect 0 'Usage:' -P2 -oallgather -c0 -h
expect 0 'Usage:' -o head2seq,seq2head -h
expect 1 'bad flag or value: -P 1' -P 1 -h
expect 1 'bad flag or value: -P 17' -P 17 -h
expect 1 'bad flag or value: -P 2,,4' -P 2,,4 -h
expect 1 'bad flag or value: -o seq2head,bogus' -o seq2head,bogus -h
expect 1 'bad flag or value: -o seq2head,' -o seq2head, -h
expect 1 'bad flag or value: -o allgathe' -o allgathe -h
expect 1 'bad flag or value: -o seq2head,head2seq,allgather,seq2head' \
  -o seq2head,head2seq,allgather,seq2head -h
expect 1 'bad flag or value: -L 0' -L 0 -h
expect 1 'bad flag or value: -L 4X' -L 4X -h
expect 1 'bad flag or value: -d bogus' -d bogus -h
expect 1 'bad flag or value: -G 0' -G 0 -h
expect 0 'Usage:' -c 2 -h
expect 1 'bad flag or value: -c 3' -c 3 -h
expect 1 'bad flag or value: -n 0' -n 0 -h
expect 1 'bad flag or value: -x 1' -x 1 -h
expect 1 '-j needs a value' -j
expect 1 "unexpected argument 'extra'" extra -h
# No device visible (even on a machine with a GPU): the run stops before timing.
CUDA_VISIBLE_DEVICES= expect 2 'no CUDA device found; the benchmark needs a GPU' -P 2 -c 0

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all one_pass_perf flag checks passed"
