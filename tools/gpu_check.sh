#!/usr/bin/env bash
# GPU check: the test suite on the cupy backend, then `xpdl bench` against PyTorch CUDA.
# Run from the repository root on a machine with an NVIDIA GPU, CuPy and PyTorch
# (`nox -s gpu`). Results go to $OUT (default ./gpu_results).
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# JAX otherwise takes 75% of the GPU's memory at start, beside CuPy and PyTorch.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
# pytest-xdist spreads the suite over processes (each its own CUDA context) where installed.
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n ${TEST_WORKERS:-8}")
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import sys, numpy, cupy, torch; print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| cupy', cupy.__version__, '| torch', torch.__version__, '| cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/device.txt"
# 1. Every test over the cupy backend (CPU backends are CI's job), plus device-only checks.
timeout "${TEST_TIMEOUT:-420}" $PY -m pytest tests -q -p no:cacheprovider -k "cupy or cuda" \
  -o addopts="" $XDIST --tb=short -rfE --junitxml="$OUT/junit_cupy.xml" 2>&1 \
  | tee "$OUT/tests_cupy.txt" | tail -60
# 2. The side-by-side training benchmark (with xpdl[torch]/nographs where torch on CUDA
# launches captured graphs: their own gain, in the same run).
timeout "${BENCH_TIMEOUT:-300}" $PY -m xpdl bench --backends "${BENCH_BACKENDS:-numpy,cupy,torch,jax}" \
  --vs "${BENCH_VS:-torch,sklearn}" \
  --sizes "${BENCH_SIZES:-small,medium,large}" --repeats "${BENCH_REPEATS:-5}" \
  --tape --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
# 3. Where a CuPy epoch spends its time (for the next round of tuning): the estimator's
# epoch and the same network trained through compile_step (bench's /nn row), at
# PROFILE_SIZE (default medium); wall times of 10 epochs each first.
SIZE=${PROFILE_SIZE:-medium}
timeout "${PROFILE_TIMEOUT:-60}" $PY - "$SIZE" <<'PY' 2>&1 | tee "$OUT/profile_cupy_$SIZE.txt" | head -60
import cProfile, pstats, io, sys, time
from xpdl.bench import _XpdlRunner, _SequentialRunner, SIZES
from xpdl.datasets import make_classification
sizes, batch = SIZES[sys.argv[1]]
X, y = make_classification(batch * 20, sizes[0], n_classes=sizes[-1], random_state=0)
for name, r in (("estimator", _XpdlRunner("cupy", sizes, batch, X, y)),
                ("nn", _SequentialRunner("cupy", sizes, batch, X, y))):
    for _ in range(3):
        r.epoch()
    ts = []
    for _ in range(10):
        t = time.perf_counter(); r.epoch(); ts.append(time.perf_counter() - t)
    print(name, "epoch ms, sorted:", " ".join(f"{1e3 * t:.2f}" for t in sorted(ts)))
    pr = cProfile.Profile(); pr.enable(); r.epoch(); r.epoch(); pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
    print(name, s.getvalue())
PY
