"""The results database (SQLite, stdlib ``sqlite3``): schema, point commits, queries.

Tables (columns of ``points`` and ``layers`` in ``lowbit.sweep.columns``)::

    meta(key, value)                      schema version
    objects(digest, kind, json)           base profiles and workloads, by content digest
    sweeps(sweep_id, spec_hash, name, points, created_at)
                                          one per distinct set of points (spec_hash = digest
                                          of the sorted point hashes)
    sweep_points(sweep_id, point_hash, seq)   which points a sweep has, in spec order
    runs(run_id, sweep_id, spec_path, spec_text, lowbit_version, executor, workers,
         started_at, finished_at, points_new)  every invocation; finished_at NULL if killed
    points(point_hash PRIMARY KEY, ...)   one row per finished point
    layers(point_hash, idx, ..., PRIMARY KEY (point_hash, idx))   one row per point and layer

Only the process running the sweep writes. The database is in WAL mode and each point's
``points`` row and ``layers`` rows are committed in one transaction, so a sweep killed at any
moment (SIGKILL included) leaves every point either complete or absent; a rerun skips the
complete ones and the primary keys make a duplicate impossible. (``synchronous = NORMAL``: a
commit survives the process being killed; an operating-system crash or power loss may undo
the last few commits, which the rerun then redoes.)
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .columns import LAYER_COLUMNS, POINT_COLUMNS, names
from .points import Point, canonical_json, digest

__all__ = ["SCHEMA_VERSION", "DatabaseError", "SweepDB", "spec_hash"]

SCHEMA_VERSION = 1
_POINT_NAMES = names(POINT_COLUMNS)
_LAYER_NAMES = names(LAYER_COLUMNS)


class DatabaseError(ValueError):
    """A missing or incompatible results database."""


def _table(name: str, columns, extra: str = "") -> str:
    body = ",\n  ".join(f"{c} {t}" for c, t, _ in columns)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  {body}{extra}\n)"


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS objects (digest TEXT PRIMARY KEY, kind TEXT NOT NULL, "
    "json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sweeps (sweep_id INTEGER PRIMARY KEY, spec_hash TEXT NOT NULL "
    "UNIQUE, name TEXT NOT NULL, points INTEGER NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sweep_points (sweep_id INTEGER NOT NULL REFERENCES "
    "sweeps(sweep_id), point_hash TEXT NOT NULL, seq INTEGER NOT NULL, "
    "PRIMARY KEY (sweep_id, point_hash))",
    "CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY, sweep_id INTEGER NOT NULL "
    "REFERENCES sweeps(sweep_id), spec_path TEXT, spec_text TEXT NOT NULL, lowbit_version TEXT "
    "NOT NULL, executor TEXT NOT NULL, workers INTEGER, started_at REAL NOT NULL, "
    "finished_at REAL, points_new INTEGER)",
    _table("points", POINT_COLUMNS),
    _table("layers", LAYER_COLUMNS, ",\n  PRIMARY KEY (point_hash, idx)"),
)


def spec_hash(points: Sequence[Point]) -> str:
    """A sweep's identity: the digest of its sorted point hashes."""
    return digest(sorted(p.hash for p in points))


