import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rkdsc_core.checkpoint import CheckpointError
from rkdsc_core.link import EvalTable, SemanticPipeline, load_link, save_link
from rkdsc_core.models import create_model
from tests.core.conftest import CLASSES


def _pipeline() -> SemanticPipeline:
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


def _table() -> EvalTable:
    return EvalTable((0.0, 10.0), {"awgn": {8: (0.2, 0.5), 64: (0.4, 0.9)}})


class TestLinkBundle:
    def test_round_trip_gives_the_same_link(self, tmp_path: Path) -> None:
        p = _pipeline()
        save_link(tmp_path, p, student_name="darts-student", classes=CLASSES, eval_table=_table())
        bundle = load_link(tmp_path)
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            a = p.transmit(x, 5.0, 16).frame
            b = bundle.pipeline.transmit(x, 5.0, 16).frame
        assert torch.equal(a, b)
        assert bundle.classes == CLASSES and bundle.pipeline.num_pilots == 4
        assert bundle.eval_table is not None and bundle.eval_table.lookup("awgn", 64, 10.0) == 0.9

    def test_missing_folder_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"link\.json"):
            load_link(tmp_path / "nope")

    def test_resaving_with_old_meta_keeps_the_new_classes_and_drops_the_old_table(
        self, tmp_path: Path
    ) -> None:
        save_link(
            tmp_path,
            _pipeline(),
            student_name="darts-student",
            classes=CLASSES,
            eval_table=_table(),
        )
        old = load_link(tmp_path)
        renamed = tuple(f"c{i}" for i in range(len(CLASSES)))
        save_link(
            tmp_path, _pipeline(), student_name="darts-student", classes=renamed, meta=old.meta
        )  # new weights, nothing measured yet
        again = load_link(tmp_path)
        assert again.classes == renamed
        assert again.eval_table is None  # the old table measured other weights

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"classes": ["a", "b", "c"]}, "3 class names for a student with"),
            ({"num_pilots": 4.9}, "num_pilots"),
            ({"num_pilots": "8"}, "num_pilots"),
            ({"num_pilots": True}, "num_pilots"),
            ({"num_pilots": 1}, "num_pilots"),
        ],
    )
    def test_a_link_json_that_does_not_fit_the_models_is_refused(
        self, tmp_path: Path, change: dict[str, object], message: str
    ) -> None:
        save_link(tmp_path, _pipeline(), student_name="darts-student", classes=CLASSES)
        doc = json.loads((tmp_path / "link.json").read_text())
        (tmp_path / "link.json").write_text(json.dumps({**doc, **change}))
        with pytest.raises(CheckpointError, match=message):
            load_link(tmp_path)

    def test_a_codec_that_does_not_fit_the_student_is_a_checkpoint_error(
        self, tmp_path: Path
    ) -> None:
        save_link(tmp_path, _pipeline(), student_name="darts-student", classes=CLASSES)
        wider = create_model("cat-codec", token_dim=32, d_model=32, heads=2)
        other = tmp_path / "other"
        student = create_model("darts-student", C=4, layers=3, token_dim=32)
        save_link(other, SemanticPipeline(student, wider, num_pilots=4),  # type: ignore[arg-type]
                  student_name="darts-student", classes=CLASSES)  # fmt: skip
        for suffix in (".safetensors", ".json"):  # the 32-wide codec beside the 16-wide student
            (tmp_path / f"codec{suffix}").write_bytes((other / f"codec{suffix}").read_bytes())
        with pytest.raises(CheckpointError, match=f"{tmp_path}: its student and codec do not"):
            load_link(tmp_path)

    def test_an_eval_table_with_lengths_the_codec_cannot_send_is_refused(
        self, tmp_path: Path
    ) -> None:
        table = EvalTable((0.0, 10.0), {"awgn": {12: (0.2, 0.5)}})
        save_link(tmp_path, _pipeline(), student_name="darts-student", classes=CLASSES)
        table.save(tmp_path / "eval_table.json")  # written beside it by hand
        with pytest.raises(CheckpointError, match=r"awgn lengths \[12\] are not all"):
            load_link(tmp_path)

    def test_save_refuses_what_load_would_refuse_before_writing(self, tmp_path: Path) -> None:
        table = EvalTable((0.0, 10.0), {"awgn": {12: (0.2, 0.5)}})
        kw: dict[str, Any] = {"student_name": "darts-student"}
        with pytest.raises(ValueError, match=r"awgn lengths \[12\] are not all"):
            save_link(tmp_path / "a", _pipeline(), classes=CLASSES, eval_table=table, **kw)
        with pytest.raises(ValueError, match="3 class names for a student with 10"):
            save_link(tmp_path / "b", _pipeline(), classes=["x", "y", "z"], **kw)
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    @pytest.mark.parametrize("body", ['{"snr_db": [0], "accuracy": []}', '{"snr_db": [0]}'])
    def test_a_malformed_eval_table_is_a_checkpoint_error(self, tmp_path: Path, body: str) -> None:
        save_link(tmp_path, _pipeline(), student_name="darts-student", classes=CLASSES)
        (tmp_path / "eval_table.json").write_text(body)
        with pytest.raises(CheckpointError, match="not a valid eval table"):
            load_link(tmp_path)


