#!/usr/bin/env bash
# The end-to-end comparison behind docs/benchmarks.md: despeck, PyTorch (Debian's python3-torch)
# and oneDNN (Debian's libdnnl-dev) on the same shapes and the same threads, interleaved round by
# round so that drifting load hits all of them alike; then a table of medians and spread, and
# its chart.
#   bash benchmarks/compare_all.sh [rounds=3] [tile=1024] [out=build/benchmarks/compare]
# tile 1024 is the issue's inference shape (3 rounds: about 32 minutes with the pretrained-model
# rows, which need ../shared and python3-scipy, 24 without them); 512 is quicker.
# Needs a Release build with benchmarks (cmake --build build), /usr/bin/python3 with torch,
# GNU time (/usr/bin/time) for peak memory. Writes $out/log.txt, $out/table.md and $out/chart.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
tile=${2:-1024}
out=${3:-build/benchmarks/compare}
mkdir -p "$out"
log="$out/log.txt"
: >"$log"
bin=build
for t in "$bin/examples/time_train_step" "$bin/benchmarks/bench_kernels" "$bin/benchmarks/onednn_conv"; do
  [ -x "$t" ] || { echo "missing $t: build first (cmake --build build)" >&2; exit 2; }
done
py=/usr/bin/python3
$py -c "import torch" 2>/dev/null || { echo "/usr/bin/python3 has no torch (apt-get install python3-torch)" >&2; exit 2; }
# PyTorch at its best: jemalloc keeping freed pages (no page fault per layer; see
# pytorch_despecknet.py), both memory layouts, eager and frozen. pytorch_stock is the same script
# with glibc's allocator, for reference.
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -f "$jemalloc" ] || { echo "missing $jemalloc (apt-get install libjemalloc2)" >&2; exit 2; }
tuned_torch=(env LD_PRELOAD="$jemalloc" MALLOC_CONF="retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1" $py)
# Inference on a trained model as well: the authors' pretrained deSpeckNet (single-channel linear
# intensity) on a real TerraSAR-X crop mirrored out to the tile, PyTorch in channels_last (its
# fastest layout here, and NCHW eager takes 20 s a run). Needs ../shared and python3-scipy.
pretrained_mat=../shared/data/pretrained/deSpeckNet-epoch-30.mat
sar_image=../shared/data/sar/tsx_slc_intensity_1look_256x256.npy
# despeck reads the .mat itself (include/despeck/io/matconvnet.hpp); PyTorch's side reads it with scipy.
pretrained=
if [ -f "$pretrained_mat" ] && [ -f "$sar_image" ] && $py -c "import scipy.io" 2>/dev/null; then
  pretrained=yes
else
  echo "skipping the pretrained-model rows: needs $pretrained_mat, $sar_image and python3-scipy" >&2
fi

# The kernels of the instruction set despeck picks on this CPU at run time (bench_kernels' isa
# argument: 0 scalar, 1 AVX2 + FMA, 2 AVX-512), from despeck's own detection.
isa=$("$bin/benchmarks/bench_kernels" --best-isa)

run() {  # run <label> <threads> <command...>: output lines prefixed with the label
  local label=$1 threads=$2
  shift 2
  OMP_NUM_THREADS=$threads "$@" 2>&1 | sed "s/^/$label threads=$threads | /" >>"$log"
}
peak_mem() {  # peak_mem <label> <threads> <command...>: peak resident memory (KiB) via GNU time
  local label=$1 threads=$2 kib
  shift 2
  kib=$(OMP_NUM_THREADS=$threads /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1)
  echo "$label threads=$threads | peak_rss_kib $kib" >>"$log"
}

for r in $(seq 1 "$rounds"); do
  echo "round $r of $rounds" >&2
  for th in 2 1; do
    echo "== round $r" >>"$log"
    run despeck "$th" "$bin/examples/time_train_step" --threads "$th" --steps 3 --tile "$tile"
    # Fast inference with float products: what the row above runs on a CPU without AMX (with
    # AMX, fast inference's 64 -> 64 products run on it as int8 slices; the table shows both).
    run despeck_float_products "$th" env DESPECK_AMX=0 "$bin/examples/time_train_step" --threads "$th" --steps 0 --tile "$tile"
    run pytorch "$th" "${tuned_torch[@]}" benchmarks/pytorch_despecknet.py --threads "$th" --steps 3 --tile "$tile"
    if [ -n "$pretrained" ]; then  # the authors' trained model on real SAR (sparse activations)
      run despeck_pretrained "$th" "$bin/examples/time_train_step" --threads "$th" --steps 0 --tile "$tile" \
        --model "$pretrained_mat" --image "$sar_image"
      run pytorch_pretrained "$th" "${tuned_torch[@]}" benchmarks/pytorch_despecknet.py --threads "$th" --steps 0 \
        --tile "$tile" --layouts nhwc --pretrained "$pretrained_mat" --image "$sar_image"
    fi
    run onednn "$th" "$bin/benchmarks/onednn_conv" --threads "$th" --algorithm direct --repeats 20
    run onednn_blocked "$th" "$bin/benchmarks/onednn_conv" --threads "$th" --activations any --repeats 20
    # Medians of 10 repetitions, as onednn_conv reports the median of its runs. The training shape,
    # plus exact inference's layer on a 256x256 tile, dense (pass 4), sparse-input (pass 8) and on
    # AMX (pass 10, CPUs with AMX).
    run kernels "$th" "$bin/benchmarks/bench_kernels" --threads="$th" --benchmark_min_time=0.05 \
      --benchmark_repetitions=10 --benchmark_report_aggregates_only=true \
      --benchmark_format=json --benchmark_filter="isa:$isa/N:16/H:40/W:40/Ci:64/Co:64|pass:([48]|10)/isa:$isa/N:1/H:256/W:256/Ci:64/Co:64"
  done
  # Stock allocator, 2 threads, channels_last + frozen only (the fastest configuration with jemalloc;
  # each stock inference run takes seconds here).
  echo "== stock $r" >>"$log"
  run pytorch_stock 2 $py benchmarks/pytorch_despecknet.py --threads 2 --steps 3 --tile "$tile" \
    --layouts nhwc --modes frozen --repeats 1
  # Peak memory with the stock allocator, which returns freed memory (the lower figure for PyTorch).
  peak_mem despeck_train 2 "$bin/examples/time_train_step" --threads 2 --steps 2 --tile 0
  peak_mem pytorch_train 2 $py benchmarks/pytorch_despecknet.py --threads 2 --steps 2 --tile 0 --layouts nhwc
  peak_mem despeck_infer 2 "$bin/examples/time_train_step" --threads 2 --steps 0 --tile "$tile"
  peak_mem pytorch_infer 2 $py benchmarks/pytorch_despecknet.py --threads 2 --steps 0 --tile "$tile" \
    --layouts nhwc --modes frozen --repeats 1
done
$py benchmarks/summarize_comparison.py "$log" "$tile" | tee "$out/table.md"
$py benchmarks/chart_comparison.py "$out/table.md" "$out/chart.svg" \
  "despeck over PyTorch and oneDNN, tile $tile, $rounds rounds, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "chart: $out/chart.svg" >&2
