#!/usr/bin/env bash
# The tightest rows of compare_all.sh on the Intel Xeon, with more rounds and nothing else in
# between: exact inference (despeck against PyTorch's fastest configuration, frozen channels_last
# with jemalloc) and the direct 64->64 forward kernel (despeck against oneDNN), at 2 threads, and,
# where ../shared has the authors' pretrained model and the TerraSAR-X crop, despeck's exact
# inference on them at 2 threads over 1 (target 6), interleaved round by round. About 45 s a round,
# 75 s with the pretrained model.
#   bash benchmarks/compare_focused.sh [rounds=8] [out=build/benchmarks/focused]
# Needs the same as compare_all.sh (a Release build with benchmarks, /usr/bin/python3 with torch,
# libjemalloc2). Writes $out/log.txt and prints each round's ratios and their medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-8}
out=${2:-build/benchmarks/focused}
mkdir -p "$out"
log="$out/log.txt"
: >"$log"
py=/usr/bin/python3
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -f "$jemalloc" ] || { echo "missing $jemalloc (apt-get install libjemalloc2)" >&2; exit 2; }
isa=$(build/benchmarks/bench_kernels --best-isa)
pretrained_mat=../shared/data/pretrained/deSpeckNet-epoch-30.mat
sar_image=../shared/data/sar/tsx_slc_intensity_1look_256x256.npy
pretrained=
if [ -f "$pretrained_mat" ] && [ -f "$sar_image" ]; then
  pretrained=yes
else
  echo "skipping the pretrained model's scaling: needs $pretrained_mat and $sar_image" >&2
fi
for r in $(seq 1 "$rounds"); do
  echo "== round $r" >>"$log"
  OMP_NUM_THREADS=2 build/examples/time_train_step --threads 2 --steps 0 --tile 1024 2>&1 \
    | grep "inference (exact)" | sed "s/^/despeck | /" >>"$log"
  OMP_NUM_THREADS=2 env LD_PRELOAD="$jemalloc" MALLOC_CONF="retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1" \
    $py benchmarks/pytorch_despecknet.py --threads 2 --steps 0 --tile 1024 --layouts nhwc --modes frozen 2>&1 \
    | grep "best" | sed "s/^/pytorch | /" >>"$log"
  OMP_NUM_THREADS=2 build/benchmarks/onednn_conv --threads 2 --algorithm direct --pass forward --repeats 20 2>&1 \
    | sed "s/^/onednn | /" >>"$log"
  OMP_NUM_THREADS=2 build/benchmarks/bench_kernels --threads=2 --benchmark_min_time=0.05 --benchmark_repetitions=10 \
    --benchmark_report_aggregates_only=true --benchmark_filter="pass:0/isa:$isa/N:16/H:40/W:40/Ci:64/Co:64" 2>&1 \
    | grep median | sed "s/^/kernel | /" >>"$log"
  if [ -n "$pretrained" ]; then
    for th in 2 1; do
      OMP_NUM_THREADS=$th build/examples/time_train_step --threads $th --steps 0 --tile 1024 \
        --model "$pretrained_mat" --image "$sar_image" 2>&1 | grep "inference (exact)" | sed "s/^/pretrained threads=$th | /" >>"$log"
    done
  fi
done
$py - "$log" <<'PY'
import re, statistics as st, sys
rows, scaling = [], []
for block in open(sys.argv[1]).read().split("== round")[1:]:
    d = re.search(r"despeck \|.*?\(([\d.]+) Mpx/s\)", block)
    p = re.search(r"pytorch \|.*?\(([\d.]+) Mpx/s\)", block)
    o = re.search(r'"gflops":([\d.]+)', block)
    k = re.search(r"GFLOP/s=([\d.]+)", block)
    if d and p and o and k:
        rows.append(tuple(float(m[1]) for m in (d, p, k, o)))
    s2 = re.search(r"pretrained threads=2 \|.*?\(([\d.]+) Mpx/s\)", block)
    s1 = re.search(r"pretrained threads=1 \|.*?\(([\d.]+) Mpx/s\)", block)
    if s2 and s1:
        scaling.append((float(s2[1]), float(s1[1])))
if not rows:
    sys.exit("no complete round in the log")
for d, p, k, o in rows:
    print(f"exact inference Mpx/s: despeck {d:.3f} PyTorch {p:.3f} ({d / p:.2f}x) | direct forward GFLOP/s: despeck {k:.1f} oneDNN {o:.1f} ({k / o:.2f}x)")
d, p, k, o = ([r[i] for r in rows] for i in range(4))
print(f"{len(rows)} rounds. Exact inference: {st.median(d):.3f} / {st.median(p):.3f} Mpx/s = {st.median(d) / st.median(p):.2f}x "
      f"({st.median(d) / max(p):.2f}x against PyTorch's best round). Direct forward: {st.median(k):.1f} / {st.median(o):.1f} "
      f"GFLOP/s = {st.median(k) / st.median(o):.2f}x ({st.median(k) / max(o):.2f}x against oneDNN's best round)")
if scaling:
    two, one = ([r[i] for r in scaling] for i in range(2))
    print("pretrained exact inference, 2 threads over 1, per round: " + " ".join(f"{a / b:.2f}x" for a, b in scaling))
    print(f"{len(scaling)} rounds. Pretrained exact inference: {st.median(two):.3f} / {st.median(one):.3f} Mpx/s "
          f"= {st.median(two) / st.median(one):.2f}x")
PY
