#!/usr/bin/env bash
# Despeckles a 6000 x 6000 two-band scene with `despeck despeckle` and reports the peak resident
# memory (GNU time) — memory is bounded by the tile, not the scene.
#   bash benchmarks/despeckle_large_scene.sh MODEL.safetensors [work dir] [tile] [extra despeckle options, e.g. --fast]
# Needs gdal-bin (gdal_create) for the input and GNU time (package `time`).
set -euo pipefail
model=$1; work=${2:-/tmp/despeck-large}; tile=${3:-512}
shift $(( $# < 3 ? $# : 3 ))
despeck=${DESPECK:-$(dirname "$0")/../build/examples/despeck}
mkdir -p "$work"
if [ ! -f "$work/scene_6000.tif" ]; then
  gdal_create -q -of GTiff -outsize 6000 6000 -bands 2 -ot Float32 -burn -11 -burn -18 \
    -a_srs EPSG:32748 -a_ullr 297370 9681220 357370 9621220 -co TILED=YES -co COMPRESS=DEFLATE \
    -mo UNITS=dB "$work/scene_6000.tif"
fi
/usr/bin/time -v "$despeck" despeckle --model "$model" --input "$work/scene_6000.tif" --output "$work/out_6000.tif" \
  --tile "$tile" "$@" 2> "$work/time.txt"
grep -E "Maximum resident set size|Elapsed" "$work/time.txt"
gdalinfo "$work/out_6000.tif" | grep -E "Size is|PROJCRS|Origin|Pixel Size" | head -4
