#!/usr/bin/env bash
# Installs everything despeck needs to build, test and run its examples and benchmarks on a bare
# Debian 12.
# Every package is from Debian's archive; docs/dependencies.md says why each one is here.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  ca-certificates g++ make cmake \
  libeigen3-dev nlohmann-json3-dev doctest-dev libcli11-dev libgomp1 \
  libtiff-dev libgeotiff-dev xtensor-dev libstb-dev libmatio-dev gdal-bin python3-numpy \
  libdnnl-dev libbenchmark-dev >/dev/null
echo "despeck dependencies installed"
