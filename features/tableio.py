"""Lakehouse table IO on Delta Lake: the only module that touches delta-spark and deltalake (delta-rs).

One Delta table per folder under a lakehouse root, named by a relative path such as ``"raw/events"``.

* Spark DataFrames go through **delta-spark** (:meth:`Lakehouse.write`, :meth:`Lakehouse.read`,
  :meth:`Lakehouse.add_constraints`): what the jobs use, on a cluster and on the embedded default alike.
* Arrow / pandas data goes through **deltalake** (:meth:`Lakehouse.write_arrow`, :meth:`Lakehouse.read_arrow`,
  :meth:`Lakehouse.files`, :meth:`Lakehouse.version`, :meth:`Lakehouse.history`): what JVM-free processes use
  (training ranks, Airflow callbacks). pyspark is imported only inside the Spark-side methods, so such a process
  never loads it.

Both sides offer the same write modes:

* ``mode="append"``: add rows. With ``txn=(app_id, version)`` an append happens once: a retry with the same
  pair is skipped (Delta's idempotent-write ids; delta-rs records them and this module checks before writing).
* ``mode="overwrite"``: replace the whole table's rows (its schema must stay the same).
* ``mode="overwrite", replace_ds=[d1, ...]``: replace only those ``ds`` partitions (``replaceWhere`` /
  delta-rs predicate). A row of another day in the data is an error and the table is left unchanged.

Schema enforcement: data whose columns or types differ from the table's is refused with
:class:`SchemaMismatchError` naming the columns (no silent cast, no schema replacement). Nullability is not
compared: Spark marks almost every computed column nullable.

Every commit is atomic (a new ``_delta_log`` entry is created or not), so a failed or killed write leaves the
table at its previous version; both libraries may write the same table concurrently (optimistic concurrency).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, write_deltalake

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

WriteMode = Literal["append", "overwrite"]
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_TABLE_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
_CONSTRAINT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TableNameError(ValueError):
    """A table name that is not a plain relative path inside the lakehouse."""


class TableNotFoundError(FileNotFoundError):
    """The named table (or the requested version of it) does not exist."""


class SchemaMismatchError(ValueError):
    """The data's schema conflicts with the table's."""

    def __init__(self, table: str, missing: list[str], extra: list[str], changed: list[str]):
        self.table, self.missing, self.extra, self.changed = table, missing, extra, changed
        parts = []
        if missing:
            parts.append(f"columns missing from the data: {', '.join(missing)}")
        if extra:
            parts.append(f"columns not in the table: {', '.join(extra)}")
        if changed:
            parts.append(f"columns with another type: {', '.join(changed)}")
        super().__init__(
            f"schema of the data conflicts with table {table!r}: " + "; ".join(parts)
            + ". Nothing was written (schemas are never cast or replaced silently)."
        )


class TablePropertyError(ValueError):
    """A write asked for table properties that differ from those the table already has."""


class PartitionOverwriteError(ValueError):
    """Data given to a ``replace_ds`` overwrite holds rows of a day outside the replaced days."""


def _ds_strings(days: Iterable[dt.date | str], what: str = "replace_ds") -> list[str]:
    if isinstance(days, str | dt.date):
        raise TypeError(f"{what} takes a collection of dates, got the single value {days!r}")
    out = []
    for day in days:
        if isinstance(day, dt.datetime):
            raise TypeError(f"{what} takes dates, got the datetime {day!r}")
        out.append(day.isoformat() if isinstance(day, dt.date) else dt.date.fromisoformat(day).isoformat())
    if not out:
        raise ValueError(f"{what} is empty: name at least one ds partition")
    return sorted(set(out))


def _strip_nullability(node: Any) -> Any:
    """A Delta/Spark schema JSON reduced to names and types (nullability and metadata dropped)."""
    if isinstance(node, dict):
        return {
            key: _strip_nullability(value)
            for key, value in node.items()
            if key not in {"nullable", "containsNull", "valueContainsNull", "metadata"}
        }
    if isinstance(node, list):
        return [_strip_nullability(value) for value in node]
    return node


def schema_diff(table: str, table_schema: Mapping[str, Any], data_schema: Mapping[str, Any]) -> None:
    """Raise SchemaMismatchError unless both Delta schema JSONs have the same column names and types."""
    table_fields = {f["name"]: _strip_nullability(f["type"]) for f in table_schema["fields"]}
    data_fields = {f["name"]: _strip_nullability(f["type"]) for f in data_schema["fields"]}
    missing = sorted(set(table_fields) - set(data_fields))
    extra = sorted(set(data_fields) - set(table_fields))
    changed = sorted(
        f"{name} ({json.dumps(table_fields[name])} in the table, {json.dumps(data_fields[name])} in the data)"
        for name in set(table_fields) & set(data_fields)
        if table_fields[name] != data_fields[name]
    )
    if missing or extra or changed:
        raise SchemaMismatchError(table, missing, extra, changed)


def _check_properties(table: str, current: Mapping[str, str], wanted: Mapping[str, str]) -> None:
    clashes = {k: (current[k], v) for k, v in wanted.items() if k in current and current[k] != v}
    if clashes:
        raise TablePropertyError(
            f"table {table!r} was built with " + ", ".join(f"{k}={old!r}" for k, (old, _) in clashes.items())
            + "; this write has " + ", ".join(f"{k}={new!r}" for k, (_, new) in clashes.items())
            + ". Nothing was written: write to another table or rebuild this one with the new settings."
        )


def _squeeze(sql: str) -> str:
    return re.sub(r"\s+", "", sql).lower()


def _sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Lakehouse:
    """A lakehouse root: a local folder, or a URI (``s3a://...``, ``hdfs://...``) on a cluster."""

    root: str

    def __init__(self, root: str | Path):
        text = str(root)
        is_uri = "://" in text and not text.startswith("file://")
        normalised = text.rstrip("/") if is_uri else str(Path(text.removeprefix("file://")).expanduser().resolve())
        object.__setattr__(self, "root", normalised)

    @property
    def is_local(self) -> bool:
        return "://" not in self.root

    # ------------------------------------------------------------------ names and metadata (no JVM)
    def path(self, table: str) -> str:
        """Location of ``table``; raises TableNameError for names that could leave the lakehouse."""
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            raise TableNameError(
                f"invalid table name {table!r}: use a relative path of letters, digits, '_', '-', '.' "
                "segments such as 'raw/events' (no '..', no absolute paths)"
            )
        if not self.is_local:
            return f"{self.root}/{table}"
        root = Path(self.root)
        location = (root / table).resolve()  # follows symlinks: a link pointing outside is refused too
        if not location.is_relative_to(root):
            raise TableNameError(f"table {table!r} resolves to {location}, outside the lakehouse {root}")
        return str(location)

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.path(table))

    def _delta_table(self, table: str, version: int | None = None) -> DeltaTable:
        location = self.path(table)
        if not DeltaTable.is_deltatable(location):
            raise TableNotFoundError(f"no Delta table {table!r} at {location}")
        try:
            return DeltaTable(location, version=version)
        except Exception as err:  # delta-rs raises a generic error for a missing or vacuumed version
            if version is None:
                raise
            latest = DeltaTable(location).version()
            raise TableNotFoundError(
                f"table {table!r} cannot be read at version {version} (latest is {latest}; the version may not "
                f"exist yet or its log was cleaned up): {err}"
            ) from err

    def version(self, table: str) -> int:
        """The latest committed version of ``table``."""
        return self._delta_table(table).version()

    def count(self, table: str, *, version: int | None = None) -> int:
        """Rows of ``table`` at ``version`` (latest when None), from the log's file statistics (no data read)."""
        return self._delta_table(table, version).count()

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit history, newest first (version, timestamp, operation, parameters, metrics)."""
        return self._delta_table(table).history(limit)

    def properties(self, table: str, *, version: int | None = None) -> dict[str, str]:
        """The table's properties (Delta ``configuration``: ``delta.*`` settings, constraints and our own keys)."""
        return dict(self._delta_table(table, version).metadata().configuration)

    def days(self, table: str, *, version: int | None = None) -> list[dt.date]:
        """The ``ds`` partitions of ``table`` that hold data, sorted (from the Delta log: no data file is read)."""
        import pyarrow as pa

        actions = pa.table(self._delta_table(table, version).get_add_actions(flatten=True))
        if "partition.ds" not in actions.column_names:
            raise ValueError(f"table {table!r} is not partitioned by ds")
        return sorted(set(actions.column("partition.ds").to_pylist()))

    def files(
        self, table: str, *, version: int | None = None, days: Iterable[dt.date | str] | None = None
    ) -> list[str]:
        """URIs of the data files of ``table`` at ``version`` (latest when None); local ones as ``file://``.

        ``days`` keeps only the files of those ``ds`` partitions (the table must be partitioned by ``ds``; an
        empty collection is an error, a day without data simply adds no file).

        These are what Petastorm reads. Local URIs are ``"file://" + absolute path`` with no percent-encoding:
        Petastorm 0.12.1 does not decode URLs, so ``ds%3D2026-01-01`` (what ``Path.as_uri()`` writes for a
        partition folder) would not be found. A file listed by the log but gone from disk (vacuumed) is an error.
        """
        delta_table = self._delta_table(table, version)
        if days is None:
            uris = delta_table.file_uris()
        else:
            wanted = _ds_strings(days, "days")
            partitions = list(delta_table.metadata().partition_columns)
            if "ds" not in partitions:
                raise ValueError(
                    f"table {table!r} is partitioned by {partitions or 'nothing'}, not by ds: it cannot be "
                    f"filtered by days {wanted}"
                )
            uris = delta_table.file_uris(file_pruning_predicate=[("ds", "in", wanted)])
        if not self.is_local:
            return uris
        paths = [uri.removeprefix("file://") for uri in uris]
        missing = [path for path in paths if not Path(path).exists()]
        if missing:
            raise TableNotFoundError(
                f"version {version} of table {table!r} lists {len(missing)} data files that no longer exist "
                f"(vacuumed?), e.g. {missing[0]}"
            )
        return ["file://" + str(Path(path).absolute()) for path in paths]

    # ------------------------------------------------------------------ Arrow side (delta-rs)
    def read_arrow(
        self,
        table: str,
        *,
        version: int | None = None,
        columns: Sequence[str] | None = None,
        where: str | None = None,
    ) -> pa.Table:
        """Read ``table`` (at ``version``) into Arrow, optionally a column subset and a SQL ``where`` filter.

        Scans with polars (its Delta reader lists the version's files through delta-rs). delta-rs's own
        DataFusion engine hands strings out as Arrow string views, which the pyarrow that Petastorm pins (14)
        cannot import; polars' oldest Arrow level can, and the result is cast back to the table's own types.
        """
        import polars as pl

        delta_table = self._delta_table(table, version)
        target = pa.schema(delta_table.schema())
        frame = pl.scan_delta(self.path(table), version=delta_table.version())
        if where:
            frame = pl.SQLContext(t=frame).execute(f"SELECT * FROM t WHERE {where}")
        if columns:
            target = pa.schema([target.field(name) for name in columns])
        frame = frame.select(target.names)  # the table's column order (polars may move partition columns)
        return _maps_restored(frame.collect().to_arrow(compat_level=pl.CompatLevel.oldest()), target).cast(target)

    def write_arrow(
        self,
        data: pa.Table | pd.DataFrame,
        table: str,
        *,
        mode: WriteMode = "append",
        replace_ds: Iterable[dt.date | str] | None = None,
        partition_by: Sequence[str] | None = None,
        txn: tuple[str, int] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> int | None:
        """Write Arrow/pandas data with delta-rs; returns the new version, or None when ``txn`` was done already.

        ``properties``: table properties the data depends on (as for :meth:`write`): set when the table is
        created, and a write whose values differ from the table's raises :class:`TablePropertyError`.
        """
        if not isinstance(data, pa.Table):
            data = pa.Table.from_pandas(data, preserve_index=False)
        location = self.path(table)
        existing = DeltaTable(location) if DeltaTable.is_deltatable(location) else None
        if existing is None and properties:
            # delta-rs refuses non-``delta.*`` keys at creation: create the table empty, set them, then write
            write_deltalake(location, data.schema.empty_table(), mode="append",
                            partition_by=list(partition_by) if partition_by else None)
            existing = DeltaTable(location)
        predicate = None
        if replace_ds is not None:
            if mode != "overwrite":
                raise ValueError("replace_ds needs mode='overwrite'")
            days = _ds_strings(replace_ds)
            outside = pc.invert(pc.is_in(pc.cast(data["ds"], pa.string()), value_set=pa.array(days)))
            if pc.any(outside).as_py():
                raise PartitionOverwriteError(
                    f"data for table {table!r} has rows outside the replaced days {days}; nothing was written"
                )
            predicate = "ds IN (" + ", ".join(_sql_quote(d) for d in days) + ")"
        commit = None
        if txn is not None:
            app_id, txn_version = txn
            done = existing.transaction_version(app_id) if existing is not None else None
            if done is not None and done >= txn_version:
                return None  # this append was committed before: a retry must not add the rows twice
            commit = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=txn_version)])
        if existing is not None:
            schema_diff(
                table, json.loads(existing.schema().to_json()), json.loads(Schema.from_arrow(data.schema).to_json())
            )
            self._check_partitioning(table, existing.metadata().partition_columns, partition_by)
            if properties:
                current = dict(existing.metadata().configuration)
                _check_properties(table, current, properties)
                unset = {k: v for k, v in properties.items() if k not in current}
                if unset:
                    existing.alter.set_table_properties(unset, raise_if_not_exists=False)
        write_deltalake(
            location,
            data,
            mode=mode,
            predicate=predicate,
            partition_by=list(partition_by) if partition_by else None,
            commit_properties=commit,
        )
        return DeltaTable(location).version()

    def upsert_arrow(self, data: pa.Table, table: str, *, keys: Sequence[str]) -> int:
        """Insert ``data``'s rows, replacing the rows with the same ``keys`` (delta-rs MERGE); returns the version.

        Creates the table on first use. For small state tables written by JVM-free processes (training runs).
        """
        location = self.path(table)
        if not DeltaTable.is_deltatable(location):
            write_deltalake(location, data, mode="append")
            return DeltaTable(location).version()
        existing = DeltaTable(location)
        schema_diff(table, json.loads(existing.schema().to_json()),
                    json.loads(Schema.from_arrow(data.schema).to_json()))
        predicate = " AND ".join(f"t.`{key}` = s.`{key}`" for key in keys)
        (existing.merge(source=data, predicate=predicate, source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())
        return DeltaTable(location).version()

    @staticmethod
    def _check_partitioning(table: str, existing: Sequence[str], wanted: Sequence[str] | None) -> None:
        if wanted is not None and list(existing) != list(wanted):
            raise SchemaMismatchError(
                table, [], [], [f"partitioning ({list(existing)} in the table, {list(wanted)} asked)"]
            )

    # ------------------------------------------------------------------ Spark side (delta-spark)
    def read(self, spark: SparkSession, table: str, *, version: int | None = None) -> DataFrame:
        """Read ``table`` with delta-spark, at ``version`` (time travel) or the latest."""
        from delta.tables import DeltaTable as SparkDeltaTable

        location = self.path(table)
        if not SparkDeltaTable.isDeltaTable(spark, location):
            raise TableNotFoundError(f"no Delta table {table!r} at {location}")
        if version is None:
            return spark.read.format("delta").load(location)
        # Delta resolves the version as the frame is made (no history query of our own: jobs read every input at a
        # version, and each history query is a Spark job)
        try:
            return spark.read.format("delta").option("versionAsOf", version).load(location)
        except Exception as err:
            if "Cannot time travel Delta table to version" in str(err):
                raise TableNotFoundError(f"table {table!r} has no version {version}: {err}") from err
            raise

    def spark_version(self, spark: SparkSession, table: str) -> int:
        """The latest version of ``table`` as delta-spark sees it (works for any location Spark can read).

        Asks the table's ``DeltaLog`` in the JVM to update, which lists ``_delta_log`` (a few milliseconds); jobs
        ask this before every read and after every write. Where that internal Delta API is missing (another Delta
        release), a history query answers instead: the same number, but a Spark job of about 0.2 s.
        """
        from py4j.protocol import Py4JError

        location = self.path(table)
        try:
            version = _delta_log_version(spark, location)
        except (Py4JError, AttributeError):  # AttributeError: a session without a JVM gateway (Spark Connect)
            from delta.tables import DeltaTable as SparkDeltaTable

            return SparkDeltaTable.forPath(spark, location).history(1).select("version").first()[0]
        if version < 0:
            raise TableNotFoundError(f"no Delta table {table!r} at {location}")
        return version

    def write(
        self,
        df: DataFrame,
        table: str,
        *,
        mode: WriteMode = "append",
        replace_ds: Iterable[dt.date | str] | None = None,
        partition_by: Sequence[str] | None = None,
        txn: tuple[str, int] | None = None,
        constraints: Mapping[str, str] | None = None,
        replace_match: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        user_metadata: str | None = None,
        optimize_write: bool = False,
    ) -> int:
        """Write a Spark DataFrame with delta-spark; returns the table's version after the write.

        ``optimize_write``: Delta's optimized write (a shuffle before the write that bins each partition's rows into
        files of about ``spark.databricks.delta.optimizeWrite.binSize``): a range of small days is written as about
        one file per day and table instead of one per day and task.

        ``txn=(app_id, version)``: Delta's idempotent-write id; the write is skipped when the table has recorded
        that version (or a later one) for ``app_id``. ``user_metadata`` is stored in the commit's ``userMetadata``
        (:meth:`committed_by` finds it).

        ``properties`` (key -> value) are table properties the data depends on, such as the fixed length of a
        sequence column: set when the table is created, and a write whose values differ from the table's
        raises :class:`TablePropertyError` before anything is written.

        ``replace_match`` narrows a ``replace_ds`` overwrite to the rows whose columns equal the given strings,
        for tables that several writers share per day (``features/quarantine``: one slice per job and day).

        ``constraints`` (name -> SQL boolean expression) are added as Delta CHECK constraints before the data is
        written (the table is created empty first when new), so a violating write fails and changes nothing.
        """
        from delta.tables import DeltaTable as SparkDeltaTable

        if mode not in ("append", "overwrite"):
            raise ValueError(f"mode must be 'append' or 'overwrite', got {mode!r}")
        spark = df.sparkSession
        location = self.path(table)
        exists = SparkDeltaTable.isDeltaTable(spark, location)
        if exists:
            schema_diff(table, spark.read.format("delta").load(location).schema.jsonValue(), df.schema.jsonValue())
            if partition_by is not None:
                detail = SparkDeltaTable.forPath(spark, location).detail().select("partitionColumns").first()[0]
                self._check_partitioning(table, detail, partition_by)
        current: dict[str, str] = {}
        if exists and properties:
            current = SparkDeltaTable.forPath(spark, location).detail().select("properties").first()[0] or {}
            _check_properties(table, current, properties)
        if (constraints or properties) and not exists:
            self._create_empty(df, location, partition_by)
        if constraints:
            self.add_constraints(spark, table, constraints)
        unset = {k: v for k, v in (properties or {}).items() if k not in current}
        if unset:  # one commit, only when the table lacks a key (new tables)
            quoted = location.replace("`", "``")
            assignments = ", ".join(f"{_sql_quote(k)} = {_sql_quote(v)}" for k, v in unset.items())
            spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ({assignments})")

        writer = df.write.format("delta").mode(mode)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if replace_ds is not None:
            if mode != "overwrite":
                raise ValueError("replace_ds needs mode='overwrite'")
            days = _ds_strings(replace_ds)
            condition = "ds IN (" + ", ".join(f"DATE {_sql_quote(d)}" for d in days) + ")"
            for column, value in (replace_match or {}).items():
                if not _CONSTRAINT_NAME.match(column):
                    raise ValueError(f"invalid column name {column!r} in replace_match")
                condition += f" AND {column} = {_sql_quote(value)}"
            # Delta checks every written row against the condition: a row of another day fails the write.
            writer = writer.option("replaceWhere", condition)
        elif replace_match:
            raise ValueError("replace_match narrows replace_ds; give replace_ds too")
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", str(txn[1]))
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        if optimize_write:
            writer = writer.option("optimizeWrite", "true")
        try:
            writer.save(location)
        except Exception as err:
            if replace_ds is not None and "DELTA_REPLACE_WHERE_MISMATCH" in str(err):
                raise PartitionOverwriteError(
                    f"data for table {table!r} has rows outside the replaced days (or replace_match); "
                    f"nothing was written: {err}"
                ) from err
            raise
        return self.spark_version(spark, table)

    def spark_txn_version(self, spark: SparkSession, table: str, app_id: str) -> int | None:
        """The idempotent-write version ``table`` has recorded for ``app_id`` (None: none), as delta-spark sees it."""
        jvm = spark._jvm
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, self.path(table))
        none = jvm.scala.Option.empty()
        recorded = log.update(False, none, none).transactions().get(app_id)
        return int(recorded.get()) if recorded.isDefined() else None

    def committed_by(self, spark: SparkSession, table: str, user_metadata: str, *, last: int = 50) -> bool:
        """Whether one of the ``last`` commits of ``table`` carries ``user_metadata`` (see :meth:`write`)."""
        from delta.tables import DeltaTable as SparkDeltaTable

        history = SparkDeltaTable.forPath(spark, self.path(table)).history(last)
        return not history.where(history["userMetadata"] == user_metadata).isEmpty()

    def partition_rows(self, spark: SparkSession, table: str, *, version: int | None = None) -> dict[dt.date, int]:
        """Rows per ``ds`` partition of ``table`` at ``version`` (latest when None), from the ``numRecords``
        statistics of the files in the Delta log (no data file is read); partitions with files lacking statistics
        are left out."""
        from pyspark.sql import functions as F

        jvm = spark._jvm
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, self.path(table))
        none = jvm.scala.Option.empty()
        snapshot = log.update(False, none, none) if version is None else log.getSnapshotAt(version, none, none)
        from pyspark.sql import DataFrame

        files = DataFrame(snapshot.allFiles().toDF(), spark)
        rows = F.get_json_object("stats", "$.numRecords").cast("long")
        per_day = files.groupBy(F.col("partitionValues")["ds"].alias("ds")).agg(
            F.sum(rows).alias("rows"), F.count(F.when(rows.isNull(), 1)).alias("unknown")).collect()
        return {dt.date.fromisoformat(r["ds"]): int(r["rows"]) for r in per_day if r["unknown"] == 0 and r["ds"]}

    @staticmethod
    def _create_empty(df: DataFrame, location: str, partition_by: Sequence[str] | None) -> None:
        writer = df.limit(0).write.format("delta").mode("append")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(location)

    def add_constraints(self, spark: SparkSession, table: str, constraints: Mapping[str, str]) -> None:
        """Add Delta CHECK constraints that the table does not have yet (same name, same expression: kept).

        A constraint of the same name with another expression is an error; existing rows that violate a new
        constraint make Delta refuse it. Write expressions that both Spark SQL and delta-rs's DataFusion
        evaluate, since both write these tables: ``cardinality(xs)``, not Spark's ``size(xs)``.
        """
        location = self.path(table)
        from delta.tables import DeltaTable as SparkDeltaTable

        current = SparkDeltaTable.forPath(spark, location).detail().select("properties").first()[0] or {}
        for name, expression in constraints.items():
            if not _CONSTRAINT_NAME.match(name):
                raise ValueError(f"invalid constraint name {name!r}")
            key = f"delta.constraints.{name.lower()}"
            if key in current:
                if _squeeze(current[key]) != _squeeze(expression):  # Delta stores the SQL re-spaced
                    raise ValueError(
                        f"table {table!r} already has constraint {name!r} = {current[key]!r}, not {expression!r}"
                    )
                continue
            quoted = location.replace("`", "``")
            spark.sql(f"ALTER TABLE delta.`{quoted}` ADD CONSTRAINT {name} CHECK ({expression})")


