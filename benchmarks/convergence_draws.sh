#!/usr/bin/env bash
# Convergence parity over many draws: convergence_parity --floor for seeds FIRST..LAST (each a
# different scene, patches and initial weights), then a table of the gaps and a rank test of
# "the default's gaps to exact training are larger than two exact runs' gaps" (docs/benchmarks.md).
#   bash benchmarks/convergence_draws.sh [first=0] [last=4] [out=build/benchmarks/convergence] [threads=2]
# About 10 minutes of 2 cores per draw. Draws already in $out (seed_N.txt) are not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-0}
last=${2:-4}
out=${3:-build/benchmarks/convergence}
threads=${4:-2}
bin=build/benchmarks/convergence_parity
[ -x "$bin" ] || { echo "missing $bin: build first (cmake --build build)" >&2; exit 2; }
mkdir -p "$out"
for seed in $(seq "$first" "$last"); do
  [ -s "$out/seed_$seed.txt" ] && continue
  echo "draw $seed" >&2
  # The program exits 1 when a draw fails its own line; the rank test below is the verdict here.
  "$bin" --steps 200 --threads "$threads" --seed "$seed" --floor --csv "$out/curves_$seed.csv" >"$out/seed_$seed.tmp" || true
  mv "$out/seed_$seed.tmp" "$out/seed_$seed.txt"
done
python3 benchmarks/summarize_convergence.py "$out"/seed_*.txt
