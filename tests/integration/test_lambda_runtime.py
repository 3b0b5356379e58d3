"""The local stack's Lambda runtime: execution environments per function, in parallel, as Lambda scales.

A throwaway template with two functions; the handlers are real modules run in worker processes by
``WorkerPoolRuntime``, exactly as ``make run`` runs the project's functions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.lambda_runtime import FunctionError, WorkerPoolRuntime, function_environment
from local.template import Stack, load_stack

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.13
    Timeout: 10
    Environment:
      Variables:
        SHARED: "from-globals"
Resources:
  MeetFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: meet_handler.meet
      Environment:
        Variables:
          ONLY_MEET: "meet"
  EnvFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: env_handler.handler
"""

# Each invocation registers its process and waits (bounded) until ``expected`` invocations are in at
# once: serialized invocations never meet, parallel ones do.
MEET_HANDLER = """
import os, pathlib, time

IMPORTED = 0
IMPORTED += 1


def meet(event, context):
    if event.get("exit"):
        os._exit(3)
    if event.get("raise"):
        raise LookupError("asked to fail")
    room = pathlib.Path(event["room"])
    (room / f"{os.getpid()}-{context.aws_request_id}").touch()
    deadline = time.monotonic() + 5
    while len(list(room.iterdir())) < event["expected"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"pid": os.getpid(), "met": len(list(room.iterdir())), "imports": IMPORTED,
            "onlyMeet": os.environ.get("ONLY_MEET"), "function": context.function_name,
            "remaining": context.get_remaining_time_in_millis()}
"""
ENV_HANDLER = """
import os


def handler(event, context):
    return {"onlyMeet": os.environ.get("ONLY_MEET"), "shared": os.environ.get("SHARED"), "pid": os.getpid()}
"""


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "meet_handler.py").write_text(MEET_HANDLER)
    (tmp_path / "fn" / "env_handler.py").write_text(ENV_HANDLER)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    return load_stack(tmp_path / "template.yaml")


@pytest.fixture
def runtime() -> Iterator[WorkerPoolRuntime]:
    pool = WorkerPoolRuntime("eu-central-1", concurrency=3)
    try:
        yield pool
    finally:
        pool.close()


def invoke(runtime: WorkerPoolRuntime, stack: Stack, logical_id: str, event: Any) -> Any:
    function = stack.functions[logical_id]
    return runtime.invoke(function, event, function_environment(function, stack.region, {}, {}))


def at_once(count: int, call: Any) -> list[Any]:
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_invocations_run_in_parallel_in_separate_environments(
    runtime: WorkerPoolRuntime, stack: Stack, tmp_path: Path
) -> None:
    room = tmp_path / "room"
    room.mkdir()
    event = {"room": str(room), "expected": 3}
    results = at_once(3, lambda: invoke(runtime, stack, "MeetFunction", event))
    assert [r["met"] for r in results] == [3, 3, 3]  # all three were in at once
    assert len({r["pid"] for r in results}) == 3  # one execution environment each
    assert runtime.environments("MeetFunction") == 3
    assert {r["function"] for r in results} == {stack.functions["MeetFunction"].name}
    assert all(0 < r["remaining"] <= 10_000 for r in results)


def test_environments_are_bounded_and_reused_and_import_the_handler_once(
    runtime: WorkerPoolRuntime, stack: Stack, tmp_path: Path
) -> None:
    room = tmp_path / "room"
    room.mkdir()
    event = {"room": str(room), "expected": 1}
    results = at_once(8, lambda: invoke(runtime, stack, "MeetFunction", event))
    assert len({r["pid"] for r in results}) <= 3  # LOCAL_LAMBDA_CONCURRENCY
    assert runtime.environments("MeetFunction") <= 3
    assert {r["imports"] for r in results} == {1}  # the module was imported once per environment
    again = invoke(runtime, stack, "MeetFunction", event)
    assert again["pid"] in {r["pid"] for r in results}  # a warm environment served it


def test_each_function_sees_only_its_own_environment(
    runtime: WorkerPoolRuntime, stack: Stack, tmp_path: Path
) -> None:
    room = tmp_path / "room"
    room.mkdir()
    meet = invoke(runtime, stack, "MeetFunction", {"room": str(room), "expected": 1})
    other = invoke(runtime, stack, "EnvFunction", {})
    assert meet["onlyMeet"] == "meet"
    assert other == {"onlyMeet": None, "shared": "from-globals", "pid": other["pid"]}
    assert other["pid"] != meet["pid"]


def test_a_failing_handler_and_a_dying_environment_are_function_errors(
    runtime: WorkerPoolRuntime, stack: Stack, tmp_path: Path
) -> None:
    with pytest.raises(FunctionError) as raised:
        invoke(runtime, stack, "MeetFunction", {"raise": True})
    assert raised.value.error_type == "LookupError"
    with pytest.raises(FunctionError) as died:
        invoke(runtime, stack, "MeetFunction", {"exit": True})
    assert died.value.error_type == "Runtime.ExitError"
    room = tmp_path / "room"
    room.mkdir()
    assert invoke(runtime, stack, "MeetFunction", {"room": str(room), "expected": 1})["met"] == 1
    assert runtime.environments("MeetFunction") == 1  # the dead one is gone, the failing one reused


def test_prewarm_starts_one_environment_that_serves_the_first_request(
    runtime: WorkerPoolRuntime, stack: Stack, tmp_path: Path
) -> None:
    function = stack.functions["MeetFunction"]
    runtime.prewarm(function, function_environment(function, stack.region, {}, {}))
    assert runtime.environments("MeetFunction") == 1
    room = tmp_path / "room"
    room.mkdir()
    first = invoke(runtime, stack, "MeetFunction", {"room": str(room), "expected": 1})
    assert runtime.environments("MeetFunction") == 1  # served by the prewarmed one, no cold start
    assert first["imports"] == 1
