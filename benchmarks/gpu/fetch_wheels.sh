#!/usr/bin/env bash
# Download the pure-Python wheels that a bare GPU machine may lack (it has no package index)
# into benchmarks/gpu/wheels/ (git-ignored; pass it to the device run with carry). Run here,
# before the device run:  bash benchmarks/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest wheels \
    array-api-compat array-api-strict pytest iniconfig pluggy packaging hypothesis attrs \
    sortedcontainers setuptools wheel
ls wheels
