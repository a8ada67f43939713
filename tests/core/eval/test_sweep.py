"""`measure_sweep` and `rkdsc eval sweep` on a tiny link and synthetic images."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import rkdsc_core.eval.sweep as sweep_module
from rkdsc_core.cli import app
from rkdsc_core.data import ImageDataset
from rkdsc_core.data.specs import CIFAR10_CLASSES
from rkdsc_core.eval import (
    SWEEP_COLUMNS,
    SweepRow,
    check_update,
    margins,
    measure_eval_table,
    measure_sweep,
    paired_test,
    read_sweep,
    replace_systems,
    write_sweep,
)
from rkdsc_core.link import SemanticPipeline, save_link
from rkdsc_core.models import create_model


def _pipeline(seed: int = 0) -> SemanticPipeline:
    torch.manual_seed(seed)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


class TestMeasureSweep:
    def test_shape_columns_and_files(self, tiny_dataset: ImageDataset, tmp_path: Path) -> None:
        p = _pipeline()
        rows = measure_sweep(
            {"rkd": p}, tiny_dataset, channels=("awgn",), snr_db=(0.0, 10.0), lengths=(8, 64),
            limit=12, digital_bits=2,
        )  # fmt: skip
        systems = {r.system for r in rows}
        assert systems == {"rkd", "digital-ideal-b2", "digital-qpsk-b2"}
        assert len(rows) == 3 * 2 * 2 * 2  # systems x knowledge x L x SNR
        assert all(r.images == 12 and r.seed == 0 and 0 <= r.accuracy <= 1 for r in rows)
        uses = {(r.system, r.L): r.channel_uses for r in rows}
        assert uses[("rkd", 8)] == 4 + 8 and uses[("digital-ideal-b2", 64)] == 64
        t = p.student.num_tokens * p.student.feature_dim
        assert uses[("digital-qpsk-b2", 8)] == 4 + t + 32
        write_sweep(rows, tmp_path / "out")
        with (tmp_path / "out" / "sweep.csv").open() as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames or ()) == SWEEP_COLUMNS
            assert len(list(reader)) == len(rows)
        assert len(json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]) == len(rows)
        read, _ = read_sweep(tmp_path / "out")
        assert read == rows  # the per-image records travel in the JSON
        for r in rows:  # a link's record agrees with its accuracy; digital rows have none
            mask = r.correct_mask()
            assert (mask is None) == r.system.startswith("digital")
            assert mask is None or (len(mask) == 12 and abs(mask.mean() - r.accuracy) < 1e-9)
        assert (tmp_path / "out" / "accuracy_vs_snr.png").stat().st_size > 0
        assert (tmp_path / "out" / "accuracy_vs_L.png").stat().st_size > 0
        # One L: no plot over L, and the one of an earlier sweep in the folder is gone.
        one_l = [r for r in rows if r.L == 8]
        written = write_sweep(one_l, tmp_path / "out")
        assert [p.name for p in written] == ["sweep.csv", "sweep.json", "accuracy_vs_snr.png"]
        assert not (tmp_path / "out" / "accuracy_vs_L.png").exists()

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"channels": ("awgn", "nakagami")}, "nakagami"),
            ({"knowledge": ("psychic",)}, "psychic"),
            ({"snr_db": (0.0, 99.0)}, "snr_db must lie"),
            ({"lengths": (8, 12)}, r"not \[12\]"),
            ({"limit": 0}, "limit"),
            ({"digital_bits": 17}, r"\[1, 16\]"),
            ({"channels": ()}, "must not be empty"),
            ({"channels": ("awgn", "rician")}, "not 'rician' \\(it takes no K factor\\)"),
        ],
    )
    def test_bad_input_is_refused_before_measuring(
        self,
        tiny_dataset: ImageDataset,
        monkeypatch: pytest.MonkeyPatch,
        kwargs: dict[str, Any],
        message: str,
    ) -> None:
        import rkdsc_core.eval.sweep as sweep_module

        def measured(*a: Any, **k: Any) -> None:
            raise AssertionError("measured before checking")

        monkeypatch.setattr(sweep_module, "student_tokens", measured)
        with pytest.raises(ValueError, match=message):
            measure_sweep({"rkd": _pipeline()}, tiny_dataset, **kwargs)

    def test_a_link_for_other_classes_or_no_pca_images_is_refused_before_measuring(
        self, tiny_dataset: ImageDataset, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import rkdsc_core.eval.sweep as sweep_module

        def measured(*a: Any, **k: Any) -> None:
            raise AssertionError("measured before checking")

        monkeypatch.setattr(sweep_module, "student_tokens", measured)
        torch.manual_seed(0)
        student = create_model("darts-student", C=4, layers=3, token_dim=16, num_classes=100)
        codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
        wide = SemanticPipeline(student, codec, num_pilots=4)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="classifies 100 classes"):
            measure_sweep({"rkd": _pipeline(), "c100": wide}, tiny_dataset)
        with pytest.raises(ValueError, match="pca_images"):
            measure_sweep({"rkd": _pipeline()}, tiny_dataset, pca_fit=tiny_dataset, pca_images=0)

    def test_identical_links_get_identical_rows(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        links = {"a": p, "b": copy.deepcopy(p)}
        rows = measure_sweep(
            links, tiny_dataset, channels=("rayleigh",), snr_db=(-4.0, 6.0), lengths=(16,),
            limit=20, digital=False,
        )  # fmt: skip
        a = [(r.channel, r.knowledge, r.L, r.snr_db, r.accuracy) for r in rows if r.system == "a"]
        b = [(r.channel, r.knowledge, r.L, r.snr_db, r.accuracy) for r in rows if r.system == "b"]
        assert a == b and len(a) == 4

    def test_shows_each_links_progress(
        self, tiny_dataset: ImageDataset, capsys: pytest.CaptureFixture[str]
    ) -> None:
        measure_sweep({"rkd": _pipeline()}, tiny_dataset, **_POINTS | {"digital": False})
        err = capsys.readouterr().err
        assert "sweep rkd" in err and "digital" not in err
        measure_sweep({"rkd": _pipeline()}, tiny_dataset, **_POINTS)
        assert "sweep digital baselines" in capsys.readouterr().err

    def test_warns_when_the_digital_reference_head_fails_on_clean_tokens(
        self,
        tiny_dataset: ImageDataset,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        import rkdsc_core.eval.sweep as sweep

        kw: dict[str, Any] = {"channels": ("awgn",), "snr_db": (10.0,), "lengths": (8,)}
        # A link far better through its codec than its head on clean tokens: a CE-only link.
        every_image_right = {("awgn", "pilot", 8): torch.ones(1, 20, dtype=torch.bool)}
        monkeypatch.setattr(sweep, "accuracy_grid", lambda *a, **k: every_image_right)
        with caplog.at_level("WARNING", logger="rkdsc_core.eval.sweep"):
            measure_sweep({"ce": _pipeline()}, tiny_dataset, knowledge=("pilot",), limit=20, **kw)
        assert "put a stage-1 student first" in caplog.text
        # Without digital baselines there is nothing to warn about.
        caplog.clear()
        with caplog.at_level("WARNING", logger="rkdsc_core.eval.sweep"):
            measure_sweep(
                {"ce": _pipeline()}, tiny_dataset, knowledge=("pilot",), limit=20, digital=False,
                **kw,
            )  # fmt: skip
        assert caplog.text == ""

    def test_agrees_with_the_eval_table(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        kw = {"snr_db": (0.0, 8.0), "lengths": (8, 32), "limit": 16}
        rows = measure_sweep({"x": p}, tiny_dataset, knowledge=("pilot",), digital=False, **kw)  # type: ignore[arg-type]
        table = measure_eval_table(p, tiny_dataset, knowledge="pilot", **kw)  # type: ignore[arg-type]
        for r in rows:
            assert table.accuracy[r.channel][r.L][table.snr_db.index(r.snr_db)] == r.accuracy

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_on_cuda_the_rows_of_the_cpu(self, tiny_dataset: ImageDataset) -> None:
        """The same noise and images on any device: the rows differ at most where float
        rounding flips a decision (here: by at most one image of 40 per point)."""
        kw: dict[str, Any] = {"channels": ("awgn", "rayleigh"), "snr_db": (-4.0, 20.0)}
        kw |= {"lengths": (8, 64), "limit": 40, "digital_bits": 2, "pca_fit": tiny_dataset}
        kw |= {"pca_images": 40}
        cpu = measure_sweep({"a": _pipeline(), "b": _pipeline(1)}, tiny_dataset, **kw)
        links = {"a": _pipeline().to("cuda"), "b": _pipeline(1).to("cuda")}
        gpu = measure_sweep(links, tiny_dataset, **kw)
        assert [r.point for r in gpu] == [r.point for r in cpu]
        for g, c in zip(gpu, cpu, strict=True):
            assert abs(g.accuracy - c.accuracy) <= 1 / 40 + 1e-9, (g, c)
            if c.correct:  # the links' rows: which images, not only how many
                flips = g.correct_mask() != c.correct_mask()
                assert int(flips.sum()) <= 1, (g.point, c.correct, g.correct)
        table = measure_eval_table(links["a"], tiny_dataset, snr_db=(0.0,), limit=40)
        assert table.images == 40


_POINTS: dict[str, Any] = {"channels": ("awgn",), "snr_db": (0.0, 12.0), "lengths": (8,),
                           "limit": 16, "digital_bits": 2}  # fmt: skip


class TestReplaceSystems:
    def test_rerunning_one_link_gives_the_rows_of_a_full_rerun(
        self, tiny_dataset: ImageDataset
    ) -> None:
        ref, a, b, b2 = (_pipeline(s) for s in range(4))
        old = measure_sweep({"ref": ref, "a": a, "b": b}, tiny_dataset, **_POINTS)
        new = measure_sweep({"b": b2}, tiny_dataset, **_POINTS | {"digital": False})
        full = measure_sweep({"ref": ref, "a": a, "b": b2}, tiny_dataset, **_POINTS)
        assert replace_systems(old, new) == full
        assert [r for r in old if r.system == "b"] != [r for r in full if r.system == "b"]

    def test_refuses_what_would_not_match(self, tiny_dataset: ImageDataset) -> None:
        old = measure_sweep({"ref": _pipeline(0), "a": _pipeline(1)}, tiny_dataset, **_POINTS)
        no_digital = _POINTS | {"digital": False}

        def new(name: str, **kw: Any) -> list[SweepRow]:
            return measure_sweep({name: _pipeline(2)}, tiny_dataset, **no_digital | kw)

        with pytest.raises(ValueError, match="digital baselines' reference"):
            replace_systems(old, new("ref"))
        with pytest.raises(ValueError, match="is a digital baseline"):
            replace_systems(
                old, [dataclasses.replace(r, system="digital-qpsk-b2") for r in new("a")]
            )
        with pytest.raises(ValueError, match="no system 'z'"):
            replace_systems(old, new("z"))
        with pytest.raises(ValueError, match="different samples"):
            replace_systems(old, new("a", seed=1))
        with pytest.raises(ValueError, match="different samples"):
            replace_systems(old, new("a", limit=15))
        with pytest.raises(ValueError, match="other points"):
            replace_systems(old, new("a", snr_db=(0.0,)))
        more_pilots = [dataclasses.replace(r, channel_uses=r.channel_uses + 4) for r in new("a")]
        with pytest.raises(ValueError, match="other channel uses"):
            replace_systems(old, more_pilots)
        # Without digital rows the first link may be replaced too.
        plain = [r for r in old if not r.system.startswith("digital-")]
        assert {r.system for r in replace_systems(plain, new("ref"))} == {"ref", "a"}

    @pytest.mark.parametrize(
        ("name", "change"),
        [
            ("a", {}),
            ("ref", {}),
            ("z", {}),
            ("a", {"seed": 1}),
            ("a", {"limit": 15}),
            ("a", {"snr_db": (0.0,)}),
            ("a", {"lengths": (8, 64)}),
            ("a", {"channels": ("rayleigh",)}),
        ],
    )
    def test_check_update_refuses_exactly_what_replace_systems_would(
        self, tiny_dataset: ImageDataset, name: str, change: dict[str, Any]
    ) -> None:
        old = measure_sweep({"ref": _pipeline(0), "a": _pipeline(1)}, tiny_dataset, **_POINTS)
        kw = _POINTS | {"digital": False} | change
        links = {name: _pipeline(2)}
        plan = {k: kw.get(k, d) for k, d in (("knowledge", ("perfect", "pilot")), ("seed", 0))}
        plan |= {k: kw[k] for k in ("channels", "snr_db", "lengths")}

        def outcome(f: Any) -> str:
            try:
                f()
            except ValueError as e:
                return str(e)
            return "ok"

        images = min(kw["limit"], len(tiny_dataset))
        planned = outcome(lambda: check_update(old, links, images=images, **plan))
        measured = outcome(lambda: replace_systems(old, measure_sweep(links, tiny_dataset, **kw)))
        assert planned == measured
        assert (planned == "ok") == (name == "a" and not change)

    def test_sweeps_refuse_repeated_points_and_reserved_names(
        self, tiny_dataset: ImageDataset
    ) -> None:
        with pytest.raises(ValueError, match="repeat a value"):
            measure_sweep({"a": _pipeline()}, tiny_dataset, **_POINTS | {"snr_db": (0.0, 0.0)})
        with pytest.raises(ValueError, match="'digital-' names"):
            measure_sweep({"digital-x": _pipeline()}, tiny_dataset, **_POINTS)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR", "RKDSC_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / "0.png")
    return root


class TestCli:
    def test_sweep_end_to_end(self, runner: CliRunner, tmp_path: Path) -> None:
        for name, seed in (("rkd", 0), ("ce", 1)):
            save_link(tmp_path / name, _pipeline(seed), student_name="darts-student",
                      classes=CIFAR10_CLASSES)  # fmt: skip
        args = ["eval", "sweep", "--weights", f"rkd={tmp_path / 'rkd'}"]
        args += ["--weights", f"ce={tmp_path / 'ce'}", "--channel", "awgn", "--channel", "rayleigh"]
        args += ["--knowledge", "pilot", "--snr-db", "0", "--snr-db", "20", "--length", "8"]
        args += ["--length", "64", "--limit", "10", "--digital-bits", "2", "--pca-images", "12"]
        args += ["--out", str(tmp_path / "sweep"), "--json"]
        data = ["--data", str(_tree(tmp_path / "tree")), "--cache-dir", str(tmp_path / "cache")]
        result = runner.invoke(app, [*args, *data])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        # Where and how long it ran, with the rest of the provenance.
        assert doc["meta"]["wall_seconds"] > 0 and doc["meta"]["machine"]["logical_cpus"] >= 1
        assert doc["meta"]["machine"]["cpu"] and doc["meta"]["git_commit"]
        assert doc["meta"]["device"] == "cpu"
        assert {r["system"] for r in doc["rows"]} == {
            "rkd", "ce", "digital-ideal-b2", "digital-qpsk-b2", "digital-pca-b4",
            "digital-pca-qpsk-b4",
        }  # fmt: skip
        assert len(doc["rows"]) == 6 * 2 * 2 * 2
        uses = {(r["system"], r["L"]): r["channel_uses"] for r in doc["rows"]}
        assert (uses["digital-pca-b4", 8], uses["digital-pca-b4", 64]) == (8, 64)
        # Sent uncoded in the link's own channel uses: pilots + L.
        assert uses["digital-pca-qpsk-b4", 8] == uses["rkd", 8] == 8 + 4
        assert uses["digital-pca-qpsk-b4", 64] == 64 + 4
        out = tmp_path / "sweep"
        for f in ("sweep.csv", "sweep.json", "accuracy_vs_snr.png", "accuracy_vs_L.png"):
            assert (out / f).stat().st_size > 0
        # The same rows side by side, per channel, straight from sweep.json.
        compare = ["eval", "compare", "--sweep", str(out), "--length", "8"]
        result = runner.invoke(app, [*compare, "--out", str(tmp_path / "t.md")])
        assert result.exit_code == 0, result.output
        assert result.output == (tmp_path / "t.md").read_text()
        awgn, rayleigh = result.output.split("**rayleigh**")
        ce = {r["snr_db"]: r for r in doc["rows"] if (r["system"], r["channel"], r["L"])
              == ("ce", "rayleigh", 8)}  # fmt: skip
        line = next(x for x in rayleigh.splitlines() if x.startswith("| ce |"))
        want = [
            ce[0.0]["channel_uses"],
            f"{ce[0.0]['accuracy']:.3f}",
            f"{ce[20.0]['accuracy']:.3f}",
        ]
        assert [c.strip() for c in line.split("|")[2:-1]] == [str(w) for w in want]
        assert "| 0 dB | 20 dB |" in awgn and "| digital-qpsk-b2 |" in awgn
        # The plots drawn again from sweep.json alone.
        for f in ("accuracy_vs_snr.png", "accuracy_vs_L.png"):
            (out / f).unlink()
        result = runner.invoke(app, ["eval", "plot", "--sweep", str(out)])
        assert result.exit_code == 0, result.output
        assert all(
            (out / f).stat().st_size > 0 for f in ("accuracy_vs_snr.png", "accuracy_vs_L.png")
        )
        result = runner.invoke(app, ["eval", "plot", "--sweep", str(tmp_path / "none")])
        assert result.exit_code == 2 and "sweep.json" in result.output
        result = runner.invoke(app, [*compare[:-1], "9"])
        assert result.exit_code != 0 and "no rows at L=9" in result.output
        result = runner.invoke(app, [*compare, "--snr-db", "7"])
        assert result.exit_code != 0 and "no rows at 7 dB; its SNRs: 0, 20" in result.output

    def test_update_swaps_one_links_rows(self, runner: CliRunner, tmp_path: Path) -> None:
        for name, seed in (("rkd", 0), ("ce", 1), ("ce2", 2)):
            save_link(tmp_path / name, _pipeline(seed), student_name="darts-student",
                      classes=CIFAR10_CLASSES)  # fmt: skip
        data = ["--data", str(_tree(tmp_path / "tree")), "--cache-dir", str(tmp_path / "cache")]
        points = ["--channel", "awgn", "--snr-db", "0", "--snr-db", "20", "--length", "8"]
        points += ["--limit", "10", "--digital-bits", "2", "--pca-images", "12", *data]

        def sweep(out: str, *links: str, extra: tuple[str, ...] = ()) -> Any:
            weights = []
            for x in links:  # NAME or NAME=FOLDER under tmp_path
                weights += ["--weights", f"{x.split('=')[0]}={tmp_path / x.split('=')[-1]}"]
            out_ = ["--out", str(tmp_path / out)]
            return runner.invoke(app, ["eval", "sweep", *weights, *points, *out_, *extra])

        assert sweep("old", "rkd", "ce").exit_code == 0
        assert sweep("full", "rkd", "ce=ce2").exit_code == 0
        result = sweep("old", "ce=ce2", extra=("--update",))
        assert result.exit_code == 0, result.output
        (rows, meta), (full, _) = read_sweep(tmp_path / "old"), read_sweep(tmp_path / "full")
        assert rows == full
        assert meta["links"] == {"rkd": str(tmp_path / "rkd"), "ce": str(tmp_path / "ce2")}
        update_keys = {"command", "git_commit", "links", "wall_seconds", "machine", "device"}
        assert [set(u) for u in meta["updates"]] == [update_keys]
        # Refused before measuring: another sample, the digital reference, no sweep there.
        for bad, message in (
            (sweep("old", "ce", extra=("--update", "--seed", "3")), "different samples"),
            (sweep("old", "rkd", extra=("--update",)), "reference link"),
            (sweep("none", "ce", extra=("--update",)), "sweep.json"),
            (sweep("old", "typo=ce", extra=("--update",)), "no system 'typo'"),
        ):
            assert bad.exit_code == 2 and message in bad.output, bad.output
        assert read_sweep(tmp_path / "old")[0] == full
        # Another copy of the data is refused; a sweep that does not record its data is
        # updated with a warning that it cannot be checked.
        doc = json.loads((tmp_path / "old" / "sweep.json").read_text())
        doc["meta"]["source_sha256"] = "f" * 64
        (tmp_path / "old" / "sweep.json").write_text(json.dumps(doc))
        bad = sweep("old", "ce=ce2", extra=("--update",))
        assert bad.exit_code == 2 and "measured on other data" in bad.output
        del doc["meta"]["source_sha256"]
        (tmp_path / "old" / "sweep.json").write_text(json.dumps(doc))
        result = sweep("old", "ce=ce2", extra=("--update",))
        assert result.exit_code == 0 and "does not record its data's sha256" in result.output

    def test_bad_options_are_a_clean_error(self, runner: CliRunner, tmp_path: Path) -> None:
        save_link(tmp_path / "rkd", _pipeline(), student_name="darts-student",
                  classes=CIFAR10_CLASSES)  # fmt: skip
        args = ["eval", "sweep", "--weights", f"rkd={tmp_path / 'rkd'}", "--length", "12"]
        data = ["--data", str(_tree(tmp_path / "tree")), "--cache-dir", str(tmp_path / "cache")]
        result = runner.invoke(app, [*args, "--pca-images", "0", *data])
        assert result.exit_code == 2 and "error:" in result.output and "[12]" in result.output

    def test_a_link_for_other_classes_is_refused(self, runner: CliRunner, tmp_path: Path) -> None:
        # Same count, other names (or order): the labels would not mean the link's classes.
        swapped = (CIFAR10_CLASSES[1], CIFAR10_CLASSES[0], *CIFAR10_CLASSES[2:])
        save_link(tmp_path / "rkd", _pipeline(), student_name="darts-student", classes=swapped)
        data = ["--data", str(_tree(tmp_path / "tree")), "--cache-dir", str(tmp_path / "cache")]
        weights = ["--weights", f"rkd={tmp_path / 'rkd'}"]
        result = runner.invoke(app, ["eval", "sweep", *weights, *data])
        assert result.exit_code == 2 and "classifies ['automobile', 'airplane'" in result.output
        result = runner.invoke(app, ["eval", "table", "--weights", str(tmp_path / "rkd"), *data])
        assert result.exit_code == 2 and "classifies ['automobile'" in result.output
        result = runner.invoke(app, ["eval", "sweep", "--pca-images", "-5", *data])
        assert result.exit_code == 2 and "--pca-images must be >= 0" in result.output

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
    @pytest.mark.parametrize("command", ["sweep", "table", "clean"])
    def test_measures_on_the_device_asked_for(
        self, runner: CliRunner, tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--device (or RKDSC_DEVICE) reaches the measuring: here refused clearly, as no GPU
        is present, before any data is read."""
        save_link(tmp_path / "rkd", _pipeline(), student_name="darts-student",
                  classes=CIFAR10_CLASSES)  # fmt: skip
        folder = str(tmp_path / "rkd")
        link = {"sweep": ["--weights", f"rkd={folder}"], "table": ["--weights", folder]}
        link["clean"] = [folder]
        data = ["--data", str(tmp_path / "absent"), "--cache-dir", str(tmp_path / "cache")]
        result = runner.invoke(app, ["eval", command, *link[command], *data, "--device", "cuda"])
        assert result.exit_code == 2 and "sees no CUDA GPU" in result.output, result.output
        monkeypatch.setenv("RKDSC_DEVICE", "cuda:0")
        result = runner.invoke(app, ["eval", command, *link[command], *data])
        assert result.exit_code == 2 and "'cuda:0'" in result.output, result.output

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_a_table_on_cuda_is_the_cpus(self, runner: CliRunner, tmp_path: Path) -> None:
        save_link(tmp_path / "rkd", _pipeline(), student_name="darts-student",
                  classes=CIFAR10_CLASSES)  # fmt: skip
        data = ["--data", str(_tree(tmp_path / "tree")), "--cache-dir", str(tmp_path / "cache")]
        tables = {}
        for device in ("cpu", "cuda"):
            cli = ["eval", "table", "--weights", str(tmp_path / "rkd"), "--json", "--device"]
            result = runner.invoke(app, [*cli, device, *data])
            assert result.exit_code == 0, result.output
            tables[device] = json.loads(result.stdout)["accuracy"]
        for model, by_len in tables["cpu"].items():
            for n, row in by_len.items():
                got = tables["cuda"][model][n]
                assert all(abs(a - b) <= 0.1 + 1e-9 for a, b in zip(got, row, strict=True))

    def test_bad_weights_spec(self, runner: CliRunner, tmp_path: Path) -> None:
        result = runner.invoke(app, ["eval", "sweep", "--weights", str(tmp_path)])
        assert result.exit_code == 2 and "NAME=DIR" in result.output