class WalDatabase:
    """An SQLite file in WAL mode, autocommit, with explicit ``_transaction()`` blocks; a
    subclass names its ``KIND`` (for messages) and checks or creates its schema in
    ``_check_schema``. ``create=False``: the file must exist. Use as a context manager or call
    ``close()``. Shared by the sweep and NAS databases."""

    KIND = "results"

    def __init__(self, path: str | os.PathLike, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DatabaseError(f"{self.path}: no such {self.KIND} database")
        self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise DatabaseError(f"{self.path}: not a {self.KIND} database: {exc}") from exc
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def _transaction(self):
        return _Transaction(self.conn)

    def _check_schema(self) -> None:
        raise NotImplementedError


class SweepDB(WalDatabase):
    """A results database; ``SweepDB(path)`` creates it if missing (``create=False``: must
    exist). Use as a context manager or call ``close()``.
    """

    KIND = "sweep"

    def _check_schema(self) -> None:
        with self._transaction():
            have = self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
            if have:
                row = self.conn.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None or row[0] != str(SCHEMA_VERSION):
                    raise DatabaseError(f"{self.path}: schema version "
                                        f"{row[0] if row else 'unknown'}, this lowbit reads "
                                        f"version {SCHEMA_VERSION}")
                return
            for statement in _SCHEMA:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                              (str(SCHEMA_VERSION),))

    # ---------------------------------------------------------------------------------------
    def register(self, name: str, points: Sequence[Point],
                 objects: Iterable[tuple[str, str, Any]]) -> int:
        """Record a sweep (its points in order and the profile / workload objects they
        reference); returns its id, the existing one if these points were registered before."""
        key = spec_hash(points)
        with self._transaction():
            row = self.conn.execute("SELECT sweep_id FROM sweeps WHERE spec_hash = ?",
                                    (key,)).fetchone()
            if row:
                return row[0]
            cur = self.conn.execute(
                "INSERT INTO sweeps (spec_hash, name, points, created_at) VALUES (?, ?, ?, ?)",
                (key, name, len(points), time.time()))
            sweep_id = cur.lastrowid
            self.conn.executemany("INSERT INTO sweep_points VALUES (?, ?, ?)",
                                  ((sweep_id, p.hash, i) for i, p in enumerate(points)))
            self.conn.executemany("INSERT OR IGNORE INTO objects VALUES (?, ?, ?)",
                                  ((d, kind, canonical_json(obj)) for d, kind, obj in objects))
            return sweep_id

    def sweep_id(self, points: Sequence[Point]) -> int | None:
        """The id of the sweep with exactly these points, None if never run here."""
        row = self.conn.execute("SELECT sweep_id FROM sweeps WHERE spec_hash = ?",
                                (spec_hash(points),)).fetchone()
        return row[0] if row else None

    def start_run(self, sweep_id: int, spec_path: str | None, spec_text: str, version: str,
                  executor: str, workers: int | None) -> int:
        with self._transaction():
            return self.conn.execute(
                "INSERT INTO runs (sweep_id, spec_path, spec_text, lowbit_version, executor, "
                "workers, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sweep_id, spec_path, spec_text, version, executor, workers,
                 time.time())).lastrowid

    def finish_run(self, run_id: int, points_new: int) -> None:
        with self._transaction():
            self.conn.execute("UPDATE runs SET finished_at = ?, points_new = ? WHERE run_id = ?",
                              (time.time(), points_new, run_id))

    def finished(self, sweep_id: int) -> set[str]:
        """Hashes of the sweep's points that have results."""
        return {r[0] for r in self.conn.execute(
            "SELECT p.point_hash FROM sweep_points s JOIN points p USING (point_hash) "
            "WHERE s.sweep_id = ?", (sweep_id,))}

    def infeasible(self, sweep_id: int) -> int:
        """How many of the sweep's finished points are infeasible."""
        return self.conn.execute(
            "SELECT COUNT(*) FROM sweep_points s JOIN points p USING (point_hash) "
            "WHERE s.sweep_id = ? AND NOT p.feasible", (sweep_id,)).fetchone()[0]

    def write(self, labels: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
        """Commit one point (its ``points`` row and all its ``layers`` rows) in one
        transaction; False if the point was already there (nothing written)."""
        row = {**labels, **result["point"], "finished_at": time.time()}
        values = tuple(row[c] for c in _POINT_NAMES)
        layer_values = [tuple(layer[c] for c in _LAYER_NAMES) for layer in result["layers"]]
        with self._transaction():
            cur = self.conn.execute(
                f"INSERT OR IGNORE INTO points ({', '.join(_POINT_NAMES)}) "
                f"VALUES ({', '.join('?' * len(_POINT_NAMES))})", values)
            if cur.rowcount != 1:
                return False
            self.conn.executemany(
                f"INSERT INTO layers ({', '.join(_LAYER_NAMES)}) "
                f"VALUES ({', '.join('?' * len(_LAYER_NAMES))})", layer_values)
        return True

    # ---------------------------------------------------------------------------------------
    # A point's place when listing all points: the first sweep that listed it, its position.
    _ORDER = ("LEFT JOIN (SELECT point_hash, MIN(sweep_id * 4294967296 + seq) AS o "
              "FROM sweep_points GROUP BY point_hash) USING (point_hash)")

    def points(self, sweep_id: int | None = None) -> list[dict]:
        """Point rows: a sweep's in spec order, or all, in the order sweeps first listed them."""
        if sweep_id is not None:
            rows = self.conn.execute(
                "SELECT p.* FROM sweep_points s JOIN points p USING (point_hash) "
                "WHERE s.sweep_id = ? ORDER BY s.seq", (sweep_id,))
        else:
            rows = self.conn.execute(f"SELECT p.* FROM points p {self._ORDER} ORDER BY o, p.rowid")
        return [dict(r) for r in rows]

    def layers(self, sweep_id: int | None = None) -> list[dict]:
        """Layer rows in ``points(sweep_id)`` order, then layer order."""
        if sweep_id is not None:
            rows = self.conn.execute(
                "SELECT l.* FROM sweep_points s JOIN layers l USING (point_hash) "
                "WHERE s.sweep_id = ? ORDER BY s.seq, l.idx", (sweep_id,))
        else:
            rows = self.conn.execute(
                f"SELECT l.* FROM layers l JOIN points p USING (point_hash) {self._ORDER} "
                "ORDER BY o, p.rowid, l.idx")
        return [dict(r) for r in rows]

    def sweeps(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM sweeps ORDER BY sweep_id")]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on an exception (the connection is autocommit)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
