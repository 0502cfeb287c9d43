#!/usr/bin/env bash
# GPU validation in stages that each fit in 10 minutes and can run as separate commands:
#   scripts/gpu_validate.sh build [OUT]   build ddfast._C with CUDA kernels (sm_90 unless TORCH_CUDA_ARCH_LIST); with
#                                         WHEEL=dist/cuda/ddfast-...whl (make wheel-cuda, for the machine's torch) take
#                                         ddfast._C from that wheel instead of compiling (saves the build's minutes)
#   scripts/gpu_validate.sh test  [OUT]   whole test suite on CUDA; records passing kernels in ddfast/gpu_validated.json
#   scripts/gpu_validate.sh bench [OUT]   benchmarks; results appended to OUT/<device>.jsonl
#   scripts/gpu_validate.sh all   [OUT]   the three in turn
# OUT (default gpu_out/) receives logs, the test report, gpu_validated.json and bench results; copy
# them back into bench/results/ and ddfast/gpu_validated.json. Set DDFAST_COMMIT to the commit tested.
set -uo pipefail
stage=${1:?usage: scripts/gpu_validate.sh build|test|bench|all [OUT]}
out=${2:-gpu_out}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1

build() {
  local rc
  if [ -n "${WHEEL:-}" ]; then  # a wheel made by `make wheel-cuda` for this torch: its ddfast._C, taken along, not rebuilt
    "$py" - "$WHEEL" >"$out/build.log" 2>&1 <<'PY'
import pathlib, sys, zipfile
for old in pathlib.Path("ddfast").glob("_C*.so"):
    old.unlink()
with zipfile.ZipFile(sys.argv[1]) as whl:
    for name in whl.namelist():
        if (name.startswith("ddfast/_C") and name.endswith(".so")) or name == "ddfast/build_info.json":
            pathlib.Path(name).write_bytes(whl.read(name))
            print(f"took {name} from {sys.argv[1]}")
PY
    rc=$?
  else
    MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} DDFAST_BUILD_CPP=1 DDFAST_BUILD_CUDA=1 \
      "$py" -m pip install -e . --no-build-isolation --no-deps >"$out/build.log" 2>&1
    rc=$?
  fi
  tail -n 5 "$out/build.log"
  "$py" -m ddfast.info | tee "$out/info.txt"
  return $rc
}

test_stage() {
  "$py" scripts/gpu_validate.py --out "$out" --timeout=300 2>&1 | tee "$out/pytest.log" | tail -n 40
  return "${PIPESTATUS[0]}"
}

bench() {  # every bench/bench_<op>.py; BENCH_ONLY=<op> runs one of them
  local rc=0 script
  for script in bench/bench_${BENCH_ONLY:-*}.py; do
    "$py" "$script" --out "$out" ${BENCH_ARGS:-} 2>&1 | tee -a "$out/bench.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  done
  return $rc
}

case "$stage" in
  build) build ;;
  test) test_stage ;;
  bench) bench ;;
  all) build && { test_stage; t=$?; bench; b=$?; exit $(( t || b )); } ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
