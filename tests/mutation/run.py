"""Mutation testing of the engine's core modules with mutmut, one module at a time.

Each module is mutated in a scratch copy (`.mutation/<module>/`: the library under `src/`, the unit
tests, config/ and workflow/, a generated mutmut config) and checked against the unit tests that
cover it only; mutmut gives each mutant a CPU-time limit of 2 x 15 x (the covering tests' own time
+ 1 s) and a wall-clock limit of half that (`--timeout-multiplier` raises the 15). Prints the kill rate
per module and writes the survivors' names to `.mutation/<module>/survivors.txt`
(`cd .mutation/<module> && mutmut show NAME` prints one's diff; mutmut's output is in mutmut.log there).

    python tests/mutation/run.py                     # every module below
    python tests/mutation/run.py engine/gather.py    # some of them
    python tests/mutation/run.py engine/infer.py --tests test_infer_mutants.py
                                                     # against some of its tests: a lower bound
    python tests/mutation/run.py engine/infer.py --timeout-multiplier 100
                                                     # a longer CPU-time limit per mutant
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRATCH = REPO / ".mutation"

# module (under scripts/aquaflow) -> the unit tests that cover it
MODULES: dict[str, list[str]] = {
    "data/inputs.py": [
        "test_input_guards.py",
        "test_infer.py",
        "test_fault_injection.py",
        "test_inputs_mutants.py",
    ],
    "data/imaging.py": [
        "test_imaging.py",
        "test_input_guards.py",
        "test_ecotaxa.py",
        "test_imaging_mutants.py",
    ],
    "engine/items.py": ["test_infer.py", "test_input_guards.py", "test_items_mutants.py"],
    "engine/infer.py": ["test_infer.py", "test_fault_injection.py", "test_infer_mutants.py"],
    "engine/gather.py": ["test_gather.py", "test_infer.py", "test_fault_injection.py"],
    "engine/staging.py": ["test_staging.py"],
    "engine/detect_metrics.py": [
        "test_evaluate_detect.py",
        "test_intervals.py",
        "test_detect_metrics_mutants.py",
    ],
    "engine/evaluate_detect.py": ["test_evaluate_detect_mutants.py"],
    "standards/ecotaxa.py": ["test_ecotaxa.py", "test_ecotaxa_mutants.py"],
    "standards/dwca.py": [
        "test_dwca.py",
        "test_dwca_mutants.py",
        "test_detect_exports.py",
        "test_semantic_dwca.py",
    ],
    "standards/taxonomy.py": ["test_taxonomy.py", "test_dwca.py"],
    "tasks/classify/metrics.py": ["test_metrics.py", "test_metrics_mutants.py"],
    "tasks/detect/formats.py": ["test_detect_formats.py", "test_detect_formats_mutants.py"],
}

# modules whose tests run torch models: their mutants are forked from mutmut's fork server, not from
# the process that ran the tests to time them (a child forked after torch's thread pool ran can wait
# forever on a lock, spending no CPU, until mutmut's wall-clock limit ends it: a "timeout", not a kill)
FORKSERVER = {"engine/infer.py", "engine/evaluate_detect.py"}
# modules the fork server imports before forking each mutant (instead of collecting the tests), for
# modules whose tests would otherwise import Ultralytics anew per mutant (~6 s). Ultralytics is then
# imported offline with its settings in the scratch folder, so the tests' `ultra.setup` keeps them.
PRELOAD = {
    "engine/evaluate_detect.py": [
        "ultralytics",
        "ultralytics.models.yolo.detect",
        "ultralytics.engine.validator",
        "aquaflow.engine.evaluate_detect",
        "aquaflow.tasks.detect.formats",
    ]
}
# mutmut's timeout_multiplier where 15 is too tight: mutmut times the tests' calls, not their
# module-scoped fixture, and evaluate_detect's (a YOLO built, predicting, Ultralytics' val) is ~10 s of
# CPU; at 15 a loaded machine ends unmutated runs by the wall-clock limit
TIMEOUT_MULTIPLIER = {"engine/evaluate_detect.py": 100.0}
PRELOAD_CONFIG = '\nforkserver_warmup = "import"\npreload_modules_file = "preload.txt"'

# mutmut's exit code -> status (mutmut.stats.status_by_exit_code)
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}  # a failing test, a timeout, the type checker
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}

CONFIG = """\
[tool.mutmut]
source_paths = ["src/aquaflow"]
also_copy = ["config", "workflow"]
only_mutate = ["src/aquaflow/{module}"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-W", "ignore"]
pytest_add_cli_args_test_selection = {tests}
use_git_change_detection = false
timeout_multiplier = {multiplier}
process_isolation = "{isolation}"{preload}

[tool.pytest.ini_options]
addopts = "--strict-markers"
markers = ["workflow: -", "cluster: -"]
timeout = 600
"""


def prepare(module: str, tests: list[str], multiplier: float = 15.0) -> Path:
    """A fresh scratch folder for one module: library, covering tests, conftest, test data, config."""
    work = SCRATCH / module.replace("/", ".").removesuffix(".py")
    shutil.rmtree(work, ignore_errors=True)
    (work / "tests").mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "scripts" / "aquaflow", work / "src" / "aquaflow", ignore=ignore)
    shutil.copytree(REPO / "tests" / "data", work / "tests" / "data", ignore=ignore)
    for folder in ("config", "workflow"):  # use cases, taxonomy tables and the schema some tests read
        shutil.copytree(REPO / folder, work / folder, ignore=ignore)
    for helper in (REPO / "tests").glob("*.py"):  # __init__, conftest and shared checks (dwca_checks)
        shutil.copy2(helper, work / "tests" / helper.name)
    # all unit test files (some import helpers from others); only `tests` are run
    shutil.copytree(REPO / "tests" / "unit", work / "tests" / "unit", ignore=ignore)
    selection = json.dumps([f"tests/unit/{t}" for t in tests])
    (work / "pyproject.toml").write_text(
        CONFIG.format(
            module=module,
            tests=selection,
            multiplier=multiplier,
            isolation="forkserver" if module in FORKSERVER else "fork",
            preload=PRELOAD_CONFIG if module in PRELOAD else "",
        )
    )
    (work / "preload.txt").write_text("".join(m + "\n" for m in PRELOAD.get(module, [])))
    return work


def tally(work: Path, module: str) -> dict[str, object]:
    """Counts per status from mutmut's result file, and the survivors' names."""
    meta = json.loads((work / "mutants" / "src" / "aquaflow" / f"{module}.meta").read_text())
    counts: dict[str, int] = {}
    survivors = []
    for name, code in sorted(meta["exit_code_by_key"].items()):
        status = "killed" if code in KILLED else STATUS.get(code, "suspicious")
        counts[status] = counts.get(status, 0) + 1
        if status != "killed":
            survivors.append(f"{name}\t{status}")
    (work / "survivors.txt").write_text("".join(s + "\n" for s in survivors))
    total = sum(counts.values())
    return {"module": module, "total": total, **counts, "rate": counts.get("killed", 0) / max(total, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutants checked at once (default 1)")
    parser.add_argument(
        "--tests", nargs="+", help="check against these unit test files only (faster; a lower bound)"
    )
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        help="mutmut's timeout_multiplier (default: TIMEOUT_MULTIPLIER's, else 15, mutmut's own)",
    )
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown module(s) {sorted(unknown)}; known: {sorted(MODULES)}")
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    rows = []
    for module in args.modules or list(MODULES):
        tests = args.tests or MODULES[module]
        work = prepare(module, tests, args.timeout_multiplier or TIMEOUT_MULTIPLIER.get(module, 15.0))
        print(f"== {module}: mutating, then checking against {' '.join(tests)}", flush=True)
        if module in PRELOAD:
            from aquaflow.backends.yolo.ultra import ENV

            env = {**env, **ENV, "YOLO_CONFIG_DIR": str(work / "ultralytics")}
        cmd = [str(mutmut), "run", "--max-children", str(args.jobs)]
        with open(work / "mutmut.log", "wb") as log:
            subprocess.run(cmd, cwd=work, env=env, check=False, stdout=log, stderr=subprocess.STDOUT)
        row = tally(work, module)
        rows.append(row)
        (work / "summary.json").write_text(json.dumps(row, indent=1))
        print(f"   {_line(row)}", flush=True)
    print("\nmodule                        mutants  killed  rate   other")
    for row in rows:
        print(_line(row))
    return 0


def _line(row: dict[str, object]) -> str:
    other = ", ".join(f"{k} {v}" for k, v in row.items() if k not in {"module", "total", "killed", "rate"})
    return f"{row['module']:<29} {row['total']:>7} {row.get('killed', 0):>7} {row['rate']:6.1%}  {other}"


if __name__ == "__main__":
    raise SystemExit(main())
