"""Import Amazon reviews (+ item metadata), 2014 or 2018 format, into raw/events, raw/items, raw/users.

    python -m jobs.import_amazon --lakehouse DIR --reviews reviews_Books_5.json[.gz] [--meta meta_Books.json[.gz]]
    spark-submit jobs/import_amazon.py --lakehouse DIR --reviews ... [--meta ...]

JSON lines (mapping in ``features.importers``): each review is an impression and a click in a request of its own.
Replaces the imported days of ``raw/events``, all of ``raw/items`` and ``raw/users``, and the Amazon rows of
``raw/import_rejects``; exits 1 when an input is missing or unusable, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/import_amazon.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import importers as I  # noqa: E402
from features.spark import get_spark  # noqa: E402
from features.tableio import Lakehouse  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.import_amazon", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True, help="lakehouse root (folder or URI)")
    parser.add_argument("--reviews", required=True, help="JSON lines: reviewerID, asin, unixReviewTime")
    parser.add_argument("--meta", help="JSON lines: asin, categories (2014) or category (2018), brand")
    args = parser.parse_args(argv)
    spark = get_spark("import_amazon")
    try:
        reviews = I.read_lines(spark, args.reviews)
        meta = None if args.meta is None else I.read_lines(spark, args.meta)
        I.write_import(Lakehouse(args.lakehouse), I.amazon(reviews, meta))
    except I.ImportInputError as err:
        print(f"import_amazon: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
