"""Where jobtrack keeps its database and files, and the defaults of its knobs.

The default database is ``$XDG_DATA_HOME/jobtrack/jobtrack.db`` (``~/.local/share/jobtrack/jobtrack.db``
when ``XDG_DATA_HOME`` is unset). ``db=`` arguments win over ``JOBTRACK_DB``, which wins over the
default. Model files, exports and logs live in ``<db>-files/`` beside the database.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat

# The errors load when one is raised, and pathlib (with urllib.parse and ipaddress, 3 ms) where a Path is
# returned: every command resolves its database here, and `jobtrack status` needs neither to do it (#14).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from pathlib import Path

ENV_DB = "JOBTRACK_DB"
"""Environment variable naming the database path (or a SQLAlchemy URL)."""

DEFAULT_DB_NAME = "jobtrack.db"
"""File name of the default database inside the data directory."""

DEFAULT_LOCK_TIMEOUT_S = 30.0
"""Seconds a writer waits for the file lock before raising StoreBusy."""

DEFAULT_LOCK_POLL_S = 0.001
"""Seconds between attempts on a contended file lock (filelock's default 50 ms is far too coarse here)."""

DEFAULT_BUSY_TIMEOUT_MS = 30_000
"""SQLite busy_timeout in milliseconds; a backstop, since writers already serialise on the file lock."""

DEFAULT_LEASE_S = 30.0
"""Seconds a runner's claim stays valid without a heartbeat, for runners that cannot be checked by pid.

Runners renew it every third of a lease; a reader on another host declares the job lost once it expires.
"""

ENV_LEASE = "JOBTRACK_LEASE_S"
"""Environment variable overriding DEFAULT_LEASE_S (seconds), e.g. for workers on several hosts."""

ENV_HOST = "JOBTRACK_HOST"
"""Environment variable naming this machine for liveness checks, where hostnames are not unique."""

ENV_FILES = "JOBTRACK_FILES"
"""Environment variable naming the files directory of server databases (models, exports, logs)."""

ENV_ALLOW_NETWORK_FS = "JOBTRACK_ALLOW_NETWORK_FS"
"""Set to ``1`` to allow a database on a network filesystem (NFS, SMB, sshfs...), at your own risk."""


def lease_seconds() -> float:
    """The runner lease: ``$JOBTRACK_LEASE_S`` if set, else DEFAULT_LEASE_S.

    Raises:
        InvalidArgument: a value that is not a positive number of seconds.
    """
    raw = os.environ.get(ENV_LEASE)
    if raw is None or raw == "":
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument(f"{ENV_LEASE}={raw!r} is not a positive number of seconds; unset it or use e.g. 30.")
    return value

DEFAULT_WAIT_POLL_S = 0.05
"""Seconds between status reads while wait() blocks."""

DEFAULT_MAX_LOG_BYTES = 4 * 1024 * 1024
"""Largest size of a job's log file (``Trainer(max_log_bytes=...)``); later output reaches the terminal only."""

DEFAULT_MAX_RESULT_BYTES = 4 * 1024 * 1024
"""Largest size in bytes of a job's reported epochs, and of its summary, as stored JSON (#13).

``Trainer(max_result_bytes=...)`` or ``$JOBTRACK_MAX_RESULT_BYTES`` changes it. A ``log_epoch()`` past it
raises ``ResultTooLarge``; a summary past it is not stored (the result and the log say so).
"""

ENV_MAX_RESULT_BYTES = "JOBTRACK_MAX_RESULT_BYTES"
"""Environment variable overriding DEFAULT_MAX_RESULT_BYTES (bytes), read where the job runs."""


def max_result_bytes() -> int:
    """The result cap: ``$JOBTRACK_MAX_RESULT_BYTES`` if set, else DEFAULT_MAX_RESULT_BYTES.

    Raises:
        InvalidArgument: a value that is not a positive integer.
    """
    raw = os.environ.get(ENV_MAX_RESULT_BYTES)
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_RESULT_BYTES
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise _invalid(f"{ENV_MAX_RESULT_BYTES}={raw!r} is not a positive number of bytes; unset it or use "
                              f"e.g. {DEFAULT_MAX_RESULT_BYTES}.")
    return value


def default_db_path() -> Path:
    """The documented default database path, ignoring JOBTRACK_DB."""
    from pathlib import Path

    return Path(default_db_text())


def default_db_text() -> str:
    """``str(default_db_path())``, without importing pathlib (the command line's start-up, #14)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    root, parts = _split_path(base)
    return root + "/".join([*parts, "jobtrack", DEFAULT_DB_NAME])


def resolve_db(db: str | os.PathLike[str] | None = None) -> str:
    """The database to use: ``db`` if given, else ``$JOBTRACK_DB``, else the default path.

    Returns a SQLAlchemy URL unchanged (``postgresql+psycopg://...``) or an absolute file path.

    Raises:
        InvalidArgument: ``db`` is not a str or path, is empty, holds a NUL byte, or is a URL of no
            database SQLAlchemy knows.
        NotAJobtrackDatabase: the path exists and is not a regular file (a directory, ``/dev/null``).
    """
    if db is not None and not isinstance(db, (str, os.PathLike)):
        raise _invalid(
            f"db={_short(db)} ({type(db).__name__}) is not a database path or URL; "
            "pass a str or pathlib.Path, e.g. db='jobs.db'."
        )
    raw = os.fspath(db) if db is not None else os.environ.get(ENV_DB) or default_db_text()
    if not isinstance(raw, str):  # a PathLike that gives bytes
        raise _invalid(f"db={_short(db)} gives a bytes path; pass a str or pathlib.Path, e.g. db='jobs.db'.")
    if not raw.strip():
        raise _invalid("db='' names no database; pass a path such as 'jobs.db', or None for the default.")
    if "\x00" in raw:
        raise _invalid(f"The database path {_short(raw)} holds a NUL byte, which no file name can; remove it.")
    if is_url(raw):
        if raw.startswith("sqlite:///"):
            path = absolute_path(raw[len("sqlite:///") :])
            check_db_path(path)
            return path
        _check_url(raw)
        return raw
    path = absolute_path(raw)
    check_db_path(path)
    return path


def absolute_path(raw: str) -> str:
    """``str(Path(raw).expanduser().absolute())`` on POSIX, spelled alike, without importing pathlib (#14).

    As pathlib does: empty and ``.`` components and repeated slashes go, ``..`` stays, a leading ``~``
    or ``~user`` component is the home directory, a relative path is taken from the working directory.

    Raises:
        RuntimeError: a leading ``~`` whose home directory is unknown (pathlib's error).
    """
    root, parts = _split_path(raw)
    if not root and parts and parts[0][:1] == "~":
        home = os.path.expanduser(parts[0])
        if home[:1] == "~":
            raise RuntimeError("Could not determine home directory.")
        root, head = _split_path(home)
        parts = head + parts[1:]
    if not root:
        root, head = _split_path(os.getcwd())
        parts = head + parts
    return root + "/".join(parts)


def _split_path(text: str) -> tuple[str, list[str]]:
    """A POSIX path as pathlib parses it: its root (``""``, ``"/"``, or exactly two slashes kept) and components."""
    rest = text.lstrip("/")
    slashes = len(text) - len(rest)
    root = "//" if slashes == 2 else "/" if slashes else ""
    return root, [part for part in rest.split("/") if part and part != "."]


def check_db_path(path: str) -> None:
    """Refuse a database path that exists but is not a regular file, before anything is created beside it.

    SQLite would open ``/dev/null`` or a FIFO as an empty database, and jobtrack would then create
    ``/dev/null.lock`` (#21). A missing path is fine (the first write creates it); a symlink to a
    regular file is fine.

    Raises:
        NotAJobtrackDatabase: a directory, device, FIFO or socket.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing, or not reachable: creating or opening it reports that
        return
    if not stat.S_ISREG(mode):
        from jobtrack.errors import NotAJobtrackDatabase

        raise NotAJobtrackDatabase(path, f"it is a {_file_kind(mode)}, not a regular file")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(db: str) -> bool:
    """Whether ``db`` is a SQLAlchemy URL (``scheme://...``) rather than a file path.

    Only a scheme at the very start counts, so a file path that merely contains ``://``
    (``/tmp/x://y.db``) stays a path (#21).
    """
    return _URL_SCHEME.match(db) is not None


@functools.lru_cache(maxsize=16)
def _check_url(url: str) -> None:
    """Refuse a URL SQLAlchemy cannot parse or whose database it does not know, naming the URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from jobtrack.errors import InvalidArgument, MissingExtra

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise InvalidArgument(
            f"Cannot use the database URL {_short(_hide_password(url))} ({exc}); use a file path or a URL such as "
            "'postgresql+psycopg://user@host/dbname'."
        ) from None
    if parsed.get_backend_name() != "postgresql":  # sqlite:/// URLs never come here (resolve_db)
        raise InvalidArgument(
            f"jobtrack keeps its jobs in a SQLite file or a PostgreSQL database, not {parsed.get_backend_name()} "
            f"({_short(_hide_password(url))}); use a file path or a URL such as 'postgresql+psycopg://user@host/dbname'."
        )
    try:  # the driver, imported now: its absence is a missing extra, not a traceback at the first query (#13)
        dialect.import_dbapi()
    except ImportError:
        raise MissingExtra("postgres", parsed.get_driver_name(), "A PostgreSQL database") from None


def _invalid(message: str) -> Exception:
    """``InvalidArgument(message)``, its module imported only when one is raised (#14)."""
    from jobtrack.errors import InvalidArgument

    return InvalidArgument(message)


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def files_dir(db_path: str) -> Path:
    """The directory beside the database that holds models, exports and logs."""
    from pathlib import Path

    return Path(db_path + "-files")


def make_private_dir(path: Path, *, parent_made: bool = False) -> Path:
    """Create ``path`` and any missing parents readable only by the user (0700); existing ones are left alone.

    The mode is set with chmod after mkdir, so it is 0700 whatever the umask (mkdir's mode is masked by it).

    Raises:
        OSError: a directory cannot be created, or ``path`` exists and is not a directory.
    """
    try:
        os.mkdir(path, 0o700)
    except FileNotFoundError:  # a parent is missing: made first, the same way
        if path.parent == path or parent_made:  # still "missing" with the parent there (/proc, a removed cwd)
            raise
        make_private_dir(path.parent)
        return make_private_dir(path, parent_made=True)
    except FileExistsError:  # there already, perhaps made meanwhile by another thread or process: left alone
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path)) from None
        return path
    os.chmod(path, 0o700)
    return path


def check_lock_timeout(value: object) -> float:
    """A ``lock_timeout`` in seconds: a finite number >= 0.

    Raises:
        InvalidArgument: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        from jobtrack.errors import InvalidArgument

        raise InvalidArgument(f"lock_timeout must be a finite number of seconds >= 0, not {value!r}.")
    return float(value)
