"""Check what `sam build` produced before it is deployed (`make check-build`).

For every artifact under .aws-sam/build (the layer and each function):

* every shared object (``*.so``, ``*.so.N``) is an ELF for aarch64 (e_machine 183): the functions run
  on Graviton, and a wheel for the build machine (x86_64) imports fine locally and fails in Lambda;
* every version-tagged extension (``*.cpython-3XY-<platform>.so``) is for cp313 on aarch64-linux-gnu;
* every ``.py`` has its ``__pycache__/<name>.cpython-313.pyc``, compiled by 3.13 in ``unchecked-hash``
  mode: Lambda's file system is read-only, so a module without bytecode is compiled again on every
  cold start, and a timestamp pyc is checked against zip mtimes;
* every function's handler module is there.

Exit status 1 with a list of problems, 0 with a short summary. Usage:
``python scripts/check_build.py [.aws-sam/build]``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EM_AARCH64 = 183
PY_TAG = "313"
EXT_PLATFORM = "aarch64-linux-gnu"
# importlib.util.MAGIC_NUMBER of CPython 3.13 (magic 3571); fixed here so the check does not depend on
# the interpreter running it.
PYC_MAGIC_313 = (3571).to_bytes(2, "little") + b"\r\n"
PYC_FLAG_HASH_BASED = 0b01
PYC_FLAG_CHECK_SOURCE = 0b10

SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
TAGGED_EXTENSION = re.compile(r"\.cpython-(?P<ver>\d+)[a-z]*-(?P<platform>[^.]+)\.so$")
MAX_LISTED = 20


@dataclass
class Artifact:
    name: str
    root: Path
    modules: int = 0
    compiled: int = 0
    shared_objects: int = 0
    size: int = 0
    problems: list[str] = field(default_factory=list)


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file, or None when the file is not ELF."""
    with path.open("rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def pyc_problem(py: Path) -> str | None:
    pyc = py.parent / "__pycache__" / f"{py.stem}.cpython-{PY_TAG}.pyc"
    if not pyc.is_file():
        return "no cpython-313 .pyc"
    header = pyc.read_bytes()[:16]
    if header[:4] != PYC_MAGIC_313:
        return f"{pyc.name} was not compiled by CPython 3.13"
    flags = int.from_bytes(header[4:8], "little")
    if not flags & PYC_FLAG_HASH_BASED or flags & PYC_FLAG_CHECK_SOURCE:
        return f"{pyc.name} is not an unchecked-hash pyc (flags={flags})"
    return None


def walk_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def check_artifact(artifact: Artifact) -> None:
    for path in walk_files(artifact.root):
        rel = path.relative_to(artifact.root)
        artifact.size += path.stat().st_size
        if path.suffix == ".py":
            artifact.modules += 1
            problem = pyc_problem(path)
            if problem:
                artifact.problems.append(f"{rel}: {problem}")
            else:
                artifact.compiled += 1
        elif SHARED_OBJECT.search(path.name):
            artifact.shared_objects += 1
            machine = elf_machine(path)
            if machine != EM_AARCH64:
                what = "not an ELF file" if machine is None else f"ELF e_machine {machine}, not aarch64"
                artifact.problems.append(f"{rel}: {what}")
            tagged = TAGGED_EXTENSION.search(path.name)
            if tagged and (tagged["ver"] != PY_TAG or tagged["platform"] != EXT_PLATFORM):
                artifact.problems.append(f"{rel}: extension built for cp{tagged['ver']}-{tagged['platform']}")


class _AnyTagLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML; intrinsic functions (!Ref, !Sub, ...) are not needed here."""


def _ignore_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    return None


_AnyTagLoader.add_multi_constructor("!", _ignore_tag)


def handler_modules(build_dir: Path) -> dict[str, tuple[str, str]]:
    """Function directory -> (logical id, handler module) from the built template."""
    template_path = build_dir / "template.yaml"
    if not template_path.is_file():
        return {}
    template: Any = yaml.load(template_path.read_text(), Loader=_AnyTagLoader)  # noqa: S506 (SafeLoader subclass)
    result: dict[str, tuple[str, str]] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        handler, code_uri = props.get("Handler"), props.get("CodeUri")
        if isinstance(handler, str) and isinstance(code_uri, str) and "." in handler:
            result[code_uri.rstrip("/")] = (logical_id, handler.rsplit(".", 1)[0].replace(".", "/"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("build_dir", nargs="?", default=".aws-sam/build", type=Path)
    args = parser.parse_args(argv)
    build_dir: Path = args.build_dir

    if not build_dir.is_dir():
        print(f"check-build: {build_dir} does not exist; run `make build` first", file=sys.stderr)
        return 1
    artifacts = [Artifact(p.name, p) for p in sorted(build_dir.iterdir()) if p.is_dir()]
    if not artifacts:
        print(f"check-build: no artifacts in {build_dir}", file=sys.stderr)
        return 1

    by_name = {a.name: a for a in artifacts}
    for code_uri, (logical_id, module) in handler_modules(build_dir).items():
        artifact = by_name.get(Path(code_uri).name)
        if artifact is None:
            print(f"check-build: {logical_id}: no artifact directory {code_uri}", file=sys.stderr)
            return 1
        if not (artifact.root / f"{module}.py").is_file():
            artifact.problems.append(f"handler module {module}.py of {logical_id} is missing")

    for artifact in artifacts:
        check_artifact(artifact)

    failed = False
    width = max(len(a.name) for a in artifacts)
    for a in artifacts:
        status = "FAIL" if a.problems else "ok"
        print(
            f"{a.name:<{width}}  {a.modules:5d} .py  {a.compiled:5d} .pyc (cp313, unchecked-hash)  "
            f"{a.shared_objects:3d} .so (aarch64)  {a.size / 1e6:6.1f} MB  {status}"
        )
        for problem in a.problems[:MAX_LISTED]:
            print(f"  - {problem}")
        if len(a.problems) > MAX_LISTED:
            print(f"  ... and {len(a.problems) - MAX_LISTED} more")
        failed = failed or bool(a.problems)
    if failed:
        print("check-build: FAILED", file=sys.stderr)
        return 1
    print(f"check-build: {len(artifacts)} artifacts ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
