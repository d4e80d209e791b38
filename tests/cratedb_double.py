"""A CrateDB contract double: an HTTP server that answers `POST /_sql` the way CrateDB documents.

CrateDB cannot run on the machines this project is tested on. This double is NOT CrateDB: it knows
the handful of statements the stack sends (matched by pattern), keeps their effects in memory and
answers with the documented response shapes (REFERENCE.md, A: "HTTP bulk insert"):
`{"cols", "rows", "rowcount", "duration"}` on success, `{"error": {"code", "message"}}` with the
documented HTTP status on failure (409/4099 for an existing user, 409 for an existing repository,
400/4000 for anything it does not know). The real behaviour is tested by tests/integration.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SqlError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class CrateState:
    nodes: int = 3
    tables: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    privileges: set[tuple[str, str, str]] = field(default_factory=set)  # (type, ident, grantee)
    repositories: set[str] = field(default_factory=set)
    statements: list[str] = field(default_factory=list)


def _rows(values: list) -> dict:
    return {"cols": ["x"], "rows": [[v] for v in values], "rowcount": len(values)}


class CrateDouble:
    """Start with `with CrateDouble() as crate:`; `crate.url` is its base URL."""

    def __init__(self, state: CrateState | None = None) -> None:
        self.state = state or CrateState()
        self.lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                try:
                    request = json.loads(self.rfile.read(length))
                    status, body = 200, double.execute(request["stmt"])
                except SqlError as e:
                    status, body = e.status, {"error": {"code": e.code, "message": e.message}}
                except (ValueError, KeyError) as e:
                    status, body = 400, {"error": {"code": 4000, "message": f"SQLParseException[{e}]"}}
                payload = json.dumps({**body, "duration": 0.1}, separators=(",", ":")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> CrateDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def execute(self, stmt: str) -> dict:
        s = " ".join(stmt.split())
        with self.lock:
            self.state.statements.append(s)
            return self._execute(s)

    def _execute(self, s: str) -> dict:
        st = self.state
        if s == "SELECT count(*) FROM sys.nodes":
            return _rows([st.nodes])
        if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+\.\w+) \(", s):
            created = m.group(1) not in st.tables
            st.tables.add(m.group(1))
            return {"cols": [], "rows": [], "rowcount": int(created)}
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
        if m := re.match(r"CREATE REPOSITORY (\w+) TYPE (fs|s3) WITH \(", s):
            if m.group(1) in st.repositories:
                raise SqlError(409, 4095, f"RepositoryAlreadyExistsException[Repository '{m.group(1)}' already exists]")
            st.repositories.add(m.group(1))
            return {"cols": [], "rows": [], "rowcount": 1}
        if m := re.fullmatch(r"DROP REPOSITORY (\w+)", s):
            st.repositories.discard(m.group(1))
            return {"cols": [], "rows": [], "rowcount": 1}
        if s.startswith("SELECT 'table ' ||"):
            return _rows(sorted(f"table {t}" for t in st.tables if t.startswith("doc.")))
        if s.startswith("SELECT 'user ' ||"):
            return _rows(sorted(f"user {u}" for u in st.users))
        if s.startswith("SELECT 'privilege ' ||"):
            return _rows(sorted(f"privilege {t} on {i or 'cluster'} to {g}" for t, i, g in st.privileges))
        if s.startswith("SELECT 'repository ' ||"):
            return _rows(sorted(f"repository {r}" for r in st.repositories))
        raise SqlError(400, 4000, f"SQLParseException[the contract double does not know: {s[:80]}]")