class TestEvalTable:
    def test_interpolates_and_clamps(self) -> None:
        t = _table()
        assert t.lookup("awgn", 8, 5.0) == pytest.approx(0.35)
        assert t.lookup("awgn", 8, -20.0) == pytest.approx(0.2)

    def test_smallest_length_meeting_target(self) -> None:
        t = _table()
        assert t.smallest_length("awgn", 10.0, 0.5) == 8
        assert t.smallest_length("awgn", 10.0, 0.8) == 64
        assert t.smallest_length("awgn", 0.0, 0.99) == 64  # unreachable: best available

    def test_lower_bound_is_wilson(self) -> None:
        # 90 of 100 correct: the textbook 95% Wilson interval is [0.8256, 0.9448], so its lower
        # end is the one-sided bound at 97.5%.
        t = EvalTable((0.0,), {"awgn": {8: (0.9,)}}, meta={"images": 100})
        assert t.lower_bound("awgn", 8, 0.0, 0.975) == pytest.approx(0.8256, abs=1e-4)
        assert t.lower_bound("awgn", 8, 0.0, 0.5) == pytest.approx(0.9)
        assert t.images == 100

    def test_smallest_length_with_a_margin(self) -> None:
        # The demo's -4 dB case: L=32 measured 0.811 on 1,000 images, over a 0.8 target, but
        # its 95% lower bound is 0.790; L=64 (0.83) qualifies.
        t = EvalTable((0.0,), {"awgn": {32: (0.811,), 64: (0.83,)}}, meta={"images": 1000})
        assert t.smallest_length("awgn", 0.0, 0.8) == 32
        assert t.smallest_length("awgn", 0.0, 0.8, confidence=0.95) == 64
        assert t.smallest_length("awgn", 0.0, 0.9, confidence=0.95) == 64  # none: the best

    def test_below_the_lowest_snr_no_length_qualifies(self) -> None:
        # Nothing is measured under 0 dB: the best L there, not the short one that would
        # reach the target if the channel were as good as 0 dB.
        t = _table()
        assert t.smallest_length("awgn", 0.0, 0.2) == 8
        assert t.smallest_length("awgn", -30.0, 0.2) == 64

    @pytest.mark.parametrize("images", [0, -5, 2.5, "many", True])
    def test_the_image_count_is_a_positive_whole_number(self, images: object) -> None:
        with pytest.raises(ValueError, match=r"meta\.images"):
            EvalTable((0.0,), {"awgn": {8: (0.9,)}}, meta={"images": images})

    def test_margin_needs_the_image_count_and_a_valid_confidence(self) -> None:
        with pytest.raises(ValueError, match=r"meta\.images"):
            _table().lower_bound("awgn", 8, 0.0, 0.95)
        assert _table().lower_bound("awgn", 8, 0.0, 0.5) == pytest.approx(0.2)
        for bad in (0.4, 1.0):
            with pytest.raises(ValueError, match="confidence"):
                _table().lower_bound("awgn", 8, 0.0, bad)

    def test_json_round_trip(self, tmp_path: Path) -> None:
        _table().save(tmp_path / "t.json")
        assert EvalTable.load(tmp_path / "t.json") == _table()

    def test_unknown_model_and_length(self) -> None:
        with pytest.raises(ValueError, match="rician"):
            _table().lookup("rician", 8, 0.0)
        with pytest.raises(ValueError, match="L=16"):
            _table().lookup("awgn", 16, 0.0)

    def test_row_length_must_match_snrs(self) -> None:
        with pytest.raises(ValueError, match="values for"):
            EvalTable((0.0, 10.0), {"awgn": {8: (0.2,)}})

    @pytest.mark.parametrize(
        ("snr_db", "row", "message"),
        [
            ((0.0, 0.0), (0.2, 0.3), "strictly increasing"),
            ((0.0, 10.0), (0.2, float("nan")), r"in \[0, 1\]"),
            ((0.0, 10.0), (0.2, 1.5), r"in \[0, 1\]"),
            ((0.0, float("inf")), (0.2, 0.3), "finite"),
        ],
    )
    def test_snrs_and_accuracies_are_checked(
        self, snr_db: tuple[float, ...], row: tuple[float, ...], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            EvalTable(snr_db, {"awgn": {8: row}})
