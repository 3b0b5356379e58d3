"""Lambda's Python runtime, emulated: handler modules loaded by path, each function's environment, the
context object, and execution environments.

Two runtimes run a handler:

* ``WorkerPoolRuntime`` (the local stack): as Lambda scales out, each function gets up to ``concurrency``
  execution environments, created on demand. Each is a worker process started with the function's
  environment (set once, at start), that imports the handler once and then handles one event at a
  time: the event goes in as one JSON line on its stdin, the result comes back as one JSON line on a
  pipe of its own (stdout and stderr stay the function's log, shared with the stack's). Environment
  variables and module-level caches (``usermgmt.container``) are per process, as they are per
  execution environment in Lambda, so environments of different functions never see each other's.
* ``InProcessRuntime`` (tests with ``moto.mock_aws``, whose backends live in the test process): the
  handler runs in this process, one invocation at a time; ``os.environ`` is set to the function's
  environment for the call and put back afterwards, and the configuration-change callback (by default
  ``usermgmt.container.reset``) runs when the environment differs from the previous invocation's.

A handler that raises, or an environment that dies or overruns the function's timeout, is a
``FunctionError`` carrying Lambda's ``errorType`` (the exception's class name, ``Sandbox.Timedout``,
``Runtime.ExitError``, ``Runtime.MarshalError``).

``python -m local.lambda_runtime RESULT_FD SPEC_JSON`` is the worker's entry point.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from local.template import Function

__all__ = [
    "FunctionError",
    "InProcessRuntime",
    "LambdaContext",
    "Runtime",
    "WorkerPoolRuntime",
    "error_name",
    "function_environment",
    "load_handler_module",
]

log = logging.getLogger("local.lambda_runtime")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONCURRENCY = 4
# A worker past the function's timeout by this much is killed (Lambda stops the environment at the timeout).
_TIMEOUT_GRACE_SECONDS = 2.0
# Importing a handler (Lambda's init phase) may take this long on a loaded machine.
_INIT_TIMEOUT_SECONDS = 60.0
# Runtime variables that only name the function: a change of these alone keeps the cached service.
_IDENTITY_VARIABLES = frozenset(
    {
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
    }
)


def load_handler_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a handler module by file path, as the Lambda runtime does: under its own module name.

    Handler modules are uniquely named (``update_user.py``), so the name is the file's stem; a module of
    that name already imported from the same file is returned as is (one import per process). A module
    of that name from another file (a throwaway template of a test) is replaced.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"handler file {file} does not exist")
    name = file.stem
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == file:
        return loaded
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if loaded is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = loaded
        raise
    return module


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools use."""

    def __init__(
        self,
        *,
        function_name: str,
        arn: str,
        memory_size: int,
        timeout: float,
        region: str,
        request_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = memory_size
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self.region = region
        self._deadline = time.monotonic() + timeout

    @classmethod
    def of(cls, function: Function, region: str, request_id: str | None = None) -> LambdaContext:
        return cls(
            function_name=function.name,
            arn=function.arn,
            memory_size=function.memory_size,
            timeout=function.timeout,
            region=region,
            request_id=request_id,
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionError(Exception):
    """The invocation failed as Lambda reports it: ``error_type`` is Lambda's ``errorType``."""

    def __init__(self, error_type: str, message: str = "") -> None:
        super().__init__(f"{error_type}: {message}" if message else error_type)
        self.error_type = error_type


def error_name(exc: BaseException) -> str:
    """The name a failed invocation is reported under (the function's exception class, as Lambda says)."""
    return exc.error_type if isinstance(exc, FunctionError) else type(exc).__name__


def function_environment(
    function: Function, region: str, base: Mapping[str, str], overrides: Mapping[str, str]
) -> dict[str, str]:
    """The complete environment a function runs with: base, Lambda's variables, template, overrides."""
    env = dict(base)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_SAM_LOCAL": "true",
            "_HANDLER": function.handler,
            "LAMBDA_TASK_ROOT": str(function.code_uri),
        }
    )
    env.update(function.environment)
    env.update(overrides)
    return env


def _handler_of(module: ModuleType, function_name: str, handler: str) -> Callable[[Any, Any], Any]:
    found = getattr(module, function_name, None)
    if not callable(found):
        raise AttributeError(f"{handler} is not callable")
    return cast("Callable[[Any, Any], Any]", found)


class Runtime(Protocol):
    def invoke(self, function: Function, event: Any, environment: Mapping[str, str]) -> Any: ...

    def prewarm(self, function: Function, environment: Mapping[str, str]) -> None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------
# In process
# ------------------------------------------------------------------------------------------------


