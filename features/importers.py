r"""Importers of three public data sets into the raw tables (``raw/events``, ``raw/items``, ``raw/users``).

Pure Spark column expressions on the source files' lines (no pandas, no Python loop over rows, no UDF), so the
full data sets (MovieLens 25M, Amazon 2014/2018 reviews, the 26M-row Taobao ad log) import on the embedded
default as on a cluster. Each source file is read as text, one row per line (``.gz``/``.bz2`` are read as
they are), so a rejected row keeps its original line. Entry points: ``jobs/import_movielens.py``,
``jobs/import_amazon.py``, ``jobs/import_taobao.py``; :func:`write_import` writes and checks what they import.

Common rules
    * Ids are strings (trimmed); every raw table column a source lacks is a null string.
    * ``event_time`` is the source's unix time in seconds; ``ds`` is its UTC date, computed from the epoch
      seconds (``date_from_unix_date(floor(t / 86400))``), so it does not depend on the session time zone.
    * Impression ``event_id = <key>-imp``, click ``<key>-clk`` with the source row's key below. Rows of a source
      with the same key are duplicates: the first in the order of their line text is imported, the others are
      rejected (``duplicate_key``), so event ids are unique and a rerun imports the same rows.
    * ``raw/items`` / ``raw/users``: every row of the side file (catalogue, profiles) plus a row of nulls for
      each item/user of the events that the side file lacks (or all of them when there is no side file).
    * A line of a CSV file equal to its header (spaces, quotes and a BOM ignored, any case) is skipped, not a
      row; the entry points require the header as the first line of CSV files. ``.dat`` and JSON lines files
      have no header.
    * Every other line is a source row: imported, or written to ``raw/import_rejects`` (``source`` = the file
      kind such as ``movielens/ratings``, ``reason``, ``raw_row`` = the original line) with the first reason
      that applies, in this order:

      ==================  ========================================================================
      reason              rule
      ==================  ========================================================================
      blank_line          nothing but spaces
      wrong_column_count  a CSV / ``.dat`` line with another number of fields (quoted commas count
                          as text)
      malformed_json      a JSON lines row that is not one JSON object
      missing_field       a field the mapping needs is empty or absent
      non_numeric_id      MovieLens / Taobao ids that are not digits
      non_numeric_rating  a MovieLens rating that is not a finite decimal number
      invalid_timestamp   not digits, or after 9999-12-31 (milliseconds are not seconds)
      invalid_clk         Taobao: ``clk`` / ``nonclk`` not 0 or 1, or ``clk + nonclk != 1``
      duplicate_key       an earlier row (in line-text order) has the same key
      ==================  ========================================================================

      Invariant (checked by :func:`write_import` against the written tables): source rows = imported rows +
      rejected rows, per source file.

1. MovieLens (``movielens/ratings``, ``movielens/movies``, ``movielens/users``)
    ``ratings.csv`` ``userId,movieId,rating,timestamp`` (ML-20M/25M/latest) or ``ratings.dat``
    ``UserID::MovieID::Rating::Timestamp`` (ML-1M/10M). Every rating is an impression; a rating >=
    ``click_threshold`` (4.0) is also a click at the same time. Key ``ml-<user>-<item>-<timestamp>``;
    ``request_id = ml-<user>-<timestamp>`` (the ratings a user gave in the same second were shown together:
    the DSTN context), ``position`` null.
    ``movies.csv`` ``movieId,title,genres`` (a title may be quoted and hold commas; genres ``|``-separated) or
    ``movies.dat`` ``MovieID::Title::Genres`` -> ``category_id`` = the first genre (``(no genres listed)`` ->
    null); needs ``movieId`` and ``genres``; key ``movieId``.
    ``users.dat`` ``UserID::Gender::Age::Occupation::Zip-code`` (ML-1M) -> ``gender``, ``age_bucket`` = Age,
    ``city`` = Zip-code; key ``UserID``.

2. Amazon reviews, 2014 and 2018 formats (``amazon/reviews``, ``amazon/meta``)
    reviews: JSON lines with ``reviewerID``, ``asin``, ``unixReviewTime`` (other keys ignored; ``overall``
    is not needed). Each review is an impression and a click of the reviewed item in a request of its own:
    key and ``request_id`` ``amz-<reviewerID>-<asin>-<unixReviewTime>``, ``position`` 1. There are no real
    exposures, so later feature jobs fall back to sampled negatives, as the DIEN paper does on this data.
    meta: JSON lines with ``asin``, and ``categories`` (2014: a list of category paths; the 2014 files are
    Python literals with single quotes, which Spark's JSON reader accepts) or ``category`` (2018: one path),
    and ``brand``. ``category_id`` = the last (most specific) category of the first 2014 path, else the last
    element of the 2018 ``category``; ``brand_id`` = ``brand``; ``shop_id`` null. Key ``asin``.
    ``raw/users``: the reviewers, with null profile fields.

3. Taobao display-ad click logs, Alimama (``taobao/raw_sample``, ``taobao/ad_feature``, ``taobao/user_profile``)
    ``raw_sample.csv`` ``user,time_stamp,adgroup_id,pid,nonclk,clk``: each row is an impression of
    ``adgroup_id``; ``clk = 1`` adds a click at the same time in the same request. A request is
    (user, time_stamp, pid): ``request_id = tb-<user>-<time_stamp>-<pid>``, ``position`` 1..k within the
    request in ascending numeric ``adgroup_id`` order. Key ``tb-<user>-<time_stamp>-<pid>-<adgroup_id>``.
    ``ad_feature.csv`` ``adgroup_id,cate_id,campaign_id,customer,brand,price`` -> ``item_id`` = adgroup_id,
    ``category_id`` = cate_id, ``shop_id`` = customer, ``brand_id`` = brand. ``user_profile.csv``
    ``userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,
    new_user_class_level`` -> ``gender`` = final_gender_code, ``age_bucket`` = age_level, ``city`` null.
    In both side files the literal ``NULL`` is a null. Keys ``adgroup_id`` and ``userid``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from features.schemas import RAW_EVENTS, RAW_ITEMS, RAW_USERS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from features.tableio import Lakehouse

EVENTS_TABLE, ITEMS_TABLE, USERS_TABLE = "raw/events", "raw/items", "raw/users"
REJECTS_TABLE = "raw/import_rejects"

#: ``raw/import_rejects``: every source row an importer could not import. ``source`` names the importer and the
#: file kind (``movielens/ratings``); an import replaces the rows of its own importer (``<importer>/...``).
IMPORT_REJECTS = StructType([StructField(name, StringType(), True) for name in ("source", "reason", "raw_row")])

REASONS = ("blank_line", "wrong_column_count", "malformed_json", "missing_field", "non_numeric_id",
           "non_numeric_rating", "invalid_timestamp", "invalid_clk", "duplicate_key")

# Headers as in the published files (user_profile.csv really has a space after its last name).
ML_RATINGS_HEADER = "userId,movieId,rating,timestamp"
ML_MOVIES_HEADER = "movieId,title,genres"
TB_SAMPLES_HEADER = "user,time_stamp,adgroup_id,pid,nonclk,clk"
TB_ADS_HEADER = "adgroup_id,cate_id,campaign_id,customer,brand,price"
TB_USERS_HEADER = ("userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
                   "occupation,new_user_class_level ")

MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31 23:59:59 UTC, the last second a TIMESTAMP holds
_QUOTED = r'"(?:[^"]|"")*"'  # a quoted CSV field, "" being an escaped quote
_HEADER_NOISE = r'[\s"\x{FEFF}]'
_DECIMAL = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_DIGITS = r"^[0-9]+$"
_SECONDS = r"^[0-9]{1,12}$"
_COMPRESSION = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst")


class ImportInputError(RuntimeError):
    """A source file is missing, empty, of an unknown format, or has another header; or nothing was importable."""


@dataclass(frozen=True)
class Imported:
    """An import before it is written.

    ``sources`` maps each source file kind (``"movielens/ratings"``, main source first) to its classified rows:
    ``raw_row`` (the line), ``reason`` (null for an imported row) and the parsed fields. ``events``/``items``/
    ``users`` have the raw tables' columns.
    """

    importer: str
    events: DataFrame
    items: DataFrame
    users: DataFrame
    sources: dict[str, DataFrame]

    @property
    def main_source(self) -> str:
        return next(iter(self.sources))

    @property
    def rejects(self) -> DataFrame:
        """The rejected rows of every source, with the columns of :data:`IMPORT_REJECTS`."""
        parts = [rows.where(F.col("reason").isNotNull()).select(F.lit(name).alias("source"), "reason", "raw_row")
                 for name, rows in self.sources.items()]
        return reduce(lambda a, b: a.unionByName(b), parts)


# ---------------------------------------------------------------------------------------------- reading lines
def source_format(path: str) -> str | None:
    """``"csv"``, ``"dat"`` or ``"json"`` from a file name's extension (a compression suffix is looked through);
    None for another extension."""
    name = path.rstrip("/").lower()
    for suffix in _COMPRESSION:
        name = name.removesuffix(suffix)
    for fmt in ("csv", "dat", "json"):
        if name.endswith("." + fmt) or (fmt == "json" and name.endswith(".jsonl")):
            return fmt
    return None


def _normalise_header(text: str) -> str:
    return re.sub(r'[\s"\ufeff]', "", text).lower()


def read_lines(spark: SparkSession, path: str, *, header: str | None = None) -> DataFrame:
    """The file's lines as a DataFrame of ``value`` (Spark's text source: any file system, compressed or not).

    With ``header``, the first line must be that header (spaces, quotes, a BOM and case ignored), else
    ImportInputError; a missing path is an ImportInputError too.
    """
    from pyspark.errors import AnalysisException

    try:
        lines = spark.read.text(path)
    except AnalysisException as err:
        raise ImportInputError(f"cannot read {path}: {err}") from err
    if header is not None:
        first = lines.take(1)
        if not first:
            raise ImportInputError(f"{path} is empty: expected the header line {header.strip()!r} first")
        if _normalise_header(first[0]["value"]) != _normalise_header(header):
            raise ImportInputError(f"{path}: expected the header {header.strip()!r} as the first line, "
                                   f"found {first[0]['value'][:200]!r}")
    return lines


# ---------------------------------------------------------------------------------------------- parsing helpers
def _blank_to_null(column: Column, *, null_literal: str | None = None) -> Column:
    trimmed = F.trim(column)
    null = trimmed == "" if null_literal is None else (trimmed == "") | (trimmed == null_literal)
    return F.when(~null, trimmed)


def _delimited(lines: DataFrame, columns: Sequence[str], *, fmt: str, header: str | None = None,
               null_literal: str | None = None) -> DataFrame:
    """Lines -> ``raw_row``, ``reason`` (blank_line / wrong_column_count) and one trimmed string per column.

    ``fmt="csv"``: comma-separated, ``"`` quotes with ``""`` inside (Spark's ``from_csv``); the field count is
    the commas outside quotes + 1. ``fmt="dat"``: fields separated by ``::``. Empty fields are null.
    """
    value = F.regexp_replace(F.col("value"), r"^\x{FEFF}", "")
    if header is not None:
        lines = lines.where(F.lower(F.regexp_replace(F.col("value"), _HEADER_NOISE, "")) != _normalise_header(header))
    if fmt == "csv":
        n_fields = F.size(F.split(F.regexp_replace(value, _QUOTED, ""), ",", -1))
        schema = ", ".join(f"c{i} STRING" for i in range(len(columns)))
        parsed = F.from_csv(value, schema, {"quote": '"', "escape": '"', "mode": "PERMISSIVE"})
        fields = [parsed[f"c{i}"] for i in range(len(columns))]
    elif fmt == "dat":
        parts = F.split(value, "::", -1)
        n_fields = F.size(parts)
        fields = [F.try_element_at(parts, F.lit(i + 1)) for i in range(len(columns))]
    else:
        raise ValueError(f"fmt must be 'csv' or 'dat', got {fmt!r}")
    reason = F.when(F.trim(F.col("value")) == "", "blank_line").when(n_fields != len(columns), "wrong_column_count")
    return lines.select(F.col("value").alias("raw_row"), reason.alias("reason"),
                        *[_blank_to_null(f, null_literal=null_literal).alias(c) for c, f in zip(columns, fields,
                                                                                                 strict=True)])


def _json_lines(lines: DataFrame, keys: Sequence[str]) -> DataFrame:
    """JSON lines -> ``raw_row``, ``reason`` (blank_line / malformed_json) and each key's value as trimmed text.

    Keys are read as strings: a number comes back as its JSON text, a list as its JSON, so one odd value never
    turns a whole row into a parse error. Single-quoted (Python literal) objects are accepted.
    """
    schema = StructType([StructField(k, StringType(), True) for k in keys]
                        + [StructField("_corrupt_record", StringType(), True)])
    value = F.regexp_replace(F.col("value"), r"^\x{FEFF}", "")
    parsed = F.from_json(value, schema, {"columnNameOfCorruptRecord": "_corrupt_record", "allowSingleQuotes": "true",
                                         "mode": "PERMISSIVE"})
    malformed = ~F.ltrim(value).startswith("{") | parsed.isNull() | parsed["_corrupt_record"].isNotNull()
    reason = F.when(F.trim(F.col("value")) == "", "blank_line").when(malformed, "malformed_json")
    return lines.select(F.col("value").alias("raw_row"), reason.alias("reason"),
                        *[_blank_to_null(parsed[k]).alias(k) for k in keys])


def _check(rows: DataFrame, *rules: tuple[Column, str]) -> DataFrame:
    """Keep each row's reason; else the first rule (condition, reason) that holds."""
    chain = None
    for condition, reason in rules:
        chain = F.when(condition, reason) if chain is None else chain.when(condition, reason)
    return rows.withColumn("reason", F.coalesce(F.col("reason"), chain))


