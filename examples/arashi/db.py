"""Arashi's database: schema, the synthetic mail corpus, and every query, for SQLite and PostgreSQL.

The database drivers (``sqlite3``, ``psycopg``) block, so every function here runs on a thread:
the ``db`` stage's threads, one connection each (see :func:`db_stage` in ``conditioning.py``).
Each query function takes a :class:`Conn` first; the app calls it as
``await db(store.list_messages, user_id, folder_id, page)``.

Every query is parameterised, and every query that touches mail is scoped by the user's id:
a message or folder of another user is simply not found. Changes run in one transaction each
and are committed before the function returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

# A small password-hashing cost: the benchmark logs in 128 to 1000 users, and login must not be
# its bottleneck. A real service would use a far larger cost (OWASP: 600,000 iterations of
# PBKDF2-SHA256), which is ~0.3 s of CPU per login on this kind of machine.
PBKDF2_ITERATIONS = 1_000
SESSION_SECONDS = 24 * 3600
PAGE_SIZE = 25
PREVIEW_CHARS = 120
DEGRADED_SEARCH_RECENT = 50  # a degraded search looks only at the user's newest messages
SEARCH_LIMIT = 50

STANDARD_FOLDERS = ("Inbox", "Sent", "Archive", "Trash")
EXTRA_FOLDERS = ("Work", "Family", "Travel", "Receipts", "Newsletters")

_WORD_TEXT = """
about above account across action address after again agenda agreement airport almost already
answer apple april arrive article attach august autumn balance bank before begin below benefit
between birthday board booking borrow branch breakfast brief budget build calendar camera cancel
carbon castle certain chair change cheap check chicken choice city client closing coffee
colour comment company concert confirm contract copy corner cost cotton council country course
credit cycle daily dance danger dear debate december delivery dentist design detail dinner
direct discount doctor document dollar draft dream driver during early east editor effort
eight election email engine evening event exact example exchange expense family farmer
february festival figure final finance flight flower follow forest forward friday friend
garden gather general gift glass golden group guitar harbour health holiday hotel house
husband idea import invoice island january journey july june kitchen ladder language laptop
later launch lawyer leader letter library light limit list local lunch machine magazine
manager march market meeting member memory message method middle minute model monday money
month morning mountain museum music natural network never news night north notice november
number october office orange order owner package paper parent party passport payment pencil
people pepper period phone photo picture pilot planet plastic pocket policy portal post
potato power present price print problem project promise proposal question quick quiet quote
radio rain receipt record refund region remind rental report request result review river
road rocket salary sample saturday school science season second secret senior september
service seven share shipping signal silver simple sister soccer society spring square staff
station status storm street student summer sunday supply support survey system table teacher
team ticket timber today tomorrow total tower track train travel tuesday update urgent valley
vendor village visit volume wallet water wednesday weekend welcome window winter witness
wonder workshop yellow yesterday zebra
"""
WORDS = tuple(_WORD_TEXT.split())

_NAME_TEXT = """
ada alan anna ben carla chen dana emil eva farid grace hana ivan jon kara leo lina marco mia
nadia omar paula quinn rosa sam tara uma victor wen xena yusuf zoe
"""
FIRST_NAMES = tuple(_NAME_TEXT.split())
DOMAINS = ("example.com", "example.org", "mail.example.net", "corp.example")


def user_name(i: int) -> str:
    """The login name of user ``i``: ``user00000``, ``user00001``..."""
    return f"user{i:05d}"


def user_password(i: int) -> str:
    """The password of user ``i`` (the benchmark knows it): ``pw-user00000``..."""
    return f"pw-{user_name(i)}"


def user_class(i: int) -> int:
    """Even-numbered users are class 0 ("paying"), odd ones class 1 ("free")."""
    return i % 2


def hash_password(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> str:
    """PBKDF2-SHA256, stored as ``pbkdf2_sha256$iterations$salt$hash`` (hex)."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password` (constant time)."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    again = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(again.hex(), digest)


