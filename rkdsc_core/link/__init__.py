"""The semantic link: pipeline (student + CAT around a channel), weights bundles, eval tables."""

from rkdsc_core.link.bundle import LinkBundle, default_weights_dir, load_link, save_link
from rkdsc_core.link.eval_table import EvalTable
from rkdsc_core.link.pipeline import LinkOutput, SemanticPipeline, TxFrame

__all__ = [
    "EvalTable",
    "LinkBundle",
    "LinkOutput",
    "SemanticPipeline",
    "TxFrame",
    "default_weights_dir",
    "load_link",
    "save_link",
]