def _missing(*columns: str) -> tuple[Column, str]:
    return reduce(lambda a, b: a | b, [F.col(c).isNull() for c in columns]), "missing_field"


def _non_numeric(*columns: str) -> tuple[Column, str]:
    return reduce(lambda a, b: a | b, [~F.col(c).rlike(_DIGITS) for c in columns]), "non_numeric_id"


def _bad_seconds(column: str) -> tuple[Column, str]:
    return (~F.col(column).rlike(_SECONDS) | (F.col(column).try_cast("bigint") > MAX_EPOCH_SECONDS),
            "invalid_timestamp")


def _dedupe(rows: DataFrame, key: Column) -> DataFrame:
    """Adds ``key``; of the valid rows with the same key, all but the first in line-text order get duplicate_key.

    Rejected rows are spread over the window's partitions by their line (not gathered under one null key).
    """
    valid = F.col("reason").isNull()
    ordered = Window.partitionBy(valid, F.coalesce(F.col("key"), F.col("raw_row"))).orderBy("raw_row") \
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    rows = rows.withColumn("key", F.when(valid, key))
    return rows.withColumn("reason", F.when(F.col("reason").isNotNull(), F.col("reason"))
                           .when(F.row_number().over(ordered) > 1, F.lit("duplicate_key")))