def like_pattern(text: str) -> str:
    r"""A LIKE pattern matching ``text`` anywhere, its wildcards escaped (escape char ``\``)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# --- connections -----------------------------------------------------------------------------


class Conn:
    """One database connection, used by one thread at a time, with ``?`` placeholders."""

    dialect = "sqlite"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def sql(self, text: str) -> str:
        return text

    def all(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.raw.execute(self.sql(text), tuple(params))
        return list(cur.fetchall())

    def one(self, text: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        cur = self.raw.execute(self.sql(text), tuple(params))
        row: tuple[Any, ...] | None = cur.fetchone()
        return row

    def run(self, text: str, params: Sequence[Any] = ()) -> int:
        """Execute a change; the number of rows it touched."""
        rowcount: int = self.raw.execute(self.sql(text), tuple(params)).rowcount
        return rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back on an error."""
        # IMMEDIATE takes the write lock at once, so two writers never deadlock upgrading a read.
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def for_update(self) -> str:
        return ""  # BEGIN IMMEDIATE already holds the database's write lock

    def close(self) -> None:
        self.raw.close()


class PgConn(Conn):
    """A psycopg 3 connection in autocommit mode; writes run in explicit transactions."""

    dialect = "postgresql"
    _cache: dict[str, str] = {}  # noqa: RUF012 - a cache of converted statements, shared

    def sql(self, text: str) -> str:
        converted = self._cache.get(text)
        if converted is None:
            converted = self._cache[text] = text.replace("?", "%s")
        return converted

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.raw.transaction():
            yield

    def for_update(self) -> str:
        return " FOR UPDATE"


def parse_db(url: str | None) -> tuple[str, str]:
    """``sqlite:PATH`` or ``postgresql://DSN`` -> (dialect, path or DSN)."""
    if url is None:
        return "sqlite", ""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    if url.startswith("sqlite:"):
        return "sqlite", url.removeprefix("sqlite:").removeprefix("//")
    raise ValueError(f"--db must be sqlite:PATH or postgresql://DSN, not {url!r}")


