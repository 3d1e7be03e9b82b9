"""The search database (SQLite, stdlib ``sqlite3``): evaluations and searches.

Tables::

    meta(key, value)                         schema version
    evaluations(eval_key PRIMARY KEY, ...)   one row per evaluated candidate and settings
                                             (``EVAL_COLUMNS``), shared by every search
    searches(search_id, search_key UNIQUE, space, strategy, seed, objectives, options,
             settings, created_at)           one per distinct search (see ``search.py``)
    trials(search_id, seq, eval_key, PRIMARY KEY (search_id, seq))
                                             the distinct candidates a search evaluated,
                                             in the order it proposed them
    runs(run_id, search_id, budget, lowbit_version, started_at, finished_at, new)
                                             every invocation; finished_at NULL if killed

The evaluation row and the trial row of a candidate are committed in one transaction, so an
interrupted search (Ctrl-C, SIGKILL) leaves each candidate either recorded or absent; a rerun
replays the search and takes every recorded evaluation from here instead of recomputing it.
WAL journal, ``synchronous = NORMAL`` (as ``lowbit.sweep.db``): a commit survives the
process being killed, an operating-system crash may undo the last few.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from lowbit.sweep.db import DatabaseError, WalDatabase

__all__ = ["NASDB", "DatabaseError", "SCHEMA_VERSION", "EVAL_COLUMNS"]

SCHEMA_VERSION = 1

# (name, SQL type): an ``Evaluation``'s fields plus identity and provenance
EVAL_COLUMNS = (
    ("eval_key", "TEXT PRIMARY KEY"), ("candidate_key", "TEXT NOT NULL"),
    ("space", "TEXT NOT NULL"), ("candidate", "TEXT NOT NULL"), ("settings", "TEXT NOT NULL"),
    ("quality", "REAL NOT NULL"), ("val_accuracy", "REAL"), ("test_accuracy", "REAL"),
    ("proxy_score", "REAL"), ("latency_s", "REAL"), ("energy_pj", "REAL"),
    ("feasible", "INTEGER NOT NULL"), ("reason", "TEXT NOT NULL"), ("macs", "INTEGER NOT NULL"),
    ("params", "INTEGER NOT NULL"), ("weight_bytes", "INTEGER NOT NULL"),
    ("seconds", "REAL NOT NULL"), ("lowbit_version", "TEXT NOT NULL"),
    ("created_at", "REAL NOT NULL"),
)
_EVAL_NAMES = tuple(n for n, _ in EVAL_COLUMNS)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS evaluations (\n  "
    + ",\n  ".join(f"{n} {t}" for n, t in EVAL_COLUMNS) + "\n)",
    "CREATE TABLE IF NOT EXISTS searches (search_id INTEGER PRIMARY KEY, search_key TEXT NOT "
    "NULL UNIQUE, space TEXT NOT NULL, strategy TEXT NOT NULL, seed INTEGER NOT NULL, "
    "objectives TEXT NOT NULL, options TEXT NOT NULL, settings TEXT NOT NULL, "
    "created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS trials (search_id INTEGER NOT NULL REFERENCES "
    "searches(search_id), seq INTEGER NOT NULL, eval_key TEXT NOT NULL REFERENCES "
    "evaluations(eval_key), PRIMARY KEY (search_id, seq))",
    "CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY, search_id INTEGER NOT NULL "
    "REFERENCES searches(search_id), budget INTEGER NOT NULL, lowbit_version TEXT NOT NULL, "
    "started_at REAL NOT NULL, finished_at REAL, new INTEGER)",
)


class NASDB(WalDatabase):
    """A search database; ``NASDB(path)`` creates it if missing (``create=False``: must
    exist). Use as a context manager or call ``close()``."""

    KIND = "NAS"

    def _check_schema(self) -> None:
        with self._transaction():
            tables = {r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" in tables:
                row = self.conn.execute("SELECT value FROM meta WHERE key = 'nas_schema'"
                                        ).fetchone()
                if row is None:
                    raise DatabaseError(f"{self.path}: not a NAS database (a lowbit sweep "
                                        f"database?); use another --db")
                if row[0] != str(SCHEMA_VERSION):
                    raise DatabaseError(f"{self.path}: NAS schema version {row[0]}, this "
                                        f"lowbit reads version {SCHEMA_VERSION}")
                return
            for statement in _SCHEMA:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO meta VALUES ('nas_schema', ?)", (str(SCHEMA_VERSION),))

    # -- searches and runs ---------------------------------------------------------------------
    def register_search(self, key: str, fields: Mapping[str, Any]) -> int:
        """The id of the search ``key``, created with ``fields`` (space, strategy, seed,
        objectives, options, settings) if new."""
        with self._transaction():
            row = self.conn.execute("SELECT search_id FROM searches WHERE search_key = ?",
                                    (key,)).fetchone()
            if row:
                return row[0]
            return self.conn.execute(
                "INSERT INTO searches (search_key, space, strategy, seed, objectives, options, "
                "settings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, fields["space"], fields["strategy"], fields["seed"], fields["objectives"],
                 fields["options"], fields["settings"], time.time())).lastrowid

    def start_run(self, search_id: int, budget: int, version: str) -> int:
        with self._transaction():
            return self.conn.execute(
                "INSERT INTO runs (search_id, budget, lowbit_version, started_at) "
                "VALUES (?, ?, ?, ?)", (search_id, budget, version, time.time())).lastrowid

    def finish_run(self, run_id: int, new: int) -> None:
        with self._transaction():
            self.conn.execute("UPDATE runs SET finished_at = ?, new = ? WHERE run_id = ?",
                              (time.time(), new, run_id))

    def searches(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM searches ORDER BY search_id")]

    def search(self, search_id: int) -> dict:
        row = self.conn.execute("SELECT * FROM searches WHERE search_id = ?",
                                (search_id,)).fetchone()
        if row is None:
            raise DatabaseError(f"{self.path}: no search {search_id}")
        return dict(row)

    def runs(self, search_id: int | None = None) -> list[dict]:
        sql, args = "SELECT * FROM runs", ()
        if search_id is not None:
            sql, args = sql + " WHERE search_id = ?", (search_id,)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY run_id", args)]

    # -- evaluations and trials ----------------------------------------------------------------
    def evaluation(self, eval_key: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM evaluations WHERE eval_key = ?",
                                (eval_key,)).fetchone()
        return None if row is None else dict(row)

    def trial_keys(self, search_id: int) -> list[str]:
        """The search's evaluation keys in proposal order."""
        return [r[0] for r in self.conn.execute(
            "SELECT eval_key FROM trials WHERE search_id = ? ORDER BY seq", (search_id,))]

    def record(self, search_id: int, seq: int, eval_key: str,
               evaluation: Mapping[str, Any] | None) -> None:
        """Commit trial ``seq`` of a search and, when given, its new evaluation row (all
        ``EVAL_COLUMNS``), in one transaction. An existing row is never replaced."""
        with self._transaction():
            if evaluation is not None:
                self.conn.execute(
                    f"INSERT OR IGNORE INTO evaluations ({', '.join(_EVAL_NAMES)}) VALUES "
                    f"({', '.join('?' * len(_EVAL_NAMES))})",
                    tuple(evaluation[n] for n in _EVAL_NAMES))
            have = self.conn.execute("SELECT eval_key FROM trials WHERE search_id = ? AND "
                                     "seq = ?", (search_id, seq)).fetchone()
            if have is None:
                self.conn.execute("INSERT INTO trials VALUES (?, ?, ?)",
                                  (search_id, seq, eval_key))
            elif have[0] != eval_key:
                raise DatabaseError(
                    f"{self.path}: search {search_id} replayed differently at trial {seq} "
                    f"(recorded {have[0][:12]}, now {eval_key[:12]}); the strategy is not "
                    f"deterministic here: use another --db or another --seed")

    def trials(self, search_id: int) -> list[dict]:
        """The search's evaluation rows in proposal order (with ``seq``)."""
        return [dict(r) for r in self.conn.execute(
            "SELECT t.seq, e.* FROM trials t JOIN evaluations e USING (eval_key) "
            "WHERE t.search_id = ? ORDER BY t.seq", (search_id,))]
