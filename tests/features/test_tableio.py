"""Table IO guarantees 1-7 (RELIABILITY.md) on real Delta tables, through delta-spark and delta-rs."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features.tableio import (
    Lakehouse,
    PartitionOverwriteError,
    SchemaMismatchError,
    TableNameError,
    TableNotFoundError,
)

D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)
SCHEMA = T.StructType(
    [
        T.StructField("sample_id", T.StringType()),
        T.StructField("label", T.IntegerType()),
        T.StructField("hist", T.ArrayType(T.LongType())),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("ds", T.DateType()),
    ]
)
ARROW_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("label", pa.int32()),
        ("hist", pa.list_(pa.int64())),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("ds", pa.date32()),
    ]
)


def rows(day: dt.date, ids: list[str], label: int = 0) -> list[tuple]:
    when = dt.datetime.combine(day, dt.time(12, 0))
    return [(sample_id, label, [1, 2], when, day) for sample_id in ids]


def spark_df(spark, data: list[tuple]):
    return spark.createDataFrame(data, SCHEMA)


def arrow_table(data: list[tuple]) -> pa.Table:
    columns = list(zip(*data, strict=True)) if data else [[] for _ in ARROW_SCHEMA]
    arrays = [pa.array(values, type=field.type) for values, field in zip(columns, ARROW_SCHEMA, strict=True)]
    # event_time values are naive UTC datetimes: attach the zone explicitly
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def sorted_ids(table: pa.Table) -> list[tuple[str, str]]:
    return sorted(zip(table["sample_id"].to_pylist(), [str(d) for d in table["ds"].to_pylist()], strict=True))


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../outside", "raw/../../x", "/etc/passwd", "", "raw//events", "raw/./x", 7])
def test_table_names_that_could_escape_are_refused(lakehouse, name):
    with pytest.raises(TableNameError):
        lakehouse.path(name)


def test_symlink_escaping_the_lakehouse_is_refused(tmp_path):
    root = tmp_path / "lh"
    (root / "raw").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "raw" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TableNameError, match="outside the lakehouse"):
        Lakehouse(root).path("raw/link")
    assert Lakehouse(root).path("raw/events") == str(root.resolve() / "raw" / "events")


def test_uri_roots_are_joined_without_touching_the_local_disk():
    lakehouse = Lakehouse("s3a://bucket/lake/")
    assert lakehouse.path("features/samples") == "s3a://bucket/lake/features/samples"
    with pytest.raises(TableNameError):
        lakehouse.path("../other")


# ---------------------------------------------------------------- round trips


def test_spark_write_is_read_by_deltalake_and_polars_at_the_same_version(spark, lakehouse):
    v0 = lakehouse.write(spark_df(spark, rows(D1, ["a", "b"])), "t/x", mode="append", partition_by=["ds"])
    v1 = lakehouse.write(spark_df(spark, rows(D2, ["c"])), "t/x", mode="append", partition_by=["ds"])
    assert (v0, v1) == (0, 1)
    assert lakehouse.version("t/x") == 1
    assert (lakehouse.count("t/x", version=0), lakehouse.count("t/x")) == (2, 3)

    at_v0 = lakehouse.read_arrow("t/x", version=0)
    assert sorted_ids(at_v0) == [("a", "2026-01-01"), ("b", "2026-01-01")]
    assert at_v0.schema.field("hist").type == pa.list_(pa.int64())
    assert sorted_ids(lakehouse.read_arrow("t/x")) == [("a", "2026-01-01"), ("b", "2026-01-01"), ("c", "2026-01-02")]

    polars_v0 = pl.read_delta(lakehouse.path("t/x"), version=0)
    assert sorted(polars_v0["sample_id"].to_list()) == ["a", "b"]
    assert polars_v0["hist"].to_list() == [[1, 2], [1, 2]]


def test_spark_version_sees_both_writers_commits_and_falls_back_to_the_history(spark, lakehouse, monkeypatch,
                                                                                tmp_path):
    from py4j.protocol import Py4JError

    import features.tableio as tableio

    assert lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/sv", mode="append", partition_by=["ds"]) == 0
    assert lakehouse.spark_version(spark, "t/sv") == 0
    lakehouse.write_arrow(arrow_table(rows(D2, ["b"])), "t/sv", partition_by=["ds"])  # a delta-rs commit
    assert lakehouse.spark_version(spark, "t/sv") == lakehouse.version("t/sv") == 1
    with pytest.raises(TableNotFoundError, match="no Delta table 'nope'"):
        lakehouse.spark_version(spark, "nope")
    assert not Path(lakehouse.path("nope")).exists()

    def missing(*_args):
        raise Py4JError("org.apache.spark.sql.delta.DeltaLog.forTable does not exist in the JVM")

    monkeypatch.setattr(tableio, "_delta_log_version", missing)  # another Delta release: the history answers
    lakehouse.write_arrow(arrow_table(rows(D2, ["c"])), "t/sv", partition_by=["ds"])
    assert lakehouse.spark_version(spark, "t/sv") == 2


def test_deltalake_write_is_read_by_spark(spark, lakehouse):
    lakehouse.write_arrow(arrow_table(rows(D1, ["a", "b"], label=1)), "t/y", partition_by=["ds"])
    expected = spark_df(spark, rows(D1, ["a", "b"], label=1))
    assert_df_equality(lakehouse.read(spark, "t/y"), expected, ignore_row_order=True, ignore_nullable=True)


def test_read_at_an_older_version_returns_the_older_rows(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/v", mode="overwrite")
    lakehouse.write(spark_df(spark, rows(D1, ["b"])), "t/v", mode="overwrite")
    assert [r.sample_id for r in lakehouse.read(spark, "t/v", version=0).collect()] == ["a"]
    assert [r.sample_id for r in lakehouse.read(spark, "t/v").collect()] == ["b"]
    assert lakehouse.read_arrow("t/v", version=0)["sample_id"].to_pylist() == ["a"]
    with pytest.raises(TableNotFoundError, match="no version 5"):
        lakehouse.read(spark, "t/v", version=5)
    with pytest.raises(TableNotFoundError, match="version 5"):
        lakehouse.read_arrow("t/v", version=5)


def test_missing_table_is_a_clear_error(spark, lakehouse):
    with pytest.raises(TableNotFoundError, match="no Delta table 'nope'"):
        lakehouse.read(spark, "nope")
    with pytest.raises(TableNotFoundError, match="no Delta table 'nope'"):
        lakehouse.read_arrow("nope")
    assert not lakehouse.exists("nope")


def test_read_arrow_selects_columns_and_filters(lakehouse):
    lakehouse.write_arrow(arrow_table(rows(D1, ["a"]) + rows(D2, ["b", "c"])), "t/q", partition_by=["ds"])
    result = lakehouse.read_arrow("t/q", columns=["sample_id"], where="ds = DATE '2026-01-02'")
    assert result.column_names == ["sample_id"]
    assert sorted(result["sample_id"].to_pylist()) == ["b", "c"]


def test_files_version_and_history(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/f", mode="overwrite", partition_by=["ds"])
    lakehouse.write(spark_df(spark, rows(D1, ["b"])), "t/f", mode="overwrite", partition_by=["ds"])
    files_v0, files_v1 = lakehouse.files("t/f", version=0), lakehouse.files("t/f")
    assert all(uri.startswith("file://") and uri.endswith(".parquet") for uri in files_v0 + files_v1)
    assert set(files_v0).isdisjoint(files_v1)  # the overwrite replaced every file
    history = lakehouse.history("t/f")
    assert [h["version"] for h in history] == [1, 0]
    assert all(h["operation"] == "WRITE" for h in history)

    # a vacuumed pinned version is an error naming it, not a silent read of other data
    DeltaTable(lakehouse.path("t/f")).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(TableNotFoundError, match="version 0 of table 't/f'"):
        lakehouse.files("t/f", version=0)
    assert lakehouse.files("t/f") == files_v1


# ---------------------------------------------------------------- partition overwrite (guarantees 2, 3)


def test_replace_ds_twice_gives_one_copy_and_leaves_other_days(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["a"]) + rows(D2, ["b"])), "t/p", mode="append", partition_by=["ds"])
    for _ in range(2):
        lakehouse.write(spark_df(spark, rows(D2, ["b2", "b3"])), "t/p", mode="overwrite", replace_ds=[D2])
    assert sorted_ids(lakehouse.read_arrow("t/p")) == [("a", "2026-01-01"), ("b2", "2026-01-02"), ("b3", "2026-01-02")]
    for _ in range(2):
        lakehouse.write_arrow(arrow_table(rows(D2, ["c"])), "t/p", mode="overwrite", replace_ds=[D2])
    assert sorted_ids(lakehouse.read_arrow("t/p")) == [("a", "2026-01-01"), ("c", "2026-01-02")]


def test_replace_match_replaces_only_its_slice_of_the_day(spark, lakehouse):
    jobs = T.StructType([T.StructField("job", T.StringType()), T.StructField("n", T.IntegerType()),
                         T.StructField("ds", T.DateType())])
    lakehouse.write(spark.createDataFrame([("a", 1, D1), ("b", 1, D1), ("a", 1, D2)], jobs), "t/rm",
                    mode="append", partition_by=["ds"])
    for _ in range(2):
        lakehouse.write(spark.createDataFrame([("a", 2, D1), ("a", 3, D1)], jobs), "t/rm", mode="overwrite",
                        replace_ds=[D1], replace_match={"job": "a"})
    got = sorted((r.job, r.n, r.ds) for r in lakehouse.read(spark, "t/rm").collect())
    assert got == [("a", 1, D2), ("a", 2, D1), ("a", 3, D1), ("b", 1, D1)]
    with pytest.raises(PartitionOverwriteError):  # a row of another job's slice
        lakehouse.write(spark.createDataFrame([("b", 9, D1)], jobs), "t/rm", mode="overwrite",
                        replace_ds=[D1], replace_match={"job": "a"})
    with pytest.raises(ValueError, match="give replace_ds too"):
        lakehouse.write(spark.createDataFrame([("a", 9, D1)], jobs), "t/rm", mode="overwrite",
                        replace_match={"job": "a"})
    assert lakehouse.read(spark, "t/rm").count() == 4


@pytest.mark.parametrize("side", ["spark", "arrow"])
def test_overwrite_of_a_day_cannot_write_outside_it(spark, lakehouse, side):
    lakehouse.write(spark_df(spark, rows(D1, ["a"]) + rows(D2, ["b"])), "t/o", mode="append", partition_by=["ds"])
    bad = rows(D2, ["b2"]) + rows(D3, ["leak"])
    with pytest.raises(PartitionOverwriteError, match="outside the replaced days"):
        if side == "spark":
            lakehouse.write(spark_df(spark, bad), "t/o", mode="overwrite", replace_ds=[D2])
        else:
            lakehouse.write_arrow(arrow_table(bad), "t/o", mode="overwrite", replace_ds=[D2])
    assert lakehouse.version("t/o") == 0
    assert sorted_ids(lakehouse.read_arrow("t/o")) == [("a", "2026-01-01"), ("b", "2026-01-02")]


def test_replace_ds_needs_overwrite_mode_and_dates(spark, lakehouse):
    with pytest.raises(ValueError, match="needs mode='overwrite'"):
        lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/m", mode="append", replace_ds=[D1])
    with pytest.raises(ValueError, match="replace_ds is empty"):
        lakehouse.write_arrow(arrow_table(rows(D1, ["a"])), "t/m", mode="overwrite", replace_ds=[])
    with pytest.raises(TypeError, match="takes dates"):
        lakehouse.write_arrow(
            arrow_table(rows(D1, ["a"])), "t/m", mode="overwrite", replace_ds=[dt.datetime(2026, 1, 1)]
        )
    assert not lakehouse.exists("t/m")


# ---------------------------------------------------------------- idempotent appends (guarantee 4)


def test_appends_with_the_same_transaction_id_land_once(spark, lakehouse):
    for _ in range(2):
        lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/txn", mode="append", txn=("vocab", 1))
    # delta-rs sees the id recorded by delta-spark and skips the same (app id, version) too
    assert lakehouse.write_arrow(arrow_table(rows(D1, ["a"])), "t/txn", txn=("vocab", 1)) is None
    assert lakehouse.write_arrow(arrow_table(rows(D1, ["b"])), "t/txn", txn=("vocab", 2)) == 1
    assert lakehouse.write_arrow(arrow_table(rows(D1, ["b"])), "t/txn", txn=("vocab", 2)) is None
    assert sorted(lakehouse.read_arrow("t/txn")["sample_id"].to_pylist()) == ["a", "b"]
    lakehouse.write(spark_df(spark, rows(D1, ["c"])), "t/txn", mode="append", txn=("vocab", 2))
    assert lakehouse.read(spark, "t/txn").count() == 2


# ---------------------------------------------------------------- schema enforcement (guarantee 6)


def test_added_column_is_refused_by_name(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/s", mode="append")
    with pytest.raises(SchemaMismatchError, match="columns not in the table: surprise"):
        lakehouse.write(spark_df(spark, rows(D1, ["b"])).withColumn("surprise", F.lit(1)), "t/s", mode="append")
    with pytest.raises(SchemaMismatchError, match="columns not in the table: surprise"):
        lakehouse.write_arrow(arrow_table(rows(D1, ["b"])).append_column("surprise", pa.array([1])), "t/s")
    assert lakehouse.version("t/s") == 0


def test_renamed_column_is_refused_naming_both_names(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/r", mode="append")
    renamed = spark_df(spark, rows(D1, ["b"])).withColumnRenamed("label", "clicked")
    with pytest.raises(SchemaMismatchError, match="missing from the data: label; columns not in the table: clicked"):
        lakehouse.write(renamed, "t/r", mode="overwrite")
    assert lakehouse.version("t/r") == 0


@pytest.mark.parametrize("side", ["spark", "arrow"])
def test_changed_type_is_refused_not_cast(spark, lakehouse, side):
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/c", mode="append")
    with pytest.raises(SchemaMismatchError, match=r"another type: label \(\"integer\" in the table, \"long\""):
        if side == "spark":
            lakehouse.write(spark_df(spark, rows(D1, ["b"])).withColumn("label", F.lit(1).cast("long")), "t/c")
        else:
            data = arrow_table(rows(D1, ["b"]))
            data = data.set_column(1, "label", pa.array([1], pa.int64()))
            lakehouse.write_arrow(data, "t/c")
    assert lakehouse.version("t/c") == 0


def test_changed_partitioning_is_refused(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/part", mode="append", partition_by=["ds"])
    with pytest.raises(SchemaMismatchError, match="partitioning"):
        lakehouse.write(spark_df(spark, rows(D1, ["b"])), "t/part", mode="append", partition_by=["label"])
    with pytest.raises(SchemaMismatchError, match="partitioning"):
        lakehouse.write_arrow(arrow_table(rows(D1, ["b"])), "t/part", partition_by=["label"])


# ---------------------------------------------------------------- invariants as constraints (guarantee 7)


def test_constraints_reject_violating_writes_from_both_sides(spark, lakehouse):
    # cardinality(), not Spark's size(): delta-rs (DataFusion) must evaluate the same constraints
    constraints = {"label_is_binary": "label IN (0, 1)", "hist_fits": "cardinality(hist) <= 2"}
    lakehouse.write(spark_df(spark, rows(D1, ["a"])), "t/k", mode="append", constraints=constraints)
    version = lakehouse.version("t/k")
    with pytest.raises(Exception, match="(?i)check constraint|violat"):
        lakehouse.write(spark_df(spark, rows(D1, ["bad"], label=2)), "t/k", mode="append", constraints=constraints)
    with pytest.raises(Exception, match="(?i)invalid data|failed validation"):
        lakehouse.write_arrow(arrow_table(rows(D1, ["bad"], label=7)), "t/k")
    assert lakehouse.version("t/k") == version
    assert lakehouse.read_arrow("t/k")["sample_id"].to_pylist() == ["a"]
    with pytest.raises(ValueError, match="already has constraint"):
        lakehouse.add_constraints(spark, "t/k", {"label_is_binary": "label >= 0"})


def test_a_violating_first_write_creates_no_rows(spark, lakehouse):
    with pytest.raises(Exception, match="(?i)check constraint|violat"):
        lakehouse.write(spark_df(spark, rows(D1, ["bad"], label=3)), "t/new", constraints={"b": "label IN (0, 1)"})
    assert lakehouse.read_arrow("t/new").num_rows == 0


# ---------------------------------------------------------------- concurrency (guarantee 5)


def _slow_day(spark, day: dt.date, n: int = 1_000_000):
    """A day of rows whose write takes a few seconds (so another writer can commit in the middle)."""
    return (
        spark.range(0, n, numPartitions=8)
        .select(
            F.sha2(F.sha2(F.col("id").cast("string"), 256), 256).alias("sample_id"),
            F.lit(0).cast("int").alias("label"),
            F.array(F.col("id")).alias("hist"),
            F.lit(dt.datetime.combine(day, dt.time(12))).cast("timestamp").alias("event_time"),
            F.lit(day).alias("ds"),
        )
    )


def _uncommitted_parquet(location: str, known: set[str]) -> bool:
    return any(str(p) not in known for p in Path(location).rglob("*.parquet"))


def _wait_for_uncommitted_files(location: str, known: set[str], *, timeout: float = 180.0, check=None) -> None:
    """Return once a writer has data files on disk that no commit lists yet (it is mid-write)."""
    deadline = time.monotonic() + timeout
    while not _uncommitted_parquet(location, known):
        if check is not None:
            check()
        assert time.monotonic() < deadline, "the slow writer never started writing files"
        time.sleep(0.05)


def _run_when_files_appear(location: str, known: set[str], action) -> None:
    _wait_for_uncommitted_files(location, known)
    action()


def _start(target) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run():
        try:
            target()
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_concurrent_appends_from_spark_and_deltalake_all_land(spark, lakehouse):
    lakehouse.write(spark_df(spark, rows(D1, ["seed"])), "t/cc", mode="append", partition_by=["ds"])
    location = lakehouse.path("t/cc")
    known = {str(p) for p in Path(location).rglob("*.parquet")}
    slow, errors = _start(lambda: lakehouse.write(_slow_day(spark, D2), "t/cc", mode="append"))
    # while the Spark append is writing its files, a delta-rs append and another Spark append commit
    _run_when_files_appear(location, known, lambda: lakehouse.write_arrow(arrow_table(rows(D3, ["rs"])), "t/cc"))
    lakehouse.write(spark_df(spark, rows(D3, ["spark2"])), "t/cc", mode="append")
    slow.join()
    assert not errors, errors
    assert lakehouse.version("t/cc") == 3
    counts = lakehouse.read(spark, "t/cc").groupBy("ds").count().orderBy("ds").collect()
    assert [(r.ds, r["count"]) for r in counts] == [(D1, 1), (D2, 1_000_000), (D3, 2)]


@pytest.mark.parametrize("second_writer", ["spark", "deltalake"])
def test_two_overwrites_of_the_same_day_one_wins_the_other_fails_loudly(spark, lakehouse, second_writer):
    lakehouse.write(spark_df(spark, rows(D1, ["old"])), "t/ow", mode="append", partition_by=["ds"])
    location = lakehouse.path("t/ow")
    known = {str(p) for p in Path(location).rglob("*.parquet")}
    slow, errors = _start(
        lambda: lakehouse.write(_slow_day(spark, D1), "t/ow", mode="overwrite", replace_ds=[D1])
    )

    def fast_overwrite():
        if second_writer == "spark":
            lakehouse.write(spark_df(spark, rows(D1, ["fast"])), "t/ow", mode="overwrite", replace_ds=[D1])
        else:
            lakehouse.write_arrow(arrow_table(rows(D1, ["fast"])), "t/ow", mode="overwrite", replace_ds=[D1])

    fast_errors: list[BaseException] = []

    def fast_or_error():
        try:
            fast_overwrite()
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            fast_errors.append(err)

    # Which one commits first depends on scheduling (two Spark jobs share two cores); exactly one must lose.
    _run_when_files_appear(location, known, fast_or_error)
    slow.join()
    lost = errors + fast_errors
    assert len(lost) == 1, lost
    assert "Concurrent" in type(lost[0]).__name__ or "ConcurrentAppendException" in str(lost[0])
    assert lakehouse.version("t/ow") == 1
    day = lakehouse.read_arrow("t/ow", columns=["sample_id"])
    if fast_errors:
        assert day.num_rows == 1_000_000  # the slow writer's day alone: "old" was replaced
    else:
        assert day["sample_id"].to_pylist() == ["fast"]


# ---------------------------------------------------------------- a killed write (guarantee 1)

KILLED_WRITER = """
import datetime as dt, sys
sys.path.insert(0, {repo!r})
from pyspark.sql import functions as F
from features.spark import get_spark
from features.tableio import Lakehouse
spark = get_spark("killed-writer", master="local[2]")
day = dt.date(2026, 1, 1)
df = spark.range(0, 20_000_000, numPartitions=16).select(
    F.sha2(F.sha2(F.col("id").cast("string"), 256), 256).alias("sample_id"),
    F.lit(9).cast("int").alias("label"), F.array(F.col("id")).alias("hist"),
    F.lit(dt.datetime(2026, 1, 1, 12)).cast("timestamp").alias("event_time"), F.lit(day).alias("ds"))