def _record(system: str, hits: list[int], **point: object) -> SweepRow:
    mask = torch.tensor(hits, dtype=torch.bool)
    acc = float(mask.double().mean())
    fields = {"channel": "awgn", "knowledge": "pilot", "L": 8, "snr_db": 0.0} | point
    return SweepRow(system, **fields, accuracy=acc, channel_uses=12, images=len(hits), seed=0,  # type: ignore[arg-type]
                    correct=sweep_module._pack(mask))  # fmt: skip


class TestPairedTest:
    def test_counts_discordant_images_and_an_exact_two_sided_p(self) -> None:
        a = _record("a", [1, 1, 0, 0, 1])
        b = _record("b", [1, 0, 0, 1, 0])
        assert paired_test(a, b) == (2, 1, 1.0)  # 3 discordant, 1 vs 2: P(X <= 1) = 4/8, x2
        ten = _record("a", [1] * 10 + [0] * 3)
        none = _record("b", [0] * 13)
        result = paired_test(ten, none)
        assert result is not None and (result.only_a, result.only_b) == (10, 0)
        assert result.p_value == pytest.approx(2 / 2**10)
        assert paired_test(a, a) == (0, 0, 1.0)

    @pytest.mark.parametrize(("n", "k"), [(1, 0), (7, 3), (50, 20), (200, 90), (301, 0)])
    def test_p_value_is_the_exact_binomial_tail(self, n: int, k: int) -> None:
        exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        a = _record("a", [1] * k + [0] * (n - k))
        b = _record("b", [0] * k + [1] * (n - k))
        result = paired_test(a, b)
        assert result is not None and result.p_value == pytest.approx(exact, rel=1e-9)

    def test_needs_the_same_point_and_a_record(self) -> None:
        a = _record("a", [1, 0, 1])
        with pytest.raises(ValueError, match="same point"):
            paired_test(a, _record("b", [1, 0, 1], snr_db=2.0))
        assert paired_test(a, dataclasses.replace(a, correct="")) is None

    def test_a_record_that_disagrees_with_its_row_is_refused(self) -> None:
        a = _record("a", [1, 0, 1])
        with pytest.raises(ValueError, match="disagrees"):
            dataclasses.replace(a, accuracy=0.5).correct_mask()
        with pytest.raises(ValueError, match="does not hold"):
            dataclasses.replace(a, images=9).correct_mask()


