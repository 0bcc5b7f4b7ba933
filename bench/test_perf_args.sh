#!/bin/sh
# ulysses_perf's --path on the CPU: the flag is parsed before any GPU is
# looked for, so -h after it shows whether it was accepted (exit 0) and a bad
# value or combination must end the run with exit 1 and a message naming
# --path (exit 2 would mean it got as far as looking for a GPU).
perf=$1
. "$(dirname "$0")/expect.sh"

expect 0 '--path P .*\[staged\]' -h
expect 0 'Usage:' --path onepass -h
expect 0 'Usage:' --path staged -h
expect 0 'Usage:' --path=onepass -h
expect 0 'Usage:' -p 2 --path=staged -k 1 -h
expect 1 "bad value of --path: 'bogus'" --path bogus -h
expect 1 "bad value of --path: 'OnePass'" --path OnePass -h
expect 1 "bad value of --path: ''" --path= -h
expect 1 '--path needs a value' --path
expect 1 'bad flag or value' --paths onepass -h
expect 1 '--path onepass with -k 2' --path onepass -k 2
expect 1 '--path onepass with -k 2' -k 2 --path=onepass

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all --path checks passed"
