"""The committed targets table is what `rkdsc eval targets` reads off the committed results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rkdsc_core.cli import app

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "docs" / "results"


@pytest.mark.parametrize("sweep", ["sweep", "sweep-full"])
def test_targets_md_matches_the_committed_results(sweep: str) -> None:
    # The KDL-DARTS rows pool the current lambda table with its other search seeds.
    tables = [RESULTS / "nas", *sorted(RESULTS.glob("nas-search-seed*"))]
    args = ["eval", "targets", "--sweep", str(RESULTS / sweep)]
    args += ["--teacher", str(ROOT / "rkdsc_core" / "weights" / "teacher" / "teacher")]
    args += ["--link", str(ROOT / "rkdsc_core" / "weights" / "default")]
    for table in tables:
        args += ["--nas", str(table)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    committed = (RESULTS / sweep / "targets.md").read_text()
    assert result.output == committed
    # The README shows the 1,000-image table whole, and the full test split's low-SNR rows.
    readme = (ROOT / "README.md").read_text()
    shown = committed.splitlines() if sweep == "sweep" else _low_snr_rows(committed)
    assert shown and all(line in readme for line in shown)


def _low_snr_rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| beats ")]


@pytest.mark.parametrize(
    "sweep", ["sweep-full", "stage2-12ep", "stage2-probe/rkd", "stage2-probe/mse10"]
)
def test_the_full_test_split_margins_match_the_committed_sweep(sweep: str) -> None:
    # `make sweep-full-docs` writes sweep-full/margins.md, and the README shows its table;
    # stage2-12ep and stage2-probe (their READMEs say how) are the same sweep with other
    # stage-2 links swapped in.
    args = ["eval", "margins", "--sweep", str(RESULTS / sweep), "--against", "stage1-only"]
    args += ["--against", "ce-only", "--knowledge", "pilot", "--max-snr-db", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    committed = (RESULTS / sweep / "margins.md").read_text()
    assert result.stdout == committed
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in committed.splitlines() if line.startswith("|")]
    if sweep == "sweep-full":
        assert all(row in readme for row in rows)
    else:  # the README quotes the mean margin over stage-1-only, all 16 points
        cells = next(r.split("|") for r in rows if r.startswith("| stage1-only | all |"))
        mean = cells[6].strip()
        quote = {
            "stage2-12ep": "RKD minus stage-1-only is {} points on average",
            "stage2-probe/rkd": "RKD minus stage-1-only is {} points on average, and with",
            "stage2-probe/mse10": "`--w-mse 10` {} points",
        }[sweep]
        assert quote.format(mean) in readme.replace("\n", " ")


def test_compare_md_and_the_readme_tables_match_the_committed_sweep() -> None:
    # `make sweep-docs` writes compare.md: L = 8 then L = 64, six SNR columns.
    snrs = [f"--snr-db={s}" for s in (-10, -4, 0, 4, 10, 20)]
    tables = []
    for length in (8, 64):
        args = ["eval", "compare", "--sweep", str(RESULTS / "sweep"), "--length", str(length)]
        result = CliRunner().invoke(app, [*args, *snrs])
        assert result.exit_code == 0, result.output
        tables.append(result.output)
    assert "".join(tables) == (RESULTS / "sweep" / "compare.md").read_text()
    # The README shows the L = 64 tables.
    readme = (ROOT / "README.md").read_text()
    assert all(line in readme for line in tables[1].splitlines() if line.startswith("|"))


def test_the_stage2_probe_feature_gap_table_matches_its_json() -> None:
    # docs/results/stage2-probe/README.md tabulates `rkdsc eval feature-gap --json`'s rows.
    probe = RESULTS / "stage2-probe"
    doc = json.loads((probe / "feature-gap.json").read_text())
    text = (probe / "README.md").read_text()
    links = list(dict.fromkeys(r["link"] for r in doc["rows"]))
    assert len(links) == 3 and doc["images"] == 2000
    for link in links:
        gaps = [f"{r['gap']:.3f}" for r in doc["rows"] if r["link"] == link]
        assert f"| {link} | " + " | ".join(gaps) + " |" in text, link
