"""Batch lookups go through the unique index, so a batch costs the same at 10k or 1M stored posts."""

from __future__ import annotations

from sqlalchemy import select, text

from bot.pipeline.store import keyed
from bot.store.db import release
from bot.store.migrate import open_store
from bot.store.models import Message


def test_looking_up_a_batch_by_channel_and_message_id_searches_the_index_not_the_table(tmp_path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        keys = [(1, n) for n in range(1, 30)] + [(2, 7), (3, 1)]
        plans = []
        with engine.connect() as conn:
            for where in keyed(keys):
                sql = select(Message).where(where).compile(engine, compile_kwargs={"literal_binds": True})
                plans.append(" ".join(row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))))
        assert len(plans) == 3  # one lookup per channel in the batch
        for plan in plans:
            assert "SEARCH messages USING" in plan and "(channel_id=? AND msg_id=?)" in plan, plan
            assert "SCAN messages" not in plan, plan
    finally:
        release(engine)