def _maps_restored(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` with its map columns rebuilt as Arrow maps: polars hands a map out as a list of key/value structs,
    which Arrow does not cast to a map."""
    for position, wanted in enumerate(target):
        if not pa.types.is_map(wanted.type) or pa.types.is_map(table.schema.field(position).type):
            continue
        column = table.column(position).combine_chunks()
        entries = column.flatten()
        keys, values = entries.field(0).cast(wanted.type.key_type), entries.field(1).cast(wanted.type.item_type)
        offsets = column.offsets.cast(pa.int32())
        if column.null_count:  # a null offset marks a null map (the pyarrow Petastorm pins has no mask argument)
            valid = column.is_valid().to_pylist() + [True]
            offsets = pa.array([o if ok else None for o, ok in zip(offsets.to_pylist(), valid, strict=True)],
                               pa.int32())
        restored = pa.MapArray.from_arrays(offsets, keys, values)
        table = table.set_column(position, wanted.name, restored)
    return table


def _delta_log_version(spark: SparkSession, location: str) -> int:
    """The latest version of the Delta table at ``location`` from delta-spark's ``DeltaLog`` (-1: no table)."""
    jvm = spark._jvm
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, location)
    none = jvm.scala.Option.empty()
    return int(log.update(False, none, none).version())  # update(stalenessAcceptable, checkIfUpdatedSinceTs, table)