def _key(prefix: str, *columns: str) -> Column:
    return F.concat_ws("-", F.lit(prefix), *[F.col(c) for c in columns])


def _events(ok: DataFrame, *, request_id: Column, position: Column, clicked: Column) -> DataFrame:
    """One impression per row (``user_id``, ``item_id``, ``seconds``, ``key``) and a click where ``clicked``."""
    seconds = F.col("seconds").try_cast("bigint")
    types = F.when(clicked, F.array(F.lit("impression"), F.lit("click"))).otherwise(F.array(F.lit("impression")))
    placed = ok.select("*", request_id.alias("_request_id"), position.cast("int").alias("_position"))
    exploded = placed.select("*", F.explode(types).alias("event_type"))  # a generator and a window: two selects
    suffix = F.when(F.col("event_type") == "click", F.lit("clk")).otherwise(F.lit("imp"))
    return exploded.select(
        F.concat_ws("-", F.col("key"), suffix).alias("event_id"),
        F.col("user_id"),
        F.col("item_id"),
        F.col("event_type"),
        F.timestamp_seconds(seconds).alias("event_time"),
        F.col("_request_id").alias("request_id"),
        F.col("_position").alias("position"),
        F.date_from_unix_date(F.floor(seconds / 86400).cast("int")).alias("ds"),
    ).select(*RAW_EVENTS.fieldNames())


