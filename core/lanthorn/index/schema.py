"""The index schema (SQLAlchemy Core), shared by every index backend.

Public API for backend plugins: the PostgreSQL plugin binds the same tables to its own
engine, and Alembic migrations in ``lanthorn.index.migrations`` evolve them for all.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    false,
    literal_column,
)

metadata = MetaData()

#: Integer primary keys that are BIGINT on PostgreSQL but the rowid alias on SQLite.
Key = BigInteger().with_variant(Integer(), "sqlite")


def _resource_fk(**kwargs: object) -> Column:
    return Column(
        "resource_id", Key, ForeignKey("resources.id", ondelete="CASCADE"), **kwargs
    )


#: One row per patient, study, series and instance.
resources = Table(
    "resources",
    metadata,
    Column("id", Key, primary_key=True, autoincrement=True),
    Column("level", SmallInteger, nullable=False),
    Column("public_id", String(44), nullable=False, unique=True),
    Column("parent_id", Key, ForeignKey("resources.id", ondelete="CASCADE")),
    Column("last_update", Float, nullable=False),
    # Stable = no new child for StableAge seconds (never set on instances).
    Column("is_stable", Boolean, nullable=False, default=False),
    Column("protected", Boolean, nullable=False, default=False),
    Index("ix_resources_level", "level", "id"),
    # Children of a resource at one level (finds walking down from a matching parent).
    Index("ix_resources_parent_level", "parent_id", "level"),
)

#: Patients, studies and series not yet stable: the stable scan's condition, written with
#: literals so that it matches the partial index below (instances are never stable, and
#: an index of every unstable row would hold them all).
UNSTABLE = and_(resources.c.is_stable == false(), resources.c.level < literal_column("3"))
Index("ix_resources_unstable", resources.c.last_update,
      sqlite_where=UNSTABLE, postgresql_where=UNSTABLE)

#: Main DICOM tags per resource; ``norm`` is the case- and accent-folded value used
#: for case-insensitive matching (PN and Orthanc's insensitive mode).
main_tags = Table(
    "main_tags",
    metadata,
    _resource_fk(primary_key=True),
    Column("tag", Integer, primary_key=True),
    Column("value", Text, nullable=False),
    Column("norm", Text, nullable=False),
    Index("ix_main_tags_value", "tag", "value"),
    Index("ix_main_tags_norm", "tag", "norm"),
)

metadata_table = Table(
    "metadata",
    metadata,
    _resource_fk(primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("revision", Integer, nullable=False, default=1),
)

attachments = Table(
    "attachments",
    metadata,
    _resource_fk(primary_key=True),
    Column("content_type", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("compressed_size", BigInteger, nullable=False),
    Column("uncompressed_size", BigInteger, nullable=False),
    Column("compression", SmallInteger, nullable=False),
    Column("compressed_md5", String(32), nullable=False),
    Column("uncompressed_md5", String(32), nullable=False),
    Column("revision", Integer, nullable=False, default=1),
)

#: The DICOM header of each instance (bytes up to the pixel data, zlib-compressed):
#: answers /tags, C-FIND return keys and DICOMweb metadata without reading files.
instance_headers = Table(
    "instance_headers",
    metadata,
    _resource_fk(primary_key=True),
    Column("header", LargeBinary, nullable=False),
)

#: DICOM JSON of an instance (DICOMweb metadata), derived from its header when first
#: asked for and kept (compressed): a cache that may miss any row, never a source.
instance_json = Table(
    "instance_json",
    metadata,
    _resource_fk(primary_key=True),
    Column("json", LargeBinary, nullable=False),
)

labels = Table(
    "labels",
    metadata,
    _resource_fk(primary_key=True),
    Column("label", String(64), primary_key=True),
    Index("ix_labels_label", "label"),
)

#: The change log: Orthanc's /changes, and the event queue consumers read from.
changes = Table(
    "changes",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("change_type", SmallInteger, nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("public_id", String(44), nullable=False),
    Column("date", String(16), nullable=False),
    sqlite_autoincrement=True,
)

#: Where each event consumer has read the change log up to.
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

exported_resources = Table(
    "exported_resources",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("level", SmallInteger, nullable=False),
    Column("public_id", String(44), nullable=False),
    Column("remote_modality", String(64), nullable=False),
    Column("patient_id", Text, nullable=False),
    Column("study_uid", Text, nullable=False),
    Column("series_uid", Text, nullable=False),
    Column("sop_uid", Text, nullable=False),
    Column("date", String(16), nullable=False),
    sqlite_autoincrement=True,
)

global_properties = Table(
    "global_properties",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

#: Background duties run in one process of a cluster: the holder of the lease.
leases = Table(
    "leases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires", Float, nullable=False),
)

#: Jobs live in the index so that any process can report on and control them, and the
#: holder of the "jobs" lease runs them (see ``lanthorn.jobs``). JSON columns are text.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_type", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("progress", Float, nullable=False, default=0.0),
    Column("parameters", Text, nullable=False),  # what was asked: immutable
    Column("checkpoint", Text, nullable=False),  # how far it got: resumes from here
    Column("content", Text, nullable=False),  # the public "Content"
    Column("outputs", Text, nullable=False),  # {key: output} stored in the storage area
    Column("error_code", Integer, nullable=False, default=0),
    Column("error_details", Text, nullable=False, default=""),
    Column("request", String(16)),  # "cancel" or "pause", asked of the runner
    Column("owner", String(128)),  # the process running it (the lease holder)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", Float),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("completed", Float),
    Column("runtime", Float, nullable=False, default=0.0),
    Index("ix_jobs_state", "state", "priority", "created"),
)

#: Answers of C-FIND requests sent to remote modalities (``/queries``), kept in the
#: index so that any process serves them; datasets are stored as DICOM JSON.
queries = Table(
    "queries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("modality", String(128), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("query", Text, nullable=False),
    Column("answers", Text, nullable=False),
    Column("created", Float, nullable=False),
    Index("ix_queries_created", "created"),
)

#: Storage commitment requests Lanthorn sent, and the reports that answered them.
storage_commitments = Table(
    "storage_commitments",
    metadata,
    Column("transaction_uid", String(64), primary_key=True),
    Column("remote_aet", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # Pending, Success or Failure
    Column("success", Text, nullable=False),  # JSON [[SOP class, SOP instance], ...]
    Column("failures", Text, nullable=False),  # JSON [[SOP class, SOP instance, reason]]
    Column("created", Float, nullable=False),
    Index("ix_storage_commitments_created", "created"),
)

#: Persistent pseudonyms of anonymization (PHI: they link to real identities). ``kind``
#: is PatientID, PatientName or UID; ``patient`` is the original PatientID each row
#: belongs to, so that a patient's mapping can be looked up or forgotten at once.
pseudonyms = Table(
    "pseudonyms",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("original", String(256), primary_key=True),
    Column("pseudonym", String(256), nullable=False),
    Column("patient", String(256), nullable=False),
    Column("created", Float, nullable=False),
    Index("ix_pseudonyms_patient", "scope", "patient"),
    Index("ix_pseudonyms_pseudonym", "scope", "kind", "pseudonym"),
)

#: Remote nodes defined over REST (``PUT /peers/{id}``, ``PUT /modalities/{id}``),
#: overlaid on ``OrthancPeers`` and ``DicomModalities`` by ``kind`` ("peer", "modality"):
#: a null ``config`` hides an entry of the configuration (``DELETE``). Kept across
#: restarts only with ``OrthancPeersInDatabase`` / ``DicomModalitiesInDatabase``.
remote_nodes = Table(
    "remote_nodes",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("config", Text),
)

#: The audit log: who (``who``, identified ``via`` basic/token/certificate/anonymous or
#: "dicom" for a calling AET) did ``action`` to which resource, when, and the outcome
#: (``status``: HTTP or DIMSE). ``details`` is JSON (method and URI, or the query).
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("who", String(128)),
    Column("via", String(32), nullable=False),
    Column("remote_ip", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("level", String(16)),
    Column("resource", String(128)),
    Column("status", Integer),
    Column("details", Text, nullable=False),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_who", "who", "at"),
    Index("ix_audit_log_resource", "resource", "at"),
    sqlite_autoincrement=True,
)

#: API tokens (bearer tokens for scripts). Only the SHA-256 ``digest`` of a token is
#: kept: the token itself is random and long, so a fast hash suffices (argon2 is for
#: passwords people choose). ``role`` narrows the user's roles (null: the user's own);
#: ``expires`` is a Unix time, or null for a token that never expires.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("username", String(128), nullable=False),
    Column("role", String(16)),
    Column("description", String(256), nullable=False),
    Column("created", Float, nullable=False),
    Column("expires", Float),
    Index("ix_api_tokens_username", "username"),
)
