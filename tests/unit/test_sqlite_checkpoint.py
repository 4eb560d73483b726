"""WAL checkpoints run in a thread of the engine's, not in the commits of requests
(dbadapter/sqlite.py, WalCheckpointer)."""

from __future__ import annotations

import time

from sqlalchemy import text

from meiqia_app.dbadapter.sqlite import AUTOCHECKPOINT_PAGES, SqliteAdapter, checkpointer_of


def _engine(tmp_path):
    return SqliteAdapter().create_engine(f"sqlite:///{tmp_path / 'x.db'}")


def test_commits_leave_the_checkpoint_to_the_thread(tmp_path):
    engine = _engine(tmp_path)
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == AUTOCHECKPOINT_PAGES
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        checkpointer = checkpointer_of(engine)
        assert checkpointer is not None and checkpointer.running
        checkpointer.stop()  # measure the commits alone
        # More than SQLite's default 1,000 pages of WAL: with its default the commit would
        # have copied them into the database itself.
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 4000} for _ in range(5000)])
        wal, db = tmp_path / "x.db-wal", tmp_path / "x.db"
        assert wal.stat().st_size > 1000 * 16_384
        assert db.stat().st_size < 1_000_000  # the rows are in the WAL only
        with engine.connect() as conn:  # readers see everything meanwhile
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 5000
        busy, frames, done = checkpointer.checkpoint()
        assert busy == 0 and frames > 1000 and done == frames
        assert db.stat().st_size > 5000 * 4000
    finally:
        engine.dispose()


def test_the_thread_checkpoints_and_stops_with_the_engine(tmp_path):
    engine = _engine(tmp_path)
    checkpointer = checkpointer_of(engine)
    checkpointer.interval = 0.05
    try:
        checkpointer.stop()
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))  # (re)starts it
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "y" * 1000} for _ in range(500)])
        assert checkpointer.running
        db = tmp_path / "x.db"
        assert db.stat().st_size < 500 * 1000  # committed to the WAL
        deadline = time.monotonic() + 10
        while db.stat().st_size < 500 * 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.stat().st_size >= 500 * 1000  # the thread copied the pages in
    finally:
        engine.dispose()
    assert not checkpointer.running  # a restore or compaction that disposes the engine has the file to itself


def test_a_big_wal_is_truncated_when_nobody_is_in_the_way(tmp_path, monkeypatch):
    from meiqia_app.dbadapter import sqlite as sqlite_adapter

    engine = _engine(tmp_path)
    try:
        checkpointer = checkpointer_of(engine)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        checkpointer.stop()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "z" * 1000} for _ in range(500)])
        wal = tmp_path / "x.db-wal"
        size = wal.stat().st_size
        checkpointer.checkpoint()  # below the limit: copied, the file stays
        assert wal.stat().st_size == size
        monkeypatch.setattr(sqlite_adapter, "WAL_TRUNCATE_BYTES", 1000)
        busy, _frames, _done = checkpointer.checkpoint()
        assert busy == 0 and wal.stat().st_size == 0
    finally:
        engine.dispose()