Lakehouse({root!r}).write(df, "t/kill", mode="overwrite", replace_ds=[day])
print("FINISHED")
"""


def test_a_write_killed_halfway_leaves_the_previous_version(spark, lakehouse, tmp_path):
    lakehouse.write(spark_df(spark, rows(D1, ["a", "b"]) + rows(D2, ["c"])), "t/kill", mode="append",
                    partition_by=["ds"])
    location = lakehouse.path("t/kill")
    known = {str(p) for p in Path(location).rglob("*.parquet")}
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER.format(repo=str(Path(__file__).resolve().parents[2]), root=lakehouse.root))
    log = tmp_path / "writer.log"  # a file, not a pipe: a full pipe would stall the writer
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def writer_alive():
        assert proc.poll() is None, log.read_text()[-3000:]

    try:
        _wait_for_uncommitted_files(location, known, check=writer_alive)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the Python driver and its JVM, mid-write
        proc.wait()
    assert "FINISHED" not in log.read_text()
    assert lakehouse.version("t/kill") == 0
    assert sorted_ids(lakehouse.read_arrow("t/kill")) == [("a", "2026-01-01"), ("b", "2026-01-01"), ("c", "2026-01-02")]

    # a rerun of the day's write produces exactly one copy, whatever the dead attempt left on disk
    for _ in range(2):
        lakehouse.write(spark_df(spark, rows(D1, ["a", "b"])), "t/kill", mode="overwrite", replace_ds=[D1])
    table = lakehouse.read(spark, "t/kill")
    assert table.count() == 3
    assert table.groupBy("ds", "sample_id").count().where("count > 1").count() == 0


def test_files_of_given_days_only(lakehouse):
    for day, ids in ((D1, ["a"]), (D2, ["b", "c"]), (D3, ["d"]), (D2, ["e"])):
        lakehouse.write_arrow(arrow_table(rows(day, ids)), "t/days", partition_by=["ds"])
    everything = lakehouse.files("t/days")
    assert len(everything) == 4
    # plain file:// URIs (no %3D): Petastorm opens them without URL-decoding
    assert all(uri.startswith("file:///") and "/ds=" in uri and Path(uri[7:]).exists() for uri in everything)

    picked = lakehouse.files("t/days", days=[D2, "2026-01-03"])
    assert sorted(uri.split("/")[-2] for uri in picked) == ["ds=2026-01-02", "ds=2026-01-02", "ds=2026-01-03"]
    assert set(picked) <= set(everything)
    assert lakehouse.files("t/days", days=[dt.date(2025, 12, 31)]) == []  # a day without data: no file
    assert [u.split("/")[-2] for u in lakehouse.files("t/days", version=0, days=[D1, D2])] == ["ds=2026-01-01"]
    with pytest.raises(ValueError, match="days is empty"):
        lakehouse.files("t/days", days=[])
    with pytest.raises(TypeError, match="collection of dates"):
        lakehouse.files("t/days", days="2026-01-01")

    lakehouse.write_arrow(arrow_table(rows(D1, ["x"])), "t/flat")  # not partitioned
    with pytest.raises(ValueError, match="'t/flat' is partitioned by nothing, not by ds"):
        lakehouse.files("t/flat", days=[D1])


def test_days_lists_the_partitions_holding_data_from_the_log(lakehouse):
    days = [dt.date(2026, 1, 3), dt.date(2026, 1, 1), dt.date(2026, 1, 3)]
    lakehouse.write_arrow(pa.table({"x": [1, 2, 3], "ds": pa.array(days, pa.date32())}), "t/days",
                          partition_by=["ds"])
    assert lakehouse.days("t/days") == [dt.date(2026, 1, 1), dt.date(2026, 1, 3)]
    lakehouse.write_arrow(pa.table({"x": [4], "ds": pa.array([dt.date(2026, 1, 2)], pa.date32())}), "t/days",
                          mode="overwrite", partition_by=["ds"])
    assert lakehouse.days("t/days") == [dt.date(2026, 1, 2)]  # an overwrite removes the other days' files
    lakehouse.write_arrow(pa.table({"x": [5]}), "t/flat")
    with pytest.raises(ValueError, match="not partitioned by ds"):
        lakehouse.days("t/flat")
