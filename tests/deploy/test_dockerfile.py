"""The Dockerfile and .dockerignore: one install script, non-root, sources after the deps."""

from __future__ import annotations

import fnmatch
import re

import pytest

from ._support import DOCKERFILE, DOCKERIGNORE

Instruction = tuple[str, str]


def _instructions() -> list[Instruction]:
    """``(KEYWORD, arguments)`` per instruction, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def _index(pred: str, keyword: str) -> int:
    for i, (kw, args) in enumerate(_instructions()):
        if kw == keyword and re.search(pred, args):
            return i
    raise AssertionError(f"no {keyword} matching {pred!r} in the Dockerfile")


class TestDockerfile:
    def test_base_is_python_311_slim(self) -> None:
        assert _instructions()[0] == ("FROM", "python:3.11-slim")

    def test_installs_with_setup_sh(self) -> None:
        _index(r"scripts/setup\.sh\s+\S+\s+/opt/venv", "RUN")

    def test_dependencies_before_sources(self) -> None:
        install = _index(r"scripts/setup\.sh", "RUN")
        assert _index(r"^pyproject\.toml\b", "COPY") < install
        assert _index(r"^scripts/setup\.sh\b", "COPY") < install
        assert _index(r"^rkdsc_core\s", "COPY") > install
        assert _index(r"^services\s", "COPY") > install

    def test_runs_as_a_non_root_user(self) -> None:
        users = [args for kw, args in _instructions() if kw == "USER"]
        assert users and users[-1] not in {"root", "0", "0:0"}
        assert _index(r".", "USER") > _index(r"scripts/setup\.sh", "RUN")

    def test_has_no_healthcheck(self) -> None:
        assert all(kw != "HEALTHCHECK" for kw, _ in _instructions())

    def test_default_command_runs_a_service(self) -> None:
        commands = [args for kw, args in _instructions() if kw in {"CMD", "ENTRYPOINT"}]
        assert commands
        assert re.search(r'"services\.\w+"|"rkdsc"', commands[-1])

    def test_ships_the_package_weights_not_data(self) -> None:
        copies = [args.split()[0] for kw, args in _instructions() if kw == "COPY"]
        assert "rkdsc_core" in copies  # with rkdsc_core/weights/default
        assert not any("data" in src or "runs" in src for src in copies)


def _ignored(path: str) -> bool:
    """Whether .dockerignore excludes ``path`` (last matching pattern wins)."""
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        bare = pattern.removeprefix("**/")  # "**/x" also matches a top-level "x"
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # a folder excludes
        hit = any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, bare) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


class TestDockerignore:
    @pytest.mark.parametrize(
        "path", [".venv/bin/python", "runs/x/log", ".cache/rkdsc/a.npy", "data/cifar10.tar.gz"]
    )
    def test_excludes(self, path: str) -> None:
        assert _ignored(path)

    @pytest.mark.parametrize(
        "path",
        [
            "pyproject.toml",
            "scripts/setup.sh",
            "rkdsc_core/__init__.py",
            "rkdsc_core/data/load.py",
            "rkdsc_core/weights/default/model.safetensors",
            "services/transmitter/server.py",
            "proto/rkdsc/v1/services.proto",
        ],
    )
    def test_keeps(self, path: str) -> None:
        assert not _ignored(path)
