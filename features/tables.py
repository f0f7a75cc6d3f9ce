"""The lakehouse's table names and the feature chain's shape: which job writes which table and reads which.

Standard library only, so that JVM-free processes (Airflow callbacks, the training ranks) import it without pyspark.
"""

from __future__ import annotations

RAW_EVENTS = "raw/events"
RAW_ITEMS = "raw/items"
RAW_USERS = "raw/users"

RUNS = "features/runs"
QUARANTINE = "features/quarantine"
EVENTS_CLEAN = "features/events_clean"
VOCAB = "features/vocab"
VOCAB_PENDING = "features/vocab_pending"
VOCAB_DAYS = "features/vocab_days"
SAMPLES = "features/samples"
USER_STATE = "features/user_state"
SPLIT = "features/split"
RANK_EVAL = "features/rank_eval"

#: the feature jobs in the order a day goes through them
CHAIN: tuple[str, ...] = ("validate_events", "build_vocab", "build_samples", "build_rank_eval")

#: each job's output whose Delta version orders the job's own runs (the table its claim commits first)
PRIMARY_OUTPUT: dict[str, str] = {
    "validate_events": EVENTS_CLEAN,
    "build_vocab": VOCAB,
    "build_samples": SAMPLES,
    "build_rank_eval": RANK_EVAL,
}

#: what a day of each job reads of the jobs before it: upstream job -> the table of it that is read. A day d depends on
#: the upstream's days up to d (build_rank_eval: up to its anchor day d).
UPSTREAM: dict[str, dict[str, str]] = {
    "validate_events": {},
    "build_vocab": {"validate_events": EVENTS_CLEAN},
    "build_samples": {"validate_events": EVENTS_CLEAN, "build_vocab": VOCAB},
    "build_rank_eval": {"build_samples": SAMPLES, "build_vocab": VOCAB},
}

#: the jobs that carry state from day to day: a day is built on every earlier day of the job's own (the vocabulary's
#: indices, the users' histories). validate_events reads the day before's valid impressions too (midnight clicks), but
#: those depend on that day's raw rows only (``features.lineage`` follows them there); a rank_eval anchor reads the
#: samples only.
CHAINED: frozenset[str] = frozenset({"build_vocab", "build_samples"})
