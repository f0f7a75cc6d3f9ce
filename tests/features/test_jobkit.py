"""The job kit: command line and typed config, and the run record of succeeded and failed runs."""

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
        return jobkit.JobOutcome(inputs={"raw/events": 3}, counts={"rows_in": 7})

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


def test_until_runs_every_day_in_order_in_one_session_and_stops_at_the_first_failure(spark, tmp_path, capsys):
    lakehouse = str(tmp_path / "lh")
    args = jobkit.parse_job_args("demo", ["--lakehouse", lakehouse, "--ds", "2026-01-02", "--until", "2026-01-05"],
                                 DemoConfig)
    assert args.days() == [dt.date(2026, 1, d) for d in (2, 3, 4, 5)]
    seen = []

    def fails_on_the_4th(spark_, args_):
        assert args_.until is None and args_.days() == [args_.ds]  # the body sees one day at a time
        seen.append(args_.ds)
        if args_.ds == dt.date(2026, 1, 4):
            raise jobkit.JobInputError("no events for the 4th")
        return jobkit.JobOutcome(counts={"day": args_.ds.day})

    assert jobkit.run_job(args, fails_on_the_4th, spark=spark) == 1
    assert seen == [dt.date(2026, 1, 2), dt.date(2026, 1, 3), dt.date(2026, 1, 4)]  # the 5th is not attempted
    assert "stopped at 2026-01-04; not run: 2026-01-05..2026-01-05" in capsys.readouterr().err
    runs = args.lakehouse.read(spark, jobkit.RUNS_TABLE).orderBy("ds").collect()
    assert [(r.run_id, r.status, r.counts) for r in runs] == [
        ("demo/2026-01-02", "succeeded", {"day": 2}), ("demo/2026-01-03", "succeeded", {"day": 3}),
        ("demo/2026-01-04", "failed", {})]


@pytest.mark.parametrize("until", ["2026-01-01", "tomorrow"])
def test_until_before_ds_or_not_a_date_exits_with_status_2(tmp_path, until, capsys):
    with pytest.raises(SystemExit) as exit_:
        jobkit.parse_job_args("demo", ["--lakehouse", str(tmp_path), "--ds", "2026-01-02", "--until", until],
                              DemoConfig)
    assert exit_.value.code == 2 and "--until" in capsys.readouterr().err
