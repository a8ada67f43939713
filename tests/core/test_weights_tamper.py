"""Truncated or tampered weights: one clear CheckpointError naming the file; no pickle anywhere."""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import rkdsc_core.checkpoint
import rkdsc_core.link.bundle
from rkdsc_core.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint
from rkdsc_core.data.specs import CIFAR10_CLASSES
from rkdsc_core.link import SemanticPipeline, default_weights_dir, load_link, save_link
from rkdsc_core.models import create_model


@pytest.fixture(scope="module")
def saved_link(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init link written once (read-only: tests tamper with copies)."""
    torch.manual_seed(0)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    pipeline = SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]
    folder = tmp_path_factory.mktemp("link")
    save_link(folder, pipeline, student_name="darts-student", classes=CIFAR10_CLASSES)
    return folder


@pytest.fixture
def link(saved_link: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny link to tamper with."""
    return Path(shutil.copytree(saved_link, tmp_path / "link"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in (len(data) // 3, len(data) // 2, len(data) - 5):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path, **changes: Any) -> None:
    manifest = checkpoint_paths(path)[1]
    doc = json.loads(manifest.read_text())
    doc.update(changes)
    manifest.write_text(json.dumps(doc))


def _rehash(path: Path) -> None:
    """Make the manifest agree with whatever the weights file now holds."""
    weights = checkpoint_paths(path)[0]
    _edit_manifest(path, weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest())


def _load_error(folder: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_link(folder)
    return str(info.value)


Tamper = Callable[[Path], None]


class TestTamperedWeights:
    @pytest.mark.parametrize("part", ["student", "codec"])
    @pytest.mark.parametrize(
        "tamper",
        [
            lambda name: _truncate(checkpoint_paths(name)[0]),
            lambda name: _flip(checkpoint_paths(name)[0]),
            lambda name: checkpoint_paths(name)[0].write_bytes(b""),
            lambda name: _edit_manifest(name, weights_sha256="0" * 64),
        ],
        ids=["truncated", "bytes-flipped", "emptied", "manifest-checksum-changed"],
    )
    def test_checksum_mismatch_names_the_file(self, link: Path, part: str, tamper: Tamper) -> None:
        tamper(link / part)
        message = _load_error(link)
        assert str(checkpoint_paths(link / part)[0]) in message
        assert "sha256" in message

    def test_truncated_file_with_a_matching_checksum_names_the_file(self, link: Path) -> None:
        # Checksum and file agree (e.g. a manifest rewritten after a bad copy): the
        # safetensors reader's own error still comes out as a CheckpointError.
        _truncate(checkpoint_paths(link / "codec")[0])
        _rehash(link / "codec")
        message = _load_error(link)
        assert str(checkpoint_paths(link / "codec")[0]) in message
        assert "safetensors" in message

    def test_garbage_with_a_matching_checksum_names_the_file(self, link: Path) -> None:
        weights = checkpoint_paths(link / "student")[0]
        weights.write_bytes(pickle.dumps({"not": "tensors"}))
        _rehash(link / "student")
        assert str(weights) in _load_error(link)

    def test_manifest_without_a_checksum_is_refused(self, link: Path) -> None:
        manifest = checkpoint_paths(link / "codec")[1]
        doc = json.loads(manifest.read_text())
        del doc["weights_sha256"]
        manifest.write_text(json.dumps(doc))
        message = _load_error(link)
        assert str(manifest) in message and "weights_sha256" in message

    @pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
    def test_unreadable_manifest_names_it(self, link: Path, content: str) -> None:
        manifest = checkpoint_paths(link / "student")[1]
        manifest.write_text(content)
        assert str(manifest) in _load_error(link)

    @pytest.mark.parametrize("content", ["{not json", "[]", '{"classes": ["a"]}'])
    def test_unreadable_link_json_names_it(self, link: Path, content: str) -> None:
        (link / "link.json").write_text(content)
        assert str(link / "link.json") in _load_error(link)

    def test_unreadable_eval_table_names_it(self, link: Path) -> None:
        (link / "eval_table.json").write_text('{"snr_db": [1, 0]}')
        assert str(link / "eval_table.json") in _load_error(link)

    def test_untouched_copy_still_loads(self, link: Path) -> None:
        assert load_link(link).classes == CIFAR10_CLASSES

    @pytest.mark.parametrize("name", ["student", "codec"])
    def test_shipped_manifests_match_their_files(self, name: str) -> None:
        weights, manifest = checkpoint_paths(default_weights_dir() / name)
        expected = json.loads(manifest.read_text())["weights_sha256"]
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == expected
        load_checkpoint(default_weights_dir() / name)


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("weights must never be unpickled")


class TestNoPickle:
    def test_loading_a_link_never_unpickles(
        self, link: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(torch, "load", _refuse)
        monkeypatch.setattr(pickle, "load", _refuse)
        monkeypatch.setattr(pickle, "loads", _refuse)
        monkeypatch.setattr(pickle, "Unpickler", _refuse)
        assert load_link(link).classes == CIFAR10_CLASSES

    @pytest.mark.parametrize("module", [rkdsc_core.checkpoint, rkdsc_core.link.bundle])
    def test_weight_loading_code_has_no_unpickling_call(self, module: Any) -> None:
        tree = ast.parse(Path(module.__file__).read_text())
        calls = {
            ast.unparse(node.func)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not {"torch.load", "pickle.load", "pickle.loads"} & calls
        assert not {"pickle", "dill", "cloudpickle", "joblib"} & imported
