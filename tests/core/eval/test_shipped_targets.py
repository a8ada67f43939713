"""The committed targets table is what `rkdsc eval targets` reads off the committed results."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rkdsc_core.cli import app

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "docs" / "results"


def test_targets_md_matches_the_committed_results() -> None:
    # The KDL-DARTS rows pool the current lambda table with its other search seeds.
    tables = [RESULTS / "nas", *sorted(RESULTS.glob("nas-search-seed*"))]
    args = ["eval", "targets", "--sweep", str(RESULTS / "sweep")]
    args += ["--teacher", str(ROOT / "rkdsc_core" / "weights" / "teacher" / "teacher")]
    args += ["--link", str(ROOT / "rkdsc_core" / "weights" / "default")]
    for table in tables:
        args += ["--nas", str(table)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    committed = (RESULTS / "sweep" / "targets.md").read_text()
    assert result.output == committed
    # The README shows the same table.
    readme = (ROOT / "README.md").read_text()
    assert all(line in readme for line in committed.splitlines())
