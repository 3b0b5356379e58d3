"""``make conformance``: schemathesis, from docs/openapi.json, against the local stack, once per caller.

For each kind of caller (no token, a plain user, a delegated administrator, a platform administrator)
this starts a fresh local stack exactly as ``make run`` does (``python -m local`` on free ports, with
this module's own seed), logs the caller in at the local Auth0 and runs ``schemathesis run`` with every
phase (examples, coverage, fuzzing, stateful) and the checks below. A fresh stack per caller means
what one run suspends or deletes is back for the next one, and every run starts with a working token;
the platform administrator cannot suspend or delete themselves (403), so their token lives through
their own run.

The document is used as committed, plus one addition in a temporary copy: generation of the ``userId``
path parameter is steered towards this seed's users (``document_with_seeded_ids``), so the phases reach
users that exist and the stateful phase walks their lifecycles through the document's links.

Bounded and repeatable: a fixed seed, deterministic generation, at most ``--max-examples`` cases per
operation and phase. Exit status 1 when any run reports a failure; the reports (JUnit XML and
schemathesis' own output) go to ``--report-dir``.

The routes that revoke sessions run last, in a second schemathesis run: naming the caller (``/me``, or
their own id) they end the caller's token, and the first run must test a signed-in caller throughout;
between the two, ``GET /me`` must still answer 200 for a person's token (the run fails otherwise).

The machine caller (``machine``) is a client-credentials token of the seed's machine client with every
scope (SPEC section 3): platform reach through scopes, ``/me`` refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.launch import launched_stack, password_login

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "openapi.json"
AUDIENCE = "https://api.conformance.local"
LOGIN_CLIENT_ID = "conformance-login-client"
STARTUP_TIMEOUT = 60.0

# What must hold for every response (SPEC section 19): no 5xx, status codes, content types, headers and
# bodies as documented, no route that answers without its authentication, a deleted user stays gone.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "use_after_free",
)
PHASES = "examples,coverage,fuzzing,stateful"


@dataclass(frozen=True)
class Person:
    email: str
    password: str
    first_name: str
    last_name: str
    profile: str = "customer"
    memberships: tuple[tuple[str, tuple[str, ...]], ...] = ()
    status: str = "ACTIVE"

    @property
    def user_id(self) -> str:
        # local/seed.py's deterministic ids
        return "auth0|" + hashlib.sha256(self.email.lower().encode()).hexdigest()[:24]

    def seed_entry(self) -> dict[str, Any]:
        memberships = [{"accountId": a, "roles": list(r)} for a, r in self.memberships]
        return {
            "email": self.email,
            "password": self.password,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "profile": self.profile,
            "memberships": memberships,
            "defaultAccountId": memberships[0]["accountId"] if memberships else None,
            "status": self.status,
        }


PEOPLE = {
    "admin": Person(
        "pia.platform@conformance.example", "Conf-Admin-Pass1", "Pia", "Platform", "administrator"
    ),
    "admin2": Person("oli.other@conformance.example", "Conf-Admin-Pass2", "Oli", "Other", "administrator"),
    "delegate": Person(
        "dan.delegate@initech.example",
        "Conf-Delegate-1",
        "Dan",
        "Delegate",
        memberships=(("initech", ("Administrator", "Buyer")),),
    ),
    "user": Person(
        "uma.user@initech.example", "Conf-User-Pass1", "Uma", "User", memberships=(("initech", ("Buyer",)),)
    ),
    "target": Person(
        "tom.target@initech.example",
        "Conf-Target-1",
        "Tom",
        "Target",
        memberships=(("initech", ("Buyer", "Approver")), ("umbrella", ("Buyer",))),
    ),
    "outsider": Person(
        "oz.outsider@umbrella.example",
        "Conf-Outsider-1",
        "Oz",
        "Outsider",
        memberships=(("umbrella", ("Buyer",)),),
    ),
    "suspended": Person(
        "sue.suspended@initech.example",
        "Conf-Suspended-1",
        "Sue",
        "Suspended",
        memberships=(("initech", ("Buyer",)),),
        status="SUSPENDED",
    ),
}
MACHINE_CLIENT = {
    "clientId": "conformance-script",
    "clientSecret": "conformance-script-secret-1",
    "scopes": ["read:users", "update:users", "suspend:users", "delete:users", "create:users", "bulk:users"],
}
SEED = {
    "accounts": [{"id": "initech", "name": "Initech"}, {"id": "umbrella", "name": "Umbrella"}],
    "users": [p.seed_entry() for p in PEOPLE.values()],
    "machineClients": [MACHINE_CLIENT],
}
MACHINE = "@machine"  # not a person: the seed's machine client
# The callers, each run on a fresh stack; None logs nobody in.
CALLERS: dict[str, str | None] = {
    "no-token": None,
    "user": "user",
    "delegated-admin": "delegate",
    "platform-admin": "admin",
    "machine": MACHINE,
}


# --------------------------------------------------------------------------------------------- the stack
@dataclass(frozen=True)
class Stack:
    api_url: str
    auth0_url: str

    def login(self, person: Person) -> str:
        return password_login(
            self.auth0_url, person.email, person.password, audience=AUDIENCE, client_id=LOGIN_CLIENT_ID
        )

    def machine_login(self) -> str:
        """A client-credentials token of the seed's machine client, as a script gets one from Auth0."""
        body = json.dumps(
            {
                "grant_type": "client_credentials",
                "client_id": MACHINE_CLIENT["clientId"],
                "client_secret": MACHINE_CLIENT["clientSecret"],
                "audience": AUDIENCE,
            }
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback only
            f"{self.auth0_url}/oauth/token", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback only
            return str(json.loads(answer.read())["access_token"])


@contextmanager
def local_stack(workdir: Path) -> Iterator[Stack]:
    """``python -m local`` with this module's seed on free ports; stopped with SIGTERM afterwards."""
    env = {
        "LOCAL_LOG_LEVEL": os.environ.get("CONFORMANCE_STACK_LOG_LEVEL", "WARNING"),
        # Reach the logic behind the per-address and per-IP reset limits (429 has its own tests).
        "RESET_LIMIT_PER_ADDRESS": "10000",
        "RESET_LIMIT_PER_IP": "10000",
        "RESET_LIMIT_PER_ADDRESS_AUTHENTICATED": "10000",
        "VERIFY_LIMIT_PER_USER": "10000",
        "VERIFY_LIMIT_PER_ADDRESS": "10000",
    }
    with launched_stack(
        workdir, SEED, audience=AUDIENCE, client_id=LOGIN_CLIENT_ID, env=env, startup_timeout=STARTUP_TIMEOUT
    ) as launched:
        yield Stack(launched.api_url, launched.auth0_url)


# ---------------------------------------------------------------------------------------- schemathesis
def document_with_seeded_ids(source: Path, target: Path) -> None:
    """The committed document, with generation of ``userId`` steered towards this seed's users.

    The ids become ``examples`` of the parameter, and its schema ``anyOf`` [the document's schema, those
    ids]: the same set of valid values (every seeded id already fits the document's schema), but about
    half of the generated ids name real users, so fuzzing and the stateful phase reach real users and
    follow the document's links (suspend -> GET, DELETE -> GET answering 404, ...).
    """
    document = json.loads(source.read_text(encoding="utf-8"))
    parameter = document["components"]["parameters"]["userId"]
    ids = [person.user_id for person in PEOPLE.values()]
    parameter.pop("example", None)
    parameter["examples"] = {
        key: {"summary": f"seeded: {key}", "value": p.user_id} for key, p in PEOPLE.items()
    }
    parameter["schema"] = {"anyOf": [parameter["schema"], {"type": "string", "enum": ids}]}
    target.write_text(json.dumps(document, indent=2), encoding="utf-8")


# Revoking sessions ends the caller's own token when it names the caller (``/me/sessions/revoke``, or
# the caller's id among the seeded ones): everything after would test only 401s. Those routes run last,
# in a schemathesis run of their own, after a check that the token still works.
SELF_ENDING = "/sessions/revoke$"


def schemathesis_command(
    document: Path,
    api_url: str,
    token: str | None,
    *,
    max_examples: int,
    seed: int,
    report_dir: Path,
    part: str = "main",
) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        str(document),
        "--url",
        api_url,
        "--phases",
        PHASES,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report_dir / f"junit-{part}.xml"),
        "--exclude-path-regex" if part == "main" else "--include-path-regex",
        SELF_ENDING,
    ]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    return command


