#!/usr/bin/env bash
# Times despeck's full-size training step and clean-branch inference next to PyTorch's, on the
# same machine with the same threads, interleaved over several rounds so that drifting load hits
# both alike. Needs a build (cmake --build build) and Debian's python3-torch.
#   bash benchmarks/compare_train_step.sh [threads=2] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
for r in $(seq 1 "$rounds"); do
  echo "== round $r"
  OMP_NUM_THREADS=$threads ./build/examples/time_train_step --threads "$threads" --steps 3 --tile 256 | grep -E "training|inference" | sed 's/^/despeck  /'
  /usr/bin/python3 benchmarks/pytorch_despecknet.py --threads "$threads" --steps 3 --tile 256 | grep -E "training|inference" | sed 's/^/pytorch  /'
done