def _side_table(event_ids: DataFrame, profiles: DataFrame | None, schema: StructType) -> DataFrame:
    """The profiles (schema's columns) plus a row of nulls for each id of ``event_ids`` that they lack."""
    key, rest = schema.fieldNames()[0], schema.fieldNames()[1:]
    ids = event_ids.select(key).dropDuplicates([key])
    nulls = [F.lit(None).cast("string").alias(c) for c in rest]
    if profiles is None:
        return ids.select(key, *nulls)
    profiles = profiles.select(*schema.fieldNames())
    return profiles.unionByName(ids.join(profiles, on=key, how="left_anti").select(key, *nulls))


def _ok(rows: DataFrame) -> DataFrame:
    return rows.where(F.col("reason").isNull())


# ---------------------------------------------------------------------------------------------- MovieLens
def movielens(ratings: DataFrame, movies: DataFrame | None = None, users: DataFrame | None = None, *,
              ratings_format: str = "csv", movies_format: str = "csv",
              click_threshold: float = 4.0) -> Imported:
    """MovieLens ratings (+ movies, + ML-1M users.dat) lines -> the raw tables; mapping in the module docstring."""
    rows = _delimited(ratings, ["user_id", "item_id", "rating", "seconds"], fmt=ratings_format,
                      header=ML_RATINGS_HEADER if ratings_format == "csv" else None)
    rows = _check(rows, _missing("user_id", "item_id", "rating", "seconds"), _non_numeric("user_id", "item_id"),
                  (~F.col("rating").rlike(_DECIMAL) | ~(F.abs(F.col("rating").try_cast("double")) < float("inf")),
                   "non_numeric_rating"),
                  _bad_seconds("seconds"))
    rows = _dedupe(rows, _key("ml", "user_id", "item_id", "seconds"))
    events = _events(_ok(rows), request_id=_key("ml", "user_id", "seconds"), position=F.lit(None),
                     clicked=F.col("rating").try_cast("double") >= F.lit(float(click_threshold)))
    sources = {"movielens/ratings": rows}

    item_profiles = None
    if movies is not None:
        m = _delimited(movies, ["item_id", "title", "genres"], fmt=movies_format,
                       header=ML_MOVIES_HEADER if movies_format == "csv" else None)
        m = _dedupe(_check(m, _missing("item_id", "genres"), _non_numeric("item_id")), F.col("item_id"))
        first_genre = F.trim(F.split(F.col("genres"), r"\|", -1).getItem(0))
        category = F.when((first_genre != "") & (first_genre != "(no genres listed)"), first_genre)
        item_profiles = _ok(m).select("item_id", category.alias("category_id"),
                                      F.lit(None).cast("string").alias("shop_id"),
                                      F.lit(None).cast("string").alias("brand_id"))
        sources["movielens/movies"] = m

    user_profiles = None
    if users is not None:
        u = _delimited(users, ["user_id", "gender", "age_bucket", "occupation", "city"], fmt="dat")
        u = _dedupe(_check(u, _missing("user_id"), _non_numeric("user_id")), F.col("user_id"))
        user_profiles = _ok(u).select(*RAW_USERS.fieldNames())
        sources["movielens/users"] = u

    ok = _ok(rows)
    return Imported("movielens", events, _side_table(ok, item_profiles, RAW_ITEMS),
                    _side_table(ok, user_profiles, RAW_USERS), sources)


