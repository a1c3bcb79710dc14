"""The key broker's embedded SQLite store: resources and their policies, reference values,
certificates, key.

Tables (schema version 2, ``PRAGMA user_version``)::

    resources(repository, type, tag, data BLOB, policy TEXT)
                                                   primary key (repository, type, tag);
                                                   policy: ResourcePolicy JSON, NULL = none
    settings(name PRIMARY KEY, value TEXT)         'reference_values' (JSON), 'token_key' (PEM)
    certificates(fingerprint PRIMARY KEY, der BLOB) ASK/ARK/VCEK cache (a stand-in for AMD's KDS)

Migration from version 1 (no per-resource policy; one minimum TCB for every product),
done in one transaction when a version-1 store is opened: every resource gets the
policy "the reference measurements of the moment" (so what could read it before still
can, and a measurement added later must be granted it explicitly), or none if no
measurement was configured (then nothing could read it before either); a single
minimum TCB becomes the minimum of each product whose TCB layout it has (it applied
to all of them before; ``copra kbs show-reference`` shows the result to review).

Sessions are not stored: they live in the broker's memory and die with it (a KBS
restart forces guests to authenticate again, which is always safe).

Invariants: every resource path component matches ``[A-Za-z0-9._-]{1,64}`` and is not
``.`` or ``..``; reference values are stored in the JSON form of
:meth:`ReferenceValues.to_json` and always parse back. The database file is created
with mode 0600 because it holds secrets (resources and the token-signing key); an
existing file that is not a regular file of the effective user, or has any group or
other permission, is refused, as ssh refuses such a private key, and so is a directory
that anyone but its owner (the effective user or root) can write.

Locking: every operation opens its own connection (SQLite serialises writers), so a
:class:`Store` may be shared by the server's threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from copra.attest.kbs.policy import (
    ResourcePolicy,
    minimum_tcb_from_json,
    minimum_tcb_to_json,
)
from copra.hw.hostfiles import UnsafeFile, check_state_file, open_state_dir
from copra.hw.snp_report import Generation, TcbVersion

SCHEMA_VERSION: Final = 2
_COMPONENT: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS resources (
    repository TEXT NOT NULL, type TEXT NOT NULL, tag TEXT NOT NULL, data BLOB NOT NULL,
    policy TEXT,
    PRIMARY KEY (repository, type, tag));
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (fingerprint TEXT PRIMARY KEY, der BLOB NOT NULL);
"""


class StoreError(Exception):
    """The store cannot do what was asked (bad path, corrupt contents, wrong schema)."""


class StoreMissing(StoreError):
    """The store does not exist, and the caller asked not to create it."""


def _policy(path: object, text: str) -> ResourcePolicy:
    try:
        return ResourcePolicy.from_json(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"the stored policy of {path} is corrupt: {exc}") from exc


@dataclass(frozen=True)
class ResourcePath:
    repository: str
    type: str
    tag: str

    def __post_init__(self) -> None:
        for part in (self.repository, self.type, self.tag):
            if not _COMPONENT.fullmatch(part) or part in (".", ".."):
                raise StoreError(f"resource path component {part!r} is not [A-Za-z0-9._-]{{1,64}}")

    @classmethod
    def parse(cls, text: str) -> ResourcePath:
        parts = text.split("/")
        if len(parts) != 3:
            raise StoreError(f"resource path {text!r} is not REPOSITORY/TYPE/TAG")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.repository}/{self.type}/{self.tag}"