def run_caller(
    name: str, who: str | None, *, max_examples: int, seed: int, report_root: Path, document: Path
) -> int:
    report_dir = report_root / name
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"conformance-{name}-") as tmp:
        workdir = Path(tmp)
        with local_stack(workdir) as stack:
            token = stack.machine_login() if who == MACHINE else stack.login(PEOPLE[who]) if who else None
            print(f"==== {name}: schemathesis against {stack.api_url}", flush=True)
            code = 0
            for part in ("main", "last"):
                command = schemathesis_command(
                    document,
                    stack.api_url,
                    token,
                    max_examples=max_examples,
                    seed=seed,
                    report_dir=report_dir,
                    part=part,
                )
                code = code or _schemathesis(command, report_dir / f"schemathesis-{part}.txt")
                if part == "main" and who not in (None, MACHINE) and not _token_works(stack.api_url, token):
                    print(f"==== {name}: the caller's token stopped working during the run", flush=True)
                    code = code or 1
        shutil.copy(workdir / "stack.log", report_dir / "stack.log")
    print(f"==== {name}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
    return code


def _schemathesis(command: list[str], output: Path) -> int:
    """Run it, its output both shown and kept in ``output``; its exit status."""
    with output.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in process.stdout or ():
            sink.write(line)
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        return process.wait()


def _token_works(api_url: str, token: str | None) -> bool:
    """``GET /me`` answers 200: the run tested a signed-in person, not 401s."""
    request = urllib.request.Request(f"{api_url}/me", headers={"authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback only
            return bool(answer.status == 200)
    except urllib.error.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.conformance", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--callers", default=",".join(CALLERS), help=f"comma-separated, of: {', '.join(CALLERS)}"
    )
    parser.add_argument(
        "--max-examples", type=int, default=int(os.environ.get("CONFORMANCE_MAX_EXAMPLES", "30"))
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CONFORMANCE_SEED", "20261202")))
    parser.add_argument("--report-dir", type=Path, default=ROOT / ".conformance")
    args = parser.parse_args(argv)
    callers = [c.strip() for c in args.callers.split(",") if c.strip()]
    unknown = [c for c in callers if c not in CALLERS]
    if unknown:
        parser.error(f"unknown callers: {', '.join(unknown)}")
    args.report_dir.mkdir(parents=True, exist_ok=True)
    document = args.report_dir / "openapi.seeded.json"
    document_with_seeded_ids(DOCUMENT, document)
    started = time.monotonic()
    results = {
        name: run_caller(
            name,
            CALLERS[name],
            max_examples=args.max_examples,
            seed=args.seed,
            report_root=args.report_dir,
            document=document,
        )
        for name in callers
    }
    print(
        f"\n==== conformance ({time.monotonic() - started:.0f}s, seed {args.seed}, max {args.max_examples})"
    )
    for name, code in results.items():
        print(f"  {name:<16} {'passed' if code == 0 else f'FAILED (exit {code})'}")
    print(f"  reports: {args.report_dir}")
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
