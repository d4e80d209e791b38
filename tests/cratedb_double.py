"""A CrateDB contract double: an HTTP server that answers `POST /_sql` the way CrateDB documents.

CI cannot run CrateDB (it would have to build it from source, which a project never ships), so the
contract tier runs against this double there, and against a real CrateDB wherever MDS_CRATEDB_URL
names one (development): the double is proven by the same tests, not believed. It is NOT CrateDB:
it knows the handful of statements the stack sends (matched by pattern), keeps their effects in
memory and answers with CrateDB's response shapes (docs/interfaces/http.rst of crate/crate):
`{"cols", "rows", "rowcount", "duration"}` on success, `{"error": {"code", "message"}}` with
CrateDB's HTTP status on failure (409/4099 for an existing user, 409 for an existing repository,
400/4000 for anything it does not know). The deployed behaviour is tested by tests/integration.
"""

from __future__ import annotations

import argparse
import base64
import gc
import gzip
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


class SqlError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Readings(MutableMapping):
    """(agent, sensor, ts) -> row, kept in a dict per agent. One dict of millions of rows stalled the
    whole double each time it grew (Python copies the table: 72 ms at 1.4 M rows, 554 ms at 2.8 M,
    measured on the development machine), which set the tail of the ingest benchmark, not the
    ingest; an agent's own dict stays small."""

    def __init__(self) -> None:
        self._by_agent: dict[str, dict[tuple, list]] = {}
        self._count = 0

    def __contains__(self, key) -> bool:
        rows = self._by_agent.get(key[0])
        return rows is not None and key[1:] in rows

    def __getitem__(self, key: tuple) -> list:
        return self._by_agent[key[0]][key[1:]]

    def __setitem__(self, key: tuple, row: list) -> None:
        rows = self._by_agent.setdefault(key[0], {})
        self._count += key[1:] not in rows
        rows[key[1:]] = row

    def __delitem__(self, key: tuple) -> None:
        rows = self._by_agent[key[0]]
        del rows[key[1:]]
        self._count -= 1
        if not rows:
            del self._by_agent[key[0]]

    def insert_new(self, rows: list[list]) -> list[dict]:
        """Bulk insert rows [ts, agent, sensor, ...] with ON CONFLICT DO NOTHING: each one stored
        unless its key is, and its result. One loop over the agents' own dicts: two mapping calls
        per row made the double's share of the ingest benchmark's two cores a third larger."""
        by_agent, results = self._by_agent, []
        append = results.append
        for row in rows:
            agent_rows = by_agent.get(row[1])
            if agent_rows is None:
                agent_rows = by_agent[row[1]] = {}
            key = (row[2], row[0])
            if key in agent_rows:
                append(SKIPPED)
            else:
                agent_rows[key] = row
                append(INSERTED)
                self._count += 1
        return results

    def __iter__(self) -> Iterator[tuple]:
        for agent, rows in self._by_agent.items():
            for rest in rows:
                yield (agent, *rest)

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._by_agent.clear()
        self._count = 0

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class StoredKeys:
    """Only the keys of what was stored, agent -> sensor -> timestamps: for the long-running double
    (`--keys-only`), whose callers count and look up keys but never read a row back. A benchmark
    stores tens of millions of rows: kept whole they took 674 bytes each, their keys alone take 100
    (1.9 M rows of the benchmark's shape), and the double's page faults and cache misses took CPU
    from the ingest on the cores they share."""

    def __init__(self) -> None:
        self._by_agent: dict[str, dict[str, set[int]]] = {}
        self._count = 0

    def __contains__(self, key) -> bool:
        return key[2] in self._by_agent.get(key[0], {}).get(key[1], ())

    def insert_new(self, rows: list[list]) -> list[dict]:
        """As `Readings.insert_new`, keeping the keys only."""
        by_agent, results = self._by_agent, []
        append = results.append
        for row in rows:
            sensors = by_agent.get(row[1])
            if sensors is None:
                sensors = by_agent[row[1]] = {}
            stamps = sensors.get(row[2])
            if stamps is None:
                stamps = sensors[row[2]] = set()
            if row[0] in stamps:
                append(SKIPPED)
            else:
                stamps.add(row[0])
                append(INSERTED)
                self._count += 1
        return results

    def __iter__(self) -> Iterator[tuple]:
        for agent, sensors in self._by_agent.items():
            for sensor, stamps in sensors.items():
                for ts in stamps:
                    yield (agent, sensor, ts)

    def __len__(self) -> int:
        return self._count


