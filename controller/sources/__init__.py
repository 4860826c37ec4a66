"""Where release vectors come from: the batch type, the source protocol, file sources."""

from controller.sources.base import VectorBatch, VectorSource
from controller.sources.files import open_files_source
from controller.sources.local import LocalFiles, read_golden_set

__all__ = ["LocalFiles", "VectorBatch", "VectorSource", "open_files_source", "read_golden_set"]