class Database:
    """Where the mail lives, and a connection per thread to it.

    Args:
        dialect: ``"sqlite"`` or ``"postgresql"``.
        target: the SQLite file's path or the PostgreSQL DSN.
    """

    def __init__(self, dialect: str, target: str) -> None:
        self.dialect = dialect
        self.target = target
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[Conn] = []

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(*parse_db(url))

    def connect(self) -> Conn:
        """A new connection (the caller closes it, or :meth:`close_all` does)."""
        conn: Conn
        if self.dialect == "sqlite":
            raw = sqlite3.connect(
                self.target, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process
            raw.execute("PRAGMA foreign_keys=ON")
            conn = Conn(raw)
        else:
            import psycopg

            conn = PgConn(psycopg.connect(self.target, autocommit=True))
        with self._lock:
            self._conns.append(conn)
        return conn

    def conn(self) -> Conn:
        """This thread's connection, opened on first use."""
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    def close_all(self) -> None:
        """Close every connection opened (once the threads that used them have stopped)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()


# --- schema and corpus -----------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    class INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_id, name)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    folder_id INTEGER NOT NULL REFERENCES folders (id),
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    unread INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_folder ON messages (user_id, folder_id, sent_at);
CREATE INDEX IF NOT EXISTS messages_user ON messages (user_id, sent_at);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    expires BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS corpus (
    users INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    seed INTEGER NOT NULL
);
"""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The size of the synthetic corpus: ``users`` users with ``messages`` messages each."""

    users: int = 1000
    messages: int = 200
    seed: int = 7


EPOCH = 1_767_225_600  # 2026-01-01 UTC: the corpus's "now", so every run makes the same mail


def _address(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)}.{rng.choice(FIRST_NAMES)}@{rng.choice(DOMAINS)}"


def _sentence(rng: random.Random, n: int) -> str:
    words = rng.choices(WORDS, k=n)
    return " ".join(words).capitalize() + "."


def _sentences(rng: random.Random) -> list[str]:
    # Bodies are drawn from a pool of sentences: 50 times faster to generate than word by word,
    # and still about 14,000 distinct sentences of 2 to 16 words.
    return [_sentence(rng, rng.randint(2, 16)) for _ in range(14_000)]


def _body(rng: random.Random, pool: list[str]) -> str:
    return "\n\n".join(" ".join(rng.choices(pool, k=3)) for _ in range(rng.randint(1, 4)))


def generate(
    corpus: Corpus,
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The corpus's rows, user by user: ("users" | "folders" | "messages", rows)."""
    rng = random.Random(corpus.seed)
    pool = _sentences(rng)
    folder_id = 0
    message_id = 0
    for i in range(corpus.users):
        uid = i + 1
        salt = rng.randbytes(16)
        yield "users", [(uid, user_name(i), hash_password(user_password(i), salt), user_class(i))]
        names = list(STANDARD_FOLDERS) + rng.sample(EXTRA_FOLDERS, rng.randint(1, 3))
        fids = list(range(folder_id + 1, folder_id + 1 + len(names)))
        folder_id += len(names)
        weights = [50, 15, 20, 3] + [12 / (len(names) - 4)] * (len(names) - 4)
        totals = dict.fromkeys(fids, 0)
        unread = dict.fromkeys(fids, 0)
        me = f"{user_name(i)}@arashi.example"
        messages = []
        for _ in range(corpus.messages):
            message_id += 1
            fid = rng.choices(fids, weights)[0]
            is_unread = int(fid == fids[0] and rng.random() < 0.3)
            totals[fid] += 1
            unread[fid] += is_unread
            sender, recipient = _address(rng), me
            if fid == fids[1]:
                sender, recipient = recipient, sender
            subject = rng.choice(pool)[:-1][:60]
            sent_at = EPOCH - rng.randint(0, 2 * 365 * 86400)
            messages.append(
                (
                    message_id,
                    uid,
                    fid,
                    sender,
                    recipient,
                    subject,
                    _body(rng, pool),
                    sent_at,
                    is_unread,
                )
            )
        yield (
            "folders",
            [
                (f, uid, n, p, totals[f], unread[f])
                for p, (f, n) in enumerate(zip(fids, names, strict=True))
            ],
        )
        yield "messages", messages


_INSERT = {
    "users": "INSERT INTO users (id, name, password, class) VALUES (?, ?, ?, ?)",
    "folders": "INSERT INTO folders (id, user_id, name, position, total, unread) "
    "VALUES (?, ?, ?, ?, ?, ?)",
    "messages": "INSERT INTO messages (id, user_id, folder_id, sender, recipient, subject, body, "
    "sent_at, unread) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
}


def prepare(db: Database, corpus: Corpus) -> bool:
    """Create the schema, and fill it with ``corpus`` unless it already holds mail.

    Returns True if the corpus was generated now, False if the database was already filled
    (restarting on the same SQLite file or PostgreSQL database keeps its mail and sessions).
    """
    conn = db.connect()
    try:
        if conn.dialect == "sqlite":
            conn.raw.executescript(SCHEMA)
        else:
            with conn.transaction():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.run(statement)
        if conn.one("SELECT users FROM corpus") is not None:
            return False
        with conn.transaction():
            if conn.dialect == "sqlite":
                for table, rows in generate(corpus):
                    conn.raw.executemany(_INSERT[table], rows)
            else:
                _copy_pg(conn, corpus)
            conn.run(
                "INSERT INTO corpus (users, messages, seed) VALUES (?, ?, ?)",
                (corpus.users, corpus.messages, corpus.seed),
            )
        if conn.dialect == "postgresql":
            conn.run("ANALYZE")
        return True
    finally:
        conn.close()
        with db._lock:
            db._conns.remove(conn)


def _copy_pg(conn: Conn, corpus: Corpus) -> None:
    columns = {
        "users": "users (id, name, password, class)",
        "folders": "folders (id, user_id, name, position, total, unread)",
        "messages": "messages (id, user_id, folder_id, sender, recipient, subject, body, "
        "sent_at, unread)",
    }
    cur = conn.raw.cursor()
    pending: dict[str, list[tuple[Any, ...]]] = {t: [] for t in columns}

    def flush() -> None:
        # Users before folders before messages: the foreign keys are checked per statement.
        for table in ("users", "folders", "messages"):
            if pending[table]:
                with cur.copy(f"COPY {columns[table]} FROM STDIN") as copy:
                    for row in pending[table]:
                        copy.write_row(row)
                pending[table].clear()

    for n, (table, rows) in enumerate(generate(corpus)):
        pending[table].extend(rows)
        if n % 600 == 599:
            flush()
    flush()


def corpus_of(db: Database) -> Corpus | None:
    """The corpus a prepared database holds, or None."""
    conn = db.connect()
    try:
        row = conn.one("SELECT users, messages, seed FROM corpus")
    finally:
        conn.close()
        with db._lock:
            db._conns.remove(conn)
    return None if row is None else Corpus(*row)


# --- the queries -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    name: str
    cls: int


@dataclasses.dataclass(frozen=True)
class Folder:
    id: int
    name: str
    total: int
    unread: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """A message as a list shows it."""

    id: int
    folder_id: int
    sender: str
    subject: str
    sent_at: int
    unread: bool
    preview: str


@dataclasses.dataclass(frozen=True)
class Message:
    id: int
    folder_id: int
    folder_name: str
    sender: str
    recipient: str
    subject: str
    body: str
    sent_at: int


def login(conn: Conn, name: str, password: str) -> tuple[User, str] | None:
    """Check the password; on success open a session: (user, token). None if refused."""
    row = conn.one("SELECT id, name, password, class FROM users WHERE name = ?", (name,))
    if row is None:
        # Hash anyway, so a wrong name costs as much as a wrong password (no user enumeration).
        check_password(password, hash_password("", b"\0" * 16))
        return None
    if not check_password(password, row[2]):
        return None
    token = secrets.token_urlsafe(32)
    with conn.transaction():
        conn.run(
            "INSERT INTO sessions (token, user_id, expires) VALUES (?, ?, ?)",
            (token, row[0], int(time.time()) + SESSION_SECONDS),
        )
    return User(row[0], row[1], row[3]), token


def session_user(conn: Conn, token: str) -> User | None:
    """The user of a session token, or None if unknown or expired."""
    row = conn.one(
        "SELECT u.id, u.name, u.class FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token = ? AND s.expires > ?",
        (token, int(time.time())),
    )
    return None if row is None else User(*row)


def logout(conn: Conn, token: str) -> None:
    with conn.transaction():
        conn.run("DELETE FROM sessions WHERE token = ?", (token,))


def list_folders(conn: Conn, user_id: int) -> list[Folder]:
    rows = conn.all(
        "SELECT id, name, total, unread FROM folders WHERE user_id = ? ORDER BY position",
        (user_id,),
    )
    return [Folder(*row) for row in rows]


def folder(conn: Conn, user_id: int, folder_id: int) -> Folder | None:
    row = conn.one(
        "SELECT id, name, total, unread FROM folders WHERE id = ? AND user_id = ?",
        (folder_id, user_id),
    )
    return None if row is None else Folder(*row)


def list_messages(
    conn: Conn, user_id: int, folder_id: int, page: int, *, previews: bool = True
) -> list[Summary]:
    """One page of a folder, newest first; with ``previews``, the start of each body."""
    preview = f"substr(body, 1, {PREVIEW_CHARS})" if previews else "''"
    rows = conn.all(
        f"SELECT id, folder_id, sender, subject, sent_at, unread, {preview} FROM messages "
        "WHERE user_id = ? AND folder_id = ? ORDER BY sent_at DESC, id DESC LIMIT ? OFFSET ?",
        (user_id, folder_id, PAGE_SIZE, PAGE_SIZE * page),
    )
    return [Summary(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]


def show_message(conn: Conn, user_id: int, message_id: int) -> Message | None:
    """A message, marked read (with its folder's unread count) in the same transaction."""
    with conn.transaction():
        row = conn.one(
            "SELECT m.id, m.folder_id, f.name, m.sender, m.recipient, m.subject, m.body, "
            "m.sent_at, m.unread FROM messages m JOIN folders f ON f.id = m.folder_id "
            "WHERE m.id = ? AND m.user_id = ?" + conn.for_update(),
            (message_id, user_id),
        )
        if row is None:
            return None
        if row[8]:
            conn.run("UPDATE messages SET unread = 0 WHERE id = ?", (message_id,))
            conn.run("UPDATE folders SET unread = unread - 1 WHERE id = ?", (row[1],))
    return Message(*row[:8])


def delete_message(conn: Conn, user_id: int, message_id: int) -> int | None:
    """Delete a message for good; its folder's id, or None if the user has no such message."""
    with conn.transaction():
        row = conn.one(
            "SELECT folder_id, unread FROM messages WHERE id = ? AND user_id = ?"
            + conn.for_update(),
            (message_id, user_id),
        )
        if row is None:
            return None
        conn.run("DELETE FROM messages WHERE id = ?", (message_id,))
        conn.run(
            "UPDATE folders SET total = total - 1, unread = unread - ? WHERE id = ?",
            (row[1], row[0]),
        )
    folder_id: int = row[0]
    return folder_id


def refile_message(conn: Conn, user_id: int, message_id: int, folder_id: int) -> int | None:
    """Move a message to another of the user's folders; the folder it left, or None if the
    user has no such message or no such folder (nothing changes then)."""
    with conn.transaction():
        row = conn.one(
            "SELECT folder_id, unread FROM messages WHERE id = ? AND user_id = ?"
            + conn.for_update(),
            (message_id, user_id),
        )
        if row is None:
            return None
        mine = conn.one("SELECT 1 FROM folders WHERE id = ? AND user_id = ?", (folder_id, user_id))
        if mine is None:
            return None
        old: int = row[0]
        if old != folder_id:
            conn.run("UPDATE messages SET folder_id = ? WHERE id = ?", (folder_id, message_id))
            # Lock the two folder rows in id order, so two refiles never deadlock (PostgreSQL).
            for fid, delta in sorted(((old, -1), (folder_id, 1))):
                conn.run(
                    "UPDATE folders SET total = total + ?, unread = unread + ? WHERE id = ?",
                    (delta, delta * row[1], fid),
                )
    return old


def search(conn: Conn, user_id: int, text: str, *, recent_only: bool = False) -> list[Summary]:
    """The user's messages whose subject, sender or body contain ``text`` (case-insensitive),
    newest first; ``recent_only`` looks only at the newest messages (the degraded search)."""
    pattern = like_pattern(text)
    scope = "user_id = ?"
    params: list[Any] = [user_id]
    if recent_only:
        scope = "id IN (SELECT id FROM messages WHERE user_id = ? ORDER BY sent_at DESC LIMIT ?)"
        params.append(DEGRADED_SEARCH_RECENT)
    rows = conn.all(
        "SELECT id, folder_id, sender, subject, sent_at, unread, "
        f"substr(body, 1, {PREVIEW_CHARS}) FROM messages WHERE {scope} AND ("
        "lower(subject) LIKE ? ESCAPE '\\' OR lower(sender) LIKE ? ESCAPE '\\' "
        "OR lower(body) LIKE ? ESCAPE '\\') ORDER BY sent_at DESC, id DESC LIMIT ?",
        (*params, pattern, pattern, pattern, SEARCH_LIMIT),
    )
    return [Summary(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]


def default_sqlite_path() -> str:
    """A fresh SQLite file in a temporary directory."""
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="arashi-"), "mail.sqlite")
