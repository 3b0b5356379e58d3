"""Cold-start import time of every handler module, as a ratio to a floor.

The floor is what any Python Lambda of this kind pays: a fresh interpreter importing boto3 and the
Powertools HTTP resolver, building a resolver and creating a DynamoDB client. Each handler is
measured the same way in a fresh process: importing its module by file path (as the Lambda runtime
does), and, as a second figure, also building what its first request needs (settings + DynamoDB
client through the composition root); for update-user a third figure adds what a first PATCH builds
(the pydantic request models). Runs are interleaved (floor, handler, floor, ...) so machine
noise hits both alike; the medians of at least 10 runs each are compared. Bytecode is cached (the
deployed layer ships compiled .pyc files, see scripts/check_build.py), interpreter start-up is not
counted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "15"))

FLOOR = """
import time
t = time.perf_counter()
import boto3
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
APIGatewayHttpResolver()
boto3.client("dynamodb")
print(time.perf_counter() - t)
"""

HANDLER = """
import sys, time
from local.lambda_runtime import load_handler_module  # the local stack's loader (stdlib only)
t = time.perf_counter()
load_handler_module(sys.argv[1])
imported = time.perf_counter() - t
from usermgmt import container
container.get().store
initialised = time.perf_counter() - t
from usermgmt.schemas import parse_patch  # what a first PATCH adds: the request models (pydantic)
parse_patch("self", {"firstName": "Ann"})
print(imported, initialised, time.perf_counter() - t)
"""


def lambda_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)]),
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "TABLE_NAME": "usermgmt-bench",
            "POWERTOOLS_SERVICE_NAME": "usermgmt",
            "POWERTOOLS_METRICS_NAMESPACE": "UserManagement",
        }
    )
    return env


def handlers() -> dict[str, Path]:
    found = {}
    for folder in sorted((ROOT / "functions").iterdir()):
        module = folder / (folder.name.replace("-", "_") + ".py")
        if module.is_file():
            found[folder.name] = module
    return found


def _run(code: str, *args: str) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=lambda_env(), capture_output=True, text=True, check=True
    ).stdout
    return [float(x) for x in out.split()]


def measure() -> dict[str, object]:
    targets = handlers()
    # warm the bytecode caches once, like a deployed package that ships .pyc files
    _run(FLOOR)
    for path in targets.values():
        _run(HANDLER, str(path))
    floor: list[float] = []
    imports: dict[str, list[float]] = {name: [] for name in targets}
    inits: dict[str, list[float]] = {name: [] for name in targets}
    patches: list[float] = []
    for _ in range(RUNS):
        for name, path in targets.items():
            floor.append(_run(FLOOR)[0])
            imported, initialised, patched = _run(HANDLER, str(path))
            imports[name].append(imported)
            inits[name].append(initialised)
            if name == "update-user":
                patches.append(patched)
    floor_median = statistics.median(floor)
    rows = {}
    for name in targets:
        rows[name] = {
            "import_ms": round(statistics.median(imports[name]) * 1000, 1),
            "import_ratio": round(statistics.median(imports[name]) / floor_median, 2),
            "first_request_init_ms": round(statistics.median(inits[name]) * 1000, 1),
            "first_request_init_ratio": round(statistics.median(inits[name]) / floor_median, 2),
        }
    return {
        "update_user_first_patch_ms": round(statistics.median(patches) * 1000, 1),
        "update_user_first_patch_ratio": round(statistics.median(patches) / floor_median, 2),
        "runs_per_handler": RUNS,
        "floor_runs": len(floor),
        "floor_ms": round(floor_median * 1000, 1),
        "python": sys.version.split()[0],
        "handlers": rows,
    }


def markdown(result: dict[str, object]) -> str:
    lines = [
        f"Floor (boto3 + Powertools resolver + DynamoDB client): {result['floor_ms']} ms median of "
        f"{result['floor_runs']} fresh processes; {result['runs_per_handler']} per handler.",
        "",
        "| handler | import (ms) | import / floor | import + first-request init (ms) | init / floor |",
        "|---|---|---|---|---|",
    ]
    rows = result["handlers"]
    assert isinstance(rows, dict)
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['import_ms']} | **{row['import_ratio']}x** | {row['first_request_init_ms']} "
            f"| {row['first_request_init_ratio']}x |"
        )
    lines += [
        "",
        f"update-user when its first request is a PATCH (the request models are built then): "
        f"{result['update_user_first_patch_ms']} ms, {result['update_user_first_patch_ratio']}x the floor.",
    ]
    return "\n".join(lines)


def main() -> None:
    result = measure()
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "coldstart.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
