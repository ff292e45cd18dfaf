"""The values each option accepts, as types typer shows in ``--help`` and checks itself (a bad value is typer's
one-line "Invalid value" error, exit code 2), kept here so that ``--help`` never imports TensorFlow."""

from __future__ import annotations

from typing import Literal, get_args

from wildtrack.config import (
    EvalConfig,
    FusionFeatures,
    LocalFocus,
    LossName,
    MatchingPreset,
)

Loss = LossName
TrainSplit = Literal["auto", "per-identity", "time-aware", "official"]
EvalSplit = TrainSplit
Backbone = Literal["mobilenetv2", "mobilenetv2-keras", "efficientnetb0", "mobilenetv3small", "convnexttiny", "tiny"]
Rerank = Literal["local", "none"]
__all__ = ["FusionFeatures", "LocalFocus", "MatchingPreset"]  # re-exported for the commands (config owns them)
Backend = Literal["auto", "keras", "onnx"]
IndexKind = Literal["flat", "hnsw", "ivf"]
ExportFormat = Literal["onnx"]
SurveyGrouping = Literal["auto", "folders", "time"]
SurveyOccasion = Literal["day", "survey"]
HistoryFormat = Literal["wide", "rmark"]

BACKBONE_NAMES: tuple[str, ...] = get_args(Backbone)
PANEL_TOPK_MAX = next(m.le for m in EvalConfig.model_fields["topk"].metadata if hasattr(m, "le"))

BACKEND_HELP = "auto: the ONNX export when there is one (wildtrack export), else Keras; keras | onnx to choose."
INDEX_HELP = "Index folder written by `wildtrack index build`."
ARTIFACTS_HELP = "Model folder written by `wildtrack train` (model.keras, preprocessor.pkl, ...)."
