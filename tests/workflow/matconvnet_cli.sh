#!/usr/bin/env bash
# The despeck program and the authors' MatConvNet model: `despeck import-matconvnet` writes a
# checkpoint, refuses a file that is not a MAT file without writing anything, and `despeck
# despeckle --model` gives the same GeoTIFF, byte for byte, from the .mat as from that checkpoint;
# `despeck tune --model` starts from the .mat and its checkpoint despeckles differently; `--no-amx`
# turns the tile unit off.
# Usage: matconvnet_cli.sh DESPECK_BINARY SCRATCH_DIR MODEL.mat SCENE.tif (linear intensity; its
# first band is despeckled, as the model is single-channel).
set -euo pipefail
despeck=$1; work=$2; model=$3; scene=$4
for f in "$model" "$scene"; do
  [ -f "$f" ] || { echo "FAIL: missing fixture $f (see ../shared/README.md)"; exit 1; }
done
rm -rf "$work"; mkdir -p "$work"

"$despeck" import-matconvnet --model "$model" --out "$work/pretrained.safetensors" | tee "$work/import.txt"
grep -q "depth 17, 64 filters, 1 channel(s), multiplicative_linear" "$work/import.txt" ||
  { echo "FAIL: import-matconvnet did not report the authors' architecture"; exit 1; }

if "$despeck" import-matconvnet --model "$scene" --out "$work/wrong.safetensors" 2>"$work/wrong.txt"; then
  echo "FAIL: a GeoTIFF was imported as a MatConvNet model"; exit 1
fi
grep -q "is not a MATLAB v5 MAT file" "$work/wrong.txt" || { echo "FAIL: unclear error:"; cat "$work/wrong.txt"; exit 1; }
[ ! -e "$work/wrong.safetensors" ] || { echo "FAIL: a refused import left a file behind"; exit 1; }

gdal_translate -q -b 1 "$scene" "$work/band1.tif"
"$despeck" despeckle --model "$model" --input "$work/band1.tif" --output "$work/from_mat.tif" >/dev/null
"$despeck" despeckle --model "$work/pretrained.safetensors" --input "$work/band1.tif" --output "$work/from_checkpoint.tif" >/dev/null
cmp "$work/from_mat.tif" "$work/from_checkpoint.tif"

# --no-amx: the kernels line says so, and fast mode still writes a GeoTIFF (float products).
"$despeck" --no-amx despeckle --fast --model "$model" --input "$work/band1.tif" --output "$work/fast_no_amx.tif" \
  >"$work/no_amx.txt"
grep -q "no AMX" "$work/no_amx.txt" || { echo "FAIL: --no-amx left AMX on:"; cat "$work/no_amx.txt"; exit 1; }
[ -s "$work/fast_no_amx.tif" ] || { echo "FAIL: --no-amx --fast wrote no output"; exit 1; }

# Tuning mode starts from the .mat as well and writes ordinary checkpoints.
"$despeck" prepare --tuning --input "$work/band1.tif" --out "$work/tuning" --count 24 --seed 2 >/dev/null
"$despeck" --threads 2 tune --model "$model" --data "$work/tuning" --out "$work/tuned" --epochs 1 --steps-per-epoch 2 --batch 4 |
  tee "$work/tune.txt"
grep -q "model depth 17, 64 filters, 1 channel(s), multiplicative_linear" "$work/tune.txt" ||
  { echo "FAIL: tune did not start from the authors' model"; exit 1; }
"$despeck" despeckle --model "$work/tuned/last.safetensors" --input "$work/band1.tif" --output "$work/tuned.tif" >/dev/null
if cmp -s "$work/tuned.tif" "$work/from_mat.tif"; then echo "FAIL: tuning changed nothing"; exit 1; fi
echo "import, refusal, despeckling and tuning from the .mat agree with the checkpoint"
echo "1 passed, 0 failed"
