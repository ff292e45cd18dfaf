"""Datasets: records, layouts, splits and the synthetic generator."""

from wildtrack.data.layout import DatasetError, SkippedFilesWarning, detect_layout, load_dataset
from wildtrack.data.records import Dataset, Record
from wildtrack.data.splits import (
    SPLIT_NAMES,
    Split,
    SplitError,
    default_split_name,
    make_split,
    official_split,
    per_identity_split,
    time_aware_split,
    validation_split,
)

__all__ = [
    "SPLIT_NAMES", "Dataset", "DatasetError", "Record", "SkippedFilesWarning", "Split", "SplitError",
    "default_split_name", "detect_layout", "load_dataset", "make_split", "official_split",
    "per_identity_split", "time_aware_split", "validation_split",
]
