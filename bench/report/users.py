"""One user or all users: the two decode speeds every section names.

A row measured with `parallel` N decodes N sequences together. Its `decode_tok_s_mean` is the aggregate, every
user's tokens together (a throughput and cost figure); what one user sees is `decode_tok_s_per_seq_mean`, or
aggregate / N in rows written before that column. With one sequence the two are the same. One-user questions
(the fastest decode, Pareto fronts, rankings, `min_decode_tok_s`, time to answer) read the per-user speed.
"""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt

PER_USER = "per user"
ALL_USERS = "all users"
USER_DECODE = "decode_user_tok_s"  # the derived column measured rows and configurations carry


def sequences(frame: pd.DataFrame) -> pd.Series:
    """Concurrent sequences of each row; 1 for rows written before the `parallel` knob."""
    if "parallel" not in frame:
        return pd.Series(1.0, index=frame.index)
    return fmt.as_float(frame["parallel"]).fillna(1.0)


def user_tok_s(frame: pd.DataFrame) -> pd.Series:
    """Decode tok/s each user gets: the per-sequence column, else aggregate / sequences (lockstep decode)."""
    aggregate = fmt.as_float(frame["decode_tok_s_mean"]) / sequences(frame)
    if "decode_tok_s_per_seq_mean" not in frame:
        return aggregate
    return fmt.as_float(frame["decode_tok_s_per_seq_mean"]).fillna(aggregate)


def users_text(count: pd.Series) -> pd.Series:
    """'1 user', '16 users'."""
    return fmt.integer(count) + count.eq(1).map({True: " user", False: " users"})
