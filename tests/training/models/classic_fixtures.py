"""A tiny batch and hand-set embeddings shared by the tests of the field-embedding models (DeepFM, NFM, ...).

Fields ``user``, ``item`` and the mean-pooled ``hist_item`` (item table), D = 2; w is the first-order weight that
the models with a linear part store in column D of each row:

    user 1: v = [1, 0],  w = 0.5        item 2: v = [1, 1],  w = 0.2
    user 2: v = [0, 2],  w = -1         item 3: v = [2, -1], w = 0.1
                                        item 4: v = [-1, 0], w = 0.3

    row 0: user 1, item 2, history [3, 4] -> hist field v = mean([2, -1], [-1, 0]) = [0.5, -0.5], w = 0.2
    row 1: user 2, item 3, history []     -> hist field v = [0, 0], w = 0 (absent)
"""

from __future__ import annotations

import torch
from torchrec import KeyedJaggedTensor

FIELDS = ("user", "item", "hist_item")
SIZES = {"user": 3, "item": 5}
USER_V = {1: [1.0, 0.0], 2: [0.0, 2.0]}
USER_W = {1: 0.5, 2: -1.0}
ITEM_V = {2: [1.0, 1.0], 3: [2.0, -1.0], 4: [-1.0, 0.0]}
ITEM_W = {2: 0.2, 3: 0.1, 4: 0.3}


def batch(rows=((1, 2, (3, 4)), (2, 3, ()))) -> KeyedJaggedTensor:
    """KJT with keys user, item, hist_item from ``(user, item, history)`` rows."""
    values = [r[0] for r in rows] + [r[1] for r in rows] + [h for r in rows for h in r[2]]
    lengths = [1] * (2 * len(rows)) + [len(r[2]) for r in rows]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(FIELDS), values=torch.tensor(values),
                                               lengths=torch.tensor(lengths))


def set_embeddings(model, *, linear: bool) -> None:
    """Write the rows above into the model's tables (v, and w in column 2 when ``linear``)."""
    def rows(vectors, weights, size):
        table = torch.zeros(size, 3 if linear else 2)
        for idx, v in vectors.items():
            table[idx, :2] = torch.tensor(v)
            if linear:
                table[idx, 2] = weights[idx]
        return table

    with torch.no_grad():
        for name, vectors, weights in (("user", USER_V, USER_W), ("item", ITEM_V, ITEM_W)):
            weight = model.table_modules()[name].weight
            weight.zero_()
            new = rows(vectors, weights, SIZES[name])
            weight[:, : new.shape[1]].copy_(new)


def field_vectors(user: int, item: int, history: tuple[int, ...]) -> tuple[list[list[float]], list[float]]:
    """(v_i, w_i x_i) of the three fields of one row, by plain Python: the explicit recomputation's input."""
    hist_v = [sum(ITEM_V[h][d] for h in history) / len(history) if history else 0.0 for d in range(2)]
    hist_w = sum(ITEM_W[h] for h in history) / len(history) if history else 0.0
    return [USER_V[user], ITEM_V[item], hist_v], [USER_W[user], ITEM_W[item], hist_w]


def explicit_pairwise(vectors: list[list[float]]) -> tuple[list[float], float]:
    """(Σ_{i<j} v_i ⊙ v_j, Σ_{i<j} ⟨v_i, v_j⟩) by an explicit loop over the pairs."""
    dim = len(vectors[0])
    elementwise = [0.0] * dim
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            for d in range(dim):
                elementwise[d] += vectors[i][d] * vectors[j][d]
    return elementwise, sum(elementwise)