class TestMargins:
    # a against b at four points: 12 images right of 12 vs 0 of 12 (significant even after
    # Bonferroni over 4), equal, and one point where b leads by 1 image of 12.
    ROWS = (
        _record("a", [1] * 12, snr_db=0.0),
        _record("b", [0] * 12, snr_db=0.0),
        _record("a", [1] * 6 + [0] * 6, snr_db=10.0),
        _record("b", [0] * 6 + [1] * 6, snr_db=10.0),
        _record("a", [1] * 5 + [0] * 7, snr_db=20.0),
        _record("b", [1] * 6 + [0] * 6, snr_db=20.0),
        _record("a", [1] * 3 + [0] * 9, snr_db=0.0, channel="rayleigh"),
        _record("b", [1] * 3 + [0] * 9, snr_db=0.0, channel="rayleigh"),
    )

    def test_counts_and_differences(self) -> None:
        m = margins(self.ROWS, "a", "b")
        assert (m.points, m.ahead, m.level, m.behind) == (4, 1, 2, 1)
        assert m.low == pytest.approx(-100 / 12) and m.high == pytest.approx(100.0)
        assert m.mean == pytest.approx((100.0 - 100 / 12) / 4)
        assert (m.better, m.worse, m.better_corrected, m.worse_corrected) == (1, 0, 1, 0)
        # 12 discordant images at 10 dB, 6 each way: not significant either way.
        assert paired_test(self.ROWS[2], self.ROWS[3]) == (6, 6, 1.0)

    def test_filters_and_refusals(self) -> None:
        m = margins(self.ROWS, "a", "b", channels=["awgn"], max_snr_db=10.0)
        assert (m.points, m.ahead, m.level) == (2, 1, 1)
        assert margins(self.ROWS, "a", "b", channels=["rayleigh"]).level == 1
        unrecorded = [dataclasses.replace(r, correct="") for r in self.ROWS]
        m = margins(unrecorded, "a", "b")
        assert (m.recorded, m.better, m.worse_corrected) == (0, None, None)
        # Tested where recorded: the 0 dB AWGN lead stays significant among 3 points.
        m = margins([*unrecorded[2:4], *self.ROWS[:2], *self.ROWS[4:]], "a", "b")
        assert (m.points, m.recorded, m.better, m.better_corrected) == (4, 3, 1, 1)
        with pytest.raises(ValueError, match="share no point"):
            margins(self.ROWS, "a", "b", lengths=[64])
        with pytest.raises(ValueError, match="share no point"):
            margins(self.ROWS, "a", "c")
        with pytest.raises(ValueError, match="alpha"):
            margins(self.ROWS, "a", "b", alpha=1.0)

    def test_cli(self, runner: CliRunner, tmp_path: Path) -> None:
        write_sweep(self.ROWS, tmp_path)
        args = ["eval", "margins", "--sweep", str(tmp_path), "--against", "b", "--system", "a"]
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        table = json.loads(result.stdout)
        assert [(t["channel"], t["points"], t["ahead"]) for t in table] == [
            ("awgn", 3, 1), ("rayleigh", 1, 0), ("all", 4, 1),
        ]  # fmt: skip
        result = runner.invoke(app, args)
        line = "| b | all | 4 | -8.3 | +100.0 | +22.92 | 1 / 2 / 1 | 1 / 0 | 1 / 0 (p < 0.013) |"
        assert line in result.output
        result = runner.invoke(app, [*args[:-1], "nobody"])
        assert result.exit_code == 2 and "share no point" in result.output
