"""The tracking stores a URI can name, checked before MLflow opens them: MLflow's own failures there are tracebacks
(a retired folder store, a missing database driver, a file that is no database), ours are one line each."""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from clbench.core.errors import ConfigError

DB_NAME = "mlflow.db"  # the SQLite file a folder store keeps its runs in
DATABASES = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # the database schemes MLflow opens: default ports
# The module SQLAlchemy imports for a scheme's default driver → what `pip install` brings it.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
_SQLITE_HEADER = b"SQLite format 3\x00"
_said: set[str] = set()


def local_store(uri: str) -> str:
    """A folder or a `.db` path as the SQLite URI MLflow opens (other URIs as they are).

    MLflow 3 refuses folder stores (`./mlruns`): a folder's runs go to `mlflow.db` inside it, said once on stderr.
    A folder that already holds an MLflow folder store is refused with the command that migrates it, unless
    MLFLOW_ALLOW_FILE_STORE opts back into the folder store.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif "://" not in uri and (len(parsed.scheme) <= 1):  # a path (a Windows drive letter is no scheme)
        path = Path(uri)
    else:
        return uri
    path = path.expanduser().absolute()
    if path.suffix in (".db", ".sqlite", ".sqlite3") or path.is_file():
        return f"sqlite:///{path}"
    if _is_folder_store(path) and not (path / DB_NAME).exists():
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1"):
            return uri
        raise ConfigError(
            f"{path} is an MLflow folder store, which MLflow 3 no longer opens",
            f"migrate it once with `mlflow migrate-filestore --source {path} --target sqlite:///{path / DB_NAME}`, "
            "then pass the same folder again",
        )
    database = f"sqlite:///{path / DB_NAME}"
    if str(path) not in _said:
        _said.add(str(path))
        print(f"tracking store: the folder {path} keeps its runs in {path / DB_NAME} ({database})", file=sys.stderr)
    return database


def _is_folder_store(path: Path) -> bool:
    """Whether `path` holds experiments the way MLflow's folder store writes them (`<id>/meta.yaml`)."""
    try:
        return path.is_dir() and any((child / "meta.yaml").is_file() for child in path.iterdir() if child.is_dir())
    except OSError:
        return False


def check_sqlite(uri: str) -> None:
    """The SQLite file's folder must be writable, and an existing file must be an SQLite database."""
    if not uri.startswith("sqlite:///"):
        raise ConfigError(
            f"the tracking URI {uri} has no file path",
            "write sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )
    path = Path(uri.removeprefix("sqlite:///"))
    existing = next(p for p in (path.parent, *path.absolute().parents) if p.exists())  # made with the store
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(
            f"cannot write the MLflow store {uri}: {existing} is a file or read-only",
            "run from a writable folder or pass --tracking-uri",
        )
    if path.is_dir():
        raise ConfigError(f"the MLflow store {path} is a folder", f"pass --tracking-uri {path} (a folder store)")
    if not path.is_file() or path.stat().st_size == 0:
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(
            f"the MLflow store {path} cannot be read and written by this user", "fix its permissions (chmod u+rw)"
        )
    with path.open("rb") as handle:
        if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            raise ConfigError(
                f"{path} is not an SQLite database, so not an MLflow store",
                "pass the store's .db file, or a new path for a new store",
            )


def check_database(uri: str) -> None:
    """A database URL: its driver must be installed (SQLAlchemy names it) and its server must answer."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(
            f"the tracking URI {uri!r} is not a database URL SQLAlchemy knows ({exc})",
            "write e.g. postgresql://USER:PASSWORD@HOST:5432/DATABASE",
        ) from None
    shown = url.render_as_string(hide_password=True)
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (exc.name or str(exc)).split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module)
        raise ConfigError(
            f"the tracking store {shown} needs the Python driver {module}, which is not installed",
            f"pip install '{package}' into this environment ({sys.executable})",
        ) from None
    if url.host:
        _check_reachable(url.host, url.port or DATABASES[url.get_backend_name()], shown)


def _check_reachable(host: str, port: int, shown: str) -> None:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"the database server of {shown} cannot be reached at {host}:{port} ({exc.strerror or exc})",
            "start it, or pass another --tracking-uri",
        ) from None
