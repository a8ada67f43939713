"""A service started on truncated or tampered weights exits 2 naming the file; it never serves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rkdsc_core.checkpoint import checkpoint_paths

from .stack_support import run_service_module

_PREFIX = {"receiver": "RKDSC_RECEIVER_", "transmitter": "RKDSC_TRANSMITTER_"}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _start(service: str, weights: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    prefix = _PREFIX[service]
    env = {
        f"{prefix}HOST": "127.0.0.1",
        f"{prefix}PORT": "0",
        f"{prefix}METRICS_PORT": "0",
        f"{prefix}WEIGHTS_DIR": str(weights),
        "OMP_NUM_THREADS": "1",
    }
    return run_service_module(service, env | env_extra)


class TestTamperedWeightsAtStartup:
    @pytest.mark.parametrize(
        ("service", "part"), [("receiver", "codec"), ("transmitter", "student")]
    )
    def test_service_exits_naming_the_truncated_file(
        self, tiny_weights: Path, tmp_path: Path, service: str, part: str
    ) -> None:
        weights = Path(shutil.copytree(tiny_weights, tmp_path / "weights"))
        bad = checkpoint_paths(weights / part)[0]
        _truncate(bad)
        proc = _start(service, weights)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"error: {service} cannot start: {bad}" in proc.stderr, proc.stderr

    def test_manifest_checksum_mismatch_is_named(self, tiny_weights: Path, tmp_path: Path) -> None:
        weights = Path(shutil.copytree(tiny_weights, tmp_path / "weights"))
        manifest = checkpoint_paths(weights / "student")[1]
        manifest.write_text(
            manifest.read_text().replace('"weights_sha256": "', '"weights_sha256": "00', 1)
        )
        proc = _start("receiver", weights)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert str(checkpoint_paths(weights / "student")[0]) in proc.stderr


def test_a_policy_that_does_not_fit_the_link_exits_2_naming_the_setting(
    tiny_weights: Path,
) -> None:
    proc = _start("transmitter", tiny_weights, RKDSC_TRANSMITTER_POLICY__FIXED_LENGTH="7")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "RKDSC_TRANSMITTER_POLICY__FIXED_LENGTH" in proc.stderr, proc.stderr