def reset_usermgmt_container() -> None:
    """Drop the cached service of ``usermgmt.container`` (when the project is importable)."""
    if importlib.util.find_spec("usermgmt") is None or importlib.util.find_spec("usermgmt.container") is None:
        return
    reset = getattr(importlib.import_module("usermgmt.container"), "reset", None)
    if callable(reset):
        reset()


class InProcessRuntime:
    """Handlers run in this process, one invocation at a time (see the module docstring)."""

    def __init__(self, region: str, on_config_change: Callable[[], None] = reset_usermgmt_container) -> None:
        self.region = region
        self._on_config_change = on_config_change
        self._lock = threading.RLock()
        self._last_config: dict[str, str] | None = None

    def invoke(self, function: Function, event: Any, environment: Mapping[str, str]) -> Any:
        with self._lock:
            saved = dict(os.environ)
            self._apply(environment)
            try:
                config = {k: v for k, v in environment.items() if k not in _IDENTITY_VARIABLES}
                if config != self._last_config:
                    self._on_config_change()
                    self._last_config = config
                module = load_handler_module(function.handler_file)
                handler = _handler_of(module, function.handler_function, function.handler)
                return handler(event, LambdaContext.of(function, self.region))
            finally:
                self._apply(saved)

    def prewarm(self, function: Function, environment: Mapping[str, str]) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def _apply(env: Mapping[str, str]) -> None:
        # change only what differs: other threads (moto, the local Auth0) read os.environ meanwhile
        for key in [k for k in os.environ if k not in env]:
            del os.environ[key]
        for key, value in env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


# ------------------------------------------------------------------------------------------------
# Worker processes
# ------------------------------------------------------------------------------------------------


