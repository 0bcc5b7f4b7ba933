#!/usr/bin/env bash
# Builds fuzz/fuzz_plan.c with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (every report fatal) and fuzzes for SECONDS,
# starting from a scratch copy of fuzz/corpus (never modified).
#
#   fuzz/run.sh SECONDS [libFuzzer flags...]    e.g. fuzz/run.sh 3600 -jobs=8 -workers=8
#
# Environment: ULYSSES_FUZZ_BUILD (default /tmp/ulysses-fuzz): where the
# binary, the scratch corpus, the log and crash artifacts go. CC (default
# clang), CUDA_HOME and NCCL_HOME (default /usr/local/cuda; headers only).
# Exit status: 0 when libFuzzer found nothing, 1 on a crash, a failed
# invariant, a timeout or an out-of-memory, 2 when the build fails. After a
# crash its last line says whose bug it is: the harness's (a sanitizer
# report in fuzz/ or tests/), the library's (one in src/, kernels/ or
# include/), a failed invariant, or neither (a timeout, an out-of-memory).
set -u -o pipefail

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
seconds=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ULYSSES_FUZZ_BUILD:-/tmp/ulysses-fuzz}
cc=${CC:-clang}
cuda=${CUDA_HOME:-/usr/local/cuda}
nccl=${NCCL_HOME:-$cuda}
mkdir -p "$build" || exit 2

# The host library (as meson.build's host_lib) and the CPU tests' backend,
# harness and reference, all instrumented.
sources=(src/config.c src/enqueue.c src/env.c src/error.c src/launch_policy.c src/log.c
         src/one_pass.c src/plan.c src/pipeline.c tests/sim_backend.c tests/harness.c
         tests/rows.c tests/reference.c fuzz/fuzz_plan.c)
includes=(-I "$root/include" -I "$root/src" -I "$root/kernels" -I "$root/tests"
          -I "$cuda/include" -I "$nccl/include")
flags=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror)
sanitize=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)

echo "building $build/fuzz_plan with $cc"
# The grouped-query reference uses _Float16, which clang before 15 lacks on
# x86-64: it is built without instrumentation by a compiler that has it.
refcc=$cc
if ! echo '_Float16 x;' | "$cc" -x c -std=c11 -fsyntax-only - 2>/dev/null; then
  refcc=${REFERENCE_CC:-gcc}
fi
(cd "$root" &&
  "$refcc" "${flags[@]}" -O2 "${includes[@]}" -c tests/reference_gqa.c -o "$build/reference_gqa.o" &&
  "$cc" "${flags[@]}" "${sanitize[@]}" "${includes[@]}" "${sources[@]}" "$build/reference_gqa.o" \
    -o "$build/fuzz_plan" -lm -lpthread) || { echo "fuzz/run.sh: build failed"; exit 2; }

# A fresh scratch corpus each run: libFuzzer adds what it finds there.
corpus="$build/corpus"
rm -rf "$corpus" && mkdir -p "$corpus" "$build/artifacts" || exit 2
cp "$root"/fuzz/corpus/* "$corpus"/
rm -f "$build"/artifacts/crash-* "$build"/artifacts/leak-* "$build"/artifacts/timeout-* \
  "$build"/artifacts/oom-* "$build"/artifacts/slow-unit-*
log="$build/fuzz.log"

echo "fuzzing for $seconds s (log: $log)"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  "$build/fuzz_plan" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=1024 -print_final_stats=1 -artifact_prefix="$build/artifacts/" "$@" \
  "$corpus" >"$log" 2>&1
rc=$?

# libFuzzer's seed (-seed=N repeats its choices, though not exactly: the
# runs diverge after a few hundred inputs, see fuzz/README.md).
seed=$(grep -m 1 -oE '^INFO: Seed: [0-9]+' "$log")
if [ $rc -eq 0 ]; then
  grep -E '^(Done|#[0-9]+.*DONE)' "$log" | tail -n 2
  grep -E '^stat::' "$log"
  echo "$seed"
  echo "fuzz/run.sh: no crash in $seconds s ($(ls "$corpus" | wc -l) inputs in the corpus now)"
  exit 0
fi

# A crash: the report, the input, and how to replay it.
tail -n 80 "$log"
for artifact in "$build"/artifacts/*; do
  [ -f "$artifact" ] || continue
  echo "--- $artifact ($(wc -c <"$artifact") bytes):"
  od -An -tx1 -v "$artifact"
  echo "base64: $(base64 -w 0 "$artifact")"
  echo "replay: $build/fuzz_plan $artifact   (ULYSSES_FUZZ_VERBOSE=1 to see it decoded)"
done
echo "$seed"
echo "fuzz/run.sh: libFuzzer exited with status $rc"
# Whose bug: a sanitizer report names the first place in this repository it
# passed through (paths made relative to it). The harness's own code is
# fuzz/ and tests/; a failed invariant is the library disagreeing with the
# harness's model of the rules.
where=$(sed "s#$root/##g" "$log" | awk '
  /invariant failed:/ { print "invariant"; exit }
  /runtime error:|ERROR: (AddressSanitizer|LeakSanitizer)/ { on = 1 }
  on && match($0, /(^|[ (])(fuzz|tests|src|kernels|include)\/[A-Za-z0-9_.\/-]+:[0-9]+/) {
    s = substr($0, RSTART, RLENGTH); sub(/^[ (]/, "", s); print s; exit }')
case $where in
  invariant)
    echo "fuzz/run.sh: an invariant failed: the library and the harness's model of the rules" \
         "disagree (a library bug, or the model is wrong): see the message above" ;;
  fuzz/* | tests/*)
    echo "fuzz/run.sh: a HARNESS bug, not the library's: the report is in the harness's own" \
         "code ($where); fix it and keep the input as fuzz/corpus/regress_*" ;;
  src/* | kernels/* | include/*)
    echo "fuzz/run.sh: a LIBRARY bug: the report is in the library's code ($where), unless" \
         "the harness passed it a wrong argument" ;;
  *)
    echo "fuzz/run.sh: a timeout, an out-of-memory or a report outside this repository's code:" \
         "replay the input alone to tell a slow input from a loaded machine" ;;
esac
exit 1
