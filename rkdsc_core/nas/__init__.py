"""KDL-DARTS: a DARTS search with distillation from a teacher and a complexity penalty."""

from rkdsc_core.nas.complexity import COST_KINDS, CostKind, ExpectedCost, cost_table, op_cost
from rkdsc_core.nas.evaluate import (
    StudentEvalConfig,
    build_student,
    student_complexity,
    train_student_plain,
)
from rkdsc_core.nas.search import (
    SearchBatch,
    SearchConfig,
    SearchModules,
    SearchResult,
    arch_step,
    build_search_modules,
    lr_at,
    objective,
    search,
    split_search_data,
    weight_step,
)
from rkdsc_core.nas.supernet import (
    NODES,
    CellSpec,
    MixedOp,
    SearchCell,
    SearchNetwork,
    channel_shuffle,
    derive_cell,
    edge_softmax,
    num_edges,
)
from rkdsc_core.nas.sweep import format_table, sweep, sweep_rows, write_table
from rkdsc_core.nas.teacher import Teacher, TeacherOutputs, load_teacher_outputs

__all__ = [
    "COST_KINDS",
    "NODES",
    "CellSpec",
    "CostKind",
    "ExpectedCost",
    "MixedOp",
    "SearchBatch",
    "SearchCell",
    "SearchConfig",
    "SearchModules",
    "SearchNetwork",
    "SearchResult",
    "StudentEvalConfig",
    "Teacher",
    "TeacherOutputs",
    "arch_step",
    "build_search_modules",
    "build_student",
    "channel_shuffle",
    "cost_table",
    "derive_cell",
    "edge_softmax",
    "format_table",
    "load_teacher_outputs",
    "lr_at",
    "num_edges",
    "objective",
    "op_cost",
    "search",
    "split_search_data",
    "student_complexity",
    "sweep",
    "sweep_rows",
    "train_student_plain",
    "weight_step",
    "write_table",
]