@dataclass(frozen=True)
class ReferenceValues:
    """What a report must show to be released secrets (fail closed: no measurement, no secret).

    ``measurements`` is an allow-list of 48-byte launch digests; ``minimum_tcb`` maps a
    product to the minimum REPORTED_TCB of its reports, component by component (when
    any product is listed, reports of a product not listed are refused:
    :func:`~copra.attest.kbs.policy.check_minimum_tcb`); ``vmpl`` is the VMPL the report must come
    from (COCONUT's SVSM asks for VMPL 0; None accepts any); ``host_data`` if set must
    match exactly.
    """

    measurements: frozenset[bytes] = field(default_factory=frozenset)
    minimum_tcb: Mapping[Generation, TcbVersion] = field(default_factory=dict)
    allow_debug: bool = False
    vmpl: int | None = 0
    host_data: bytes | None = None

    def __post_init__(self) -> None:
        if any(len(m) != 48 for m in self.measurements):
            raise StoreError("measurements are 48 bytes")
        if self.host_data is not None and len(self.host_data) != 32:
            raise StoreError("host_data is 32 bytes")
        if self.vmpl is not None and not 0 <= self.vmpl <= 3:
            raise StoreError("vmpl is 0..3")

    def to_json(self) -> dict[str, Any]:
        return {
            "measurements": sorted(m.hex() for m in self.measurements),
            "minimum_tcb": minimum_tcb_to_json(self.minimum_tcb),
            "allow_debug": self.allow_debug,
            "vmpl": self.vmpl,
            "host_data": None if self.host_data is None else self.host_data.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> ReferenceValues:
        try:
            host = obj["host_data"]
            return cls(
                measurements=frozenset(bytes.fromhex(m) for m in obj["measurements"]),
                minimum_tcb=minimum_tcb_from_json(obj["minimum_tcb"]),
                allow_debug=bool(obj["allow_debug"]),
                vmpl=obj["vmpl"],
                host_data=None if host is None else bytes.fromhex(host),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"stored reference values are corrupt: {exc}") from exc


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Version 1 -> 2 (module docstring), inside the caller's transaction."""
    db.execute("ALTER TABLE resources ADD COLUMN policy TEXT")
    row = db.execute("SELECT value FROM settings WHERE name='reference_values'").fetchone()
    if row is None:
        return
    try:
        old = json.loads(row[0])
        tcb = old["minimum_tcb"]
        if tcb is None:
            old["minimum_tcb"] = {}
        elif "bootloader" in tcb:  # one minimum for every product
            single = TcbVersion(**tcb)
            old["minimum_tcb"] = minimum_tcb_to_json(
                {g: single for g in Generation if g.tcb_layout is single.layout})
        values = ReferenceValues.from_json(old)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"cannot migrate the reference values: {exc}") from exc
    db.execute("UPDATE settings SET value=? WHERE name='reference_values'",
               (json.dumps(values.to_json(), sort_keys=True),))
    if values.measurements:
        policy = ResourcePolicy(measurements=values.measurements)
        db.execute("UPDATE resources SET policy=?", (json.dumps(policy.to_json()),))


