#!/bin/sh
# Installs what slowmo's build, tests, examples (gnuplot draws their plots; Fashion-MNIST is
# their data, zlib reads it) and benchmarks need, from Debian packages only. Idempotent:
# installs nothing when everything is there. Needs root (uses sudo when run as another user
# and sudo exists).
set -eu

packages="cmake ninja-build g++ libeigen3-dev doctest-dev libbenchmark-dev
libboost-mpi-dev openmpi-bin libopenmpi-dev gnuplot-nox zlib1g-dev dataset-fashion-mnist"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "setup-debian.sh: missing packages:$missing; run this script as root to install them" >&2
  exit 1
fi

echo "setup-debian.sh: installing$missing"
$as_root apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
