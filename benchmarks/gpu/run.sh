#!/usr/bin/env bash
# The GPU check (issue 19, part A): on a bare GPU machine (CuPy, numba, numba-cuda, PyTorch and
# mpi4py installed, no package index) install the project over what is there, run the CuPy and
# CUDA tests on the device, then the GPU benchmarks, and leave everything under one folder:
#
#   bash benchmarks/gpu/run.sh                 # results in $OUT (the device tool's folder), or
#                                              # benchmarks/results/gpu-<UTC stamp>/
#   bash benchmarks/gpu/run.sh --simulate      # here, without a GPU: CUDA tests in Numba's
#                                              # simulator, benchmarks at toy sizes on NumPy
#
# Writes: env.txt (nvidia-smi, versions), install.log, tests.log + tests.xml (junit), one
# bench-*.log per benchmark with its JSON records beside it, and steps.json (every step's
# command, exit code and seconds). Each step has its own time limit; the whole stays under
# 8 minutes on an H100 (the limits sum to 450 s). A failing step does not stop the later ones.
set -uo pipefail
cd "$(dirname "$0")/../.."
SIMULATE=0
[ "${1:-}" = "--simulate" ] && SIMULATE=1
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DEST=${OUT:-benchmarks/results/gpu-$STAMP}
mkdir -p "$DEST"
STEPS="$DEST/steps.json"
echo "[" > "$STEPS"
FIRST=1

step() {   # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$DEST/$name.log" 2>&1
    local rc=$?
    tail -n 3 "$DEST/$name.log"
    [ $FIRST = 1 ] || echo "," >> "$STEPS"
    FIRST=0
    printf '  {"step": "%s", "rc": %d, "seconds": %d, "command": "%s"}' \
        "$name" "$rc" "$((SECONDS - t0))" "$(echo "$*" | sed 's/"/\\"/g')" >> "$STEPS"
    return 0
}

{
    date -u
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    python3 -c "import sys; print(sys.version)"
    python3 -m pip list 2>/dev/null | grep -i -E "numpy|scipy|cupy|numba|torch|mpi4py|h5py|array|pytest|hypothesis" || true
} > "$DEST/env.txt" 2>&1

# 1. the project without its dependencies; pure-Python dependencies it lacks from the wheels
#    brought along (benchmarks/gpu/fetch_wheels.sh)
install() {
    local wheels=benchmarks/gpu/wheels
    for mod_pkg in array_api_compat:array-api-compat array_api_strict:array-api-strict \
                   pytest:pytest hypothesis:hypothesis; do
        mod=${mod_pkg%%:*}; pkg=${mod_pkg##*:}
        python3 -c "import $mod" 2>/dev/null && continue
        python3 -m pip install --no-index --find-links "$wheels" "$pkg" || echo "cannot install $pkg"
    done
    python3 -m pip install --no-deps --no-build-isolation --no-index . \
        || python3 -m pip install --no-deps --no-index --find-links "$wheels" .
    python3 -c "import lattice_ml, lattice_ml.kernels; print('lattice_ml', lattice_ml.__version__)"
}
export -f install
if [ $SIMULATE = 1 ]; then   # here the environment has the project (editable): only check it
    step install 30 python3 -c "import lattice_ml, lattice_ml.kernels; print('lattice_ml', lattice_ml.__file__)"
else
    step install 120 bash -c install
fi

if [ $SIMULATE = 1 ]; then
    export NUMBA_ENABLE_CUDASIM=1
    BACKEND=numpy; DIRAC_SIZES="4"; GAUGE_SIZES="4"; HMC=4; CG=4
else
    export NUMBA_ENABLE_CUDASIM=0           # the tests' conftest would choose it; be explicit
    BACKEND=cupy; DIRAC_SIZES="16 32"; GAUGE_SIZES="16 24"; HMC=16; CG=16
fi

# 2. the CuPy and CUDA tests (device kernels against the array-API reference)
step tests 180 python3 -m pytest -q -p no:cacheprovider -k "cupy or cuda" \
    --junitxml="$DEST/tests.xml" tests/

# 3. the GPU benchmarks (JSON records: device, command, ratios and roofline fractions), written
#    into $DEST (copy them to benchmarks/results/ to commit them)
export LATTICE_ML_BENCH_RESULTS="$DEST"
step bench-dirac 90 python3 benchmarks/bench_kernels_dirac.py --backend "$BACKEND" \
    --sizes $DIRAC_SIZES --cg "$CG"
step bench-gauge 60 python3 benchmarks/bench_kernels_gauge.py --backend "$BACKEND" \
    --sizes $GAUGE_SIZES --hmc-size "$HMC"

echo "" >> "$STEPS"
echo "]" >> "$STEPS"
echo "== results in $DEST"
cat "$STEPS"
