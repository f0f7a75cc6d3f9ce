"""Import the Taobao display-ad click log (Alimama) into raw/events, raw/items, raw/users (features.importers).

    python -m jobs.import_taobao --lakehouse DIR --samples raw_sample.csv --ads ad_feature.csv \\
        [--users user_profile.csv]
    spark-submit jobs/import_taobao.py --lakehouse DIR --samples raw_sample.csv --ads ad_feature.csv ...

Each sample row is an impression (+ a click when clk = 1) in the request (user, time_stamp, pid). Replaces the
imported days of ``raw/events``, all of ``raw/items`` and ``raw/users``, and the Taobao rows of
``raw/import_rejects``; exits 1 when an input is missing or unusable, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/import_taobao.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import importers as I  # noqa: E402
from features.spark import get_spark  # noqa: E402
from features.tableio import Lakehouse  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.import_taobao", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True, help="lakehouse root (folder or URI)")
    parser.add_argument("--samples", required=True, help=f"raw_sample.csv ({I.TB_SAMPLES_HEADER})")
    parser.add_argument("--ads", required=True, help=f"ad_feature.csv ({I.TB_ADS_HEADER})")
    parser.add_argument("--users", help="user_profile.csv (userid, ..., final_gender_code, age_level, ...)")
    args = parser.parse_args(argv)
    spark = get_spark("import_taobao")
    try:
        samples = I.read_lines(spark, args.samples, header=I.TB_SAMPLES_HEADER)
        ads = I.read_lines(spark, args.ads, header=I.TB_ADS_HEADER)
        users = None if args.users is None else I.read_lines(spark, args.users, header=I.TB_USERS_HEADER)
        I.write_import(Lakehouse(args.lakehouse), I.taobao(samples, ads, users))
    except I.ImportInputError as err:
        print(f"import_taobao: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