@dataclass
class CrateState:
    nodes: int = 3
    node_attributes: dict[str, str] = field(default_factory=dict)  # node.attr.* of crate.yml (sys.nodes.attributes)
    nodes_on_old_settings: int = 0  # of `nodes`, those a rolling update has not restarted yet (no attributes)
    tables: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    privileges: set[tuple[str, str, str]] = field(default_factory=set)  # (type, ident, grantee)
    repositories: dict[str, tuple[str, dict]] = field(default_factory=dict)  # name -> (type, settings as text)
    snapshots: dict[tuple[str, str], dict] = field(default_factory=dict)  # (repository, name) -> {state, started}
    failing_snapshots: bool = False  # CREATE SNAPSHOT ends FAILED (a repository that cannot be written)
    statements: list[str] = field(default_factory=list)
    readings: Readings | StoredKeys = field(default_factory=Readings)  # (agent, sensor, ts) -> row, or the keys alone
    node_name: str = "double-1"
    fail_sensors: set[str] = field(default_factory=set)  # rows of these sensors are refused (-2, 4000)
    shard_fail_sensors: set[str] = field(default_factory=set)  # rows of these fail on their shard (-2, 5002)
    lost_partition_sensors: set[str] = field(default_factory=set)  # rowcount 0, not stored (partition missing)
    dynamic_meta: bool = False  # meta is OBJECT(DYNAMIC): a sub-key of another type fails the whole request
    dynamic_meta_tables: set[str] = field(default_factory=set)  # tables created with meta OBJECT(DYNAMIC)
    enforce_privileges: bool = False  # users need DQL to read and DML to write, as in CrateDB
    master: bool = True  # False: no elected master (GET / answers 503, statements 503/5031)
    replicas: dict[str, str] = field(default_factory=dict)  # table -> number_of_replicas
    meta_types: dict[str, str] = field(default_factory=dict)  # meta sub-column ("meta['x']") -> type, as mapped
    delay_s: float = 0.0  # answer every request this late (a slow cluster)
    keep_statements: bool = True  # off for benchmarks


INSERTED, SKIPPED = {"rowcount": 1}, {"rowcount": 0}  # per-row bulk results (shared: only serialized)


def _rows(values: list) -> dict:
    return {"cols": ["x"], "rows": [[v] for v in values], "rowcount": len(values)}


