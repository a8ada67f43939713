"""Checkpoints: weights in safetensors beside a JSON manifest. No pickle anywhere.

A checkpoint ``NAME`` is two files: ``NAME.safetensors`` (tensors only) and
``NAME.json``, the manifest: the registered model name and its config (so the model
can be rebuilt), the genotype where there is one, the dataset and its checksum,
metrics, the git commit and the command that made it, the machine it was made on
(:func:`machine_info`), and the sha256 of the weights file (checked on load). Both files
are written to temporaries and renamed into place, manifest last, so a half-written
checkpoint is never loaded.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from rkdsc_core.registry import create_model

__all__ = [
    "CheckpointError",
    "Resumed",
    "checkpoint_paths",
    "current_umask",
    "git_commit",
    "load_checkpoint",
    "load_model",
    "load_training_state",
    "machine_info",
    "resume_training",
    "save_checkpoint",
    "save_epoch",
    "save_training_state",
    "saved_progress",
    "write_synced",
    "write_tensors",
]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the model."""


def checkpoint_paths(path: Path | str) -> tuple[Path, Path]:
    """``(weights, manifest)`` paths for a checkpoint name (suffix optional)."""
    p = Path(path)
    if p.suffix in {".safetensors", ".json"}:
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


log = logging.getLogger(__name__)


def _previous(path: Path | str) -> Path:
    """The name :func:`save_training_state` keeps the previous state under while it saves."""
    weights = checkpoint_paths(path)[0]
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".prev")


def git_commit() -> str:
    """The repository's HEAD commit, or ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Where a result was measured: CPU model, logical CPUs, GPU, OS, software versions, load.

    Returns:
        ``{"cpu", "logical_cpus", "arch", "system", "python", "torch", "numpy", "cuda",
        "loadavg_1m"}``; ``cuda`` is the first GPU's name, or ``None`` without one;
        ``loadavg_1m`` (the 1-minute load average, ``None`` where the OS has none) tells
        whether other work shared the CPU.
    """
    import numpy as np

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:  # platform.processor() is empty on Linux
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "arch": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> str:
    """Write ``tensors`` to the safetensors file ``path`` via a temporary and a rename.

    The bytes depend only on the tensors and ``metadata`` (see :func:`_canonical`), so the
    sha256 the manifests record is the same each time the same weights are saved. The file
    gets the usual mode (0666 less the umask), not safetensors' owner-only 0600, so that
    weights written by one user, or one container, can be served by another. Returns the
    file's sha256.
    """
    tmp, digest = _stage_tensors(tensors, path, metadata)
    os.replace(tmp, path)
    return digest


