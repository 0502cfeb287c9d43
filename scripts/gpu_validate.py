"""Run the test suite on a CUDA machine and record the GPU kernels whose tests all passed in
ddfast/gpu_validated.json (unvalidated GPU kernels are not used by ``auto``: docs/semantics.md#backends-and-dispatch).

A kernel (op, backend) is recorded when at least one test marked ``validates(op, backend)`` ran
and every such test passed, for the source the run used (the hash of the Triton file, or of the
CUDA sources the extension was built from). Writes <out>/gpu_test_report.json too.

Usage: python scripts/gpu_validate.py --out DIR [pytest args...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class ValidationCollector:
    def __init__(self):
        self.outcomes = defaultdict(list)  # (op, backend) -> [(nodeid, outcome)]
        self.totals = defaultdict(int)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.totals[report.outcome] += 1
            for mark in item.iter_markers("validates"):
                self.outcomes[tuple(mark.args)].append((item.nodeid, report.outcome))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args, pytest_args = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    if not torch.cuda.is_available():
        print("gpu_validate: no CUDA device visible; nothing can be validated", file=sys.stderr)
        return 2
    collector = ValidationCollector()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--junitxml", str(args.out / "junit.xml"), *pytest_args],
                       plugins=[collector])

    from ddfast import backends

    import triton

    validated_path = backends.VALIDATED_PATH
    existing = json.loads(validated_path.read_text()).get("kernels", []) if validated_path.exists() else []
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    gpu = torch.cuda.get_device_name()
    capability = "sm_%d%d" % torch.cuda.get_device_capability()
    commit = os.environ.get("DDFAST_COMMIT", "unknown")
    report = {"pytest_exit_code": int(code), "totals": dict(collector.totals), "gpu": gpu, "kernels": {}}
    for (op, backend), results in sorted(collector.outcomes.items()):
        failed = [nodeid for nodeid, outcome in results if outcome != "passed"]
        passed = not failed and bool(results)
        report["kernels"][f"{op}/{backend}"] = {"tests": len(results), "failed": failed, "validated": passed}
        if passed:
            source = backends.current_source_hash(op, backend)
            existing = [e for e in existing if not (e.get("op") == op and e.get("backend") == backend)]
            existing.append({"op": op, "backend": backend, "source_hash": source, "gpu": gpu,
                             "capability": capability, "torch": torch.__version__, "triton": triton.__version__,
                             "commit": commit, "date": now, "tests_passed": len(results)})
    validated_path.write_text(json.dumps({"kernels": sorted(existing, key=lambda e: (e["op"], e["backend"]))},
                                         indent=2) + "\n")
    (args.out / "gpu_validated.json").write_text(validated_path.read_text())
    (args.out / "gpu_test_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["kernels"], indent=2))
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