class CrateDouble:
    """Start with `with CrateDouble() as crate:`; `crate.url` is its base URL."""

    def __init__(self, state: CrateState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state or CrateState()
        self.lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as CrateDB's HTTP endpoint

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and the
                # client's delayed ACK hold every kept-alive answer back by ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):  # keep test output clean
                pass

            def authorized(self) -> bool:
                """Basic auth against the users it knows; no header is the superuser `crate`,
                trusted from loopback only (host-based auth: `_local_` trust, else password)."""
                scheme, _, value = self.headers.get("Authorization", "").partition(" ")
                if not scheme:
                    self.user = None
                    return self.client_address[0].startswith("127.") or self.client_address[0] == "::1"
                user, _, password = base64.b64decode(value).decode().partition(":")
                self.user = user
                return double.state.users.get(user) == password

            def answer(self, status: int, body: dict | None, text: str | None = None) -> None:
                if double.state.delay_s:
                    time.sleep(double.state.delay_s)
                payload = text.encode() if text is not None else orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text is not None else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if not self.authorized():
                    return self.answer(401, None, "password authentication failed for user")
                if not double.state.master:
                    return self.answer(503, {"ok": False, "status": 503, "name": double.state.node_name,
                                             "cluster_name": "double", "version": {"number": "6.4.3"}})
                self.answer(200, {"ok": True, "status": 200, "name": double.state.node_name,
                                  "cluster_name": "double", "version": {"number": "6.4.3"}})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # always: keep-alive
                if not self.authorized():
                    return self.answer(401, None, "password authentication failed for user")
                try:
                    if self.headers.get("Content-Encoding") == "gzip":
                        raw = gzip.decompress(raw)
                    request = orjson.loads(raw)
                    status, body = 200, double.execute(request["stmt"], request.get("bulk_args"), request.get("args"),
                                                       user=self.user)
                except SqlError as e:
                    status, body = e.status, {"error": {"code": e.code, "message": e.message}}
                except (ValueError, KeyError, TypeError) as e:
                    status, body = 400, {"error": {"code": 4000, "message": f"SQLParseException[{e}]"}}
                self.answer(status, {**body, "duration": 0.1})

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def __enter__(self) -> CrateDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def execute(self, stmt: str, bulk_args: list | None = None, args: list | None = None, user: str | None = None) -> dict:
        s = " ".join(stmt.split())
        with self.lock:
            if self.state.keep_statements:
                self.state.statements.append(s)
            if not self.state.master:
                raise SqlError(503, 5031, "MasterNotDiscoveredException[no master]")
            self._check_privilege(s, user)
            if bulk_args is not None:
                return self._bulk(s, bulk_args)
            if args:
                return self._query(s, args)
            return self._execute(s)

    def _query(self, s: str, args: list) -> dict:
        """The load generator's check (readings per agent of one sensor since a time), and the keys
        of the readings of some agents with how often each is stored (the lab's node-loss test)."""
        lookup = "(agent = ? AND sensor = ? AND ts = ?)"
        table = re.match(r"SELECT agent, sensor, ts FROM (\w+\.\w+) WHERE ", s)
        if table and s == f"SELECT agent, sensor, ts FROM {table.group(1)} WHERE " + " OR ".join([lookup] * (len(args) // 3)):
            if table.group(1) not in self.state.tables:
                raise SqlError(404, 4041, f"RelationUnknown[Relation '{table.group(1)}' unknown]")
            keys = {tuple(args[i:i + 3]) for i in range(0, len(args), 3)}
            rows = sorted(list(key) for key in keys if key in self.state.readings)
            return {"cols": ["agent", "sensor", "ts"], "rows": rows, "rowcount": len(rows)}
        if s == "SELECT agent, sensor, ts, count(*) FROM doc.readings WHERE agent = ANY(?) GROUP BY agent, sensor, ts":
            # One row per key: the double stores a key once (its primary key), as CrateDB does.
            rows = sorted([[*key, 1] for key in self.state.readings if key[0] in args[0]])
            return {"cols": ["agent", "sensor", "ts", "count(*)"], "rows": rows, "rowcount": len(rows)}
        if s != "SELECT agent, count(*) FROM doc.readings WHERE agent = ANY(?) AND sensor = ? AND ts >= ? GROUP BY agent":
            raise SqlError(400, 4000, f"SQLParseException[the contract double does not know: {s[:80]}]")
        agents, sensor, since = args
        counts: dict[str, int] = {}
        for agent, row_sensor, ts in self.state.readings:
            if agent in agents and row_sensor == sensor and ts >= since:
                counts[agent] = counts.get(agent, 0) + 1
        return {"cols": ["agent", "count(*)"], "rows": sorted(map(list, counts.items())), "rowcount": len(counts)}

    def _bulk(self, s: str, bulk_args: list) -> dict:
        """Bulk insert into the readings table: per-row results in argument order."""
        m = re.fullmatch(r"INSERT INTO (\w+\.\w+) \(ts, agent, sensor, reading, unit, meta\) "
                         r"VALUES \(\?, \?, \?, \?, \?, \?\) ON CONFLICT DO NOTHING", s)
        if not m:
            raise SqlError(400, 4000, f"SQLParseException[the contract double does not know: {s[:80]}]")
        if m.group(1) not in self.state.tables:
            raise SqlError(404, 4041, f"RelationUnknown[Relation '{m.group(1)}' unknown]")
        st = self.state
        failed = self._map_meta(bulk_args) if st.dynamic_meta or m.group(1) in st.dynamic_meta_tables else {}
        injected = failed or st.fail_sensors or st.shard_fail_sensors or st.lost_partition_sensors
        results = self._insert_injected(bulk_args, failed) if injected else st.readings.insert_new(bulk_args)
        return {"cols": [], "results": results}

    def _insert_injected(self, bulk_args: list, failed: dict[int, dict]) -> list[dict]:
        """Row by row: the outcome a test arranged, else stored (ON CONFLICT DO NOTHING)."""
        results = []
        for i, row in enumerate(bulk_args):
            outcome = self._injected_outcome(i, row[2], failed)
            results.append(outcome if outcome is not None else self.state.readings.insert_new([row])[0])
        return results

    def _injected_outcome(self, i: int, sensor: str, failed: dict[int, dict]) -> dict | None:
        """The result a test arranged for row i (a mapping failure, a refused or shard-failed
        sensor, a lost partition), or None to store it."""
        if i in failed:
            return failed[i]
        if sensor in self.state.fail_sensors:
            return {"rowcount": -2, "error": {"code": 4000, "message": f"SQLParseException[Limit of total columns [1000] in table exceeded ({sensor})]"}}
        if sensor in self.state.shard_fail_sensors:
            return {"rowcount": -2, "error": {"code": 5002, "message": "UnavailableShardsException[primary shard is not active]"}}
        if sensor in self.state.lost_partition_sensors:
            return SKIPPED
        return None

    def _check_privilege(self, s: str, user: str | None) -> None:
        """DQL to read a table, DML to write it (on the table, its schema or the cluster); the
        superuser may do anything. CrateDB answers a missing privilege with 401/4011."""
        if user is None or not self.state.enforce_privileges:
            return
        m = re.match(r"(INSERT INTO|SELECT .* FROM) (\w+)\.(\w+)", s)
        if m is None:
            if s.startswith(("CREATE", "DROP", "ALTER", "GRANT", "REVOKE")):
                raise SqlError(401, 4011, f"MissingPrivilegeException[Missing privilege for user '{user}']")
            return
        kind = "DML" if m.group(1) == "INSERT INTO" else "DQL"
        schema, table = m.group(2), m.group(3)
        held = {(k, i) for k, i, g in self.state.privileges if g == user}
        if not held & {(kind, f"{schema}.{table}"), (kind, schema), (kind, "")}:
            raise SqlError(401, 4011, f"MissingPrivilegeException[Missing '{kind}' privilege for user '{user}' on "
                                      f"relation '{schema}.{table}']")

    def _map_meta(self, bulk_args: list) -> dict[int, dict]:
        """A dynamic object as CrateDB 6.4.3 maps it (seen on a node built from its source): a value
        whose type differs from an existing sub-column's fails the whole request on the
        coordinator (400/4000, nothing stored); a sub-column new in this request that two rows
        give different types fails the later row alone (-2/4000). Returns those row failures."""
        mapped = self.state.meta_types
        new: dict[str, str] = {}
        failures: dict[int, dict] = {}

        def kind_of(value) -> str | None:
            return ("object" if isinstance(value, dict) else "array" if isinstance(value, list) else
                    "boolean" if isinstance(value, bool) else "bigint" if isinstance(value, int) else
                    "double precision" if isinstance(value, float) else "text" if isinstance(value, str) else None)

        def walk(value, path: str, key: str, row: int) -> None:
            kind = kind_of(value)
            if kind is None or row in failures:
                return
            if path in mapped and mapped[path] != kind:
                shown = "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}" if isinstance(value, dict) else value
                raise SqlError(400, 4000, f"SQLParseException[Cannot cast object element `{key}` with value "
                                          f"`{shown}` to type `{mapped[path]}`]")
            if path not in mapped and new.setdefault(path, kind) != kind:
                failures[row] = {"rowcount": -2, "error": {"code": 4000, "message": (
                    f"SQLParseException[Column `{path}` already exists with type `{new[path]}`. "
                    f"Cannot add same column with type `{kind}`]")}}
                return
            if isinstance(value, dict):
                for sub, item in value.items():
                    walk(item, f"{path}['{sub}']", sub, row)

        for row, args in enumerate(bulk_args):
            for key, value in (args[5] or {}).items():
                walk(value, f"meta['{key}']", key, row)
        mapped.update(new)
        return failures

    def _snapshots(self, s: str) -> dict | None:
        """The statements of snapshot.sh (sys.snapshots, CREATE and DROP SNAPSHOT)."""
        st = self.state
        if m := re.fullmatch(r"CREATE SNAPSHOT (\w+)\.\"([\w-]+)\" ALL WITH \(wait_for_completion = true\)", s):
            if (m.group(1), m.group(2)) in st.snapshots:
                raise SqlError(409, 4096, f"SnapshotAlreadyExistsException[{m.group(1)}:{m.group(2)}]")
            state = "FAILED" if st.failing_snapshots else "SUCCESS"
            st.snapshots[m.group(1), m.group(2)] = {"state": state, "started": int(time.time() * 1000)}
            if state == "FAILED":
                raise SqlError(500, 5000, f"SnapshotException[{m.group(1)}:{m.group(2)} failed]")
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"DROP SNAPSHOT (\w+)\.\"([\w-]+)\"", s):
            if st.snapshots.pop((m.group(1), m.group(2)), None) is None:
                raise SqlError(404, 4048, f"SnapshotMissingException[{m.group(1)}:{m.group(2)}]")
            return {"cols": [], "rows": [], "rowcount": 1}
        of = lambda repo: sorted(((n, v) for (r, n), v in st.snapshots.items() if r == repo),  # noqa: E731
                                 key=lambda item: item[1]["started"], reverse=True)
        if m := re.fullmatch(r"SELECT state FROM sys\.snapshots WHERE repository = '(\w+)' AND name = '([\w-]+)'", s):
            return _rows([v["state"] for n, v in of(m.group(1)) if n == m.group(2)])
        if m := re.fullmatch(r"SELECT name FROM sys\.snapshots WHERE repository = '(\w+)' AND state = 'SUCCESS' "
                             r"ORDER BY started DESC LIMIT (\d+) OFFSET (\d+)", s):
            names = [n for n, v in of(m.group(1)) if v["state"] == "SUCCESS"]
            return _rows(names[int(m.group(3)):int(m.group(3)) + int(m.group(2))])
        if m := re.fullmatch(r"SELECT max\(started\) FROM sys\.snapshots WHERE repository = '(\w+)' AND state = 'SUCCESS'", s):
            return _rows([max((v["started"] for n, v in of(m.group(1)) if v["state"] == "SUCCESS"), default=None)])
        if m := re.fullmatch(r"SELECT name FROM sys\.snapshots WHERE repository = '(\w+)' AND state IN \('FAILED', 'PARTIAL'\) "
                             r"AND started < (\d+)", s):
            return _rows([n for n, v in of(m.group(1)) if v["state"] in ("FAILED", "PARTIAL") and v["started"] < int(m.group(2))])
        return None

    def _execute(self, s: str) -> dict:
        st = self.state
        if s == "SELECT 1":
            return _rows([1])
        if m := re.fullmatch(r"REFRESH TABLE (\w+\.\w+)", s):
            return {"cols": [], "rows": [], "rowcount": int(m.group(1) in st.tables)}
        if s == "SELECT count(*) FROM sys.nodes":
            return _rows([st.nodes])
        if m := re.fullmatch(r"SELECT count\(\*\) FROM sys\.nodes WHERE attributes\['(\w+)'\] = '(\w+)'", s):
            return _rows([st.nodes - st.nodes_on_old_settings if st.node_attributes.get(m.group(1)) == m.group(2) else 0])
        if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+\.\w+) \(", s):
            created = m.group(1) not in st.tables
            st.tables.add(m.group(1))
            if created and (replicas := re.search(r"number_of_replicas = '([0-9a-z-]+)'", s)):
                st.replicas[m.group(1)] = replicas.group(1)
            if created and "meta OBJECT(DYNAMIC)" in s:
                st.dynamic_meta_tables.add(m.group(1))
            return {"cols": [], "rows": [], "rowcount": int(created)}
        if m := re.fullmatch(r"ALTER TABLE (\w+\.\w+) SET \(number_of_replicas = '([0-9a-z-]+)'\)", s):
            if m.group(1) not in st.tables:
                raise SqlError(404, 4041, f"RelationUnknown[Relation '{m.group(1)}' unknown]")
            st.replicas[m.group(1)] = m.group(2)
            return {"cols": [], "rows": [], "rowcount": 1}
        if s.startswith("SELECT 'replicas of ' ||"):
            return _rows(sorted(f"replicas of {t}: {st.replicas.get(t, '0-1')}" for t in st.tables if t.startswith("doc.")))
        if m := re.fullmatch(r"DROP TABLE IF EXISTS (\w+\.\w+)", s):
            dropped = m.group(1) in st.tables
            st.tables.discard(m.group(1))
            st.dynamic_meta_tables.discard(m.group(1))
            return {"cols": [], "rows": [], "rowcount": int(dropped)}
        if m := re.fullmatch(r"DROP USER IF EXISTS (\w+)", s):
            st.users.pop(m.group(1), None)
            st.privileges = {p for p in st.privileges if p[2] != m.group(1)}
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"CREATE USER (\w+) WITH \(password = '([^']*)'\)", s):
            if m.group(1) in st.users:
                raise SqlError(409, 4099, f"RoleAlreadyExistsException[Role '{m.group(1)}' already exists]")
            st.users[m.group(1)] = m.group(2)
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"ALTER USER (\w+) SET \(password = '([^']*)'\)", s):
            if m.group(1) not in st.users:
                raise SqlError(404, 4043, f"RoleUnknownException[Role '{m.group(1)}' does not exist]")
            st.users[m.group(1)] = m.group(2)
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"GRANT ((?:DQL|DML|DDL|AL)(?:, (?:DQL|DML|DDL|AL))*)(?: ON (?:TABLE|SCHEMA) ([\w.]+))? TO (\w+)", s):
            if m.group(3) not in st.users:
                raise SqlError(404, 4043, f"RoleUnknownException[Role '{m.group(3)}' does not exist]")
            for kind in m.group(1).split(", "):
                st.privileges.add((kind, m.group(2) or "", m.group(3)))
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"CREATE REPOSITORY (\w+) TYPE (fs|s3) WITH \((.*)\)", s):
            if m.group(1) in st.repositories:
                raise SqlError(409, 4095, f"RepositoryAlreadyExistsException[Repository '{m.group(1)}' already exists]")
            st.repositories[m.group(1)] = (m.group(2), _settings(m.group(3)))
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"ALTER REPOSITORY (\w+) SET \((.*)\)", s):
            if m.group(1) not in st.repositories:
                raise SqlError(404, 4044, f"RepositoryUnknownException[Repository '{m.group(1)}' unknown]")
            kind, settings = st.repositories[m.group(1)]
            st.repositories[m.group(1)] = (kind, {**settings, **_settings(m.group(2))})
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"DROP REPOSITORY (\w+)", s):
            st.repositories.pop(m.group(1), None)
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"SELECT name FROM sys\.repositories WHERE name = '(\w+)' AND type = '(\w+)'((?: AND settings\['\w+'\] = '[^']*')*)", s):
            kind, settings = st.repositories.get(m.group(1), ("", {}))
            wanted = dict(re.findall(r"settings\['(\w+)'\] = '([^']*)'", m.group(3)))
            return _rows([m.group(1)] if kind == m.group(2) and all(settings.get(k) == v for k, v in wanted.items()) else [])
        if snapshots := self._snapshots(s):
            return snapshots
        if s.startswith("SELECT 'table ' ||"):
            return _rows(sorted(f"table {t}" for t in st.tables if t.startswith("doc.")))
        if s.startswith("SELECT 'user ' ||"):
            return _rows(sorted(f"user {u}" for u in st.users))
        if s.startswith("SELECT 'privilege ' ||"):
            return _rows(sorted(f"privilege {t} on {i or 'cluster'} to {g}" for t, i, g in st.privileges))
        if s.startswith("SELECT 'repository ' ||"):
            return _rows(sorted(f"repository {r}" for r in st.repositories))
        raise SqlError(400, 4000, f"SQLParseException[the contract double does not know: {s[:80]}]")