def _stage_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> tuple[Path, str]:
    """Write what :func:`write_tensors` writes to a synced temporary beside ``path``;
    ``(temporary, sha256)``."""
    blob = _canonical(save(tensors, metadata=metadata))
    tmp = path.with_name(path.name + ".tmp")
    write_synced(tmp, blob)
    os.chmod(tmp, 0o666 & ~current_umask())
    return tmp, hashlib.sha256(blob).hexdigest()


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (before the rename that publishes it)."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _commit_pair(weights_tmp: Path, weights: Path, manifest: Path, doc: dict[str, Any]) -> None:
    """Put a staged weights file and its manifest in place, back to back.

    Everything slow (hashing, ``git``, the machine facts) is done before: a process killed
    while saving leaves the previous pair whole, or, in the instant between the two renames,
    new weights beside the old manifest, which :func:`load_checkpoint` names as such.
    """
    tmp_m = manifest.with_name(manifest.name + ".tmp")
    write_synced(tmp_m, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    os.replace(weights_tmp, weights)
    os.replace(tmp_m, manifest)


def _canonical(blob: bytes) -> bytes:
    """safetensors bytes with the metadata's keys in sorted order.

    safetensors writes the metadata in hash-map order, which changes from one call to the
    next: saving the same weights twice gave two sha256s, and a stage that had re-saved its
    finished output was refused by the next stage's resume check. The tensors' entries and
    data are left as they are; the header is re-padded with spaces to 8 bytes, as
    safetensors pads it.
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items()))} | header
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def save_checkpoint(
    path: Path | str,
    model: nn.Module,
    *,
    name: str,
    config: Any = None,
    fp16: bool = False,
    genotype: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``model``'s weights and manifest; returns the manifest path.

    Args:
        name: the registered model name (``create_model(name, **config)`` rebuilds it).
        config: a dataclass or dict of constructor arguments; default ``model.config``.
        fp16: store floating-point tensors as float16 (halves the size; loading casts back).
            Raises ValueError naming the tensor if a finite value would overflow float16.
        dataset: e.g. ``{"name": "cifar10", "sha256": ...}``.
        command: the command that made it; default: this process's argv.
    """
    weights, manifest = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else getattr(model, "config", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = dataclasses.asdict(cfg)
    tensors = {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        if fp16 and t.is_floating_point():
            half = t.half()
            if not torch.isfinite(half).all() and torch.isfinite(t).all():
                raise ValueError(
                    f"{key}: values up to {float(t.abs().max()):.3g} overflow float16 "
                    "(max 65504); save this model with fp16=False"
                )
            t = half
        tensors[key] = t.contiguous()
    staged, digest = _stage_tensors(tensors, weights, {"format": "rkdsc", "model": name})
    doc = {
        "format_version": FORMAT_VERSION,
        "model": name,
        "config": cfg or {},
        "genotype": genotype,
        "dataset": dataset,
        "metrics": metrics or {},
        "extra": extra or {},
        "dtype": "float16" if fp16 else "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_file": weights.name,
        "weights_sha256": digest,
        "git_commit": git_commit(),
        "machine": machine_info(),
        "command": command if command is not None else shlex.join(sys.argv),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _commit_pair(staged, weights, manifest, doc)
    return manifest


def load_checkpoint(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint: ``(state_dict, manifest)``.

    Raises:
        CheckpointError: naming the file, when a file is missing, the manifest is
            unreadable, the weights' sha256 differs from the manifest's, or the weights
            are not a readable safetensors file.
    """
    weights, manifest = checkpoint_paths(path)
    if not manifest.is_file() or not weights.is_file():
        raise CheckpointError(
            f"no checkpoint at {weights.with_suffix('')}: expected both {weights.name} and "
            f"{manifest.name} (written by rkdsc_core.checkpoint.save_checkpoint)"
        )
    try:
        doc = json.loads(manifest.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"manifest {manifest} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or "weights_sha256" not in doc:
        raise CheckpointError(f"manifest {manifest} lacks 'weights_sha256'")
    digest = _sha256(weights)
    if digest != doc["weights_sha256"]:
        raise CheckpointError(
            f"{weights} is corrupt or was replaced: sha256 {digest[:12]}... differs from the "
            f"manifest's {str(doc['weights_sha256'])[:12]}... (or a process was killed in the "
            f"instant between writing it and its manifest)"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {e}") from e
    return state, doc


def load_model(path: Path | str, *, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the registered model named in a checkpoint and load its weights (eval mode)."""
    state, doc = load_checkpoint(path)
    if "model" not in doc:
        raise CheckpointError(f"{path} is not a model checkpoint (no 'model' in its manifest)")
    try:
        model = create_model(doc["model"], **doc.get("config", {}))
    except (TypeError, ValueError) as e:
        manifest = checkpoint_paths(path)[1]
        raise CheckpointError(
            f"manifest {manifest}: cannot build model {doc['model']!r} from its config: {e}"
        ) from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit model {doc['model']!r}: {e}") from e
    return model.to(device).eval()


def save_training_state(
    path: Path | str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    extra: Mapping[str, nn.Module] | None = None,
) -> Path:
    """Write a resumable training state (model + optimizer tensors, no pickle).

    Tensors go to ``NAME.safetensors`` as ``model.<key>``, ``optim.<param>.<key>`` and,
    for each module of ``extra`` (e.g. a weight average), ``extra.<name>.<key>``; the
    optimizer's hyper-parameters, non-tensor state and ``progress`` (epoch, step,
    config, ...) to ``NAME.json``; both are staged and synced first, then renamed into
    place back to back (see :func:`_commit_pair`).
    """
    weights, manifest = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if any("." in name for name in extra or {}):
        raise ValueError(f"extra module names must not contain '.', got {sorted(extra or {})}")
    for name, module in (extra or {}).items():
        for k, v in module.state_dict().items():
            tensors[f"extra.{name}.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    staged, digest = _stage_tensors(tensors, weights, {"format": "rkdsc-training-state"})
    doc = {
        "format_version": FORMAT_VERSION,
        "kind": "training-state",
        "param_groups": opt["param_groups"],
        "optimizer_scalars": scalars,
        "progress": progress,
        "weights_sha256": digest,
        "git_commit": git_commit(),
    }
    # The two renames cannot be one: the previous pair stays whole under NAME.prev until
    # both are done, for resume_training to fall back on (hard links: no copy, where the
    # file system has them).
    prev_weights, prev_manifest = checkpoint_paths(_previous(path))
    kept = weights.is_file() and manifest.is_file()
    if kept:
        for old, new in ((weights, prev_weights), (manifest, prev_manifest)):
            new.unlink(missing_ok=True)
            try:
                os.link(old, new)
            except OSError:
                shutil.copy2(old, new)
    _commit_pair(staged, weights, manifest, doc)
    if kept:
        prev_weights.unlink()
        prev_manifest.unlink()
    return manifest


def load_training_state(
    path: Path | str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: Mapping[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote into ``model``, ``optimizer`` and
    the modules of ``extra`` (each must have been saved under the same name).

    Returns the saved ``progress``.
    """
    flat, doc = load_checkpoint(path)
    model.load_state_dict({k[6:]: v for k, v in flat.items() if k.startswith("model.")})
    for name, module in (extra or {}).items():
        prefix = f"extra.{name}."
        saved = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        if not saved:
            raise CheckpointError(f"training state {path} has no {name!r} to restore")
        module.load_state_dict(saved)
    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, extra in doc.get("optimizer_scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    progress: dict[str, Any] = doc["progress"]
    return progress


class Resumed(NamedTuple):
    """Where a training run stands: a fresh start, or what :func:`resume_training` read."""

    epoch: int
    step: int
    history: list[dict[str, Any]]
    wall_seconds: float
    progress: dict[str, Any]


def saved_progress(state: Path | str) -> dict[str, Any]:
    """The ``progress`` a training state at ``state`` holds (``{}``: none written yet),
    read from its manifest without loading any tensor."""
    manifest = checkpoint_paths(state)[1]
    if not manifest.is_file():
        return {}
    progress: dict[str, Any] = json.loads(manifest.read_text()).get("progress", {})
    return progress


def save_epoch(
    state: Path | str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    wall_seconds: float,
    config: dict[str, Any],
    extra: Mapping[str, nn.Module] | None = None,
    **more: Any,
) -> Path:
    """Checkpoint a run after ``epoch`` epochs, in the form :func:`resume_training` reads.

    ``config`` is what a resumed run must match; ``more`` goes into the progress as well.
    """
    progress = {"epoch": epoch, "step": step, "history": history, "wall_seconds": wall_seconds}
    progress |= {"config": config, **more}
    return save_training_state(
        state, model=model, optimizer=optimizer, progress=progress, extra=extra
    )


def resume_training(
    state: Path | str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    extra: Mapping[str, nn.Module] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Resumed:
    """Resume from the training state at ``state`` if there is one, else a fresh start.

    The saved ``progress["config"]`` must equal ``config`` (checked before anything is
    loaded): a run folder never mixes two recipes. A field the saved config lacks (one
    added to the recipe since the run started) counts as its value in ``defaults``, the
    config's defaults, so older runs resume where they used what is now the default.
    ``extra``: see :func:`load_training_state`.

    A state whose weights and manifest do not match (the process died between the two
    renames of a save) is passed over for the previous one, which that save kept whole
    under ``NAME.prev`` (with a warning: that epoch is trained again).

    Raises:
        ValueError: the state was made with another config.
        CheckpointError: the state is unreadable and no previous one was kept.
    """
    if not checkpoint_paths(state)[1].is_file():
        return Resumed(0, 0, [], 0.0, {})
    saved = saved_progress(state).get("config")
    if isinstance(saved, dict) and defaults:
        saved = {k: v for k, v in defaults.items() if k in config and k not in saved} | saved
    if saved != json.loads(json.dumps(config)):  # as saved: tuples are lists, keys strings
        raise ValueError(f"{state} was made with another config; use a new --out")
    try:
        progress = load_training_state(state, model=model, optimizer=optimizer, extra=extra)
    except CheckpointError as e:
        previous = _previous(state)
        if not checkpoint_paths(previous)[1].is_file():
            raise
        log.warning("%s; resuming from the previous state, %s", e, previous)
        progress = load_training_state(previous, model=model, optimizer=optimizer, extra=extra)
    return Resumed(
        progress["epoch"], progress["step"], progress["history"], progress["wall_seconds"], progress
    )
