"""The SQLAlchemy index: every SQL statement Lanthorn runs lives in this package.

One class serves SQLite (built in) and PostgreSQL (the postgres plugin passes its own
engine). Write transactions are short and take the write lock up front
(``BEGIN IMMEDIATE`` on SQLite) so concurrent writers queue instead of deadlocking.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from pydicom.datadict import tag_for_keyword
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from ..dicom import header_value
from ..errors import RevisionConflict, StorageFull
from ..model import (
    IDENTIFIER_KEYWORDS,
    NEW_RESOURCE_CHANGE,
    STABLE_CHANGE,
    ChangeType,
    Level,
    MainTags,
)
from ..query import Constraint, Match, Query, normalize
from . import schema as s
from .audit import AuditTable
from .commitments import CommitmentTable
from .group import GroupCommit
from .jobs import JobTable
from .prepared import Prepared
from .queries import QueryTable
from .records import (
    Attachment,
    Change,
    DeleteOutcome,
    NewInstance,
    Resource,
    ResourceInfo,
    Statistics,
    StorageLimits,
    StoreOutcome,
)
from .tokens import TokenTable

Node = TypeVar("Node")
#: What ``store_instance`` queues for the group commit: its arguments.
_StoreRequest = tuple[NewInstance, bool, StorageLimits | None]


def orthanc_date(timestamp: float) -> str:
    """Orthanc's compact UTC timestamp, as in ``LastUpdate`` and ``/changes``."""
    return _utc_second(math.floor(timestamp))


@lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """Each ingest formats its time twice, mostly the same second as the one before."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y%m%dT%H%M%S")


class SqlIndex:
    """The index of resources, tags, metadata, attachments and the change log."""

    def __init__(self, engine: Engine, main_tags: MainTags | None = None,
                 write_lock: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.engine = engine
        self.main_tags = main_tags or MainTags()
        self._write_lock = write_lock
        self.jobs = JobTable(self)
        self.queries = QueryTable(self)
        self.commitments = CommitmentTable(self)
        self.audit = AuditTable(self)
        self.tokens = TokenTable(self)
        self._ingests = GroupCommit(self._store_batch)
        #: The connection the group commit's batches write on (one batch at a time).
        self._ingest_writer: Connection | None = None
        #: The read transaction this thread (or task) has open, shared by nested reads.
        self._reading: ContextVar[Connection | None] = ContextVar(f"lanthorn-read-{id(self)}",
                                                                  default=None)

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; commits on success, rolls back on any exception.

        ``write_lock`` lets a backend queue writers itself (SQLite: a file lock, which
        wakes the next writer at once instead of SQLite's sleeping busy handler).
        """
        with self._write_lock(), self._writer() as conn, conn.begin():
            yield conn

    def _writer(self) -> Connection:
        return self.engine.connect().execution_options(lanthorn_write=True)

    @contextmanager
    def _ingest_write(self) -> Iterator[Connection]:
        """``write()`` on a connection kept for the ingests' batches, which run one at a
        time: taking a connection from the pool and giving it back (with its reset)
        cost three times SQLite's own BEGIN and COMMIT. After any error it is closed and
        the next batch opens another, so that a broken connection is not used again."""
        conn = self._ingest_writer = self._ingest_writer or self._writer()
        try:
            with self._write_lock(), conn.begin():
                yield conn
        except BaseException:
            self._ingest_writer = None
            conn.close()
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction; inside another one of the same thread, that one.

        An answer that wraps its index calls in one ``read()`` pays for one transaction
        (on PostgreSQL, two round trips and a connection check-out) instead of one per
        call, and sees one snapshot. Writes never join it: they take their own.
        """
        current = self._reading.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn, conn.begin():
            token = self._reading.set(conn)
            try:
                yield conn
            finally:
                self._reading.reset(token)

    def close(self) -> None:
        if self._ingest_writer is not None:
            self._ingest_writer.close()
            self._ingest_writer = None
        self.engine.dispose()

    # -- ingest ---------------------------------------------------------------------

    def store_instance(self, new: NewInstance, *, overwrite: bool,
                       limits: StorageLimits | None = None) -> StoreOutcome:
        """Create an instance and any missing parent in one transaction.

        With ``limits``, the oldest unprotected patients are recycled (in the same
        transaction) to make room, or the instance is refused with StorageFull.
        Statements are few and prebuilt: this is the hot path of every ingest. Concurrent
        callers share one transaction and its commit (``group.py``); each still gets its
        own outcome, or its own exception, only after that commit.
        """
        return self._ingests.submit((new, overwrite, limits))

    def _store_batch(self, batch: list[_StoreRequest]) -> list[StoreOutcome | Exception]:
        """Several instances in one transaction; if one fails, each in its own, so that
        only the failing one fails (an error rolls back its whole transaction)."""
        try:
            with self._ingest_write() as conn:
                return [self._store(conn, *request) for request in batch]
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        return [outcome for request in batch for outcome in self._store_batch([request])]

    def _store(self, conn: Connection, new: NewInstance, overwrite: bool,
               limits: StorageLimits | None) -> StoreOutcome:
        known = dict(_IDS_OF_LEVELS.run(conn, dict(zip(_LEVEL_KEYS, new.public_ids,
                                                       strict=True))).fetchall())
        replaced: list[str] = []
        if new.public_ids[Level.INSTANCE] in known:
            if not overwrite:
                return StoreOutcome(stored=False)
            old = known.pop(new.public_ids[Level.INSTANCE])
            replaced = _attachment_uuids(conn, [old])
            conn.execute(delete(s.resources).where(s.resources.c.id == old))
        if limits is not None and limits.active:
            replaced += _make_room(conn, limits, new, new.public_ids[Level.PATIENT] in known)
        ancestors: list[int] = []
        created: list[Level] = []
        for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
            resource_id = known.get(new.public_ids[level])
            if resource_id is None:
                resource_id = self._create(conn, level, new, ancestors[-1] if ancestors
                                           else None)
                created.append(level)
            ancestors.append(resource_id)
        series_id = ancestors[-1]
        index_in_series = 1 if Level.SERIES in created else 1 + _COUNT_CHILDREN.scalar(
            conn, {"parent": series_id})
        instance_id = self._create(conn, Level.INSTANCE, new, series_id)
        # Orthanc's order in the change log: the instance first, then new parents.
        _log_many(conn, [(NEW_RESOURCE_CHANGE[level], level, new.public_ids[level])
                         for level in (Level.INSTANCE, *reversed(created))], new.timestamp)
        _insert_metadata(conn, instance_id,
                         {**new.metadata, "IndexInSeries": str(index_in_series)})
        _INSERT_ATTACHMENT.run(conn, {"resource_id": instance_id, **vars(new.attachment)})
        _INSERT_HEADER.run(conn, {"resource_id": instance_id, "header": new.header})
        # A new instance makes its (older) series, study and patient unstable again.
        untouched = [i for level, i in zip(Level, ancestors, strict=False)
                     if level not in created]
        _TOUCH.run_many(conn, [{"key": i, "now": new.timestamp} for i in untouched])
        return StoreOutcome(True, replaced, (*created, Level.INSTANCE))

    def _create(self, conn: Connection, level: Level, new: NewInstance, parent: int | None) -> int:
        resource_id = _INSERT_RESOURCE.scalar(conn, {
            "level": level, "public_id": new.public_ids[level], "parent_id": parent,
            "last_update": new.timestamp, "is_stable": False, "protected": False,
        })
        _insert_main_tags(conn, resource_id, new.main_tags.get(level, {}))
        return resource_id

    def reconstruct_instance(self, instance_id: int, main_tags: dict[Level, dict[int, str]],
                             metadata: dict[str, str | None], header: bytes) -> None:
        """Rewrite what the index took from an instance's file: the main tags of the
        instance and its ancestors (theirs become this file's), the given metadata (None
        removes one), and the saved header."""
        chain = self.ancestors(instance_id)
        m = s.metadata_table.c
        with self.write() as conn:
            for resource in chain:
                conn.execute(delete(s.main_tags).where(s.main_tags.c.resource_id == resource.id))
                _insert_main_tags(conn, resource.id, main_tags.get(resource.level, {}))
            conn.execute(delete(s.metadata_table).where(m.resource_id == instance_id,
                                                        m.name.in_(list(metadata))))
            _insert_metadata(conn, instance_id,
                             {k: v for k, v in metadata.items() if v is not None})
            conn.execute(update(s.instance_headers).where(
                s.instance_headers.c.resource_id == instance_id).values(header=header))

    # -- lookups --------------------------------------------------------------------

    def lookup(self, public_id: str, level: Level | None = None) -> Resource | None:
        with self.read() as conn:
            found = _lookup(conn, public_id)
        return found if found and (level is None or found.level == level) else None

    def lookup_identifier(self, value: str) -> list[Resource]:
        """Resources whose identifying tag (PatientID, UIDs) equals ``value``."""
        own_identifier = or_(*(
            and_(s.resources.c.level == level,
                 s.main_tags.c.tag == tag_for_keyword(IDENTIFIER_KEYWORDS[level]))
            for level in Level))
        with self.read() as conn:
            rows = conn.execute(
                select(s.resources).join(s.main_tags)
                .where(s.main_tags.c.value == value, own_identifier)
                .order_by(s.resources.c.level, s.resources.c.id))
            return [_resource(r) for r in rows]

    def list_resources(self, level: Level, *, since: int = 0,
                       limit: int = 0) -> list[tuple[int, str]]:
        """(ID, public ID) of the resources of a level, in insertion order: one query."""
        statement = (
            select(s.resources.c.id, s.resources.c.public_id).where(s.resources.c.level == level)
            .order_by(s.resources.c.id).offset(since)
        )
        if limit:
            statement = statement.limit(limit)
        with self.read() as conn:
            return [(row.id, row.public_id) for row in conn.execute(statement)]

    def instances_under(self, public_ids: Sequence[str]) -> list[str]:
        """The instances under resources of any level, in index order (public IDs; the
        resources that do not exist, deleted meanwhile, are skipped)."""
        ids: list[int] = []
        for public_id in public_ids:
            resource = self.lookup(public_id)
            if resource is not None:
                ids += self.descendants(resource.id, Level.INSTANCE)
        return self.public_ids_of(ids)

    def public_ids_of(self, ids: Sequence[int]) -> list[str]:
        with self.read() as conn:
            found = dict(conn.execute(
                select(s.resources.c.id, s.resources.c.public_id).where(s.resources.c.id.in_(ids))
            ).all())
        return [found[i] for i in ids if i in found]

    def describe(self, ids: Sequence[int]) -> list[ResourceInfo]:
        """Full descriptions of several resources, in the order given."""
        if not ids:
            return []
        with self.read() as conn:
            rows = {r.id: _resource(r) for r in conn.execute(_RESOURCES, {"ids": ids})}
            wanted = {"ids": list(rows)}
            parents = dict(conn.execute(_PUBLIC_IDS, {
                "ids": list({r.parent_id for r in rows.values() if r.parent_id})}).all())
            children: dict[int, list[str]] = {i: [] for i in rows}
            for parent_id, public_id in conn.execute(_CHILDREN, wanted):
                children[parent_id].append(public_id)
            tags, labels, metadata = (_grouped(_in_batches(conn, statement, list(rows)), rows)
                                      for statement in (_TAGS, _LABELS, _METADATA))
            attachments: dict[int, dict[int, Attachment]] = {i: {} for i in rows}
            for row in conn.execute(_ATTACHMENTS, wanted):
                attachments[row.resource_id][row.content_type] = _attachment(row)
        return [
            ResourceInfo(
                resource=rows[i],
                parent_public_id=parents.get(rows[i].parent_id),  # type: ignore[arg-type]
                children=children[i],
                main_tags=tags[i],
                labels=sorted(labels[i]),
                metadata=metadata[i],
                attachments=attachments[i],
            )
            for i in ids if i in rows
        ]

    def ancestors(self, resource_id: int) -> list[Resource]:
        """The resource and its parents, from itself up to the patient."""
        with self.read() as conn:
            chain = []
            current: int | None = resource_id
            while current is not None:
                row = conn.execute(select(s.resources).where(s.resources.c.id == current)).one()
                chain.append(_resource(row))
                current = row.parent_id
            return chain

    def descendants(self, resource_id: int, level: Level, limit: int = 0) -> list[int]:
        """IDs of the resource's descendants at ``level`` (itself if at that level)."""
        with self.read() as conn:
            return _descendants(conn, [resource_id], level, limit)

    # -- batched reads of the hierarchy (QIDO-RS, C-FIND and REST answers) ----------------

    def lineages(self, ids: Sequence[int], steps: int) -> dict[int, list[int]]:
        """Each resource's ID and its ancestors' IDs up to ``steps`` levels up, for a
        page of resources of one level: one query per level walked up, not one per
        resource."""
        chains = {i: [i] for i in ids}
        with self.read() as conn:
            tips = list(chains)
            for _ in range(steps):
                parents = dict(_in_batches(conn, _PARENTS, tips))
                for chain in chains.values():
                    if parents.get(chain[-1]) is not None:
                        chain.append(parents[chain[-1]])
                tips = [p for p in parents.values() if p is not None]
        return chains

    def main_tags_of_many(self, ids: Sequence[int]) -> dict[int, dict[int, str]]:
        with self.read() as conn:
            return _grouped(_in_batches(conn, _TAGS, ids), ids)

    def metadata_of_many(self, ids: Sequence[int], name: str) -> dict[int, str]:
        """One metadata entry of several resources (those that have it)."""
        with self.read() as conn:
            return dict(_in_batches(conn, _METADATA_ENTRY, ids, name=name))

    def descendants_of(self, ids: Sequence[int], level: Level,
                       below: Level) -> dict[int, list[int]]:
        """Each resource's descendants at ``below`` (the resources are at ``level``)."""
        found: dict[int, list[int]] = {i: [] for i in ids}
        with self.read() as conn:
            for node, root in _walk_down(conn, ids, below - level).items():
                found[root].append(node)
        return found

    def descendant_counts(self, ids: Sequence[int], level: Level,
                          below: Level) -> dict[int, tuple[int, int]]:
        """Each resource's (at ``level``) number of descendants at ``below`` and the first
        one's ID (0 if none): counted in SQL, a study of 1,000 instances is one row."""
        summary = {i: (0, 0) for i in ids}
        with self.read() as conn:
            roots = _walk_down(conn, ids, below - level - 1)
            for parent, count, first in _in_batches(conn, _CHILD_COUNTS, list(roots)):
                seen, earliest = summary[roots[parent]]
                summary[roots[parent]] = (seen + count, min(earliest or first, first))
        return summary

    def main_tags_of(self, resource_id: int) -> dict[int, str]:
        with self.read() as conn:
            return dict(conn.execute(
                select(s.main_tags.c.tag, s.main_tags.c.value)
                .where(s.main_tags.c.resource_id == resource_id)
            ).all())

    def header(self, instance_id: int) -> bytes:
        with self.read() as conn:
            return conn.scalar(select(s.instance_headers.c.header)
                               .where(s.instance_headers.c.resource_id == instance_id)) or b""

    def headers(self, instance_ids: Sequence[int]) -> dict[int, bytes]:
        """The saved headers of several instances (DICOMweb series metadata), batched."""
        return self._by_instance(s.instance_headers.c.header, instance_ids)

    def instance_json(self, instance_ids: Sequence[int]) -> dict[int, bytes]:
        """The kept DICOM JSON of those instances that have some (see ``keep_json``)."""
        return self._by_instance(s.instance_json.c.json, instance_ids)

    def _by_instance(self, column, instance_ids: Sequence[int]) -> dict[int, bytes]:  # noqa: ANN001
        """One column of a per-instance table, for those instances that have a row."""
        owner = column.table.c.resource_id
        found: dict[int, bytes] = {}
        with self.read() as conn:
            for start in range(0, len(instance_ids), self.ID_BATCH):
                batch = instance_ids[start:start + self.ID_BATCH]
                found.update(conn.execute(select(owner, column).where(owner.in_(batch))).all())
        return found

    def keep_json(self, values: dict[int, bytes]) -> None:
        """Keep rendered DICOM JSON (a cache: deleted with its instance, and losing a
        race with a deletion or another writer loses nothing)."""
        if not values:
            return
        column = s.instance_json.c
        try:
            with self.write() as conn:
                conn.execute(delete(s.instance_json).where(column.resource_id.in_(list(values))))
                conn.execute(insert(s.instance_json),
                             [{"resource_id": k, "json": v} for k, v in values.items()])
        except IntegrityError:  # an instance was deleted meanwhile: nothing to keep
            pass

    def attachment(self, resource_id: int, content_type: int) -> Attachment | None:
        with self.read() as conn:
            row = conn.execute(_ATTACHMENT, {"owner": resource_id,
                                             "kind": content_type}).one_or_none()
        return _attachment(row) if row else None

    def attachments_page(self, after: tuple[int, int] = (0, 0),
                         limit: int = 500) -> list[tuple[Resource, Attachment]]:
        """Attachments with their owners, in (resource, content type) order after ``after``:
        a full check pages through them instead of holding the whole index in memory."""
        resource_id, content_type = after
        a = s.attachments.c
        with self.read() as conn:
            rows = conn.execute(
                select(s.attachments, s.resources).join(s.resources)
                .where(or_(a.resource_id > resource_id,
                           and_(a.resource_id == resource_id, a.content_type > content_type)))
                .order_by(a.resource_id, a.content_type).limit(limit))
            return [(_resource(r), _attachment(r)) for r in rows]

    # -- metadata --------------------------------------------------------------------

    def metadata(self, resource_id: int) -> dict[str, str]:
        with self.read() as conn:
            return dict(conn.execute(
                select(s.metadata_table.c.name, s.metadata_table.c.value)
                .where(s.metadata_table.c.resource_id == resource_id)
            ).all())

    def metadata_entry(self, resource_id: int, name: str) -> tuple[str, int] | None:
        """A metadata value with its revision."""
        m = s.metadata_table.c
        with self.read() as conn:
            row = conn.execute(select(m.value, m.revision).where(
                m.resource_id == resource_id, m.name == name)).one_or_none()
        return (row.value, row.revision) if row else None

    def set_metadata(self, resource: Resource, name: str, value: str, *,
                     revision: int | None = None, require: bool = False) -> int:
        """Set a metadata value; its new revision.

        When the value exists, ``revision`` (``If-Match``) must be its revision, and
        ``require`` (``CheckRevisions``) makes giving one mandatory: RevisionConflict.
        """
        m = s.metadata_table.c
        with self.write() as conn:
            current = conn.scalar(select(m.revision).where(m.resource_id == resource.id,
                                                           m.name == name))
            new = _next_revision(current, revision, require)
            conn.execute(delete(s.metadata_table).where(m.resource_id == resource.id,
                                                        m.name == name))
            conn.execute(insert(s.metadata_table), {"resource_id": resource.id, "name": name,
                                                    "value": value, "revision": new})
            _log(conn, ChangeType.UpdatedMetadata, resource.level, resource.public_id, time.time())
            return new

    def delete_metadata(self, resource: Resource, name: str, *, revision: int | None = None,
                        require: bool = False) -> bool:
        m = s.metadata_table.c
        with self.write() as conn:
            current = conn.scalar(select(m.revision).where(m.resource_id == resource.id,
                                                           m.name == name))
            if current is None:
                return False
            _next_revision(current, revision, require)
            conn.execute(delete(s.metadata_table).where(m.resource_id == resource.id,
                                                        m.name == name))
            _log(conn, ChangeType.UpdatedMetadata, resource.level, resource.public_id,
                 time.time())
            return True

    # -- attachments -------------------------------------------------------------------

    def set_attachment(self, resource: Resource, attachment: Attachment, *,
                       revision: int | None = None,
                       require: bool = False) -> tuple[int, str | None]:
        """Add or replace an attachment (revisions as for metadata); its new revision
        and the UUID of the file it replaced, to remove after the commit."""
        a = s.attachments.c
        with self.write() as conn:
            old = conn.execute(select(a.uuid, a.revision).where(
                a.resource_id == resource.id,
                a.content_type == attachment.content_type)).one_or_none()
            new = _next_revision(old.revision if old else None, revision, require)
            if old:
                conn.execute(delete(s.attachments).where(
                    a.resource_id == resource.id, a.content_type == attachment.content_type))
            conn.execute(insert(s.attachments), {**vars(attachment), "resource_id": resource.id,
                                                 "revision": new})
            _log(conn, ChangeType.UpdatedAttachment, resource.level, resource.public_id,
                 time.time())
            return new, old.uuid if old else None

    def delete_attachment(self, resource: Resource, content_type: int, *,
                          revision: int | None = None, require: bool = False) -> str | None:
        """Remove an attachment; the UUID of its file (None if there was none)."""
        a = s.attachments.c
        where = (a.resource_id == resource.id, a.content_type == content_type)
        with self.write() as conn:
            old = conn.execute(select(a.uuid, a.revision).where(*where)).one_or_none()
            if old is None:
                return None
            _next_revision(old.revision, revision, require)
            conn.execute(delete(s.attachments).where(*where))
            _log(conn, ChangeType.UpdatedAttachment, resource.level, resource.public_id,
                 time.time())
            return old.uuid

    def replace_attachment_file(self, resource_id: int, old_uuid: str,
                                new: Attachment) -> bool:
        """Point an attachment at a re-encoded file (same content, other compression),
        unless it changed meanwhile; the revision stays, as the content is the same."""
        a = s.attachments.c
        values = {k: v for k, v in vars(new).items() if k not in ("content_type", "revision")}
        with self.write() as conn:
            return bool(conn.execute(update(s.attachments).where(
                a.resource_id == resource_id, a.uuid == old_uuid).values(**values)).rowcount)

    # -- labels and batched reads (archives) ---------------------------------------------

    #: IDs per statement when a list may be long (databases bound the parameters of one).
    ID_BATCH = 1000

    def labels_of(self, resource_id: int) -> list[str]:
        with self.read() as conn:
            return list(conn.scalars(select(s.labels.c.label)
                                     .where(s.labels.c.resource_id == resource_id)
                                     .order_by(s.labels.c.label)))

    def add_label(self, resource_id: int, label: str) -> None:
        """Attach ``label`` to a resource; attaching it twice changes nothing."""
        present = exists().where(s.labels.c.resource_id == resource_id,
                                 s.labels.c.label == label)
        with self.write() as conn:
            conn.execute(insert(s.labels).from_select(
                ["resource_id", "label"],
                select(literal(resource_id), literal(label)).where(not_(present))))

    def remove_label(self, resource_id: int, label: str) -> None:
        with self.write() as conn:
            conn.execute(delete(s.labels).where(s.labels.c.resource_id == resource_id,
                                                s.labels.c.label == label))

    def all_labels(self) -> list[str]:
        """Every label attached to some resource, sorted."""
        with self.read() as conn:
            return list(conn.scalars(select(s.labels.c.label).distinct()
                                     .order_by(s.labels.c.label)))

    def attachments_of(self, resource_ids: Sequence[int],
                       content_type: int) -> dict[int, Attachment]:
        """The attachment of ``content_type`` of each resource that has one."""
        found: dict[int, Attachment] = {}
        with self.read() as conn:
            for start in range(0, len(resource_ids), self.ID_BATCH):
                batch = resource_ids[start:start + self.ID_BATCH]
                found.update((row.resource_id, _attachment(row)) for row in conn.execute(
                    select(s.attachments).where(s.attachments.c.content_type == content_type,
                                                s.attachments.c.resource_id.in_(batch))))
        return found

    # -- deletion ---------------------------------------------------------------------

    def delete_resource(self, resource: Resource) -> DeleteOutcome:
        """Delete a resource, its descendants, and the ancestors it leaves empty."""
        with self.write() as conn:
            return _delete(conn, resource, time.time())

    def set_protected(self, resource: Resource, protected: bool) -> None:
        """Protect a patient from recycling, or give it back to it."""
        with self.write() as conn:
            conn.execute(update(s.resources).where(s.resources.c.id == resource.id)
                         .values(protected=protected))

    # -- find ----------------------------------------------------------------------------

    def find(self, query: Query) -> list[int]:
        """IDs of the resources matching ``query``, in insertion order.

        Constraints on tags the index keeps are matched in SQL; the rest (rare) are
        checked in Python on one instance header per candidate, as Orthanc would on a
        file, before ``since``/``limit`` apply. The SQL is made once per shape of query
        (``_FindShape``) and run on the driver's cursor: building it and executing it
        through SQLAlchemy each time cost several times SQLite's work.
        """
        indexed, header_only = [], []
        for c in query.constraints:
            kept = c.tag in self.main_tags.by_level[c.level]
            (indexed if kept else header_only).append(c)
        paged = not header_only
        parts = [_constraint_sql(c) for c in indexed]
        shape = _FindShape(query.level, tuple(part for part, _ in parts), len(query.labels),
                           query.labels_constraint, paged and query.since > 0,
                           paged and query.limit > 0)
        values = [query.level, *(v for _, part_values in parts for v in part_values),
                  *query.labels, *([query.since] if shape.offset else []),
                  *([query.limit] if shape.limit else [])]
        with self.read() as conn:
            rows = _find_statement(shape).run(conn, {f"p{i}": v for i, v in enumerate(values)})
            ids = [row[0] for row in rows]
            if header_only:
                ids = [i for i in ids if self._header_matches(conn, i, query.level, header_only)]
                ids = ids[query.since:][: query.limit or None]
        return ids

    def _header_matches(self, conn: Connection, resource_id: int, level: Level,
                        constraints: list[Constraint]) -> bool:
        instance = _descendants(conn, [resource_id], Level.INSTANCE, limit=1)
        if not instance:
            return False
        header = conn.scalar(select(s.instance_headers.c.header)
                             .where(s.instance_headers.c.resource_id == instance[0]))
        return all(c.accepts(header_value(header, c.tag)) for c in constraints)

    # -- changes and events --------------------------------------------------------------

    def changes(self, since: int = 0, limit: int = 100) -> list[Change]:
        with self.read() as conn:
            rows = conn.execute(select(s.changes).where(s.changes.c.seq > since)
                                .order_by(s.changes.c.seq).limit(limit))
            return [_change(r) for r in rows]

    def clear_changes(self) -> None:
        with self.write() as conn:
            conn.execute(delete(s.changes))

    def last_change(self) -> Change | None:
        with self.read() as conn:
            row = conn.execute(select(s.changes).order_by(s.changes.c.seq.desc()).limit(1)).first()
        return _change(row) if row else None

    def mark_stable(self, cutoff: float) -> list[tuple[Level, str]]:
        """Mark resources quiet since ``cutoff`` as stable and log Stable* changes."""
        with self.write() as conn:
            rows = conn.execute(select(s.resources.c.id, s.resources.c.level,
                                       s.resources.c.public_id).where(
                s.UNSTABLE, s.resources.c.last_update <= cutoff,
            ).order_by(s.resources.c.level.desc(), s.resources.c.id)).all()
            if rows:
                conn.execute(update(s.resources).where(s.resources.c.id.in_([r.id for r in rows]))
                             .values(is_stable=True))
            now = time.time()
            for row in rows:
                _log(conn, STABLE_CHANGE[Level(row.level)], Level(row.level), row.public_id, now)
            return [(Level(r.level), r.public_id) for r in rows]

    def set_stable(self, resource: Resource, stable: bool) -> bool:
        """Make a patient, study or series stable now (its Stable* change is logged), or
        unstable (stable again after ``StableAge`` of quiet); whether its status changed."""
        r = s.resources.c
        now = time.time()
        with self.write() as conn:
            changed = conn.execute(update(s.resources).where(
                r.id == resource.id, r.is_stable == (not stable)).values(
                is_stable=stable, **({} if stable else {"last_update": now}))).rowcount
            if changed and stable:
                _log(conn, STABLE_CHANGE[resource.level], resource.level, resource.public_id, now)
        return bool(changed)

    def cursor(self, name: str) -> int | None:
        with self.read() as conn:
            return conn.scalar(select(s.cursors.c.seq).where(s.cursors.c.name == name))

    def set_cursor(self, name: str, seq: int) -> None:
        with self.write() as conn:
            if not conn.execute(update(s.cursors).where(s.cursors.c.name == name)
                                .values(seq=seq)).rowcount:
                conn.execute(insert(s.cursors).values(name=name, seq=seq))

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease ``name``; False while another live holder has it."""
        now = time.time()
        with self.write() as conn:
            row = conn.execute(select(s.leases).where(s.leases.c.name == name)).one_or_none()
            if row is None:
                conn.execute(insert(s.leases).values(name=name, holder=holder, expires=now + ttl))
                return True
            if row.holder != holder and row.expires > now:
                return False
            conn.execute(update(s.leases).where(s.leases.c.name == name)
                         .values(holder=holder, expires=now + ttl))
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as conn:
            conn.execute(delete(s.leases).where(s.leases.c.name == name,
                                                s.leases.c.holder == holder))

    def live_lease_holders(self) -> list[str]:
        with self.read() as conn:
            return list(conn.scalars(select(s.leases.c.holder).distinct()
                                     .where(s.leases.c.expires > time.time())))

    # -- modification: derived resources, pseudonyms ------------------------------------

    def record_derivation(self, origins: dict[str, str], name: str,
                          changes: list[tuple[ChangeType, Level, str]], *,
                          copy_labels: bool = False) -> None:
        """Metadata ``name`` (ModifiedFrom...) = the original's public ID on each new
        resource, its labels too if asked, and the change-log entries; one transaction."""
        if not origins:
            return
        with self.write() as conn:
            ids = dict(conn.execute(_IDS_BY_PUBLIC_ID,
                                    {"ids": [*origins, *origins.values()]}).all())
            derived = [(ids[new], ids.get(old), old) for new, old in origins.items()]
            conn.execute(delete(s.metadata_table).where(
                s.metadata_table.c.resource_id.in_([new for new, _, _ in derived]),
                s.metadata_table.c.name == name))
            conn.execute(insert(s.metadata_table), [
                {"resource_id": new, "name": name, "value": old} for new, _, old in derived])
            if copy_labels:
                for new, original, _ in derived:
                    if original is not None:
                        _copy_labels(conn, original, new)
            if changes:
                _log_many(conn, changes, time.time())

    def pseudonym(self, scope: str, kind: str, original: str, patient: str,
                  make: Callable[[], str]) -> str:
        """The pseudonym of ``original``; made with ``make`` and stored on first use."""
        p = s.pseudonyms.c
        key = (p.scope == scope, p.kind == kind, p.original == original)
        with self.read() as conn:
            found = conn.scalar(select(p.pseudonym).where(*key))
        if found is not None:
            return found
        candidate = make()  # outside the transaction: ``make`` may write (a counter)
        try:
            with self.write() as conn:  # look again: another request may have made one
                found = conn.scalar(select(p.pseudonym).where(*key))
                if found is None:
                    conn.execute(insert(s.pseudonyms).values(
                        scope=scope, kind=kind, original=original, pseudonym=candidate,
                        patient=patient, created=time.time()))
                return found or candidate
        except IntegrityError:  # PostgreSQL: a concurrent transaction inserted it first
            with self.read() as conn:
                return conn.scalar(select(p.pseudonym).where(*key))

    def pseudonyms_of(self, scope: str, *, patient: str | None = None,
                      pseudonym: str | None = None) -> list[dict[str, str]]:
        """The rows of one patient, found by its original PatientID or its pseudonym."""
        p = s.pseudonyms.c
        with self.read() as conn:
            if pseudonym is not None:
                patient = conn.scalar(select(p.patient).where(
                    p.scope == scope, p.kind == "PatientID", p.pseudonym == pseudonym))
                if patient is None:
                    return []
            rows = conn.execute(select(p.kind, p.original, p.pseudonym).where(
                p.scope == scope, p.patient == patient).order_by(p.kind, p.created))
            return [{"Kind": r.kind, "Original": r.original, "Pseudonym": r.pseudonym}
                    for r in rows]

    def delete_pseudonyms(self, scope: str, patient: str) -> int:
        with self.write() as conn:
            return conn.execute(delete(s.pseudonyms).where(
                s.pseudonyms.c.scope == scope, s.pseudonyms.c.patient == patient)).rowcount

    def global_property(self, name: str) -> str | None:
        with self.read() as conn:
            return conn.scalar(select(s.global_properties.c.value)
                               .where(s.global_properties.c.name == name))

    def set_global_property(self, name: str, value: str | None) -> None:
        """Set a global property, or forget it (``None``)."""
        g = s.global_properties.c
        with self.write() as conn:
            conn.execute(delete(s.global_properties).where(g.name == name))
            if value is not None:
                conn.execute(insert(s.global_properties).values(name=name, value=value))

    def next_counter(self, name: str) -> int:
        """Increment and return a counter kept in the global properties."""
        g = s.global_properties.c
        with self.write() as conn:
            value = int(conn.scalar(select(g.value).where(g.name == name)) or 0) + 1
            conn.execute(delete(s.global_properties).where(g.name == name))
            conn.execute(insert(s.global_properties).values(name=name, value=str(value)))
            return value

    # -- exported resources (LogExportedResources) ---------------------------------------

    def log_export(self, public_id: str, remote: str) -> None:
        """Record that an instance was sent to ``remote`` (a modality's AET, a peer)."""
        instance = self.lookup(public_id)
        if instance is None:
            return
        tags: dict[int, str] = {}
        for resource in (instance, *self.ancestors(instance.id)):
            tags |= self.main_tags_of(resource.id)
        uids = [tags.get(tag_for_keyword(IDENTIFIER_KEYWORDS[level]), "") for level in Level]
        with self.write() as conn:
            conn.execute(insert(s.exported_resources).values(
                level=int(Level.INSTANCE), public_id=public_id, remote_modality=remote,
                patient_id=uids[0], study_uid=uids[1], series_uid=uids[2], sop_uid=uids[3],
                date=orthanc_date(time.time())))

    def exports(self, since: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Orthanc's ``/exports`` entries after ``since``."""
        table = s.exported_resources
        with self.read() as conn:
            rows = conn.execute(select(table).where(table.c.seq > since)
                                .order_by(table.c.seq).limit(limit)).all()
        return [{"Date": r.date, "ID": r.public_id, "Path": f"/instances/{r.public_id}",
                 "PatientID": r.patient_id, "RemoteModality": r.remote_modality,
                 "ResourceType": "Instance", "SOPInstanceUID": r.sop_uid, "Seq": r.seq,
                 "SeriesInstanceUID": r.series_uid, "StudyInstanceUID": r.study_uid}
                for r in rows]

    def clear_exports(self) -> None:
        with self.write() as conn:
            conn.execute(delete(s.exported_resources))

    # -- remote nodes defined over REST --------------------------------------------------

    def overlaid(self, kind: str, configured: dict[str, Node],
                 parse: Callable[[str, Any], Node]) -> dict[str, Node]:
        """The configured nodes of a kind ("peer", "modality") with the REST changes
        (stored as JSON, or None for a deletion) applied, by name."""
        found = dict(configured)
        with self.read() as conn:
            rows = conn.execute(select(s.remote_nodes.c.name, s.remote_nodes.c.config)
                                .where(s.remote_nodes.c.kind == kind)).all()
        for name, stored in rows:
            if stored is None:
                found.pop(name, None)
            else:
                found[name] = parse(name, json.loads(stored))
        return found

    def set_remote_node(self, kind: str, name: str, config: Any) -> None:
        """Define (JSON-able ``config``) or hide (None) a node of the configuration."""
        table = s.remote_nodes
        with self.write() as conn:
            conn.execute(delete(table).where(table.c.kind == kind, table.c.name == name))
            conn.execute(insert(table).values(
                kind=kind, name=name, config=None if config is None else json.dumps(config)))

    def clear_remote_nodes(self, kind: str) -> None:
        with self.write() as conn:
            conn.execute(delete(s.remote_nodes).where(s.remote_nodes.c.kind == kind))

    # -- statistics and maintenance ------------------------------------------------------

    def statistics(self, resource_id: int | None = None) -> Statistics:
        """Counts per level and attachment sizes, of everything or of one subtree."""
        with self.read() as conn:
            if resource_id is None:
                counts = dict(conn.execute(select(s.resources.c.level, func.count())
                                           .group_by(s.resources.c.level)).all())
                sizes = conn.execute(_SIZES).one()
                return Statistics({lv: counts.get(lv, 0) for lv in Level}, *sizes)
            level = Level(conn.scalar(select(s.resources.c.level)
                                      .where(s.resources.c.id == resource_id)))
            by_level = {lv: len(_descendants(conn, [resource_id], lv))
                        for lv in Level if lv > level}
            instances = _descendants(conn, [resource_id], Level.INSTANCE)
            sizes = conn.execute(_SIZES.where(s.attachments.c.resource_id.in_(instances))).one()
            return Statistics(by_level, *sizes)


# -- helpers (module-level so that they are shared by every method) --------------------

def _resource(row) -> Resource:  # noqa: ANN001 - a SQLAlchemy Row
    return Resource(row.id, Level(row.level), row.public_id, row.parent_id, row.last_update,
                    bool(row.is_stable), bool(row.protected))


def _attachment(row) -> Attachment:  # noqa: ANN001
    return Attachment(row.content_type, row.uuid, row.compressed_size, row.uncompressed_size,
                      row.compression, row.compressed_md5, row.uncompressed_md5, row.revision)


def _change(row) -> Change:  # noqa: ANN001
    return Change(row.seq, ChangeType(row.change_type), Level(row.level), row.public_id, row.date)


def _lookup(conn: Connection, public_id: str) -> Resource | None:
    row = conn.execute(_LOOKUP, {"public_id": public_id}).first()
    return _resource(row) if row else None



def _log(conn: Connection, change_type: ChangeType, level: Level, public_id: str,
         timestamp: float) -> None:
    _log_many(conn, [(change_type, level, public_id)], timestamp)


def _log_many(conn: Connection, entries: list[tuple[ChangeType, Level, str]],
              timestamp: float) -> None:
    date = orthanc_date(timestamp)
    _INSERT_CHANGES.run_many(conn, [
        {"change_type": change_type, "level": level, "public_id": public_id, "date": date}
        for change_type, level, public_id in entries
    ])


# ``describe``'s queries, built once: building and keying a statement each time costs more
# than running it. Each takes a list of resource ids, ``ids``.
_IDS = bindparam("ids", expanding=True)
_RESOURCES = select(s.resources).where(s.resources.c.id.in_(_IDS))
_PUBLIC_IDS = select(s.resources.c.id, s.resources.c.public_id).where(s.resources.c.id.in_(_IDS))
_CHILDREN = select(s.resources.c.parent_id, s.resources.c.public_id) \
    .where(s.resources.c.parent_id.in_(_IDS)).order_by(s.resources.c.id)
#: Main tags, labels and metadata: (resource id, key, value) rows.
_TAGS, _LABELS, _METADATA = (
    Prepared(select(t.c.resource_id, t.c[key], t.c[value]).where(t.c.resource_id.in_(_IDS)),
             expanding="ids")
    for t, key, value in ((s.main_tags, "tag", "value"), (s.labels, "label", "label"),
                          (s.metadata_table, "name", "value")))
_ATTACHMENTS = select(s.attachments).where(s.attachments.c.resource_id.in_(_IDS))
_PARENTS = Prepared(select(s.resources.c.id, s.resources.c.parent_id)
                    .where(s.resources.c.id.in_(_IDS)), expanding="ids")
_CHILD_IDS = Prepared(select(s.resources.c.id, s.resources.c.parent_id)
                      .where(s.resources.c.parent_id.in_(_IDS)).order_by(s.resources.c.id),
                      expanding="ids")
_CHILD_COUNTS = Prepared(
    select(s.resources.c.parent_id, func.count(), func.min(s.resources.c.id))
    .where(s.resources.c.parent_id.in_(_IDS)).group_by(s.resources.c.parent_id),
    expanding="ids")
_METADATA_ENTRY = Prepared(
    select(s.metadata_table.c.resource_id, s.metadata_table.c.value).where(
        s.metadata_table.c.resource_id.in_(_IDS), s.metadata_table.c.name == bindparam("name")),
    expanding="ids")
_LOOKUP = select(s.resources).where(s.resources.c.public_id == bindparam("public_id"))
_ATTACHMENT = select(s.attachments).where(s.attachments.c.resource_id == bindparam("owner"),
                                          s.attachments.c.content_type == bindparam("kind"))
_IDS_BY_PUBLIC_ID = select(s.resources.c.public_id, s.resources.c.id).where(
    s.resources.c.public_id.in_(bindparam("ids", expanding=True)))
#: Disk and uncompressed sizes of attachments (restrict it with ``.where``); cast, as
#: PostgreSQL sums BIGINTs to NUMERIC (a Decimal in Python).
_SIZES = select(*(cast(func.coalesce(func.sum(column), 0), BigInteger) for column in (
    s.attachments.c.compressed_size, s.attachments.c.uncompressed_size)))
#: The statements of every ingest, run on the driver's cursor (``prepared.py``).
_INSERT_CHANGES = Prepared(insert(s.changes), ["change_type", "level", "public_id", "date"])
_INSERT_RESOURCE = Prepared(insert(s.resources).returning(s.resources.c.id),
                            ["level", "public_id", "parent_id", "last_update", "is_stable",
                             "protected"])
_INSERT_MAIN_TAGS, _INSERT_METADATA, _INSERT_ATTACHMENT, _INSERT_HEADER = (
    Prepared(insert(t)) for t in (s.main_tags, s.metadata_table, s.attachments,
                                  s.instance_headers))
#: The resource IDs of an instance's four public IDs: four parameters, not an expanding
#: ``IN``, which is rendered anew on every execution.
_LEVEL_KEYS = tuple(f"level{level}" for level in Level)
_IDS_OF_LEVELS = Prepared(select(s.resources.c.public_id, s.resources.c.id).where(
    s.resources.c.public_id.in_([bindparam(key) for key in _LEVEL_KEYS])))
_COUNT_CHILDREN = Prepared(select(func.count()).where(
    s.resources.c.parent_id == bindparam("parent")))
_TOUCH = Prepared(update(s.resources).where(s.resources.c.id == bindparam("key")).values(
    last_update=bindparam("now"), is_stable=false()))


def _insert_main_tags(conn: Connection, resource_id: int, tags: dict[int, str]) -> None:
    _INSERT_MAIN_TAGS.run_many(conn, [
        {"resource_id": resource_id, "tag": tag, "value": value, "norm": normalize(value)}
        for tag, value in tags.items()
    ])


def _insert_metadata(conn: Connection, resource_id: int, values: dict[str, str]) -> None:
    _INSERT_METADATA.run_many(conn, [
        {"resource_id": resource_id, "name": k, "value": v, "revision": 1}
        for k, v in values.items()
    ])


def _descendants(conn: Connection, ids: list[int], level: Level, limit: int = 0) -> list[int]:
    """Walk down one level at a time (at most three queries, each on an index)."""
    if not ids:
        return []
    current_level = Level(conn.scalar(select(s.resources.c.level)
                                      .where(s.resources.c.id == ids[0])))
    while current_level < level and ids:
        statement = select(s.resources.c.id).where(s.resources.c.parent_id.in_(ids)) \
            .order_by(s.resources.c.id)
        if limit and current_level + 1 == level:
            statement = statement.limit(limit)
        ids = list(conn.scalars(statement))
        current_level = Level(current_level + 1)
    return ids



def _in_batches(conn: Connection, statement: Prepared, ids: Sequence[int],
                **parameters: Any) -> Iterator[tuple[Any, ...]]:
    """The rows of a statement on ``:ids``, run on at most ID_BATCH IDs at a time."""
    for start in range(0, len(ids), SqlIndex.ID_BATCH):
        yield from statement.run(conn, {"ids": list(ids[start:start + SqlIndex.ID_BATCH]),
                                        **parameters})


def _walk_down(conn: Connection, ids: Sequence[int], steps: int) -> dict[int, int]:
    """The descendants ``steps`` levels below resources of one level, each mapped to
    the one it descends from (one query per level walked down)."""
    root_of = {i: i for i in ids}
    for _ in range(steps):
        root_of = {child: root_of[parent]
                   for child, parent in _in_batches(conn, _CHILD_IDS, list(root_of))}
    return root_of


def _copy_labels(conn: Connection, source: int, target: int) -> None:
    source_labels = s.labels.alias("source")
    present = exists().where(s.labels.c.resource_id == target,
                             s.labels.c.label == source_labels.c.label)
    conn.execute(insert(s.labels).from_select(
        ["resource_id", "label"],
        select(literal(target), source_labels.c.label)
        .where(source_labels.c.resource_id == source, not_(present))))


def _next_revision(current: int | None, expected: int | None, require: bool) -> int:
    """The revision after ``current`` (0 for a new item), checking ``If-Match``."""
    if current is None:
        return 0
    if expected is None and require:
        raise RevisionConflict('HTTP header "If-Match" is missing, as "CheckRevisions" is '
                               '"true"')
    if expected is not None and expected != current:
        raise RevisionConflict(f"the current revision is {current}, not {expected}")
    return current + 1


def _delete(conn: Connection, resource: Resource, now: float) -> DeleteOutcome:
    subtree = [resource.id] + [
        i for level in Level if level > resource.level
        for i in _descendants(conn, [resource.id], level)
    ]
    uuids = _attachment_uuids(conn, subtree)
    deleted = [(resource.level, resource.public_id)]
    conn.execute(delete(s.resources).where(s.resources.c.id == resource.id))
    remaining: tuple[Level, str] | None = None
    parent_id = resource.parent_id
    while parent_id is not None:
        parent = _resource(conn.execute(
            select(s.resources).where(s.resources.c.id == parent_id)).one())
        if conn.scalar(select(func.count()).where(s.resources.c.parent_id == parent_id)):
            remaining = (parent.level, parent.public_id)
            break
        uuids += _attachment_uuids(conn, [parent_id])  # e.g. a user attachment of a study
        conn.execute(delete(s.resources).where(s.resources.c.id == parent_id))
        deleted.append((parent.level, parent.public_id))
        parent_id = parent.parent_id
    for level, public_id in deleted:
        _log(conn, ChangeType.Deleted, level, public_id, now)
    return DeleteOutcome(uuids, deleted, remaining)


def _make_room(conn: Connection, limits: StorageLimits, new: NewInstance,
               known_patient: bool) -> list[str]:
    """Recycle the least recently updated unprotected patients (never the one being
    stored to) until the new instance fits; their files' UUIDs, to remove after commit.
    """
    freed: list[str] = []
    while True:
        patients = conn.scalar(select(func.count()).where(s.resources.c.level == Level.PATIENT))
        over_count = bool(limits.max_patients) and \
            patients + (not known_patient) > limits.max_patients
        over_size = bool(limits.max_size) and \
            conn.execute(_SIZES).one()[0] + new.attachment.compressed_size > limits.max_size
        if not (over_count or over_size):
            return freed
        what = "patients" if over_count else "storage size"
        if limits.reject:
            raise StorageFull(f"the maximum {what} is reached (MaximumStorageMode is Reject)")
        oldest = conn.execute(
            select(s.resources).where(s.resources.c.level == Level.PATIENT,
                                      s.resources.c.protected == False,  # noqa: E712
                                      s.resources.c.public_id != new.public_ids[Level.PATIENT])
            .order_by(s.resources.c.last_update, s.resources.c.id).limit(1)).first()
        if oldest is None:
            raise StorageFull(f"the maximum {what} is reached and no unprotected patient "
                              "is left to recycle")
        freed += _delete(conn, _resource(oldest), new.timestamp).removed_uuids


def _attachment_uuids(conn: Connection, resource_ids: list[int]) -> list[str]:
    return list(conn.scalars(select(s.attachments.c.uuid)
                             .where(s.attachments.c.resource_id.in_(resource_ids))))


def _grouped(rows: Iterable[Any], ids: Iterable[int]) -> dict[int, dict]:
    """(resource, key, value) rows as a dictionary per resource."""
    result: dict[int, dict] = {i: {} for i in ids}
    for resource_id, key, value in rows:
        result[resource_id][key] = value
    return result


#: A constraint's part of a find's shape: its level, kind of matching, case
#: sensitivity, number of values and, for a range, which bounds it has (and the length
#: of the upper one, whose prefix the SQL compares).
_ConstraintShape = tuple[Level, Match, bool, int, tuple[bool, bool, int]]


class _FindShape(NamedTuple):
    """What the SQL of a find depends on. Its values are parameters p0, p1...: the
    level, then each constraint's (``_constraint_sql``), the labels, since, limit."""

    level: Level
    constraints: tuple[_ConstraintShape, ...]
    labels: int
    labels_constraint: str
    offset: bool
    limit: bool


def _constraint_sql(c: Constraint) -> tuple[_ConstraintShape, tuple[str | int, ...]]:
    """A constraint's shape, and the values its SQL takes: the tag, then the values in
    the order ``_match`` uses them."""
    bounds = (False, False, 0)
    values: tuple[str, ...] = c.values
    if c.match is Match.WILDCARD:
        values = (c.values[0].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                  .replace("*", "%").replace("?", "_"),)
    elif c.match is Match.RANGE:
        low, high = c.values
        bound = _digits_above(high) if high else None
        values = (*([low] if low else []), *([bound] if bound else []),
                  *([high] if high else []))
        bounds = (bool(low), bound is not None, len(high))
    return (c.level, c.match, c.case_sensitive, len(c.values), bounds), (c.tag, *values)


@lru_cache(maxsize=256)
def _find_statement(shape: _FindShape) -> Prepared:
    """Built once per shape, so its aliases and subqueries cost nothing per query."""
    parameter = (bindparam(f"p{i}") for i in itertools.count())
    target = s.resources.alias("target")
    conditions = [target.c.level == next(parameter)]
    for level, match, case_sensitive, count, bounds in shape.constraints:
        tag = next(parameter)
        conditions.append(_condition(target, shape.level, level, tag,
                                     _match(match, case_sensitive, count, bounds, parameter)))
    conditions += _label_conditions(target, shape, parameter)
    statement = select(target.c.id).where(*conditions).order_by(target.c.id)
    if shape.offset:
        statement = statement.offset(next(parameter))
    if shape.limit:
        statement = statement.limit(next(parameter))
    return Prepared(statement)


def _condition(target, level: Level, tag_level: Level, tag: Any,  # noqa: ANN001
               match: ColumnElement[bool]) -> ColumnElement[bool]:
    """``target`` (at ``level``) is, descends from, or has below it a resource of
    ``tag_level`` whose ``tag`` matches.

    Uncorrelated ``IN`` subqueries let the database start from the (tag, value)
    index instead of probing every resource of the level.
    """
    ids = select(s.main_tags.c.resource_id).where(s.main_tags.c.tag == tag, match)
    if tag_level < level:  # an ancestor's tag: walk down to the target's parents
        for _ in range(level - tag_level - 1):
            child = s.resources.alias()
            ids = select(child.c.id).where(child.c.parent_id.in_(ids))
        return target.c.parent_id.in_(ids)
    for _ in range(tag_level - level):  # a descendant's tag: walk up to the target
        node = s.resources.alias()
        ids = select(node.c.parent_id).where(node.c.id.in_(ids))
    return target.c.id.in_(ids)


def _match(match: Match, case_sensitive: bool, count: int, bounds: tuple[bool, bool, int],
           parameter: Iterator[Any]) -> ColumnElement[bool]:
    """The test of a main tag's value, with the values ``parameter`` gives."""
    column = s.main_tags.c.value if case_sensitive else s.main_tags.c.norm
    if match is Match.EQUAL:
        return column == next(parameter)
    if match is Match.LIST:  # of no values ("\\"): matches nothing
        return column.in_([next(parameter) for _ in range(count)]) if count else false()
    if match is Match.RANGE:
        low, bounded, high_length = bounds
        parts = [column >= next(parameter)] if low else []
        if bounded:
            parts.append(column < next(parameter))  # lets the index stop the scan
        if high_length:  # part of the shape: written in the SQL, not a parameter
            prefix = func.substr(column, literal_column("1"), literal_column(str(high_length)))
            parts.append(prefix <= next(parameter))
        return and_(*parts) if parts else true()
    # Case-sensitive on every backend: SQLite connections set case_sensitive_like, and
    # insensitive matching compares the case-folded ``norm`` column instead.
    return column.like(next(parameter), escape="\\")


def _digits_above(high: str) -> str | None:
    """A string of digits greater than every value whose prefix is at most ``high``
    (``20201231`` gives ``20201232``), or None when ``high`` is not all digits or is
    all nines. Digits sort alike in every collation, unlike a bumped last character."""
    if not (high.isascii() and high.isdigit()):
        return None
    above = str(int(high) + 1).zfill(len(high))
    return above if len(above) == len(high) else None


def _label_conditions(target, shape: _FindShape,  # noqa: ANN001
                      parameter: Iterator[Any]) -> list[ColumnElement[bool]]:
    has = [exists().where(s.labels.c.resource_id == target.c.id,
                          s.labels.c.label == next(parameter)) for _ in range(shape.labels)]
    if not has:
        return []
    if shape.labels_constraint == "Any":
        return [or_(*has)]
    if shape.labels_constraint == "None":
        return [not_(or_(*has))]
    return has


