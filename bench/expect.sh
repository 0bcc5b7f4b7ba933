# Sourced by the benches' flag checks (test_*_args.sh): expect CODE PATTERN
# ARGS... runs $perf ARGS and counts in $failures a run whose exit status is
# not CODE or whose output lacks PATTERN.
failures=0

expect() {
  code=$1 pattern=$2
  shift 2
  output=$("$perf" "$@" 2>&1)
  got=$?
  name=$(basename "$perf")
  if [ "$got" != "$code" ]; then
    echo "FAIL: $name $*: exit $got, want $code"; echo "$output" | tail -3
    failures=$((failures + 1))
  elif ! printf '%s\n' "$output" | grep -q -e "$pattern"; then
    echo "FAIL: $name $*: no '$pattern' in its output"; echo "$output" | tail -3
    failures=$((failures + 1))
  else
    echo "ok: $name $*"
  fi
}
