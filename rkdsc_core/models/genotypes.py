"""DARTS genotypes: the ``Genotype`` NamedTuple, published references, JSON (de)serialisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from rkdsc_core.models.operations import PRIMITIVES

__all__ = [
    "DARTS_V1",
    "DARTS_V2",
    "DEFAULT_GENOTYPE",
    "GENOTYPES",
    "Genotype",
    "genotype_from_dict",
    "genotype_to_dict",
    "get_genotype",
    "validate_genotype",
]

Edge = tuple[str, int]
"""One cell edge: ``(op name from PRIMITIVES, index of the input state)``."""


class Genotype(NamedTuple):
    """A discrete DARTS architecture: the normal and the reduction cell.

    Each cell lists its edges in pairs: intermediate node ``i`` (0-based) sums the two edges
    ``2i`` and ``2i + 1``. An edge's index names its input state: 0 and 1 are the outputs of
    the previous-previous and previous cells, ``2 + j`` is intermediate node ``j`` (so node
    ``i`` may only read indices ``< 2 + i``). The ``*_concat`` indices are the states
    concatenated (along channels) into the cell's output.
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]


DARTS_V1 = Genotype(
    normal=(
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ),
    reduce_concat=(2, 3, 4, 5),
)
"""DARTS (first order) CIFAR-10 cell, Liu et al. 2019."""

DARTS_V2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)
"""DARTS (second order) CIFAR-10 cell, Liu et al. 2019 (3.3M params at C=36, 20 layers)."""

DEFAULT_GENOTYPE = DARTS_V2
"""The student's genotype until a KD-aware search provides one."""

GENOTYPES: Mapping[str, Genotype] = MappingProxyType({"darts_v1": DARTS_V1, "darts_v2": DARTS_V2})
"""Named reference genotypes (for configs and the CLI)."""

_FIELDS = Genotype._fields


def _check_cell(name: str, edges: Sequence[Any], concat: Sequence[Any]) -> None:
    if len(edges) == 0 or len(edges) % 2:
        raise ValueError(
            f"genotype.{name} must list a positive, even number of edges (two per "
            f"intermediate node), got {len(edges)}"
        )
    for k, edge in enumerate(edges):
        if len(edge) != 2:
            raise ValueError(f"genotype.{name}[{k}] must be (op_name, input_index), got {edge!r}")
        op, index = edge
        if op not in PRIMITIVES:
            raise ValueError(
                f"genotype.{name}[{k}] has unknown op {op!r}; known ops: {', '.join(PRIMITIVES)}"
            )
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"genotype.{name}[{k}] input index must be an int, got {index!r}")
        node = k // 2
        if not 0 <= index < 2 + node:
            raise ValueError(
                f"genotype.{name}[{k}] (node {node}) reads state {index}; node {node} may "
                f"only read states 0..{node + 1} (two cell inputs, then earlier nodes)"
            )
    n_states = 2 + len(edges) // 2
    if len(concat) == 0:
        raise ValueError(f"genotype.{name}_concat must name at least one state")
    for index in concat:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_states:
            raise ValueError(
                f"genotype.{name}_concat entries must be ints in [0, {n_states - 1}], "
                f"got {list(concat)!r}"
            )
    if len(set(concat)) != len(concat):
        raise ValueError(f"genotype.{name}_concat has duplicates: {list(concat)!r}")


def validate_genotype(genotype: Genotype) -> Genotype:
    """Check op names and node indices; return ``genotype`` with every list made a tuple.

    Raises:
        ValueError: an unknown op, an edge reading a state that does not exist yet, an
            odd edge count, or a bad concat list (the message names the field and edge).
    """
    if not isinstance(genotype, tuple) or len(genotype) != len(_FIELDS):
        raise ValueError(f"genotype must be a Genotype{_FIELDS}, got {genotype!r}")
    g = Genotype(*genotype)
    _check_cell("normal", g.normal, g.normal_concat)
    _check_cell("reduce", g.reduce, g.reduce_concat)
    return Genotype(
        normal=tuple((str(op), int(i)) for op, i in g.normal),
        normal_concat=tuple(int(i) for i in g.normal_concat),
        reduce=tuple((str(op), int(i)) for op, i in g.reduce),
        reduce_concat=tuple(int(i) for i in g.reduce_concat),
    )


def genotype_to_dict(genotype: Genotype) -> dict[str, Any]:
    """A JSON-ready dict: ``{"normal": [[op, index], ...], "normal_concat": [...], ...}``."""
    g = validate_genotype(genotype)
    return {
        "normal": [[op, i] for op, i in g.normal],
        "normal_concat": list(g.normal_concat),
        "reduce": [[op, i] for op, i in g.reduce],
        "reduce_concat": list(g.reduce_concat),
    }


def genotype_from_dict(data: Mapping[str, Any]) -> Genotype:
    """Inverse of :func:`genotype_to_dict` (accepts lists or tuples), validated.

    Raises:
        ValueError: missing or unknown keys, or an invalid genotype (see
            :func:`validate_genotype`).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"genotype must be a dict with keys {list(_FIELDS)}, got {data!r}")
    missing = [k for k in _FIELDS if k not in data]
    unknown = [k for k in data if k not in _FIELDS]
    if missing or unknown:
        raise ValueError(
            f"genotype dict must have exactly the keys {list(_FIELDS)}; "
            f"missing {missing}, unknown {unknown}"
        )
    for key in _FIELDS:
        if isinstance(data[key], str | bytes) or not isinstance(data[key], Sequence):
            raise ValueError(f"genotype[{key!r}] must be a list, got {data[key]!r}")
    for key in ("normal", "reduce"):
        for k, edge in enumerate(data[key]):
            if isinstance(edge, str | bytes) or not isinstance(edge, Sequence) or len(edge) != 2:
                raise ValueError(
                    f"genotype[{key!r}][{k}] must be [op_name, input_index], got {edge!r}"
                )
    return validate_genotype(
        Genotype(
            normal=tuple(tuple(e) for e in data["normal"]),
            normal_concat=tuple(data["normal_concat"]),
            reduce=tuple(tuple(e) for e in data["reduce"]),
            reduce_concat=tuple(data["reduce_concat"]),
        )
    )


def get_genotype(name: str) -> Genotype:
    """The reference genotype called ``name`` (see :data:`GENOTYPES`); unknown names raise."""
    try:
        return GENOTYPES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown genotype {name!r}; known genotypes: {', '.join(sorted(GENOTYPES))}"
        ) from None
