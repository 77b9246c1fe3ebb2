#!/usr/bin/env bash
# A training run killed with SIGKILL resumes and finishes with the same model as a run never
# killed: `despeck train` is started, killed with -9 as soon as its first checkpoint exists,
# resumed with --resume, and its final checkpoint compared byte for byte with an uninterrupted
# run's. Usage: kill_resume.sh DESPECK_BINARY SCRATCH_DIR FIXTURE.tif
set -euo pipefail
despeck=$1; work=$2; scene=$3
rm -rf "$work"; mkdir -p "$work"
"$despeck" prepare --tuning --input "$scene" --out "$work/data" --count 60 --patch-size 24 --validation 0 >/dev/null
args=(--threads 1 train --data "$work/data" --depth 4 --filters 8 --epochs 4 --steps-per-epoch 15 --batch 8)
"$despeck" "${args[@]}" --out "$work/straight" >/dev/null
"$despeck" "${args[@]}" --out "$work/killed" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$work/killed/last.safetensors" ] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ -f "$work/killed/last.safetensors" ] || { echo "FAIL: no checkpoint was written before the kill"; exit 1; }
done_epochs=$(wc -l < "$work/killed/log.jsonl")
[ "$done_epochs" -lt 4 ] || { echo "FAIL: the run finished before the kill, nothing was tested"; exit 1; }
echo "killed after $done_epochs of 4 epochs"
ls "$work/killed" | grep -q '\.tmp-' && echo "note: a temporary file was left by the kill (it is never read)"
"$despeck" "${args[@]}" --out "$work/killed" --resume >/dev/null
cmp "$work/straight/last.safetensors" "$work/killed/last.safetensors"
echo "killed run resumed and matches the uninterrupted run byte for byte"
echo "1 passed, 0 failed"
