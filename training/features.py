"""The sparse features a model can ask for, where each comes from in ``features/samples``, and its embedding table.

A *feature* is one key of the ``KeyedJaggedTensor`` the reader builds; a *table* is one embedding table. Several
features share a table: the target item, the history, the negatives and the DSTN sets all look up the ``item``
table (DESIGN.md section 5), so an item has one embedding wherever it appears.

The item-similarity models (FISM, NAIS) are the exception: as in FISM they give an item two embeddings, p_i when
it is the item being scored and q_j when it is a step of the history. Their tables ``item_target`` (p) and
``item_history`` (q) hold the same indices as ``item`` (both are sized by the vocab field ``item``) and are read
by their own features, ``target_item_p`` (column ``item_idx``) and ``hist_item_q`` (columns ``hist_item_idx`` and
``hist_len``).

* Scalar features (``item``, ``user``, ...) have exactly one value per row (the column's index; 0 when the
  sample has no such value, 1 when the id is unknown to the vocabulary).
* Sequence features (``hist_item``, ...) come from a column padded to a fixed length and its length column; the
  reader keeps the first ``length`` values of each row, so padding never reaches an embedding lookup.
  ``neg_*`` share ``hist_len`` (one negative per history step).
* Candidate features (``cand_item``, ...; ``features/rank_eval`` only) keep the whole fixed-length array.

Example, two rows with ``hist_len`` 2 and 0 and ``hist_item_idx`` [[7, 9, 0], [0, 0, 0]]: the feature
``hist_item`` has lengths [2, 0] and values [7, 9].
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureSpec:
    name: str  # key in the KeyedJaggedTensor
    column: str  # column of features/samples (or features/rank_eval)
    table: str  # embedding table (see TABLE_VOCAB_FIELD)
    length_column: str | None = None  # None: scalar (one value per row) or a whole fixed-length array
    is_sequence: bool = False


#: embedding table -> the ``features/vocab`` field whose indices it holds (its size is that field's max idx + 1).
TABLE_VOCAB_FIELD: dict[str, str] = {
    "item": "item",
    "cate": "category",
    "shop": "shop",
    "brand": "brand",
    "user": "user",
    "gender": "gender",
    "age_bucket": "age_bucket",
    "city": "city",
    # FISM / NAIS: p (the scored item) and q (the history's items), two tables over the item indices
    "item_target": "item",
    "item_history": "item",
    # NeuralCF: the GMF and MLP branches each have their own user and item tables (NeuMF holds all four)
    "user_gmf": "user",
    "item_gmf": "item",
    "user_mlp": "user",
    "item_mlp": "item",
    # AutoRec (item-based): V (encoder) and [W; b] (decoder), both indexed by user
    "user_encoder": "user",
    "user_decoder": "user",
}

#: tables without a ``<table>_idx`` column of their own: their features are declared by name in the catalogue
_SHARED_INDEX_TABLES = ("item_target", "item_history")
_SHARED_INDEX_TABLES += ("user_gmf", "item_gmf", "user_mlp", "item_mlp", "user_encoder", "user_decoder")


def _catalogue() -> dict[str, FeatureSpec]:
    specs: list[FeatureSpec] = [FeatureSpec(table, f"{table}_idx", table) for table in TABLE_VOCAB_FIELD
                                if table not in _SHARED_INDEX_TABLES]
    for prefix, length in (("hist", "hist_len"), ("neg", "hist_len"), ("ctx", "ctx_len"), ("clk", "clk_len"),
                           ("unclk", "unclk_len")):
        for table in ("item", "cate"):
            specs.append(FeatureSpec(f"{prefix}_{table}", f"{prefix}_{table}_idx", table, length, True))
    for table in ("item", "cate", "shop", "brand"):
        specs.append(FeatureSpec(f"cand_{table}", f"cand_{table}_idx", table, None, True))
    specs.append(FeatureSpec("target_item_p", "item_idx", "item_target"))
    specs.append(FeatureSpec("hist_item_q", "hist_item_idx", "item_history", "hist_len", True))
    for branch in ("gmf", "mlp"):  # NeuralCF
        specs.append(FeatureSpec(f"user_{branch}", "user_idx", f"user_{branch}"))
        specs.append(FeatureSpec(f"item_{branch}", "item_idx", f"item_{branch}"))
    # AutoRec builds both in its forward (the raters of an item, the row's user); the reader never reads them
    specs.append(FeatureSpec("autorec_raters", "user_idx", "user_encoder"))
    specs.append(FeatureSpec("autorec_user", "user_idx", "user_decoder"))
    return {spec.name: spec for spec in specs}


FEATURES: dict[str, FeatureSpec] = _catalogue()


def feature_specs(names: list[str] | tuple[str, ...]) -> list[FeatureSpec]:
    """The specs of ``names`` in that order; an unknown name is a clear error."""
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise KeyError(f"unknown feature(s) {unknown}; known: {sorted(FEATURES)}")
    return [FEATURES[name] for name in names]


def tables_of(names: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """table -> the features of ``names`` that look it up, in first-use order."""
    tables: dict[str, list[str]] = {}
    for spec in feature_specs(names):
        tables.setdefault(spec.table, []).append(spec.name)
    return tables
