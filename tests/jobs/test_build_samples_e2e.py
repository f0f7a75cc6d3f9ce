"""jobs.build_samples and jobs.build_rank_eval end to end on a small seeded synthetic lakehouse.

Covers: one sample per clean impression, the run records, day order (a gap is refused), a rerun of an earlier day
(with the days after it) giving the same rows, the fixed lengths stored as table properties, refusals with exit 1,
and the evaluation sets built on top.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from features.rank_eval import RANK_EVAL_TABLE, SPLIT_TABLE
from features.samples import SAMPLES_TABLE, STATE_TABLE
from jobs import build_rank_eval, build_samples, build_vocab, generate_synthetic, validate_events

D1, D2, D3 = (dt.date(2026, 1, d) for d in (1, 2, 3))


def run(job, lakehouse, day, *extra):
    return job.main(["--lakehouse", str(lakehouse.root), "--ds", day.isoformat(), *extra])


def rows(spark, lakehouse, table, day, version=None):
    df = lakehouse.read(spark, table, version=version).where(F.col("ds") == F.lit(day))
    return sorted(map(tuple, df.collect()), key=repr)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    from features.tableio import Lakehouse

    lakehouse = Lakehouse(tmp_path_factory.mktemp("samples") / "lh")
    assert generate_synthetic.main(["--lakehouse", str(lakehouse.root), "--users", "30", "--items", "400",
                                    "--days", "3", "--seed", "3", "--requests-per-user-day", "3"]) == 0
    for day in (D1, D2, D3):
        assert run(validate_events, lakehouse, day) == 0
        assert run(build_vocab, lakehouse, day) == 0
    return lakehouse


def test_days_in_order_reruns_and_refusals(spark, built, capsys):
    lakehouse = built
    assert run(build_samples, lakehouse, D1) == 0
    assert run(build_samples, lakehouse, D3) == 1  # day 2 was never built
    assert "but 2026-01-02 was never processed by it; run it from 2026-01-02" in capsys.readouterr().err
    assert run(build_samples, lakehouse, D2) == 0
    assert run(build_samples, lakehouse, D3) == 0

    # one sample per clean impression, every day
    clean = lakehouse.read(spark, "features/events_clean").where(F.col("event_type") == "impression")
    samples = lakehouse.read(spark, SAMPLES_TABLE)
    per_day = {r["ds"]: r["count"] for r in samples.groupBy("ds").count().collect()}
    assert per_day == {r["ds"]: r["count"] for r in clean.groupBy("ds").count().collect()}
    assert samples.join(clean, on=samples["sample_id"] == clean["event_id"], how="left_anti").isEmpty()
    assert samples.where(F.col("ds") == F.lit(D3)).agg(F.sum("hist_len")).first()[0] > 0

    # the run records carry the counts; the lengths are table properties
    runs = lakehouse.read(spark, "features/runs").where(
        (F.col("job") == "build_samples") & (F.col("status") == "succeeded") & (F.col("ds") == F.lit(D3))).first()
    assert runs["counts"]["samples"] == per_day[D3]
    assert runs["counts"]["clicks"] == runs["counts"]["negatives_sampled"] + runs["counts"]["negatives_from_exposures"]
    assert runs["inputs"][STATE_TABLE] >= 0 and SAMPLES_TABLE in runs["outputs"]
    assert runs["counts"]["other_event_types"] == 0  # the synthetic log has impressions and clicks only
    props = lakehouse.properties(SAMPLES_TABLE)
    assert (props["ctr.samples.hist_len"], props["ctr.samples.ctx_size"]) == ("50", "5")

    # day 2 alone after day 3 is refused (day 3 was built on it); day 2 to day 3 gives the same rows for both
    before = {t: (rows(spark, lakehouse, t, D2), rows(spark, lakehouse, t, D3)) for t in (SAMPLES_TABLE, STATE_TABLE)}
    assert run(build_samples, lakehouse, D2) == 1
    assert "run the whole rest of the chain: --ds 2026-01-02 --until 2026-01-03" in capsys.readouterr().err
    assert run(build_samples, lakehouse, D2, "--until", D3.isoformat()) == 0
    after = {t: (rows(spark, lakehouse, t, D2), rows(spark, lakehouse, t, D3)) for t in (SAMPLES_TABLE, STATE_TABLE)}
    assert after == before

    # other settings than the table's, or a day the vocabulary has not seen: exit 1, nothing written
    version = lakehouse.version(SAMPLES_TABLE)
    assert run(build_samples, lakehouse, D3, "--set", "hist_len=10") == 1
    assert "ctr.samples.hist_len=50 (asked: 10)" in capsys.readouterr().err
    assert run(build_samples, lakehouse, dt.date(2026, 1, 4)) == 1
    assert "validate_events has not processed 2026-01-04" in capsys.readouterr().err
    assert lakehouse.version(SAMPLES_TABLE) == version


def test_rank_eval_and_split_on_the_built_samples(spark, built):
    lakehouse = built
    if not lakehouse.exists(SAMPLES_TABLE) or lakehouse.read(spark, SAMPLES_TABLE).where(
            F.col("ds") == F.lit(D3)).isEmpty():
        pytest.skip("needs the samples of test_days_in_order_reruns_and_refusals")
    assert run(build_rank_eval, lakehouse, D3) == 0
    split = {r["ds"]: r["split"] for r in lakehouse.read(spark, SPLIT_TABLE).collect()}
    assert split == {D1: "train", D2: "valid", D3: "test"}
    evaluation = lakehouse.read(spark, RANK_EVAL_TABLE).collect()
    positives_d3 = lakehouse.read(spark, SAMPLES_TABLE).where((F.col("ds") == F.lit(D3)) & (F.col("label") == 1))
    assert len(evaluation) == positives_d3.select("user_idx").distinct().count() > 0
    for row in evaluation:
        candidates = row["cand_item_idx"]
        assert len(candidates) == 100 == len(set(candidates)) and candidates[0] == row["item_idx"]
        assert row["label"] == 1 and row["ds"] == D3
    # a rerun gives the same rows
    first = sorted(map(tuple, lakehouse.read(spark, RANK_EVAL_TABLE).collect()), key=repr)
    assert run(build_rank_eval, lakehouse, D3) == 0
    assert sorted(map(tuple, lakehouse.read(spark, RANK_EVAL_TABLE).collect()), key=repr) == first
