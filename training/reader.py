"""Training batches from a pinned Delta version of ``features/samples``: Petastorm row groups -> KeyedJaggedTensor.

Pipeline (one background thread per reader; the training step overlaps with reading because pyarrow and numpy
release the GIL)::

    resolve_files(lakehouse, "features/samples", version=v, days=...)  -> (v, sorted file:// URIs)
    check_shardable(files, world_size); check_index_ranges(files, features, table_sizes)   # before any collective
    read_batches(files, features, batch_size, rank=r, world_size=W, seed=s, epoch=e)        # Petastorm, sharded
    synchronised(batches, mode="train" | "eval", features=..., device=...)                 # equal steps per rank

Batch layout (B rows; keys in the order the features were asked for; values int64, lengths int32):

* scalar feature (``item``, ``user``, ...): one value per row, length 1;
* sequence feature (``hist_item``, ``neg_cate``, ...): the first ``length`` entries of each padded row, with
  ``length`` from its length column (``hist_len``, ...), so the padding 0 never reaches ``values``;
* candidate feature (``cand_item``, ...: length column None): the whole fixed-width row.

Example, ``features=["item", "hist_item"]`` over two rows with ``item_idx`` [5, 6], ``hist_item_idx``
[[7, 9, 0], [0, 0, 0]] and ``hist_len`` [2, 0]::

    sparse.keys()    == ["item", "hist_item"]
    sparse.lengths() == [1, 1,   2, 0]        # key-major: item's B lengths, then hist_item's
    sparse.values()  == [5, 6,   7, 9]
    labels [B] float32, groups [B] int64 (user_idx, for GAUC), weights [B] float32 (1 for real rows),
    sample_ids np.ndarray[str] (CPU), extras {"hist_len": [B] int32, "neg_is_sampled": [B, L] int32, ...}

Equal steps on every rank. Petastorm 0.12.1 shards whole row groups, so ranks get different numbers of rows
(and of batches); a rank that stops early while the others call collectives hangs them (DDP, TorchRec's sharded
embeddings). :func:`synchronised` all-reduces a has-batch flag every step: ``mode="train"`` stops every rank as soon
as one is out (the rows of the longer shards not used this epoch are counted in :attr:`SyncStats.rows_not_used`);
``mode="eval"`` goes on while any rank has data, the finished ranks running filler batches of weight 0, so every
row is scored exactly once and every rank runs the same number of forward passes.

Determinism. Same (files, seed, epoch, rank, world_size, batch_size) -> identical batches in identical order: the
files are sorted, Petastorm runs with ``reader_pool_type="dummy"`` (one reading thread, row groups in the order
its ventilator shuffles them with ``seed + epoch``), the rows of each row group are permuted by numpy with
``(seed, epoch)`` (cheaper than Petastorm's ``shuffle_rows``, same effect), and re-batching is deterministic.
Another epoch -> another order. ``shuffle=False`` reads the sorted files' row groups and rows in stored order.

Petastorm 0.12.1 facts this module relies on (read in its source and checked by the tests):

* Row groups are enumerated in the order of the given file list, each file's row groups in file order (footers
  read per file; the legacy ``ParquetDataset`` keeps the list order). Rank ``r`` reads the row groups whose index
  ``i`` in that enumeration has ``i % W == r``. The ``seed`` shuffles the index list *before* that filter, so it
  does not change which rank gets which row group: the assignment is fixed by the file order, the same at every
  epoch and seed. Hence the files are sorted here (every rank must enumerate identically, and delta-rs lists
  files in log order, not a documented one), and each rank's number of rows is known from the footers before
  reading (:attr:`BatchStream.shard_rows`). Consequences: a rank reads the same row groups at every epoch
  (only their order and the order of their rows change), so the rows ``mode="train"`` cuts always come from the
  same longer shards (different rows of them each epoch); write splits as files of similar size, at least W
  and ideally a multiple of W of them, to keep that waste small.
* Whenever sharding is on (always here), Petastorm shuffles the shard's row-group list with ``seed`` even if
  ``shuffle_row_groups`` is False; an unshuffled read therefore passes no seed and follows the sorted files.
* Fewer row groups than ranks raises Petastorm's ``NoDataAvailableError``; :func:`check_shardable` raises
  :class:`NotEnoughDataError` first, on every rank alike, before any collective.
* Given a list of files, Petastorm sees no partitioning: the ``ds`` partition column (stored only in the folder
  names, not in the files) is NOT added, so it cannot be requested; only the needed columns are asked for.
* It wants ``file://`` URLs and does not URL-decode them (``Lakehouse.files`` returns plain ``file://`` paths).
* It turns list columns into 2-D arrays with one Python object per row (``np.vstack(column.tolist())``), which
  was most of its cost against a bare ``pyarrow.parquet`` scan (``benchmarks/loader.py``): the reader here swaps
  in a subclass of Petastorm's results reader that reshapes Arrow's flat values instead
  (:func:`use_flat_list_results`). Rows of unequal list length are still refused (by Petastorm), hence the
  fixed-width padded columns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from training.features import FeatureSpec, feature_specs

if TYPE_CHECKING:
    from features.tableio import Lakehouse

# Petastorm 0.12.1 uses pyarrow's legacy ParquetDataset API, which pyarrow 14 keeps with a FutureWarning per call:
# silence exactly those (warnings attributed to petastorm's own modules), nothing else.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")

#: Columns every batch needs besides the features' own.
BASE_COLUMNS: tuple[str, ...] = ("sample_id", "label", "user_idx")
_THREAD_NAME = "training-reader-prefetch"


class EmptySplitError(ValueError):
    """The requested table version and days hold no data file (or no row)."""


class NotEnoughDataError(ValueError):
    """Fewer Parquet row groups than ranks: some rank would get no data at all."""


class IndexOutOfRangeError(ValueError):
    """An index column holds a value outside ``[0, table size)`` of its embedding table."""


class SequenceLengthError(ValueError):
    """A length column holds a value outside ``[0, L]`` of its padded sequence column."""


# ---------------------------------------------------------------------------------------------------- the batch
@dataclass
class Batch:
    """One training step's rows: jagged sparse ids, labels, GAUC groups, weights, ids and extra columns."""

    sparse: KeyedJaggedTensor
    labels: torch.Tensor  # [B] float32
    groups: torch.Tensor  # [B] int64, user_idx
    weights: torch.Tensor  # [B] float32: 1 for real rows, 0 for filler rows
    sample_ids: np.ndarray  # [B] str, stays on the CPU
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        device = torch.device(device)
        if self.labels.device == device:
            return self
        return replace(
            self,
            sparse=self.sparse.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            groups=self.groups.to(device, non_blocking=non_blocking),
            weights=self.weights.to(device, non_blocking=non_blocking),
            extras={k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()},
        )

    def pin_memory(self) -> Batch:
        """A copy in page-locked host memory, so that ``to(cuda, non_blocking=True)`` really overlaps."""
        return replace(
            self,
            sparse=self.sparse.pin_memory(),
            labels=self.labels.pin_memory(),
            groups=self.groups.pin_memory(),
            weights=self.weights.pin_memory(),
            extras={k: v.pin_memory() for k, v in self.extras.items()},
        )

    def masked(self) -> Batch:
        """The same tensors with every weight 0: a filler batch that adds nothing to losses or metrics.

        The sample ids are blanked (``""``), so a predictions writer that forgets to drop weight-0 rows still
        cannot write a real sample twice.
        """
        return replace(self, weights=torch.zeros_like(self.weights), sample_ids=np.full(len(self), "", dtype=str))

    @classmethod
    def filler(
        cls,
        features: Sequence[str],
        device: torch.device | str = "cpu",
        *,
        widths: Mapping[str, int] | None = None,
        extra_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> Batch:
        """A 1-row batch of weight 0 for a rank that has no data at all (evaluation only).

        Scalar features get the id 0 (padding), sequence features are empty, candidate features get
        ``widths[name]`` zeros (default 1); ``extra_shapes`` gives each extra column's per-row shape (int32 zeros).
        """
        specs = feature_specs(tuple(features))
        widths = widths or {}
        lengths = [
            (widths.get(s.name, 1) if s.length_column is None else 0) if s.is_sequence else 1 for s in specs
        ]
        device = torch.device(device)
        sparse = KeyedJaggedTensor(
            keys=[s.name for s in specs],
            values=torch.zeros(sum(lengths), dtype=torch.int64, device=device),
            lengths=torch.tensor(lengths, dtype=torch.int32, device=device),
            stride=1,
            length_per_key=lengths,
        )
        return cls(
            sparse=sparse,
            labels=torch.zeros(1, dtype=torch.float32, device=device),
            groups=torch.zeros(1, dtype=torch.int64, device=device),
            weights=torch.zeros(1, dtype=torch.float32, device=device),
            sample_ids=np.array([""], dtype=str),
            extras={
                name: torch.zeros((1, *shape), dtype=torch.int32, device=device)
                for name, shape in (extra_shapes or {}).items()
            },
        )


# ------------------------------------------------------------------------------------------- files and footers
def resolve_files(
    lakehouse: Lakehouse,
    table: str,
    *,
    version: int | None = None,
    days: Iterable[dt.date | str] | None = None,
) -> tuple[int, list[str]]:
    """The pinned version (the latest when None) of ``table`` and its sorted data file URIs for ``days``.

    Record the returned version with the run. A vacuumed or missing version raises the lakehouse's
    ``TableNotFoundError`` naming it; no file (or files without a row) raises :class:`EmptySplitError`.
    """
    pinned = lakehouse.version(table) if version is None else version
    days = None if days is None else list(days)
    files = sorted(lakehouse.files(table, version=pinned, days=days))
    which = "all days" if days is None else f"days {[str(d) for d in days]}"
    if not files:
        raise EmptySplitError(f"table {table!r} at version {pinned} has no data file for {which}: nothing to read")
    if sum(_row_group_rows(files)) == 0:
        raise EmptySplitError(f"table {table!r} at version {pinned} has no row for {which}: nothing to read")
    return pinned, files


@contextlib.contextmanager
def _parquet(uri: str) -> Iterator[pq.ParquetFile]:
    """Open a data file given as ``file://`` URI, plain path, or any URI pyarrow has a filesystem for."""
    if uri.startswith("file://"):
        source: Any = uri[len("file://"):]
    elif "://" not in uri:
        source = uri
    else:
        import pyarrow.fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(uri)
        source = filesystem.open_input_file(path)
    parquet_file = pq.ParquetFile(source)
    try:
        yield parquet_file
    finally:
        parquet_file.close()
        if not isinstance(source, str):
            source.close()


def _row_group_rows(files: Sequence[str]) -> list[int]:
    """Rows of every row group, in Petastorm's enumeration order (file list order, then row groups in a file)."""
    rows = []
    for uri in files:
        with _parquet(uri) as parquet_file:
            metadata = parquet_file.metadata
            rows.extend(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return rows


def row_group_count(files: Sequence[str]) -> int:
    """Number of Parquet row groups in ``files`` (from the footers; no data read)."""
    return len(_row_group_rows(files))


def rank_candidate_count(files: Sequence[str]) -> int:
    """Candidates per ``features/rank_eval`` row (the width of ``cand_item_idx`` in the first row; 0 if none)."""
    for uri in sorted(files):
        with _parquet(uri) as parquet_file:
            for batch in parquet_file.iter_batches(batch_size=1, columns=["cand_item_idx"]):
                if batch.num_rows:
                    return len(batch.column(0)[0])
    return 0


def negative_fallback_counts(files: Sequence[str]) -> tuple[int, int]:
    """(sampled, steps): history steps whose aligned negative was drawn from the catalogue (``neg_is_sampled``),
    and all valid history steps (``hist_len`` summed); padding steps are not counted, whatever they hold."""
    sampled = steps = 0
    for uri in sorted(files):
        with _parquet(uri) as parquet_file:
            for batch in parquet_file.iter_batches(columns=["neg_is_sampled", "hist_len"]):
                flags = _arrow_column_to_numpy(batch.column(0))
                lengths = _arrow_column_to_numpy(batch.column(1))
                if len(lengths):
                    valid = np.arange(flags.shape[1]) < lengths[:, None]
                    sampled += int(flags[valid].sum())
                    steps += int(lengths.sum())
    return sampled, steps


def distinct_items(files: Sequence[str], columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Every item of ``files`` once, by ascending ``item_idx``, with its side ``columns`` (from its first row)."""
    parts = []
    for uri in sorted(files):
        with _parquet(uri) as parquet_file:
            parts.append(parquet_file.read(columns=list(dict.fromkeys(["item_idx", *columns]))))
    table = pa.concat_tables(parts)
    _, first = np.unique(table.column("item_idx").to_numpy(), return_index=True)  # sorted by item_idx
    table = table.take(pa.array(first))
    return {name: table.column(name).to_numpy() for name in table.column_names}


def check_shardable(files: Sequence[str], world_size: int) -> list[int]:
    """Raise :class:`NotEnoughDataError` when ``files`` have fewer row groups than ``world_size`` ranks.

    Every rank computes the same answer from the same footers, so all of them raise before any collective and
    nothing hangs. Returns the number of rows each rank will read (index = rank), useful for the run's log.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    rows = _row_group_rows(sorted(files))
    if len(rows) < world_size:
        raise NotEnoughDataError(
            f"{len(rows)} row group(s) in {len(files)} file(s) cannot feed {world_size} ranks: Petastorm gives each "
            f"rank whole row groups, so some rank would get no data. Train on at most {len(rows)} rank(s), or write "
            "the split as more files (or smaller row groups)."
        )
    return [sum(rows[rank::world_size]) for rank in range(world_size)]


# --------------------------------------------------------------------------------------- arrow/numpy conversion
def _needed_columns(specs: Sequence[FeatureSpec], extra_columns: Sequence[str]) -> list[str]:
    columns = list(BASE_COLUMNS)
    for spec in specs:
        columns.append(spec.column)
        if spec.length_column:
            columns.append(spec.length_column)
    columns.extend(extra_columns)
    return list(dict.fromkeys(columns))


def _check_columns(files: Sequence[str], columns: Sequence[str]) -> None:
    with _parquet(files[0]) as parquet_file:
        present = set(parquet_file.schema_arrow.names)
    missing = [c for c in columns if c not in present]
    if missing:
        hint = " (ds is a partition column: it lives in the folder names, not in the files)" if "ds" in missing else ""
        raise KeyError(f"column(s) {missing} are not in {files[0]}{hint}; it has {sorted(present)}")


def _arrow_column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as Petastorm lays it out: 1-D for scalars, [n, L] for fixed-width lists, str for strings."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        n = len(array)
        sizes = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        width = int(sizes[0]) if n else 0
        if n and (sizes != width).any():
            raise ValueError(f"list column of type {array.type} holds rows of different lengths {sorted(set(sizes))}")
        return array.flatten().to_numpy(zero_copy_only=False).reshape(n, width)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.asarray(array.to_pylist(), dtype=str)
    return array.to_numpy(zero_copy_only=False)


def _to_tensor(name: str, array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind == "M":  # timestamps -> int64 microseconds since the epoch
        array = array.astype("datetime64[us]").astype(np.int64)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"extra column {name!r} of dtype {array.dtype} cannot become a tensor (numeric columns only)")
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def _to_batch(
    columns: Mapping[str, np.ndarray], specs: Sequence[FeatureSpec], extra_columns: Sequence[str]
) -> Batch:
    """Vectorised numpy: padded [B, L] columns + lengths -> jagged values + lengths (no per-row Python)."""
    n = len(columns["label"])
    values, lengths, per_key = [], [], []
    for spec in specs:
        data = np.asarray(columns[spec.column])
        if not spec.is_sequence:
            if data.ndim != 1:
                raise ValueError(f"column {spec.column!r} of scalar feature {spec.name!r} has shape {data.shape}")
            values.append(data.astype(np.int64, copy=False))
            lengths.append(np.ones(n, dtype=np.int32))
            per_key.append(n)
            continue
        if data.ndim != 2:
            raise ValueError(
                f"column {spec.column!r} of sequence feature {spec.name!r} has shape {data.shape}, not [B, L]"
            )
        width = data.shape[1]
        if spec.length_column is None:  # candidates: the whole fixed-width row
            values.append(data.reshape(-1).astype(np.int64, copy=False))
            lengths.append(np.full(n, width, dtype=np.int32))
            per_key.append(n * width)
            continue
        row_lengths = np.asarray(columns[spec.length_column])
        if n and (row_lengths.min() < 0 or row_lengths.max() > width):
            bad = row_lengths[(row_lengths < 0) | (row_lengths > width)][0]
            raise SequenceLengthError(
                f"length column {spec.length_column!r} holds {int(bad)}, outside [0, {width}] of {spec.column!r} "
                f"(feature {spec.name!r}, L = {width})"
            )
        mask = np.arange(width) < row_lengths[:, None]
        values.append(data[mask].astype(np.int64, copy=False))
        lengths.append(row_lengths.astype(np.int32))
        per_key.append(int(row_lengths.sum()))
    sparse = KeyedJaggedTensor(
        keys=[spec.name for spec in specs],
        values=torch.from_numpy(np.concatenate(values) if values else np.zeros(0, dtype=np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)),
        stride=n,
        length_per_key=per_key,
    )
    return Batch(
        sparse=sparse,
        labels=torch.from_numpy(np.asarray(columns["label"]).astype(np.float32)),
        groups=torch.from_numpy(np.asarray(columns["user_idx"]).astype(np.int64)),
        weights=torch.ones(n, dtype=torch.float32),
        sample_ids=np.asarray(columns["sample_id"]).astype(str),
        extras={name: _to_tensor(name, np.asarray(columns[name])) for name in extra_columns},
    )


def _take(chunk: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: data[start:stop] for name, data in chunk.items()}


def _concat(pieces: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(pieces) == 1:
        return dict(pieces[0])
    out = {}
    for name in pieces[0]:
        parts = [piece[name] for piece in pieces]
        if len({part.shape[1:] for part in parts}) > 1:
            raise ValueError(
                f"column {name!r} has different widths across row groups {sorted({p.shape[1:] for p in parts})}: "
                "a table's sequence columns must all have the same fixed length"
            )
        out[name] = np.concatenate(parts)
    return out


def _rebatch(
    chunks: Iterable[Mapping[str, np.ndarray]], batch_size: int, drop_last: bool
) -> Iterator[dict[str, np.ndarray]]:
    """Petastorm's row-group-sized chunks -> exactly ``batch_size`` rows, the remainder carried to the next chunk."""
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    for chunk in chunks:
        n = len(chunk["label"])
        start = 0
        if pending_rows:
            start = min(batch_size - pending_rows, n)
            pending.append(_take(chunk, 0, start))
            pending_rows += start
            if pending_rows < batch_size:
                continue
            yield _concat(pending)
            pending, pending_rows = [], 0
        while n - start >= batch_size:
            yield _take(chunk, start, start + batch_size)
            start += batch_size
        if start < n:
            pending, pending_rows = [_take(chunk, start, n)], n - start
    if pending_rows and not drop_last:
        yield _concat(pending)


# ------------------------------------------------------------------------------------------------- the reader
class BatchStream(Iterator[Batch]):
    """The iterator :func:`read_batches` returns: batches from one background thread, with shard bookkeeping.

    ``shard_rows`` (rows of this rank's row groups, from the footers), ``rows_yielded`` and ``rows_remaining``
    let :func:`synchronised` count the rows an epoch did not use without reading them. ``close()`` (also on
    ``with``, at garbage collection and at exit) stops the thread and the Petastorm reader.
    """

    def __init__(
        self,
        files: Sequence[str],
        specs: Sequence[FeatureSpec],
        columns: Sequence[str],
        extra_columns: Sequence[str],
        batch_size: int,
        reader_kwargs: dict[str, Any],
        drop_last: bool,
        prefetch: int,
        shard_rows: int,
        row_seed: tuple[int, int] | None = None,
        row_shard: tuple[int, int] | None = None,
        candidates: bool = False,
    ):
        self.files, self.shard_rows, self.rows_yielded = list(files), shard_rows, 0
        self._specs, self._columns, self._extra_columns = list(specs), list(columns), tuple(extra_columns)
        self._candidates = candidates
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._done = False
        producer = _Producer(self._queue, self._stop, self.files, self._specs, self._columns, self._extra_columns,
                             batch_size, drop_last, reader_kwargs, row_seed, row_shard, candidates)
        self._thread = threading.Thread(target=producer.run, name=_THREAD_NAME, daemon=True)
        self._thread.start()
        # stops the thread when the stream is closed, garbage-collected (an abandoned loop) or at exit
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._thread)

    @property
    def rows_remaining(self) -> int:
        """Rows of this rank's shard not yielded (yet, or ever: the tail ``drop_last`` dropped)."""
        return self.shard_rows - self.rows_yielded

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self._done:
            raise StopIteration
        while True:
            try:
                kind, payload = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("the reader thread ended without a result") from None
        if kind == "batch":
            self.rows_yielded += len(payload)
            return payload
        self.close()
        if kind == "error":
            raise payload
        raise StopIteration

    def close(self) -> None:
        self._done = True
        self._finalizer()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def filler(self, device: torch.device | str = "cpu") -> Batch:
        """A weight-0 batch shaped like real data (the first row of the first file), for a rank without data."""
        with _parquet(self.files[0]) as parquet_file:
            table = next(parquet_file.iter_batches(batch_size=1, columns=self._columns))
        columns = {name: _arrow_column_to_numpy(table.column(name)) for name in self._columns}
        if self._candidates:
            columns = _take(expand_candidates(columns), 0, 1)
        return _to_batch(columns, self._specs, self._extra_columns).masked().to(device)


def _shutdown(stop: threading.Event, items: queue.Queue, thread: threading.Thread) -> None:
    stop.set()
    with contextlib.suppress(queue.Empty):
        while True:  # unblock a producer waiting on a full queue at once
            items.get_nowait()
    if thread is not threading.current_thread():
        thread.join()


def _fixed_width_matrix(column: pa.ChunkedArray) -> np.ndarray | None:
    """``[rows, width]`` array of a list column whose rows all have ``width`` non-null values; else None."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)) or array.null_count:
        return None
    widths = np.diff(np.asarray(array.offsets))
    if len(widths) == 0 or (widths != widths[0]).any():
        return None
    values = array.flatten()  # the rows' values in order (honours a sliced array's offset)
    if values.null_count or not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        return None
    return values.to_numpy().reshape(len(array), int(widths[0]))


class _OneResult:
    """A stand-in for Petastorm's workers pool that hands out one given result table."""

    def __init__(self, table: pa.Table):
        self.table = table

    def get_results(self) -> pa.Table:
        return self.table


class _ColumnsAsDict:
    """A stand-in for Petastorm's schema: same fields, but its rows come back as a dict of the given columns."""

    def __init__(self, schema: Any):
        self.fields = schema.fields

    @staticmethod
    def make_namedtuple(**columns: Any) -> dict[str, Any]:
        return columns


def use_flat_list_results(reader: Any) -> None:
    """Make a Petastorm batch reader turn fixed-width numeric list columns into 2-D arrays without Python objects.

    Petastorm 0.12.1's results reader (``ArrowReaderWorkerResultsQueueReader.read_next``) converts a list column
    with ``np.vstack(column.to_pandas().tolist())``: one numpy array per row, then a stack, which was most of its
    cost against a bare pyarrow scan (``benchmarks/loader.py``). Here the same reader converts the other columns
    as it always does, and each list column whose rows all have the same length (every sequence column here:
    padded to L) becomes the reshaped view of Arrow's flat values: the same values, dtype and shape. A column it
    cannot take that way (unequal lengths, nulls, a multi-dimensional field) is left to Petastorm unchanged, so
    Petastorm still raises its own error for unequal lengths. A reader of another kind is left as it is.
    """
    from petastorm.arrow_reader_worker import ArrowReaderWorkerResultsQueueReader
    from petastorm.workers_pool import EmptyResultError

    current = getattr(reader, "_results_queue_reader", None)
    if type(current) is not ArrowReaderWorkerResultsQueueReader:
        return

    class FlatListResultsQueueReader(ArrowReaderWorkerResultsQueueReader):
        def read_next(self, workers_pool: Any, schema: Any, ngram: Any) -> Any:
            try:
                table = workers_pool.get_results()
            except EmptyResultError:
                raise StopIteration from None
            converted = {}
            for name in table.column_names:
                field_shape = getattr(schema.fields.get(name), "shape", None)
                if field_shape is not None and len(field_shape) > 1:
                    continue
                matrix = _fixed_width_matrix(table.column(name))
                if matrix is not None:
                    converted[name] = matrix
            rest = table.drop_columns(list(converted))  # Petastorm converts what is left (maybe nothing)
            others = super().read_next(_OneResult(rest), _ColumnsAsDict(schema), ngram)
            return schema.make_namedtuple(**{**others, **converted})

    reader._results_queue_reader = FlatListResultsQueueReader()


@dataclass
class _Producer:
    items: queue.Queue
    stop: threading.Event
    files: list[str]
    specs: list[FeatureSpec]
    columns: list[str]
    extra_columns: tuple[str, ...]
    batch_size: int
    drop_last: bool
    reader_kwargs: dict[str, Any]
    row_seed: tuple[int, int] | None
    row_shard: tuple[int, int] | None = None  # (rank, world_size) when rows, not row groups, are sharded
    candidates: bool = False  # expand features/rank_eval rows into one row per candidate

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            from petastorm import make_batch_reader

            reader = make_batch_reader(
                self.files, schema_fields=[re.escape(c) for c in self.columns], **self.reader_kwargs
            )
            use_flat_list_results(reader)
            try:
                chunks: Iterable[dict[str, np.ndarray]] = (
                    {name: getattr(chunk, name) for name in self.columns} for chunk in reader
                )
                if self.row_shard is not None:
                    chunks = _row_shard(chunks, *self.row_shard)
                if self.row_seed is not None:
                    # Rows are shuffled within each row group here rather than by Petastorm (shuffle_rows), whose
                    # Arrow take() on the list columns costs more than the whole numpy permutation (benchmark).
                    chunks = _permuted(chunks, np.random.default_rng(self.row_seed))
                if self.candidates:
                    chunks = (expand_candidates(chunk) for chunk in chunks)
                for rows in _rebatch(chunks, self.batch_size, self.drop_last):
                    if self.stop.is_set() or not self._put(("batch", _to_batch(rows, self.specs, self.extra_columns))):
                        return
            finally:
                reader.stop()
                reader.join()
            self._put(("done", None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(("error", err))


#: ``features/rank_eval`` candidate column -> the sample column each candidate stands in for.
CANDIDATE_COLUMNS: dict[str, str] = {"cand_item_idx": "item_idx", "cand_cate_idx": "cate_idx",
                                     "cand_shop_idx": "shop_idx", "cand_brand_idx": "brand_idx"}


def expand_candidates(chunk: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Leave-one-out rows -> one ordinary sample row per candidate, so any CTR model scores candidates unchanged.

    A ``features/rank_eval`` row holds a held-out positive with its user, history and sets, and ``cand_*_idx``
    arrays [n, C] (the positive first, then its negatives). Each row becomes C consecutive rows, copies of it with
    ``item_idx``/``cate_idx``/``shop_idx``/``brand_idx`` replaced by candidate c, ``label`` 1 for c = 0 and 0
    otherwise, and ``sample_id`` "<id>#c"; the ``cand_*`` columns are dropped. Rows of one user stay together, so
    a batch of a multiple of C rows holds whole users. Example: one row with item 7 and candidates [7, 3, 9]
    becomes three rows with items 7, 3, 9 and labels 1, 0, 0.
    """
    present = [c for c in CANDIDATE_COLUMNS if c in chunk]
    if "cand_item_idx" not in present:
        raise KeyError("expand_candidates needs cand_item_idx (a features/rank_eval table)")
    n, width = chunk["cand_item_idx"].shape
    out = {name: np.repeat(data, width, axis=0) for name, data in chunk.items() if name not in CANDIDATE_COLUMNS}
    for cand in present:
        out[CANDIDATE_COLUMNS[cand]] = np.asarray(chunk[cand]).reshape(-1).astype(np.int64, copy=False)
    out["label"] = np.tile((np.arange(width) == 0).astype(np.int32), n)
    ids = np.asarray(chunk["sample_id"]).astype(str)
    out["sample_id"] = np.char.add(np.repeat(np.char.add(ids, "#"), width), np.tile(np.arange(width).astype(str), n))
    return out


def _row_shard(chunks: Iterable[dict[str, np.ndarray]], rank: int, world_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Rows whose position in the whole read (every row group, in order) is ``rank`` modulo ``world_size``."""
    seen = 0
    for chunk in chunks:
        n = len(chunk["label"])
        keep = (np.arange(seen, seen + n) % world_size) == rank
        seen += n
        yield {name: data[keep] for name, data in chunk.items()}


def _permuted(chunks: Iterable[dict[str, np.ndarray]], rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    for chunk in chunks:
        order = rng.permutation(len(chunk["label"]))
        yield {name: data[order] for name, data in chunk.items()}


def read_batches(
    files: Sequence[str],
    features: Sequence[str],
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    extra_columns: Sequence[str] = (),
    prefetch: int = 4,
    shard: Literal["row_groups", "rows"] = "row_groups",
    candidates: bool = False,
) -> BatchStream:
    """Batches of exactly ``batch_size`` rows (the last one smaller unless ``drop_last``) of this rank's shard.

    Petastorm ``make_batch_reader`` over the sorted ``files`` with only the needed columns, the dummy pool
    (deterministic order), row groups shuffled by Petastorm with ``seed + epoch`` and the rows of each row group
    by a numpy permutation seeded with ``(seed, epoch)`` when ``shuffle``, shard ``rank`` of
    ``world_size`` (whole row groups, ``index % world_size == rank``), one epoch. Reading and conversion run in one
    background thread holding at most ``prefetch`` converted batches; an error there re-raises here. Close the
    returned stream (or leave the ``for`` loop and drop it) to stop the thread and the Petastorm reader.

    ``shard="rows"`` reads every row group on every rank and keeps the rows whose position is ``rank`` modulo
    ``world_size`` (for small tables with fewer row groups than ranks, such as ``features/rank_eval``).
    ``candidates=True`` reads a ``features/rank_eval`` table and yields one row per candidate
    (:func:`expand_candidates`); ``batch_size`` then counts expanded rows (use a multiple of the candidate count to
    keep each user's candidates in one batch).
    """
    if batch_size < 1 or prefetch < 1:
        raise ValueError(f"batch_size and prefetch must be >= 1, got {batch_size} and {prefetch}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if not files:
        raise EmptySplitError("no data file to read")
    if len(set(files)) != len(files):
        raise ValueError("the file list names a file twice: its rows would be read twice")
    specs = feature_specs(tuple(features))
    if not specs:
        raise ValueError("ask for at least one feature")
    if shard not in ("row_groups", "rows"):
        raise ValueError(f"shard must be 'row_groups' or 'rows', got {shard!r}")
    files = sorted(files)
    columns = _needed_columns(specs, extra_columns)
    if candidates:
        with _parquet(files[0]) as parquet_file:
            present = set(parquet_file.schema_arrow.names)
        columns = [c for c in columns if c not in CANDIDATE_COLUMNS.values()]  # they come from the candidates
        columns += [c for c in CANDIDATE_COLUMNS if c in present or c == "cand_item_idx"]
    _check_columns(files, columns)
    if shard == "rows":
        total = sum(_row_group_rows(files))
        shard_rows = len(range(rank, total, world_size))
    else:
        shard_rows = check_shardable(files, world_size)[rank]
    if candidates and shard_rows:
        with _parquet(files[0]) as parquet_file:
            first = next(parquet_file.iter_batches(batch_size=1, columns=["cand_item_idx"]))
        shard_rows *= len(first.column(0)[0])  # rows_remaining counts expanded rows
    reader_kwargs = dict(
        reader_pool_type="dummy",
        shuffle_row_groups=shuffle,
        shuffle_rows=False,  # rows are shuffled here, after Petastorm: see _Producer.run
        # Petastorm shuffles a shard's row-group list with ``seed`` even when shuffle_row_groups is False: no seed
        # then, so that an unshuffled read is the sorted files' own order whatever the epoch
        seed=seed + epoch if shuffle else None,
        cur_shard=rank if shard == "row_groups" else None,
        shard_count=world_size if shard == "row_groups" else None,
        num_epochs=1,
    )
    row_seed = (seed, epoch) if shuffle else None
    row_shard = (rank, world_size) if shard == "rows" else None
    return BatchStream(files, specs, columns, tuple(extra_columns), batch_size, reader_kwargs, drop_last, prefetch,
                       shard_rows, row_seed, row_shard, candidates)


# --------------------------------------------------------------------------------------------- equal steps
@dataclass
class SyncStats:
    """What :func:`synchronised` did on this rank (``steps`` is the same on every rank)."""

    mode: str
    steps: int = 0  # batches yielded, real and filler
    real_batches: int = 0
    filler_batches: int = 0  # eval: steps this rank ran on a weight-0 filler after its data ran out
    rows: int = 0  # real rows yielded
    rows_not_used: int = 0  # rows of this rank's shard never yielded: train's cut at the shortest rank, drop_last
    rows_not_used_all_ranks: int | None = None  # sum over ranks; set when the iteration ends (one all_reduce)


class Synchronised(Iterator[Batch]):
    """The iterator :func:`synchronised` returns; ``stats`` is filled as it goes (totals once it ends)."""

    def __init__(self, batches: Iterator[Batch], mode: Literal["train", "eval"], features: Sequence[str],
                 device: torch.device | str):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.stats = SyncStats(mode=mode)
        self._batches, self._mode = iter(batches), mode
        self._features, self._device = tuple(features), torch.device(device)
        self._steps = self._run()

    def __iter__(self) -> Synchronised:
        return self

    def __next__(self) -> Batch:
        return next(self._steps)

    def close(self) -> None:
        self._steps.close()
        closer: Callable[[], None] | None = getattr(self._batches, "close", None)
        if closer is not None:
            closer()

    def _filler(self, last: Batch | None) -> Batch:
        if last is not None:
            return last.masked()
        template = getattr(self._batches, "filler", None)
        if callable(template):
            return template(self._device)
        return Batch.filler(self._features, self._device)

    def _run(self) -> Iterator[Batch]:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        flag_device = torch.device("cpu")
        if distributed and torch.distributed.get_backend() == "nccl":
            flag_device = torch.device("cuda", torch.cuda.current_device())
        op = torch.distributed.ReduceOp.MIN if self._mode == "train" else torch.distributed.ReduceOp.MAX
        stats, last, exhausted = self.stats, None, False
        while True:
            batch = None if exhausted else next(self._batches, None)
            exhausted = batch is None
            if distributed:
                flag = torch.tensor([0 if batch is None else 1], dtype=torch.int64, device=flag_device)
                torch.distributed.all_reduce(flag, op=op)
                go = bool(flag.item())
            else:
                go = batch is not None
            if not go:
                if batch is not None:  # train: another rank is out; this batch is not used
                    stats.rows_not_used += len(batch)
                break
            if batch is None:
                out = self._filler(last)
                stats.filler_batches += 1
            else:
                last = out = batch
                stats.real_batches += 1
                stats.rows += len(batch)
            stats.steps += 1
            yield out.to(self._device)
        remaining = getattr(self._batches, "rows_remaining", None)
        if remaining is None:  # a plain iterator: count what is left by reading it
            remaining = 0 if exhausted else sum(len(b) for b in self._batches)
        stats.rows_not_used += remaining
        closer = getattr(self._batches, "close", None)
        if closer is not None:
            closer()
        if distributed:
            total = torch.tensor([stats.rows_not_used], dtype=torch.int64, device=flag_device)
            torch.distributed.all_reduce(total)
            stats.rows_not_used_all_ranks = int(total.item())
        else:
            stats.rows_not_used_all_ranks = stats.rows_not_used


def synchronised(
    batches: Iterator[Batch],
    *,
    mode: Literal["train", "eval"],
    features: Sequence[str],
    device: torch.device | str = "cpu",
) -> Synchronised:
    """The same number of steps on every rank of the default process group (a pass-through without one).

    Each step all-reduces a has-batch flag (one int64; on the GPU for nccl). ``mode="train"`` stops every rank as
    soon as one is out (MIN); ``mode="eval"`` goes on while any rank has data (MAX), the finished ranks yielding
    a filler of weight 0: the last batch ``masked()``, else a row shaped like the data (``BatchStream.filler``),
    else :meth:`Batch.filler`. Batches are moved to ``device``. ``.stats`` (:class:`SyncStats`) counts real and
    filler steps and the rows not used; its ``rows_not_used_all_ranks`` takes one more all-reduce when the
    iteration ends, which every rank reaches at the same step. Leaving the loop early on every rank alike is
    fine; leaving it on one rank only is the caller's hang.
    """
    return Synchronised(batches, mode, features, device)


# ------------------------------------------------------------------------------------------ data checks
def _index_columns(features: Sequence[str], table_sizes: Mapping[str, int]) -> list[FeatureSpec]:
    specs = feature_specs(tuple(features))
    missing = sorted({s.table for s in specs} - set(table_sizes))
    if missing:
        raise KeyError(f"table_sizes lacks the embedding table(s) {missing}")
    return specs


def check_index_ranges(files: Sequence[str], features: Sequence[str], table_sizes: Mapping[str, int]) -> None:
    """Raise :class:`IndexOutOfRangeError` if an index column of ``features`` has a value outside [0, size).

    Uses the Parquet min/max statistics of every row group (list columns have them on their leaf column) and
    scans a column chunk only where they are missing. Padding is 0, always in range, so it needs no special case.
    """
    specs = _index_columns(features, table_sizes)
    columns = {spec.column: table_sizes[spec.table] for spec in specs}
    tables = {spec.column: spec.table for spec in specs}
    low: dict[str, tuple[int, str]] = {}
    high: dict[str, tuple[int, str]] = {}

    def note(column: str, lo: Any, hi: Any, uri: str) -> None:
        if lo is None:
            return
        if column not in low or lo < low[column][0]:
            low[column] = (int(lo), uri)
        if column not in high or hi > high[column][0]:
            high[column] = (int(hi), uri)

    for uri in sorted(files):
        with _parquet(uri) as parquet_file:
            metadata = parquet_file.metadata
            leaves = {}
            for i in range(metadata.num_columns):
                top = metadata.schema.column(i).path.split(".")[0]
                if top in columns:
                    leaves[top] = i
            absent = sorted(set(columns) - set(leaves))
            if absent:
                raise KeyError(f"index column(s) {absent} are not in {uri}")
            for g in range(metadata.num_row_groups):
                row_group = metadata.row_group(g)
                for column, i in leaves.items():
                    chunk = row_group.column(i)
                    statistics = chunk.statistics
                    if statistics is not None and statistics.has_min_max:
                        note(column, statistics.min, statistics.max, uri)
                    elif chunk.num_values > 0:  # no statistics: read this column chunk
                        data = parquet_file.read_row_group(g, columns=[column]).column(0).combine_chunks()
                        if pa.types.is_list(data.type):
                            data = data.flatten()
                        bounds = pc.min_max(data).as_py()
                        note(column, bounds["min"], bounds["max"], uri)
    for column, size in columns.items():
        if column in high and high[column][0] >= size:
            raise IndexOutOfRangeError(
                f"column {column!r} holds the index {high[column][0]} (largest found, in {high[column][1]}) but "
                f"embedding table {tables[column]!r} has size {size} (valid indices 0..{size - 1}); rebuild the "
                "vocabulary or the samples so that they match"
            )
        if column in low and low[column][0] < 0:
            raise IndexOutOfRangeError(
                f"column {column!r} holds the negative index {low[column][0]} (in {low[column][1]}); embedding "
                f"table {tables[column]!r} has size {size} (valid indices 0..{size - 1})"
            )


def id_frequencies(
    files: Sequence[str], features: Sequence[str], table_sizes: Mapping[str, int], *, batch_rows: int = 65_536
) -> dict[str, np.ndarray]:
    """table -> n [size] int64: the number of rows (samples) whose requested features of that table contain j.

    A row counts once for j however often j appears in it (across its features and sequence steps): the frequency
    DIN's mini-batch aware regularisation divides by. Sequence padding beyond the length does not count;
    candidate features count their whole row. Vectorised: unique(row * size + id), then bincount.
    """
    specs = _index_columns(features, table_sizes)
    by_table: dict[str, list[FeatureSpec]] = {}
    for spec in specs:
        by_table.setdefault(spec.table, []).append(spec)
    counts = {table: np.zeros(table_sizes[table], dtype=np.int64) for table in by_table}
    columns = list(dict.fromkeys(c for s in specs for c in (s.column, s.length_column) if c))
    for uri in sorted(files):
        with _parquet(uri) as parquet_file:
            for record_batch in parquet_file.iter_batches(batch_size=batch_rows, columns=columns):
                data = {name: _arrow_column_to_numpy(record_batch.column(name)) for name in columns}
                n = record_batch.num_rows
                for table, table_specs in by_table.items():
                    size = table_sizes[table]
                    ids, rows = [], []
                    for spec in table_specs:
                        values = data[spec.column]
                        if not spec.is_sequence:
                            ids.append(values)
                            rows.append(np.arange(n))
                            continue
                        width = values.shape[1]
                        if spec.length_column is None:
                            mask = np.ones(values.shape, dtype=bool)
                        else:
                            lengths = data[spec.length_column]
                            if n and (lengths.min() < 0 or lengths.max() > width):
                                raise SequenceLengthError(
                                    f"length column {spec.length_column!r} holds values outside [0, {width}] in {uri}"
                                )
                            mask = np.arange(width) < lengths[:, None]
                        ids.append(values[mask])
                        rows.append(np.nonzero(mask)[0])
                    id_array = np.concatenate(ids).astype(np.int64, copy=False)
                    if id_array.size and (id_array.min() < 0 or id_array.max() >= size):
                        bad = id_array[(id_array < 0) | (id_array >= size)][0]
                        raise IndexOutOfRangeError(
                            f"table {table!r} of size {size} gets the index {int(bad)} from one of the columns "
                            f"{[s.column for s in table_specs]} in {uri}"
                        )
                    keys = np.unique(np.concatenate(rows).astype(np.int64) * size + id_array)
                    counts[table] += np.bincount(keys % size, minlength=size)
    return counts
