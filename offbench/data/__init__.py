"""Datasets: ids, building (behaviour-policy rollouts -> Minari), loading to device, statistics."""

from offbench.data.builder import build
from offbench.data.ids import DEFAULT_SIZE, KINDS, DatasetName, data_root, parse
from offbench.data.loader import Dataset, DatasetError, load, local_datasets

__all__ = ["DEFAULT_SIZE", "KINDS", "Dataset", "DatasetError", "DatasetName", "build",
           "data_root", "load", "local_datasets", "parse"]
