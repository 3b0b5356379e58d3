"""Start ``python -m local`` as ``make run`` does, in a child process, for tests, bench and conformance.

One launcher for every tool that drives the stack over HTTP: free loopback ports (or given ones), a seed
file written from a dict, the environment ``make run`` gets plus overrides, a wait for
``/_local/health``, and SIGTERM at the end (then a kill if it does not stop).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only


class StackFailed(RuntimeError):
    """The stack exited or was not healthy in time; the message ends with its last log lines."""


@dataclass(frozen=True)
class Launched:
    api_url: str
    auth0_url: str
    aws_url: str
    audience: str
    client_id: str
    log_dir: Path
    pid: int = 0  # the stack's process (``python -m local``; its Lambda workers are its children)


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_local/health", timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def launched_stack(
    workdir: Path,
    seed: Mapping[str, Any],
    *,
    audience: str,
    client_id: str,
    env: Mapping[str, str] | None = None,
    ports: tuple[int, int, int] | None = None,
    startup_timeout: float = 90.0,
) -> Iterator[Launched]:
    """The stack on ``ports`` (API, Auth0, AWS; default free ones), seeded with ``seed``."""
    seed_file = workdir / "seed.json"
    seed_file.write_text(json.dumps(seed, indent=2), encoding="utf-8")
    api_port, auth0_port, aws_port = ports or free_ports(3)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join(["layers/shared", "."]),
            "PYTHONUNBUFFERED": "1",
            "LOCAL_HOST": HOST,
            "LOCAL_API_PORT": str(api_port),
            "LOCAL_AUTH0_PORT": str(auth0_port),
            "LOCAL_AWS_PORT": str(aws_port),
            "API_AUDIENCE": audience,
            "LOCAL_AUTH0_CLIENT_ID": client_id,
            "SEED_FILE": str(seed_file),
            **(env or {}),
        }
    )
    log_path = workdir / "stack.log"  # the stack's stdout and stderr, in the order written
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "local"], cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    launched = Launched(
        api_url=f"http://{HOST}:{api_port}",
        auth0_url=f"http://{HOST}:{auth0_port}",
        aws_url=f"http://{HOST}:{aws_port}",
        audience=audience,
        client_id=client_id,
        log_dir=workdir,
        pid=process.pid,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(launched.api_url):
            if process.poll() is not None:
                raise StackFailed(f"the local stack exited with {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise StackFailed(
                    f"the local stack was not healthy within {startup_timeout:.0f}s:\n{_tail(log_path)}"
                )
            time.sleep(0.2)
        yield launched
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def password_login(auth0_url: str, email: str, password: str, *, audience: str, client_id: str) -> str:
    """An access token from the local Auth0's password grant (raises on anything but 200)."""
    body = {
        "grant_type": "password",
        "username": email,
        "password": password,
        "audience": audience,
        "client_id": client_id,
        "scope": "openid",
    }
    req = urllib.request.Request(  # noqa: S310 - loopback only
        f"{auth0_url}/oauth/token",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as response:  # noqa: S310
            return str(json.loads(response.read())["access_token"])
    except urllib.error.HTTPError as error:
        with error:
            raise RuntimeError(f"login of {email} failed: {error.code}") from None