class _Worker:
    """One execution environment: a process serving one function, one event at a time."""

    def __init__(self, function: Function, region: str, environment: Mapping[str, str]) -> None:
        self.function = function
        self.environment = dict(environment)
        spec = {
            "handlerFile": str(function.handler_file),
            "handlerFunction": function.handler_function,
            "handler": function.handler,
            "name": function.name,
            "arn": function.arn,
            "memorySize": function.memory_size,
            "timeout": function.timeout,
            "region": region,
            "path": [str(function.code_uri), *(p for p in sys.path if p)],
        }
        read_fd, write_fd = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "local.lambda_runtime", str(write_fd), json.dumps(spec)],
                cwd=ROOT,
                env=self.environment,
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._results: IO[bytes] = os.fdopen(read_fd, "rb")
        self._ready = False

    def _answer(self, timeout: float, late: str) -> dict[str, Any]:
        ready, _, _ = select.select([self._results], [], [], timeout)
        if not ready:
            raise _Broken("Sandbox.Timedout", late)
        line = self._results.readline()
        if not line:
            raise _Broken("Runtime.ExitError", "the execution environment exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def wait_ready(self) -> None:
        """Wait until the worker has imported the handler (its init phase)."""
        if not self._ready:
            self._answer(_INIT_TIMEOUT_SECONDS, f"Init timed out after {_INIT_TIMEOUT_SECONDS} seconds")
            self._ready = True

    def invoke(self, event: Any, request_id: str) -> Any:
        """Run one event; ``FunctionError`` for the handler's errors, ``_Broken`` when the worker is lost."""
        self.wait_ready()
        stdin = self._process.stdin
        if stdin is None:
            raise _Broken("Runtime.ExitError", "the execution environment has no input")
        try:
            stdin.write(json.dumps({"event": event, "requestId": request_id}).encode() + b"\n")
            stdin.flush()
        except (OSError, ValueError):
            raise _Broken("Runtime.ExitError", "the execution environment exited") from None
        timeout = self.function.timeout + _TIMEOUT_GRACE_SECONDS
        answer = self._answer(timeout, f"Task timed out after {self.function.timeout} seconds")
        if "error" in answer:
            error = answer["error"]
            raise FunctionError(str(error.get("errorType")), str(error.get("errorMessage", "")))
        return answer["result"]

    def stop(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()  # end of input: the worker exits
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._results.close()


class _Broken(FunctionError):
    """The execution environment is gone or stuck: it is stopped, never reused."""


class _Pool:
    """The execution environments of one function."""

    def __init__(self) -> None:
        self.idle: list[_Worker] = []
        self.count = 0
        self.changed = threading.Condition()


class WorkerPoolRuntime:
    """Each function gets up to ``concurrency`` worker processes, created when all are busy."""

    def __init__(self, region: str, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.region = region
        self.concurrency = concurrency
        self._pools: dict[str, _Pool] = {}
        self._pools_lock = threading.Lock()
        self._closed = False

    def _pool(self, function: Function) -> _Pool:
        with self._pools_lock:
            return self._pools.setdefault(function.logical_id, _Pool())

    def invoke(self, function: Function, event: Any, environment: Mapping[str, str]) -> Any:
        pool = self._pool(function)
        worker = self._acquire(pool, function, environment)
        try:
            result = worker.invoke(event, str(uuid.uuid4()))
        except _Broken:
            self._discard(pool, worker)
            raise
        except BaseException:
            self._release(pool, worker)
            raise
        self._release(pool, worker)
        return result

    def prewarm(self, function: Function, environment: Mapping[str, str]) -> None:
        """Start one execution environment of ``function`` now and wait for its init (if it has none)."""
        pool = self._pool(function)
        with pool.changed:
            if pool.count or self._closed:
                return
            pool.count += 1
        try:
            worker = _Worker(function, self.region, environment)
            worker.wait_ready()
        except BaseException:
            with pool.changed:
                pool.count -= 1
                pool.changed.notify()
            raise
        self._release(pool, worker)

    def _acquire(self, pool: _Pool, function: Function, environment: Mapping[str, str]) -> _Worker:
        stale: list[_Worker] = []
        worker: _Worker | None = None
        with pool.changed:
            while True:
                if self._closed:
                    raise FunctionError("Runtime.Unavailable", "the local stack is stopping")
                while pool.idle and pool.idle[-1].environment != environment:
                    stale.append(pool.idle.pop())  # started with another configuration
                    pool.count -= 1
                if pool.idle:
                    worker = pool.idle.pop()
                    break
                if pool.count < self.concurrency:
                    pool.count += 1
                    break
                pool.changed.wait()
        for old in stale:
            old.stop()
        if worker is not None:
            return worker
        try:
            log.info("%s: starting an execution environment", function.logical_id)
            return _Worker(function, self.region, environment)
        except BaseException:
            with pool.changed:
                pool.count -= 1
                pool.changed.notify()
            raise

    def _release(self, pool: _Pool, worker: _Worker) -> None:
        with pool.changed:
            if not self._closed:
                pool.idle.append(worker)
                pool.changed.notify()
                return
        worker.stop()

    def _discard(self, pool: _Pool, worker: _Worker) -> None:
        with pool.changed:
            pool.count -= 1
            pool.changed.notify()
        worker.stop()

    def environments(self, logical_id: str) -> int:
        """How many execution environments the function has now (busy or idle)."""
        with self._pools_lock:
            pool = self._pools.get(logical_id)
        return 0 if pool is None else pool.count

    def close(self) -> None:
        """Stop every idle worker; busy ones stop when their invocation ends."""
        self._closed = True
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            with pool.changed:
                idle, pool.idle = pool.idle, []
                pool.count -= len(idle)
                pool.changed.notify_all()
            for worker in idle:
                worker.stop()


# ------------------------------------------------------------------------------------------------
# The worker's side
# ------------------------------------------------------------------------------------------------


def _worker_main(result_fd: int, spec: Mapping[str, Any]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the stack stops us
    sys.path[:0] = [p for p in spec["path"] if p not in sys.path]
    results = os.fdopen(result_fd, "wb")
    handler: Callable[[Any, Any], Any] | None = None
    init_error: dict[str, Any] | None = None
    try:
        module = load_handler_module(spec["handlerFile"])
        handler = _handler_of(module, spec["handlerFunction"], spec["handler"])
    except Exception as exc:  # Lambda reports an init error on every invocation of the environment
        traceback.print_exc()
        init_error = {
            "errorType": "Runtime.ImportModuleError",
            "errorMessage": f"{type(exc).__name__}: {exc}",
        }
    results.write(b'{"ready": true}\n')
    results.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        answer: dict[str, Any]
        if handler is None:
            answer = {"error": init_error}
        else:
            context = LambdaContext(
                function_name=spec["name"],
                arn=spec["arn"],
                memory_size=int(spec["memorySize"]),
                timeout=float(spec["timeout"]),
                region=spec["region"],
                request_id=request.get("requestId"),
            )
            try:
                answer = {"result": handler(request["event"], context)}
            except Exception as exc:
                traceback.print_exc()
                answer = {"error": {"errorType": type(exc).__name__, "errorMessage": str(exc)}}
        try:
            payload = json.dumps(answer)
        except (TypeError, ValueError) as exc:
            payload = json.dumps({"error": {"errorType": "Runtime.MarshalError", "errorMessage": str(exc)}})
        sys.stdout.flush()
        sys.stderr.flush()
        results.write(payload.encode() + b"\n")
        results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(int(sys.argv[1]), json.loads(sys.argv[2])))