def _settings(text: str) -> dict[str, str]:
    """`k = 'v', k2 = true` as sys.repositories shows settings: every value a text."""
    return {k: v.strip("'") for k, v in re.findall(r"(\w+) = ('[^']*'|\w+)", text)}


def main() -> None:
    """`python -m tests.cratedb_double --port 4200`: serve until killed (benchmarks, lab)."""
    parser = argparse.ArgumentParser(description="CrateDB contract double (not CrateDB)")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", action="append", default=[], help="name:password, may repeat")
    parser.add_argument("--user-file", action="append", default=[], help="name:file holding the password, may repeat")
    parser.add_argument("--keys-only", action="store_true",
                        help="keep only the keys of stored rows: they can be counted and looked up, not read back")
    args = parser.parse_args()
    users = dict(u.split(":", 1) for u in args.user)
    for entry in args.user_file:
        name, path = entry.split(":", 1)
        with open(path) as f:
            users[name] = f.read().strip()
    # No cyclic garbage collector: what the double stores forms no cycles and what a request makes
    # is freed by reference counting. Collections paused the whole double and set the tail of
    # `tools.bench.ingest`, not the ingest (gc.callbacks: older generations walked millions of
    # stored rows for 80-400 ms; with rows frozen after each insert, gen0/gen1 collections of a
    # bulk body's thousands of objects still took up to 27 ms of wall time on two busy cores).
    # Cycles the HTTP server's threads leave behind stay: a small leak for a test double.
    gc.disable()
    state = CrateState(tables={"doc.readings"}, keep_statements=False, users=users,
                       readings=StoredKeys() if args.keys_only else Readings())
    double = CrateDouble(state, args.host, args.port)
    sys.setswitchinterval(0.0005)  # a thread per connection: hand the GIL on soon, as ingest/__main__.py does
    print(f"contract double (not CrateDB) on {args.host}:{args.port}", flush=True)
    double.server.serve_forever()


if __name__ == "__main__":
    main()
