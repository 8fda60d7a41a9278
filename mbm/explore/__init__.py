"""Explore: the numbers behind the page's "Explore" tab, computed here so the page only draws them.

Four views of one model and one gallery, each a function returning a plain dataclass:
- `embedding_map` (`maps.py`): images and their captions projected to 2-D together (PCA, or UMAP if installed),
  with a query and its hits, and the modality gap (matched vs random pairs, distance between the two clouds);
- `similarity_matrix` (`scores.py`): N images x their N captions, cosine and softmax, the CLIP paper's figure;
- `compare_indexes` (`indexes.py`): one query on the exact index and on an approximate one (IVF or HNSW) with
  its knob;
- `prompt_lab` (`scores.py`): zero-shot per template and for the averaged prototypes, with the tokens each
  prompt became.
The fifth, the stage-by-stage walk through the pipeline, is `mbm.trace`. Fitted projections and approximate
indexes are cached per (store, generation, model, method) in `_cache.py`.
"""

from mbm.explore.indexes import INDEX_KINDS, IndexComparison, approximate_index, compare_indexes
from mbm.explore.maps import (
    MAP_MAX_ITEMS,
    METHODS,
    EmbeddingMap,
    MapPoint,
    ModalityGap,
    available_methods,
    embedding_map,
    modality_gap,
    pca_2d,
)
from mbm.explore.scores import PromptInfo, PromptLab, SimilarityMatrix, prompt_lab, similarity_matrix

__all__ = [
    "INDEX_KINDS", "MAP_MAX_ITEMS", "METHODS", "EmbeddingMap", "IndexComparison", "MapPoint", "ModalityGap",
    "PromptInfo", "PromptLab", "SimilarityMatrix", "approximate_index", "available_methods", "compare_indexes",
    "embedding_map", "modality_gap", "pca_2d", "prompt_lab", "similarity_matrix",
]
