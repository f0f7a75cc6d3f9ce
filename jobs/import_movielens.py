"""Import MovieLens ratings (+ movies, + ML-1M users) into raw/events, raw/items, raw/users (features.importers).

    python -m jobs.import_movielens --lakehouse DIR --ratings ratings.csv [--movies movies.csv] [--click-threshold 4.0]
    python -m jobs.import_movielens --lakehouse DIR --ratings ratings.dat [--movies movies.dat] [--users users.dat]
    spark-submit jobs/import_movielens.py --lakehouse DIR --ratings ratings.csv ...

The format follows each file's extension: ``.csv`` (ML-20M/25M/latest, with header) or ``.dat`` (ML-1M/10M,
``::``-separated). Replaces the imported days of ``raw/events``, all of ``raw/items`` and ``raw/users``, and the
MovieLens rows of ``raw/import_rejects``; exits 1 when an input is missing or unusable, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/import_movielens.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import importers as I  # noqa: E402
from features.spark import get_spark  # noqa: E402
from features.tableio import Lakehouse  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.import_movielens", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True, help="lakehouse root (folder or URI)")
    parser.add_argument("--ratings", required=True, help="ratings.csv or ratings.dat")
    parser.add_argument("--movies", help="movies.csv or movies.dat: category_id = the first genre")
    parser.add_argument("--users", help="users.dat (ML-1M): gender, age_bucket = Age, city = Zip-code")
    parser.add_argument("--click-threshold", type=float, default=4.0, help="a rating >= this is a click (4.0)")
    args = parser.parse_args(argv)
    args.formats = {}
    for option, allowed in (("ratings", ("csv", "dat")), ("movies", ("csv", "dat")), ("users", ("dat",))):
        path = getattr(args, option)
        fmt = I.source_format(path) if path is not None else None
        if path is not None and fmt not in allowed:
            parser.error(f"--{option} {path}: expected a file ending in {' or '.join('.' + f for f in allowed)}")
        args.formats[option] = fmt
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = get_spark("import_movielens")
    fmt = args.formats
    try:
        ratings = I.read_lines(spark, args.ratings, header=I.ML_RATINGS_HEADER if fmt["ratings"] == "csv" else None)
        movies = None if args.movies is None else I.read_lines(
            spark, args.movies, header=I.ML_MOVIES_HEADER if fmt["movies"] == "csv" else None)
        users = None if args.users is None else I.read_lines(spark, args.users)
        imported = I.movielens(ratings, movies, users, ratings_format=fmt["ratings"],
                               movies_format=fmt["movies"] or "csv", click_threshold=args.click_threshold)
        I.write_import(Lakehouse(args.lakehouse), imported)
    except I.ImportInputError as err:
        print(f"import_movielens: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
