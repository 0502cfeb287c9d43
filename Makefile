# ddfast developer entry points. `make test` and `make bench` set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ddfast-installed
SOURCES := setup.py pyproject.toml requirements-dev.txt $(shell find csrc -type f 2>/dev/null)

.PHONY: wheel-cuda stable-abi-probe quickstart results results-fashion-mnist test-real-data experiments setup build dist test test-fast test-triton test-compile bench bench-full report info ci clean

$(STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f ddfast/_C*.so  # a build under another name (abi3 vs cpython-3xx) would otherwise shadow the new one
	MAX_JOBS=$${MAX_JOBS:-2} DDFAST_BUILD_CPP=$${DDFAST_BUILD_CPP:-1} $(PY) -m pip install -q -e . --no-build-isolation --no-deps
	touch $@

setup: $(STAMP)

build: setup  ## rebuild the extension after editing csrc/
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install -q -e . --no-build-isolation --no-deps

dist: setup  ## sdist, then a wheel built from it (CPU here; DDFAST_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" for GPUs)
	rm -f dist/ddfast-*  # dist/cuda (make wheel-cuda) stays
	MAX_JOBS=$${MAX_JOBS:-2} DDFAST_BUILD_CPP=$${DDFAST_BUILD_CPP:-1} $(PY) -m build --no-isolation --outdir dist
	$(PY) scripts/check_dist.py dist

WHEEL_TORCH ?= 2.11.0
WHEEL_VENV := build/wheel-cuda/build-torch$(WHEEL_TORCH)
wheel-cuda:  ## CUDA wheel for GPU clusters (sm_80, sm_90 + PTX) against torch $(WHEEL_TORCH) from the index, checked on this GPU-less machine -> dist/cuda
	$(PYTHON) scripts/wheel_cuda.py --torch $(WHEEL_TORCH)

stable-abi-probe: setup  ## a tensor-list op on LibTorch's stable ABI, built with torch $(WHEEL_TORCH) (make wheel-cuda's venv), loaded there and under .venv's torch
	test -x $(WHEEL_VENV)/bin/python || $(MAKE) wheel-cuda
	$(WHEEL_VENV)/bin/python scripts/stable_abi_probe.py build build/stable-abi-probe
	$(WHEEL_VENV)/bin/python scripts/stable_abi_probe.py load build/stable-abi-probe
	$(PY) scripts/stable_abi_probe.py load build/stable-abi-probe

info: setup
	$(VENV)/bin/ddfast info

quickstart: setup  ## README command 1: DM (IPC 1, 10) and DC (IPC 1) on digits, quick evaluation, one table
	$(VENV)/bin/ddfast quickstart --out runs/quickstart

results: setup  ## DC, DM, MTT, label-cycle GM, DREAM+, AST, SeqMatch at IPC 1 and 10, SRe2L and DELT at IPC 10 and 50 on digits, full protocol -> bench/results + README
	$(PY) scripts/results.py
	$(PY) scripts/results.py --methods sre2l,delt --ipcs 10,50

FMNIST_RUN := $(PY) scripts/results.py --dataset fashion_mnist --preset paper --compile on
results-fashion-mnist: setup  ## DC, DSA, DM on Fashion-MNIST (apt-get install dataset-fashion-mnist) held against the papers; hours per run on a CPU: run it again and it continues from the checkpoints
	$(FMNIST_RUN) --methods dc,dsa --ipcs 1 --eval-every 100 --checkpoint-every 20
	$(FMNIST_RUN) --methods dm --ipcs 1,10 --iterations dm=2000 --eval-every 100 --checkpoint-every 20
	$(FMNIST_RUN) --methods dc,dsa --ipcs 10 --iterations dc=50,dsa=50 --eval-runs 10 --eval-every 10 --checkpoint-every 5

experiments: setup  ## DREAM+ vs random sampling, label-cycle GM vs plain GM, AST component ablation on digits (accuracy curves) -> README
	$(PY) scripts/experiments.py

test: setup test-fast test-triton test-compile test-real-data

test-fast: setup  ## tiers 1-4 on CPU (reference, cpp, gradcheck, opcheck, bad inputs)
	$(PY) -m pytest -q -m "not triton and not compile_gpu and not real_data"

test-triton: setup  ## tier 5: Triton kernels under the interpreter
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m triton

FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo) apt-get
test-real-data: setup  ## the real Fashion-MNIST files (Debian's dataset-fashion-mnist, installed here when missing)
	@test -f $(FASHION_MNIST) || $(APT_GET) install -y dataset-fashion-mnist || \
		($(APT_GET) update && $(APT_GET) install -y dataset-fashion-mnist)
	$(PY) -m pytest -q -m real_data

test-compile: setup  ## tier 6: nvcc and Triton ahead-of-time compile checks for sm_80/sm_90
	$(PY) -m pytest -q -m compile_gpu

BENCHES := $(sort $(wildcard bench/bench_*.py))

bench: setup  ## quick benchmarks of every op on this machine (a few minutes on 2 cores), then the README tables
	set -e; for script in $(BENCHES); do $(PY) $$script --quick; done
	$(PY) bench/report.py

bench-full: setup  ## full benchmarks (several minutes on CPU); full runs take precedence in the tables
	set -e; for script in $(BENCHES); do $(PY) $$script; done
	$(PY) bench/report.py

report: setup
	$(PY) bench/report.py

ci:
	bash .ci/run

clean:
	rm -rf build dist ddfast/_C*.so ddfast/build_info.json *.egg-info