class Store:
    """One SQLite database file."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open the store at ``path``, creating it unless ``create`` is false: then a
        missing file is :class:`StoreMissing` and nothing is created, not even its
        directory (for commands that only read, or change what must already exist)."""
        self._path = Path(path)
        if not create and not os.path.lexists(self._path):
            raise StoreMissing(f"{self._path}: no such store (a command that writes "
                               "reference values or resources creates it)")
        self._create_or_check()
        with self._connect() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise StoreError(f"{self._path}: schema version {version}, expected at most "
                                 f"{SCHEMA_VERSION}")
            if version == 1:
                _migrate_1_to_2(db)
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _create_or_check(self) -> None:
        """Create the file mode 0600, or refuse an existing one that is not safely ours.

        The directory must be the effective user's (or root's) and writable by no one
        else (:func:`copra.hw.hostfiles.open_state_dir`): otherwise another user could
        plant the database, or a journal SQLite would roll into it, before we look.
        Creation is one ``O_CREAT | O_EXCL | O_NOFOLLOW`` open in that directory, so
        a file another process creates at the same moment is simply an existing file.
        An existing file must be a regular file (not a symbolic link), owned by the
        effective user, with no group or other permission bits, as ssh demands of a
        private key: the store holds the resources and the token-signing key.
        """
        directory = self._path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            dir_fd = open_state_dir(directory)
        except UnsafeFile as exc:
            raise StoreError(f"{exc}; the store's directory must be writable only by its "
                             f"owner") from None
        except OSError as exc:
            raise StoreError(f"{directory}: {exc.strerror or exc}") from exc
        try:
            try:
                fd = os.open(self._path.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                check_state_file(dir_fd, self._path, private=True)
            else:
                os.close(fd)
        except UnsafeFile as exc:
            raise StoreError(str(exc)) from None
        except OSError as exc:
            raise StoreError(f"{self._path}: {exc.strerror or exc}") from exc
        finally:
            os.close(dir_fd)

    @property
    def path(self) -> Path:
        return self._path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self._path, timeout=10)
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: {exc}") from exc
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self._path}: {exc}") from exc
        finally:
            db.close()

    # -- resources ---------------------------------------------------------------------

    def set_resource(
        self, path: ResourcePath, data: bytes, policy: ResourcePolicy | None = None
    ) -> None:
        """Store ``data`` at ``path``; with ``policy`` set that too, else keep the
        resource's policy (a new resource has none, and is not released until it does)."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO resources VALUES (?, ?, ?, ?, NULL) "
                "ON CONFLICT (repository, type, tag) DO UPDATE SET "
                "data=excluded.data",
                (path.repository, path.type, path.tag, data),
            )
            if policy is not None:
                self._set_policy(db, path, policy)

    def set_policy(self, path: ResourcePath, policy: ResourcePolicy) -> bool:
        """Replace the policy of the resource at ``path``; False if there is none."""
        with self._connect() as db:
            return self._set_policy(db, path, policy)

    @staticmethod
    def _set_policy(db: sqlite3.Connection, path: ResourcePath, policy: ResourcePolicy) -> bool:
        cur = db.execute(
            "UPDATE resources SET policy=? WHERE repository=? AND type=? AND tag=?",
            (json.dumps(policy.to_json(), sort_keys=True), path.repository, path.type, path.tag),
        )
        return cur.rowcount > 0

    def get_resource(self, path: ResourcePath) -> bytes | None:
        found = self.get_resource_and_policy(path)
        return None if found is None else found[0]

    def get_resource_and_policy(
        self, path: ResourcePath
    ) -> tuple[bytes, ResourcePolicy | None] | None:
        """The resource and its policy, read together (one statement, one snapshot)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT data, policy FROM resources WHERE repository=? AND type=? AND tag=?",
                (path.repository, path.type, path.tag),
            ).fetchone()
        if row is None:
            return None
        return bytes(row[0]), None if row[1] is None else _policy(path, row[1])

    def policy(self, path: ResourcePath) -> ResourcePolicy | None:
        found = self.get_resource_and_policy(path)
        return None if found is None else found[1]

    def delete_resource(self, path: ResourcePath) -> bool:
        with self._connect() as db:
            cur = db.execute(
                "DELETE FROM resources WHERE repository=? AND type=? AND tag=?",
                (path.repository, path.type, path.tag),
            )
            return cur.rowcount > 0

    def list_resources(self) -> list[tuple[ResourcePath, int, ResourcePolicy | None]]:
        """Paths, sizes and policies (never contents)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT repository, type, tag, length(data), policy FROM resources "
                "ORDER BY 1, 2, 3"
            ).fetchall()
        out = []
        for r, t, g, n, text in rows:
            path = ResourcePath(r, t, g)
            out.append((path, n, None if text is None else _policy(path, text)))
        return out

    # -- settings ----------------------------------------------------------------------

    def _get_setting(self, name: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_setting(self, name: str, value: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    def reference_values(self) -> ReferenceValues:
        text = self._get_setting("reference_values")
        if text is None:
            return ReferenceValues()
        try:
            return ReferenceValues.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise StoreError(f"stored reference values are corrupt: {exc}") from exc

    def set_reference_values(self, values: ReferenceValues) -> None:
        self._set_setting("reference_values", json.dumps(values.to_json(), sort_keys=True))

    def token_key_pem(self) -> bytes | None:
        text = self._get_setting("token_key")
        return None if text is None else text.encode("ascii")

    def set_token_key_pem(self, pem: bytes) -> None:
        self._set_setting("token_key", pem.decode("ascii"))

    # -- certificates ------------------------------------------------------------------

    def add_certificate(self, fingerprint: str, der: bytes) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO certificates VALUES (?, ?)", (fingerprint, der))

    def certificates(self) -> list[bytes]:
        with self._connect() as db:
            rows = db.execute("SELECT der FROM certificates ORDER BY fingerprint").fetchall()
        return [bytes(r[0]) for r in rows]
