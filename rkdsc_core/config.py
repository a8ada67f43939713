"""The settings object: one ``Settings`` built at the entry point and passed down.

``rkdsc_core`` itself never reads the environment; the CLI calls :func:`load_settings`,
which reads ``RKDSC_*`` variables (``RKDSC_DATA_DIR``, ``RKDSC_DATA__CACHE_DIR``, ...)
and an optional YAML/JSON file, then applies command-line overrides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DataSettings", "Settings", "load_settings"]


class DataSettings(BaseModel):
    """Where datasets come from and where their decoded caches go."""

    dir: Path | None = Field(
        default=None,
        description=(
            "A dataset source: an image-folder tree or its .tar.gz, a folder holding the "
            "official CIFAR binary archives, or a Fashion-MNIST IDX folder. "
            "Env: RKDSC_DATA_DIR."
        ),
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "rkdsc",
        description="Where decoded uint8 arrays are cached, keyed by the source's checksum.",
    )


class Settings(BaseSettings):
    """All of rkdsc's settings; nested sections map to ``RKDSC_<SECTION>__<KEY>``."""

    model_config = SettingsConfigDict(
        env_prefix="RKDSC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,  # Settings(data_dir=...), without reading a bare DATA_DIR
    )

    data: DataSettings = Field(default_factory=DataSettings)
    data_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("RKDSC_DATA_DIR"),
        description="Shorthand for data.dir (the documented RKDSC_DATA_DIR).",
        exclude=True,
    )
    device: str = Field(default="cpu", description="torch device for compute: cpu, cuda, cuda:1")
    compile: bool = Field(
        default=False,
        description="torch.compile the training loops' forward (inductor; needs a C++ compiler "
        "on CPU): faster steps after a one-off compile, not bit-identical to eager",
    )

    def resolved_data(self) -> DataSettings:
        """The data section with ``RKDSC_DATA_DIR`` folded in (``data.dir`` wins if both set)."""
        if self.data.dir is None and self.data_dir is not None:
            return self.data.model_copy(update={"dir": self.data_dir})
        return self.data


def load_settings(config: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings: defaults < environment < ``config`` file < non-``None`` ``overrides``.

    ``overrides`` keys are dotted paths (``{"data.dir": Path("...")}``).
    """
    values: dict[str, Any] = {}
    if config is not None:
        text = Path(config).read_text()
        if config.suffix in {".yaml", ".yml"}:
            import yaml

            loaded = yaml.safe_load(text) or {}
        else:
            loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {config} must hold a mapping, got {type(loaded)}")
        values.update(loaded)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    env = Settings()
    merged = _deep_merge(env.model_dump(exclude={"data_dir"}), values)
    file_dir = "data_dir" in values  # the file's (or an override's) shorthand beats the env's
    if env.data_dir is not None and merged["data"].get("dir") is None and not file_dir:
        merged["data"]["dir"] = env.data_dir
    return Settings.model_validate(merged)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out
