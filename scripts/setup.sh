#!/usr/bin/env bash
# Installs the Debian packages waveflow needs to build and test. Idempotent:
# packages already present are not touched, and apt is only asked for the
# missing ones.
set -euo pipefail
# openmpi-bin is optional for users (only `mpirun -np N waveflow train` needs
# it; waveflow loads libmpi at run time) but the tests run a 2-rank job.
# libdnnl2 (oneDNN) is likewise optional: loaded at run time for --precision bf16.
packages=(libsndfile1-dev libfftw3-dev libopenblas-dev libsoxr-dev pkg-config openmpi-bin libdnnl2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all packages present (${packages[*]})"
    exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