# ---------------------------------------------------------------------------------------------- Amazon
def amazon(reviews: DataFrame, meta: DataFrame | None = None) -> Imported:
    """Amazon review (+ metadata) JSON lines, 2014 or 2018 format -> the raw tables."""
    rows = _json_lines(reviews, ["reviewerID", "asin", "unixReviewTime"])
    rows = rows.select("raw_row", "reason", F.col("reviewerID").alias("user_id"), F.col("asin").alias("item_id"),
                       F.col("unixReviewTime").alias("seconds"))
    rows = _check(rows, _missing("user_id", "item_id", "seconds"), _bad_seconds("seconds"))
    rows = _dedupe(rows, _key("amz", "user_id", "item_id", "seconds"))
    events = _events(_ok(rows), request_id=F.col("key"), position=F.lit(1), clicked=F.lit(True))
    sources = {"amazon/reviews": rows}

    item_profiles = None
    if meta is not None:
        m = _json_lines(meta, ["asin", "categories", "category", "brand"])
        m = _dedupe(_check(m, _missing("asin")), F.col("asin"))
        path_2014 = F.try_element_at(F.from_json(F.col("categories"), "array<array<string>>"), F.lit(1))
        path_2018 = F.from_json(F.col("category"), "array<string>")
        category = F.coalesce(_blank_to_null(F.try_element_at(path_2014, F.lit(-1))),
                              _blank_to_null(F.try_element_at(path_2018, F.lit(-1))))
        item_profiles = _ok(m).select(F.col("asin").alias("item_id"), category.alias("category_id"),
                                      F.lit(None).cast("string").alias("shop_id"), F.col("brand").alias("brand_id"))
        sources["amazon/meta"] = m

    ok = _ok(rows)
    return Imported("amazon", events, _side_table(ok, item_profiles, RAW_ITEMS), _side_table(ok, None, RAW_USERS),
                    sources)


