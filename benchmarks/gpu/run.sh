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
# Writes: env.txt (nvidia-smi, versions), one log per step (install.log, tests-kernels.log,
# tests-cupy.log, ...), tests-kernels.xml + tests-cupy.xml (junit), the benchmarks' JSON
# records, and steps.json (every step's command, exit code and seconds). Each step has its own
# time limit; the whole stays under 8 minutes on an H100 (the limits sum to 450 s: install 60, tests-kernels 90, tests-cupy 120,
# bench-dirac 120, bench-gauge 60). A failing step does not stop the later ones; the test
# steps print every test as it ends (-v), so a step killed at its limit still says how far it
# got.
set -uo pipefail
cd "$(dirname "$0")/../.."
SIMULATE=0
[ "${1:-}" = "--simulate" ] && SIMULATE=1
# the limits are the device's budget; --simulate runs the same steps on a shared CPU, where
# Numba's CPU compilation alone can take minutes: three times the limits there
SCALE=1
[ $SIMULATE = 1 ] && SCALE=3
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DEST=${OUT:-benchmarks/results/gpu-$STAMP}
mkdir -p "$DEST"
STEPS="$DEST/steps.json"
echo "[" > "$STEPS"
FIRST=1

step() {   # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$(($2 * SCALE)); shift 2
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
    # editable: the tests run from the repository root, where the source tree's lattice_ml comes
    # first on sys.path; only the editable finder maps kernels/ in as lattice_ml.kernels there
    # (a plain install would leave every test module that imports lattice_ml.kernels failing)
    python3 -m pip install --no-deps --no-build-isolation --no-index -e . \
        || python3 -m pip install --no-deps --no-index --find-links "$wheels" -e .
    # run here, as the tests will be: the source tree first on sys.path
    python3 -c "import lattice_ml, lattice_ml.kernels; print('lattice_ml', lattice_ml.__version__, lattice_ml.kernels.__file__)"
}
export -f install
if [ $SIMULATE = 1 ]; then   # here the environment has the project (editable): only check it
    step install 30 python3 -c "import lattice_ml, lattice_ml.kernels; print('lattice_ml', lattice_ml.__file__)"
else
    step install 60 bash -c install
fi

if [ $SIMULATE = 1 ]; then
    export NUMBA_ENABLE_CUDASIM=1
    # NumPy rows only check that the script runs (its CuPy rows need CuPy): one row and the CG
    BACKEND=numpy; DIRAC_SIZES="4"; GAUGE_SIZES="4"; HMC=4; CG=4
    DIRAC_OPS="--ops wilson_hop --dtypes complex128 --ref-repeat 1"
else
    export NUMBA_ENABLE_CUDASIM=0           # the tests' conftest would choose it; be explicit
    BACKEND=cupy; DIRAC_SIZES="16 32"; GAUGE_SIZES="16 24"; HMC=16; CG=16
    DIRAC_OPS=""
fi

# 2. the CUDA kernel tests first (they are what no other machine can check), then the CuPy
#    tests of the array-API code (device kernels and CuPy against the array-API reference)
step tests-kernels 90 python3 -m pytest -v -p no:cacheprovider -k "cuda or cupy" \
    --durations=10 --junitxml="$DEST/tests-kernels.xml" tests/test_kernels_*.py
step tests-cupy 120 python3 -m pytest -v -p no:cacheprovider -k "cupy and not test_kernels" \
    --durations=10 --junitxml="$DEST/tests-cupy.xml" tests/

# 3. the GPU benchmarks (JSON records: device, command, ratios and roofline fractions), written
#    into $DEST (copy them to benchmarks/results/ to commit them)
export LATTICE_ML_BENCH_RESULTS="$DEST"
step bench-dirac 120 python3 benchmarks/bench_kernels_dirac.py --backend "$BACKEND" \
    --sizes $DIRAC_SIZES --cg "$CG" $DIRAC_OPS
step bench-gauge 60 python3 benchmarks/bench_kernels_gauge.py --backend "$BACKEND" \
    --sizes $GAUGE_SIZES --hmc-size "$HMC"

echo "" >> "$STEPS"
echo "]" >> "$STEPS"
echo "== results in $DEST"
cat "$STEPS"
