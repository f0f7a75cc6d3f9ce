"""The job kit: command line and typed config, the run records of a range, and the claim of racing runs."""

from __future__ import annotations

import datetime as dt

import pytest

from features import jobkit


class DemoConfig(jobkit.JobConfig):
    min_count: int = 1
    window_seconds: int = 60


def test_config_file_and_overrides_are_typed(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("min_count: 3\nwindow_seconds: 10\n")
    args = jobkit.parse_job_args("demo", ["--lakehouse", str(tmp_path), "--ds", "2026-01-02", "--config",
                                          str(config), "--set", "window_seconds=20"], DemoConfig)
    assert args.ds == dt.date(2026, 1, 2)
    assert args.config == DemoConfig(min_count=3, window_seconds=20)
    assert args.run_id == "demo/2026-01-02"


@pytest.mark.parametrize(
    "extra",
    [["--set", "min_cont=3"], ["--set", "min_count=many"], ["--set", "novalue"], ["--config", "/no/such.yaml"]],
)
def test_bad_settings_exit_with_status_2(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as exit_:
        jobkit.parse_job_args("demo", ["--lakehouse", str(tmp_path), "--ds", "2026-01-02", *extra], DemoConfig)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip()


def test_runs_are_recorded_succeeded_or_failed(spark, tmp_path, capsys):
    args = jobkit.parse_job_args("demo", ["--lakehouse", str(tmp_path / "lh"), "--ds", "2026-01-02"], DemoConfig)

    def works(spark_, args_):
        return jobkit.JobOutcome(inputs={"raw/events": 3}, counts={args_.ds: {"rows_in": 7}})

    def missing_input(spark_, args_):
        jobkit.require_table(spark_, args_.lakehouse, "raw/nothing", produced_by="the importer")

    def crashes(spark_, args_):
        raise ZeroDivisionError("boom")

    assert jobkit.run_job(args, works, spark=spark) == 0
    assert jobkit.run_job(args, missing_input, spark=spark) == 1
    assert "input table 'raw/nothing' does not exist" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):
        jobkit.run_job(args, crashes, spark=spark)

    runs = args.lakehouse.read(spark, jobkit.RUNS_TABLE).orderBy("started_at").collect()
    assert [r.status for r in runs] == ["succeeded", "failed", "failed"]
    assert runs[0].inputs == {"raw/events": 3} and runs[0].counts == {"rows_in": 7} and runs[0].error is None
    assert "run the importer first" in runs[1].error
    assert "ZeroDivisionError: boom" in runs[2].error
    assert all(r.run_id == "demo/2026-01-02" and r.config == '{"min_count": 1, "window_seconds": 60}' for r in runs)


def test_a_range_is_one_body_call_recorded_with_a_row_per_day(spark, tmp_path, capsys):
    lakehouse = str(tmp_path / "lh")
    args = jobkit.parse_job_args("demo", ["--lakehouse", lakehouse, "--ds", "2026-01-02", "--until", "2026-01-04"],
                                 DemoConfig)
    assert args.days() == [dt.date(2026, 1, d) for d in (2, 3, 4)] and args.last == dt.date(2026, 1, 4)
    calls = []

    def body(spark_, args_):
        calls.append(args_.days())
        return jobkit.JobOutcome(outputs={"t": 5}, counts={day: {"day": day.day} for day in args_.days()})

    assert jobkit.run_job(args, body, spark=spark) == 0
    assert calls == [args.days()]  # the whole range at once
    runs = args.lakehouse.read(spark, jobkit.RUNS_TABLE).orderBy("ds").collect()
    assert [(r.run_id, r.ds.day, r.status, r.counts, r.outputs) for r in runs] == [
        ("demo/2026-01-02..2026-01-04", d, "succeeded", {"day": d}, {"t": 5}) for d in (2, 3, 4)]
    assert len({r.seconds for r in runs}) == 1  # the run's time, on each of its days

    def refuses(spark_, args_):
        raise jobkit.JobInputError("no events for the 3rd")

    assert jobkit.run_job(args, refuses, spark=spark) == 1
    assert "no events for the 3rd" in capsys.readouterr().err
    failed = args.lakehouse.read(spark, jobkit.RUNS_TABLE).where("status = 'failed'").collect()
    assert sorted(r.ds.day for r in failed) == [2, 3, 4]


def test_of_two_runs_that_read_the_same_version_only_one_commits(spark, tmp_path):
    """Both runs take their claim before either writes (they race): the second writer fails loudly and its rows are
    not written, whether it commits after the first or at the same time."""
    import threading

    from features.tableio import Lakehouse

    lakehouse = Lakehouse(tmp_path / "lh")
    day = dt.date(2026, 1, 2)

    def args(ds):
        return jobkit.parse_job_args("demo", ["--lakehouse", str(lakehouse.root), "--ds", ds], DemoConfig)

    def frame(value):
        return spark.createDataFrame([(value, day)], "v int, ds date")

    first, second = args("2026-01-02"), args("2026-01-02")
    claims = [jobkit.claim(first, spark, "t/x"), jobkit.claim(second, spark, "t/x")]
    claims[0].write(first, spark, frame(1), "t/x", mode="overwrite", replace_ds=[day], partition_by=["ds"])
    with pytest.raises(jobkit.ConcurrentRunError, match="another demo run committed t/x"):
        claims[1].write(second, spark, frame(2), "t/x", mode="overwrite", replace_ds=[day], partition_by=["ds"])
    assert [r.v for r in lakehouse.read(spark, "t/x").collect()] == [1]
    # a later run takes a fresh claim and commits
    later = args("2026-01-02")
    jobkit.claim(later, spark, "t/x").write(later, spark, frame(3), "t/x", mode="overwrite", replace_ds=[day],
                                            partition_by=["ds"])
    assert [r.v for r in lakehouse.read(spark, "t/x").collect()] == [3]

    # at the same time, in two threads: exactly one commits
    racers = [args("2026-01-02"), args("2026-01-02")]
    claims = [jobkit.claim(racer, spark, "t/x") for racer in racers]
    outcomes: list[object] = [None, None]
    start = threading.Barrier(2)

    def race(n):
        start.wait()
        try:
            claims[n].write(racers[n], spark, frame(10 + n), "t/x", mode="overwrite", replace_ds=[day],
                            partition_by=["ds"])
            outcomes[n] = "committed"
        except jobkit.ConcurrentRunError as err:
            outcomes[n] = err

    threads = [threading.Thread(target=race, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, outcomes)).count("committed") == 1, outcomes
    winner = outcomes.index("committed")
    assert [r.v for r in lakehouse.read(spark, "t/x").collect()] == [10 + winner]


@pytest.mark.parametrize("until", ["2026-01-01", "tomorrow"])
def test_until_before_ds_or_not_a_date_exits_with_status_2(tmp_path, until, capsys):
    with pytest.raises(SystemExit) as exit_:
        jobkit.parse_job_args("demo", ["--lakehouse", str(tmp_path), "--ds", "2026-01-02", "--until", until],
                              DemoConfig)
    assert exit_.value.code == 2 and "--until" in capsys.readouterr().err