# ---------------------------------------------------------------------------------------------- Taobao
def taobao(samples: DataFrame, ads: DataFrame, users: DataFrame | None = None) -> Imported:
    """Taobao display-ad log (raw_sample + ad_feature, + user_profile) CSV lines -> the raw tables."""
    rows = _delimited(samples, ["user_id", "seconds", "item_id", "pid", "nonclk", "clk"], fmt="csv",
                      header=TB_SAMPLES_HEADER)
    flags_ok = (F.col("clk").isin("0", "1") & F.col("nonclk").isin("0", "1")
                & ((F.col("clk").try_cast("int") + F.col("nonclk").try_cast("int")) == 1))
    rows = _check(rows, _missing("user_id", "seconds", "item_id", "pid", "nonclk", "clk"),
                  _non_numeric("user_id", "item_id"), _bad_seconds("seconds"), (~flags_ok, "invalid_clk"))
    rows = _dedupe(rows, _key("tb", "user_id", "seconds", "pid", "item_id"))
    ok = _ok(rows).withColumn("request_id", _key("tb", "user_id", "seconds", "pid"))
    in_request = Window.partitionBy("request_id").orderBy(F.col("item_id").try_cast("decimal(38,0)"), "item_id") \
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    events = _events(ok, request_id=F.col("request_id"), position=F.row_number().over(in_request),
                     clicked=F.col("clk") == "1")
    sources = {"taobao/raw_sample": rows}

    a = _delimited(ads, ["item_id", "category_id", "campaign_id", "shop_id", "brand_id", "price"], fmt="csv",
                   header=TB_ADS_HEADER, null_literal="NULL")
    a = _dedupe(_check(a, _missing("item_id"), _non_numeric("item_id")), F.col("item_id"))
    sources["taobao/ad_feature"] = a

    user_profiles = None
    if users is not None:
        u = _delimited(users, ["user_id", "cms_segid", "cms_group_id", "gender", "age_bucket", "pvalue_level",
                               "shopping_level", "occupation", "new_user_class_level"], fmt="csv",
                       header=TB_USERS_HEADER, null_literal="NULL")
        u = _dedupe(_check(u, _missing("user_id"), _non_numeric("user_id")), F.col("user_id"))
        user_profiles = _ok(u).select("user_id", "gender", "age_bucket", F.lit(None).cast("string").alias("city"))
        sources["taobao/user_profile"] = u

    base = _ok(rows)
    return Imported("taobao", events, _side_table(base, _ok(a), RAW_ITEMS),
                    _side_table(base, user_profiles, RAW_USERS), sources)


