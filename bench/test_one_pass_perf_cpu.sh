#!/bin/sh
# one_pass_perf on the CPU stand-in of the CUDA runtime: over P = 2, 3, 4, the
# three ops and two grids (5 heads: uneven head splits), every output must
# match the CPU reference at the check shape and (-c 2) the timed one, every
# launch's bytes sum to the outputs' (the bench fails otherwise), and each
# (P, op, grid) print its P rank rows, the sum and the back-to-back row, in
# the table and as JSON lines.
perf=$1 json=$2
output=$("$perf" -P 2,3,4 -L 340 -B 2 -H 5 -D 8 -G 1,7 -n 3 -w 1 -c 2 -F 1 -j "$json" 2>&1)
code=$?
fail() { echo "FAIL: $1"; echo "$output" | tail -5; exit 1; }
[ "$code" = 0 ] || fail "exit $code, want 0"
printf '%s\n' "$output" | grep -q '^# Wrong elements *: 0 OK$' || fail "no '0 OK' line"
printf '%s\n' "$output" | grep -q '^# GPU 0: CPU stand-in' || fail "no GPU line"
printf '%s\n' "$output" | grep -q '^# ulysses [0-9.]*, commit ' || fail "no commit line"
# 3 P, 3 ops, 2 grids, at 333 rows and at 340.
checks=$(printf '%s\n' "$output" | grep -c -E '^# check P=[234] [a-z0-9]+, 3(33|40) rows per rank, blocks=[17]: 0 wrong elements$')
[ "$checks" = 36 ] || fail "$checks check lines with 0 wrong elements, want 36"
# (2 + 2) + (3 + 2) + (4 + 2) rows per op and grid, 3 ops, 2 grids.
rows=$(printf '%s\n' "$output" | grep -c -E '^ +[0-9]+ +(seq2head|head2seq|allgather) ')
[ "$rows" = 90 ] || fail "$rows table rows, want 90"
lines=$(grep -c '"bench":"one_pass_perf".*"wrong":0,"skipped":null,.*"ratio":' "$json")
[ "$lines" = 90 ] || fail "$lines checked and timed JSON lines, want 90"
for kind in sum b2b; do
  n=$(grep -c "\"row\":\"$kind\"" "$json")
  [ "$n" = 18 ] || fail "$n JSON rows of $kind, want 18"
done
echo "one_pass_perf on the CPU stand-in: 90 rows, 0 wrong elements"
