"""The three importers end to end: main([...]) on the tiny fixtures of tests/features/test_importers.py into a
lakehouse, then validate_events on an imported day; reruns, rejects and exit statuses."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from features import importers as I
from features.tableio import Lakehouse
from jobs import import_amazon, import_movielens, import_taobao, validate_events
from tests.features.test_importers import (
    AMZ_META,
    AMZ_REVIEWS,
    ML_MOVIES,
    ML_RATINGS,
    TB_ADS,
    TB_SAMPLES,
    TB_USERS,
    write_lines,
)

REPO = Path(__file__).resolve().parents[2]
MAINS = {"movielens": import_movielens.main, "amazon": import_amazon.main, "taobao": import_taobao.main}
# per importer: a day to validate, its impressions and clicks, and per source file (rows, imported, rejected),
# worked out by hand from the fixtures (see tests/features/test_importers.py for every row)
EXPECTED = {
    "movielens": (dt.date(2009, 2, 13), 2, 1,
                  {"movielens/ratings": (12, 5, 7), "movielens/movies": (6, 4, 2)}),
    "amazon": (dt.date(2009, 9, 13), 2, 2, {"amazon/reviews": (8, 3, 5), "amazon/meta": (5, 3, 2)}),
    "taobao": (dt.date(2017, 5, 7), 3, 1,
               {"taobao/raw_sample": (9, 4, 5), "taobao/ad_feature": (4, 3, 1), "taobao/user_profile": (2, 2, 0)}),
}
IMPORTED_DAYS = {"movielens": {dt.date(2009, 2, 13), dt.date(2009, 2, 14)},
                 "amazon": {dt.date(2009, 9, 13), dt.date(2009, 9, 14)},
                 "taobao": {dt.date(2017, 5, 7), dt.date(2017, 5, 13)}}


def _argv(name: str, folder: Path) -> list[str]:
    if name == "movielens":
        return ["--ratings", write_lines(folder, "ratings.csv", ML_RATINGS),
                "--movies", write_lines(folder, "movies.csv", ML_MOVIES)]
    if name == "amazon":
        return ["--reviews", write_lines(folder, "reviews.json", AMZ_REVIEWS),
                "--meta", write_lines(folder, "meta.json", AMZ_META)]
    return ["--samples", write_lines(folder, "raw_sample.csv", TB_SAMPLES),
            "--ads", write_lines(folder, "ad_feature.csv", TB_ADS),
            "--users", write_lines(folder, "user_profile.csv", TB_USERS)]


def run_main(name: str, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = MAINS[name](argv)
    return status, out.getvalue()


def rows(spark, lakehouse: Lakehouse, table: str) -> list[tuple]:
    return sorted(map(tuple, lakehouse.read(spark, table).collect()), key=repr)


@dataclass
class Imports:
    lakehouse: Lakehouse
    argv: dict[str, list[str]]
    stdout: dict[str, str]
    side_tables: dict[str, tuple[list, list]]  # raw/items and raw/users right after each import


@pytest.fixture(scope="module")
def imports(tmp_path_factory, spark) -> Imports:
    """The three imports, one after the other, into one lakehouse: their days do not overlap, so raw/events and
    raw/import_rejects end up holding all three (raw/items and raw/users are the last import's)."""
    folder = tmp_path_factory.mktemp("imports")
    lakehouse = Lakehouse(folder / "lh")
    result = Imports(lakehouse, {}, {}, {})
    for name in MAINS:
        (folder / name).mkdir()
        result.argv[name] = ["--lakehouse", lakehouse.root, *_argv(name, folder / name)]
        status, result.stdout[name] = run_main(name, result.argv[name])
        assert status == 0, result.stdout[name]
        result.side_tables[name] = (rows(spark, lakehouse, "raw/items"), rows(spark, lakehouse, "raw/users"))
    return result


@pytest.mark.parametrize("name", list(MAINS))
def test_an_imported_day_validates_clean_with_no_orphan_click(spark, imports, name):
    lakehouse = imports.lakehouse
    day, impressions, clicks, _ = EXPECTED[name]
    assert validate_events.main(["--lakehouse", lakehouse.root, "--ds", day.isoformat()]) == 0
    on_day = F.col("ds") == F.lit(day)
    quarantined = lakehouse.read(spark, "features/quarantine").where(on_day).collect()
    assert quarantined == [], [(r.reason, r.raw_row) for r in quarantined]  # no orphan_click, nothing else either
    raw = sorted(map(tuple, lakehouse.read(spark, "raw/events").where(on_day).collect()), key=repr)
    clean = sorted(map(tuple, lakehouse.read(spark, "features/events_clean").where(on_day).collect()), key=repr)
    assert clean == raw
    assert (sum(r[3] == "impression" for r in raw), sum(r[3] == "click" for r in raw)) == (impressions, clicks)


@pytest.mark.parametrize("name", list(MAINS))
def test_counts_are_printed_and_rejects_kept_per_importer(spark, imports, name):
    rejects = imports.lakehouse.read(spark, I.REJECTS_TABLE)
    for source, (total, ok, rejected) in EXPECTED[name][3].items():
        assert f"{source}: {total} source rows = {ok} imported + {rejected} rejected" in imports.stdout[name]
        assert rejects.where(F.col("source") == source).count() == rejected  # later imports kept these rows
    days = imports.lakehouse.read(spark, "raw/events").select("ds").distinct().collect()
    assert {r.ds for r in days} == set().union(*IMPORTED_DAYS.values())  # each import replaced only its own days


@pytest.mark.parametrize("name", list(MAINS))
def test_a_rerun_gives_identical_tables(spark, imports, name):
    lakehouse = imports.lakehouse
    before = {t: rows(spark, lakehouse, t) for t in ("raw/events", I.REJECTS_TABLE)}
    status, stdout = run_main(name, imports.argv[name])
    assert status == 0
    def counts(text: str) -> list[str]:  # the per-source count lines and the event counts (versions differ)
        return [line.split(": version")[0] for line in text.splitlines()]

    assert counts(stdout) == counts(imports.stdout[name])
    assert {t: rows(spark, lakehouse, t) for t in before} == before
    assert (rows(spark, lakehouse, "raw/items"), rows(spark, lakehouse, "raw/users")) == imports.side_tables[name]


def test_missing_input_bad_header_and_nothing_importable_exit_1_and_write_no_events(spark, tmp_path, capsys):
    root = str(tmp_path / "lh")
    assert import_movielens.main(["--lakehouse", root, "--ratings", str(tmp_path / "none.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err
    movies_as_ratings = write_lines(tmp_path, "ratings.csv", ML_MOVIES)
    assert import_movielens.main(["--lakehouse", root, "--ratings", movies_as_ratings]) == 1
    assert "expected the header 'userId,movieId,rating,timestamp'" in capsys.readouterr().err
    bad = write_lines(tmp_path, "bad.json", ["not json", '{"asin": "B1"}'])
    assert import_amazon.main(["--lakehouse", root, "--reviews", bad]) == 1
    captured = capsys.readouterr()
    assert "no row of amazon/reviews could be imported" in captured.err
    assert "amazon/reviews: 2 source rows = 0 imported + 2 rejected" in captured.out
    lakehouse = Lakehouse(root)
    assert not lakehouse.exists("raw/events") and lakehouse.count(I.REJECTS_TABLE) == 2


def test_bad_arguments_exit_2_and_the_file_runs_as_a_script(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        import_movielens.main(["--lakehouse", str(tmp_path), "--ratings", "ratings.txt"])
    assert exit_info.value.code == 2
    # spark-submit jobs/import_movielens.py runs the file, not the module: its imports must work that way too.
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "import_movielens.py"), "--lakehouse", str(tmp_path),
                           "--ratings", "r.csv", "--users", "users.csv"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--users users.csv: expected a file ending in .dat" in done.stderr