# ---------------------------------------------------------------------------------------------- writing
def write_import(lakehouse: Lakehouse, imported: Imported) -> dict[str, int]:
    """Write an import, check source rows = imported + rejected per source file, print and return the counts.

    ``raw/import_rejects`` first (this importer's rows replaced, other importers' kept), then ``raw/events``
    (only the days present in the import replaced), ``raw/items`` and ``raw/users`` (replaced). Nothing but the
    rejects is written when no row of the main source is importable (ImportInputError). The invariant is checked
    on the written tables: the main source's imported rows are the impressions in ``raw/events`` of the imported
    days, a side file's are its valid rows; rejected rows are those of ``raw/import_rejects``.
    """
    from pyspark import StorageLevel

    spark = imported.events.sparkSession
    for rows in imported.sources.values():  # parsed once, read by the counts and every write
        rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        tagged = [rows.select(F.lit(name).alias("source"), "reason") for name, rows in imported.sources.items()]
        classified = reduce(lambda a, b: a.unionByName(b), tagged).groupBy("source", "reason").count().collect()
        per_source = {name: {r["reason"]: r["count"] for r in classified if r["source"] == name}
                      for name in imported.sources}  # reason None: importable
        days = sorted(r["ds"] for r in imported.events.select("ds").dropDuplicates(["ds"]).collect())
        versions = {REJECTS_TABLE: _write_rejects(lakehouse, imported)}
        if not days:
            _print_sources(per_source, {n: c.get(None, 0) for n, c in per_source.items()},
                           {n: {r: k for r, k in c.items() if r is not None} for n, c in per_source.items()})
            raise ImportInputError(f"no row of {imported.main_source} could be imported; see {REJECTS_TABLE} "
                                   f"at {lakehouse.path(REJECTS_TABLE)}")
        versions[EVENTS_TABLE] = lakehouse.write(imported.events.repartition("ds"), EVENTS_TABLE, mode="overwrite",
                                                 replace_ds=days, partition_by=["ds"])
        versions[ITEMS_TABLE] = lakehouse.write(imported.items, ITEMS_TABLE, mode="overwrite")
        versions[USERS_TABLE] = lakehouse.write(imported.users, USERS_TABLE, mode="overwrite")
    finally:
        for rows in imported.sources.values():
            rows.unpersist()

    # read back what was written: the invariant holds for the tables, not only for the plan
    events = lakehouse.read(spark, EVENTS_TABLE, version=versions[EVENTS_TABLE]).where(F.col("ds").isin(days))
    rejects = lakehouse.read(spark, REJECTS_TABLE, version=versions[REJECTS_TABLE]).where(
        F.col("source").startswith(imported.importer + "/"))
    written = events.select(F.lit(EVENTS_TABLE).alias("source"), F.col("event_type").alias("reason")).unionByName(
        rejects.select("source", "reason")).groupBy("source", "reason").count().collect()  # one Spark job
    by_type = {r["reason"]: r["count"] for r in written if r["source"] == EVENTS_TABLE}
    rejected = {name: {r["reason"]: r["count"] for r in written if r["source"] == name} for name in per_source}
    ok = {name: by_type.get("impression", 0) if name == imported.main_source else per_source[name].get(None, 0)
          for name in per_source}
    _print_sources(per_source, ok, rejected)
    counts: dict[str, int] = {}
    for name, found in per_source.items():
        source_rows, n_rejected = sum(found.values()), sum(rejected[name].values())
        if source_rows != ok[name] + n_rejected:
            raise RuntimeError(f"invariant broken for {name}: {source_rows} source rows != {ok[name]} imported + "
                               f"{n_rejected} rejected in the written tables")
        counts |= {f"{name}.rows": source_rows, f"{name}.imported": ok[name], f"{name}.rejected": n_rejected}
    counts |= {"events.impression": by_type.get("impression", 0), "events.click": by_type.get("click", 0),
               "days": len(days)}
    for table in (ITEMS_TABLE, USERS_TABLE):  # from the Delta log's statistics where delta-rs can read the table
        counts[f"{table}.rows"] = (lakehouse.count(table, version=versions[table]) if lakehouse.is_local
                                   else lakehouse.read(spark, table, version=versions[table]).count())
    print(f"{EVENTS_TABLE}: {counts['events.impression']} impressions + {counts['events.click']} clicks in "
          f"{len(days)} days {days[0]}..{days[-1]} (those days replaced): version {versions[EVENTS_TABLE]} at "
          f"{lakehouse.path(EVENTS_TABLE)}")
    for table in (ITEMS_TABLE, USERS_TABLE):
        print(f"{table}: {counts[f'{table}.rows']} rows: version {versions[table]} at {lakehouse.path(table)}")
    print(f"{REJECTS_TABLE}: version {versions[REJECTS_TABLE]} at {lakehouse.path(REJECTS_TABLE)}")
    return counts


def _write_rejects(lakehouse: Lakehouse, imported: Imported) -> int:
    """Replace this importer's rows of ``raw/import_rejects`` in one commit, keeping the other importers' rows.

    (``Lakehouse.write``'s ``replace_match`` narrows a ``replace_ds`` overwrite, and rejects have no day: a row
    whose time cannot be parsed has none. So the table is overwritten with the other importers' rows, read at
    the version being replaced, plus this import's.)
    """
    from features.tableio import TableNotFoundError

    new = imported.rejects
    try:
        existing = lakehouse.read(new.sparkSession, REJECTS_TABLE)
    except TableNotFoundError:
        existing = None
    if existing is not None:
        new = existing.where(~F.col("source").startswith(imported.importer + "/")).unionByName(new)
    return lakehouse.write(new.select(*IMPORT_REJECTS.fieldNames()), REJECTS_TABLE, mode="overwrite")


def _print_sources(per_source: dict[str, dict], imported: dict[str, int], rejected: dict[str, dict]) -> None:
    for name, found in per_source.items():
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected[name].items()))
        print(f"{name}: {sum(found.values())} source rows = {imported[name]} imported + "
              f"{sum(rejected[name].values())} rejected" + (f" ({detail})" if detail else ""))
