"""Server configuration: Orthanc-compatible JSON files, folder merging and environment overrides.

Key names follow Orthanc so an existing Orthanc configuration file can be reused as is.
See docs/configuration.md for the user-facing rules (lookup, precedence, overrides).
"""

import copy
import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_ENV = "LANTHORN_CONFIG"
ENV_PREFIX = "LANTHORN__"

TypeSpec = type | tuple[type, ...]


class ConfigError(Exception):
    """A configuration problem that must stop start-up; the message names the key and source."""


@dataclass(frozen=True)
class Option:
    """One core option: its JSON key, default, accepted JSON type(s) and a one-line meaning."""

    key: str
    default: Any
    type: TypeSpec
    help: str


OPTIONS: tuple[Option, ...] = (
    # General and storage
    Option("Name", "Lanthorn", str, "Display name of this server, reported by /system."),
    Option(
        "StorageArea",
        "filesystem",
        str,
        "Name of the storage area backend that holds DICOM files (Lanthorn-specific).",
    ),
    Option(
        "IndexBackend",
        "sqlite",
        str,
        "Name of the index backend that holds the database (Lanthorn-specific).",
    ),
    Option(
        "StorageDirectory",
        "lanthorn-data",
        str,
        "Folder where the filesystem storage area keeps DICOM files.",
    ),
    Option(
        "IndexDirectory",
        None,
        str,
        "Folder of the SQLite index; null means the same as StorageDirectory.",
    ),
    Option("StorageCompression", False, bool, "Compress stored DICOM files transparently."),
    Option(
        "IngestTranscoding",
        "",
        str,
        "Transfer syntax UID that received instances are converted to; empty: as received.",
    ),
    Option(
        "IngestTranscodingOfUncompressed",
        True,
        bool,
        "Whether IngestTranscoding applies to instances received uncompressed.",
    ),
    Option(
        "IngestTranscodingOfCompressed",
        True,
        bool,
        "Whether IngestTranscoding applies to instances received compressed.",
    ),
    Option(
        "DicomLossyTranscodingQuality",
        90,
        int,
        "Quality (1-100) of lossy transcoding: JPEG, JPEG-LS near-lossless, JPEG 2000.",
    ),
    Option(
        "SyncStorageArea",
        True,
        bool,
        "Flush each stored file and the index's commit (SQLite `synchronous=FULL`) to "
        "disk before acknowledging it, and its folders too except on ext4, XFS and btrfs "
        "(whose flush of a new file records its name), so that an acknowledged instance "
        "survives a power loss (Orthanc flushes the file only).",
    ),
    Option("MaximumStorageSize", 0, int, "Storage quota in MB; 0 means unlimited."),
    Option("MaximumPatientCount", 0, int, "Maximum number of stored patients; 0 means unlimited."),
    Option(
        "MaximumStorageMode",
        "Recycle",
        str,
        'What a full quota does: "Recycle" deletes the oldest patients, "Reject" refuses.',
    ),
    Option(
        "OverwriteInstances",
        False,
        bool,
        "Replace a stored instance when one with the same SOPInstanceUID arrives.",
    ),
    Option(
        "StableAge",
        60,
        int,
        "Seconds without new instances before a patient, study or series becomes stable.",
    ),
    Option("Plugins", [], list, "Extra plugins to load: Python module paths or .py files."),
    Option(
        "DisabledPlugins", [], list, "Names of installed plugins not to load (Lanthorn-specific)."
    ),
    Option("ConcurrentJobs", 2, int, "Jobs running at the same time; 0 means one per CPU core."),
    Option("Workers", 1, int, "Number of server worker processes (Lanthorn-specific): "
           "one per core when several clients send at once."),
    # DICOM network
    Option("DicomServerEnabled", True, bool, "Run the DICOM (DIMSE) server."),
    Option(
        "DicomAet",
        "LANTHORN",
        str,
        "Application Entity Title of this server (at most 16 characters).",
    ),
    Option("DicomPort", 4242, int, "TCP port of the DICOM server."),
    Option(
        "DicomBindAddress",
        "",
        str,
        "Address the DICOM server listens on; empty means all interfaces (Lanthorn-specific).",
    ),
    Option(
        "DicomCheckCalledAet", False, bool, "Refuse associations whose called AET is not DicomAet."
    ),
    Option(
        "DicomAlwaysAllowEcho",
        True,
        bool,
        "Answer C-ECHO from modalities missing from DicomModalities.",
    ),
    Option(
        "DicomAlwaysAllowStore",
        True,
        bool,
        "Accept C-STORE from modalities missing from DicomModalities.",
    ),
    Option(
        "DicomAlwaysAllowFind",
        False,
        bool,
        "Answer C-FIND from modalities missing from DicomModalities.",
    ),
    Option(
        "DicomAlwaysAllowFindWorklist",
        False,
        bool,
        "Answer worklist C-FIND from modalities missing from DicomModalities.",
    ),
    Option(
        "DicomAlwaysAllowGet",
        False,
        bool,
        "Answer C-GET from modalities missing from DicomModalities.",
    ),
    Option(
        "DicomAlwaysAllowMove",
        False,
        bool,
        "Answer C-MOVE from modalities missing from DicomModalities.",
    ),
    Option(
        "DicomCheckModalityHost",
        False,
        bool,
        "Check the network address of known modalities, not only their AET.",
    ),
    Option("StrictAetComparison", False, bool, "Compare AETs case-sensitively."),
    Option(
        "UnknownSopClassAccepted",
        False,
        bool,
        "Accept C-STORE of SOP classes this server does not know.",
    ),
    Option(
        "DicomScpTimeout",
        30,
        int,
        "Seconds of silence before the server closes an incoming association.",
    ),
    Option(
        "DicomScuTimeout",
        10,
        int,
        "Seconds to wait for a remote modality to answer an outgoing request.",
    ),
    Option("DicomEchoChecksFind", False, bool, "A C-ECHO to a modality over REST also "
           "sends it a C-FIND (of a study that does not exist), which it must answer."),
    Option("DicomTlsEnabled", False, bool, "The DICOM listener accepts only TLS "
           "associations (DICOM TLS, PS3.15 B.1)."),
    Option("DicomTlsCertificate", None, str, "PEM certificate of this server for DICOM TLS "
           "(listener, and client certificate of the associations it requests)."),
    Option("DicomTlsPrivateKey", None, str, "PEM private key of DicomTlsCertificate."),
    Option("DicomTlsTrustedCertificates", None, str, "PEM file of the certificates (or CAs) "
           "of the modalities trusted over DICOM TLS, both ways."),
    Option("DicomTlsRemoteCertificateRequired", True, bool, "The listener refuses TLS "
           "clients without a trusted certificate."),
    Option("DicomDefaultRetrieveMethod", "C-MOVE", str, "How /queries retrieves answers "
           "when the request does not say: C-MOVE or C-GET."),
    Option("DicomThreadsCount", 4, int, "Threads serving incoming DICOM associations."),
    Option(
        "MaximumPduLength",
        131072,
        int,
        "Largest DICOM PDU this server receives, in bytes (4096 to 131072). Orthanc's "
        "default is 16384; Lanthorn's is larger because each PDU costs Python time.",
    ),
    Option(
        "AcceptedTransferSyntaxes",
        ["1.2.840.10008.1.*"],
        list,
        "Transfer syntaxes accepted for C-STORE: UIDs, with * and ? as wildcards.",
    ),
    Option(
        "SynchronousCMove",
        True,
        bool,
        "Send C-MOVE sub-operations during the request; false queues a store job.",
    ),
    Option("TranscodeDicomProtocol", True, bool, "Instances sent over DICOM (C-STORE, "
           "C-MOVE, C-GET) may be transcoded when the peer refuses their syntax."),
    Option("DicomScuPreferredTransferSyntax", "1.2.840.10008.1.2.1", str, "Transfer "
           "syntax proposed and preferred when an instance sent over DICOM is transcoded."),
    Option(
        "DefaultEncoding",
        "Latin1",
        str,
        "Character set assumed for DICOM files without SpecificCharacterSet.",
    ),
    Option("CaseSensitivePN", False, bool, "Match person names (PN) case-sensitively in C-FIND."),
    Option(
        "LimitFindResults",
        0,
        int,
        "Maximum C-FIND answers at patient, study or series level; 0 means unlimited.",
    ),
    Option(
        "LimitFindInstances", 0, int, "Maximum C-FIND answers at instance level; 0 means unlimited."
    ),
    Option(
        "StorageAccessOnFind",
        "Always",
        str,
        'Accepted for Orthanc configurations ("Always", "Answers", "Never") and without '
        "effect: finds answer from the index and the header saved at ingest, never files.",
    ),
    Option(
        "ExtraMainDicomTags",
        {},
        dict,
        "Extra tags to keep in the index, listed per level (Patient, Study, Series, Instance).",
    ),
    Option(
        "DicomModalities",
        {},
        dict,
        "Known remote DICOM modalities, by symbolic name: [AET, host, port] or an object.",
    ),
    # HTTP
    Option("HttpServerEnabled", True, bool, "Run the HTTP server (REST API)."),
    Option("HttpPort", 8042, int, "TCP port of the HTTP server."),
    Option(
        "HttpBindAddress",
        "",
        str,
        "Address the HTTP server listens on; empty means all interfaces (Lanthorn-specific).",
    ),
    Option("RemoteAccessAllowed", False, bool, "Accept HTTP clients other than localhost."),
    Option(
        "AuthenticationEnabled",
        None,
        bool,
        "Require credentials on every HTTP request; null means only when RemoteAccessAllowed "
        "is on.",
    ),
    Option("RegisteredUsers", {}, dict, "HTTP users: name: password (Orthanc's form, an "
           "admin), or name: {\"Password\": hash from `lanthorn passwd`, \"Roles\": [...], "
           "\"CertificateCommonNames\": [client certificate CNs that log in as this user]}."),
    Option("SslEnabled", False, bool, "Serve HTTPS instead of HTTP."),
    Option("SslCertificate", "certificate.pem", str, "PEM file with the HTTPS server's "
           "certificate (and its chain) followed by its private key."),
    Option("SslVerifyPeers", False, bool, "Require HTTPS clients to present a certificate "
           "signed by one in SslTrustedClientCertificates."),
    Option("SslTrustedClientCertificates", "trustedClientCertificates.pem", str,
           "PEM file of the certificates (or CAs) HTTPS clients are verified against."),
    Option("RestApiWriteToFileSystemEnabled", False, bool, "Allow POST /instances/{id}/export "
           "to write files anywhere the server's user may write."),
    Option("HttpMaximumRequestBodySize", 4096, int, "Largest accepted HTTP request body, in "
           "MB (larger ones get 413); 0 means unlimited (Lanthorn-specific)."),
    Option("HttpMaximumHeaderSize", 64, int, "Largest accepted request line plus headers of "
           "an HTTP request, in KB (larger ones get 431) (Lanthorn-specific)."),
    Option("HttpCorsAllowedOrigins", [], list, "Origins (\"https://viewer.example.org\") whose "
           "web pages may call the REST API from a browser; empty: none (Lanthorn-specific)."),
    Option("HttpDescribeErrors", True, bool,
           "Describe errors as JSON in failed REST answers; false answers the status alone."),
    Option("HttpThreadsCount", 50, int, "Threads serving HTTP requests, per process (at least 1)."),
    Option("KeepAlive", True, bool, "Keep HTTP connections open between requests."),
    Option("TcpNoDelay", True, bool, "Accepted for Orthanc configurations: HTTP "
           "connections always disable Nagle's algorithm (no 40 ms waits for ACKs)."),
    Option("HttpTimeout", 60, int, "Seconds before an outgoing HTTP request to a peer times out."),
    Option("OrthancPeers", {}, dict, "Known remote Orthanc-compatible servers, by symbolic name: "
           "[url, username, password] or an object (Url, Username, Password, HttpHeaders, "
           "Timeout...)."),
    Option("LogExportedResources", False, bool, "Record each instance sent to a modality or "
           "a peer in /exports (an audit trail of what left the server)."),
    Option("DicomModalitiesInDatabase", False, bool, "Keep the modalities defined or "
           "deleted over REST (PUT/DELETE /modalities/{id}) across restarts."),
    Option("OrthancPeersInDatabase", False, bool, "Keep the peers defined or deleted over REST "
           "(PUT/DELETE /peers/{id}) across restarts."),
    # Jobs and miscellaneous
    Option("StorageCommitmentReportsSize", 100, int, "Storage commitment transactions "
           "kept (/storage-commitment); the oldest are forgotten first."),
    Option("QueryRetrieveSize", 100, int, "Answers of remote queries (/queries) kept; the "
           "oldest are forgotten first."),
    Option("SaveJobs", True, bool, "Store jobs in the index so they survive a restart."),
    Option("JobsHistorySize", 10, int, "Finished jobs kept in the index (older ones are "
           "deleted with their outputs)."),
    Option("JobRetryCount", 5, int, "Retries of a job that failed on the network (store "
           "jobs) before it fails for good (Lanthorn-specific)."),
    Option("JobRetryDelay", 5.0, float, "Seconds before the first retry of such a job; "
           "each next retry waits twice as long, at most an hour (Lanthorn-specific)."),
    Option("DeidentifyLogs", True, bool, "Hide patient-identifying values in logs."),
    Option("AuditLogEnabled", True, bool, "Record who did what to which resource, over REST "
           "and DICOM, in the index (GET /tools/audit-log; Lanthorn-specific)."),
    Option("AuditLogRetentionDays", 365, int, "Days audit log entries are kept; 0 keeps them "
           "forever (Lanthorn-specific)."),
    Option(
        "DefaultPrivateCreator",
        "",
        str,
        "Private creator of private tags set by /modify when the request names none.",
    ),
    Option(
        "PersistentPseudonyms",
        False,
        (bool, dict),
        "Anonymization reuses a patient's pseudonyms: false, true or "
        '{"Scope": name, "Uids": bool} (Lanthorn-specific; see docs/anonymization.md).',
    ),
    Option("MetricsEnabled", True, bool, "Collect metrics for /tools/metrics-prometheus."),
    Option(
        "UserMetadata",
        {},
        dict,
        "Names of user-defined metadata, mapped to numbers from 1024 to 65535.",
    ),
    Option("CheckRevisions", False, bool, "Require If-Match with the current revision to change "
           "or delete an existing metadata or attachment (409 Conflict otherwise)."),
    Option(
        "UserContentType",
        {},
        dict,
        "Names of user-defined attachment types, mapped to numbers from 1024 to 65535.",
    ),
)

_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}

_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}

# A JSON string, a line comment, a block comment, or an unterminated block comment.
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*.*?\*/|/\*', re.DOTALL)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --- parsing -------------------------------------------------------------------------------


def _strip_comments(text: str, source: str = "<string>") -> str:
    """Blank out comments outside strings, keeping newlines so JSON errors keep their position."""

    def blank(match: re.Match[str]) -> str:
        token = match.group()
        if token.startswith('"'):
            return token
        if token == "/*":
            line, column = _position(text, match.start())
            raise ConfigError(f"{source}: unterminated /* comment at line {line}, column {column}")
        return re.sub(r"[^\n]", " ", token)

    return _TOKEN.sub(blank, text)


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of an offset, for error messages."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def parse_config_text(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse commented JSON whose top level must be an object."""
    try:
        data = json.loads(_strip_comments(text, source))
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object")
    return data


def _read_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """One configuration file, parsed and with ${VAR} references expanded."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read configuration file: {error}") from None
    data = parse_config_text(text, str(path))
    return {key: _expand(value, environ, str(path), key) for key, value in data.items()}


def _expand(value: Any, environ: Mapping[str, str], source: str, where: str) -> Any:
    """Replace ${VAR} in every string of a value; Orthanc files use the same syntax."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda match: _variable(match[1], environ, source, where), value)
    if isinstance(value, list):
        return [_expand(item, environ, source, where) for item in value]
    if isinstance(value, dict):
        return {k: _expand(v, environ, source, f"{where}.{k}") for k, v in value.items()}
    return value


def _variable(name: str, environ: Mapping[str, str], source: str, where: str) -> str:
    if name not in environ:
        raise ConfigError(f'{source}: "{where}" uses undefined environment variable "{name}"')
    return environ[name]


# --- validation and merging ----------------------------------------------------------------


def _kind(types: TypeSpec) -> str:
    listed = types if isinstance(types, tuple) else (types,)
    return " or ".join(_KINDS.get(t, t.__name__) for t in listed)


def _matches(value: Any, types: TypeSpec) -> bool:
    """isinstance, except that a bool is not accepted as an int (JSON true is not 1)
    and an int is accepted as a number (JSON 60 is 60.0)."""
    listed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in listed
    return isinstance(value, listed) or (float in listed and isinstance(value, int))


def _check_types(layer: Mapping[str, Any], source: str) -> None:
    for key, value in layer.items():
        option = _BY_KEY.get(key)
        if option is None or value is None or _matches(value, option.type):
            continue
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(
            f'{source}: "{key}" must be {_kind(option.type)}, got {_kind(type(value))} {shown}'
        )


def _merge(
    values: dict[str, Any], origins: dict[str, str], layer: Mapping[str, Any], source: str
) -> None:
    """Apply a later layer: keys replace, objects merge one level deep, null restores default."""
    _check_types(layer, source)
    for key, value in layer.items():
        old = values.get(key)
        if value is None:
            values.pop(key, None)
            origins.pop(key, None)
            continue
        both_objects = isinstance(old, dict) and isinstance(value, dict)
        values[key] = {**old, **value} if both_objects else value
        origins[key] = source


# --- environment overrides -----------------------------------------------------------------


def _fold(name: str) -> str:
    """Comparison form that ignores case and underscores: HTTP_PORT matches HttpPort."""
    return name.replace("_", "").casefold()


def _resolve(part: str, candidates: Iterable[str]) -> str:
    """The candidate key an upper-snake name refers to, else its CamelCase spelling."""
    folded = _fold(part)
    found = next((key for key in candidates if _fold(key) == folded), None)
    return found or "".join(word.capitalize() for word in part.split("_"))


def _env_value(raw: str) -> Any:
    """JSON when the text parses as JSON (numbers, booleans, objects...), else the raw string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_layer(name: str, raw: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The override one LANTHORN__... variable stands for, resolved against current keys."""
    parts = name[len(ENV_PREFIX) :].split("__")
    if len(parts) > 2 or not all(parts):
        raise ConfigError(
            f"environment variable {name}: expected {ENV_PREFIX}OPTION or {ENV_PREFIX}SECTION__KEY"
        )
    key = _resolve(parts[0], [*_BY_KEY, *values])
    if len(parts) == 1:
        return {key: _env_value(raw)}
    section = values.get(key)
    subkeys = section if isinstance(section, dict) else ()
    return {key: {_resolve(parts[1], subkeys): _env_value(raw)}}


def _apply_environment(
    values: dict[str, Any], origins: dict[str, str], environ: Mapping[str, str]
) -> None:
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX):
            layer = _env_layer(name, environ[name], values)
            _merge(values, origins, layer, f"environment variable {name}")


# --- public API ----------------------------------------------------------------------------


class Config:
    """Read-only merged configuration: user values over the defaults in OPTIONS.

    Build one with load_config(), Config.defaults() or with_overrides(); every value handed
    out is a copy, so callers cannot change the configuration by accident.
    """

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        origins: Mapping[str, str] | None = None,
        sources: Iterable[Path] = (),
    ) -> None:
        self._values = dict(values or {})
        self._origins = dict(origins or {})
        self._sources = list(sources)

    @classmethod
    def defaults(cls) -> "Config":
        """A configuration with no file: every option at its default."""
        return cls()

    def __getitem__(self, key: str) -> Any:
        """The user value, else the option default; KeyError if the key is neither."""
        if key in self._values:
            return copy.deepcopy(self._values[key])
        return copy.deepcopy(_BY_KEY[key].default)

    def get(self, key: str, default: Any = None) -> Any:
        """Like config[key], but `default` for keys that are neither set nor known options."""
        try:
            return self[key]
        except KeyError:
            return default

    def section(self, name: str) -> dict[str, Any]:
        """A plugin's section, {} if absent.

        The name matches exactly, else ignoring case and underscores, so a section created
        only by an environment variable (LANTHORN__POSTGRESQL__...) is still found.
        """
        key = self._section_key(name)
        value = self.get(key, {})
        if not isinstance(value, dict):
            origin = self._origins.get(key, "configuration")
            raise ConfigError(f'{origin}: "{key}" must be an object, got {_kind(type(value))}')
        return value

    def _section_key(self, name: str) -> str:
        if name in self._values:
            return name
        folded = _fold(name)
        return next((key for key in self._values if _fold(key) == folded), name)

    @property
    def sources(self) -> list[Path]:
        """Configuration files read, in the order they were applied."""
        return list(self._sources)

    def user_keys(self) -> set[str]:
        """Top-level keys set by a file, the environment or an override."""
        return set(self._values)

    def unknown_key_warnings(self, known_sections: Iterable[str]) -> list[str]:
        """One message per top-level key that is neither a core option nor a known section.

        Unknown keys only warn, so an Orthanc file with options Lanthorn lacks still loads.
        """
        sections = list(known_sections)
        known = {_fold(name) for name in sections}
        candidates = [*_BY_KEY, *sections]
        unknown = [key for key in self._values if key not in _BY_KEY and _fold(key) not in known]
        orthanc_only = [key for key in unknown if key in ORTHANC_ONLY_OPTIONS]
        messages = [self._unknown_message(key, candidates)
                    for key in unknown if key not in ORTHANC_ONLY_OPTIONS]
        if orthanc_only:
            messages.append("Orthanc options that Lanthorn does not implement (yet) are "
                            "ignored: " + ", ".join(orthanc_only))
        return messages

    def _unknown_message(self, key: str, candidates: list[str]) -> str:
        message = f'unknown configuration key "{key}" in {self._origins.get(key, "configuration")}'
        lowered = {candidate.lower(): candidate for candidate in candidates}
        close = difflib.get_close_matches(key.lower(), lowered, n=1)
        return f'{message} (did you mean "{lowered[close[0]]}"?)' if close else message

    def with_overrides(self, **values: Any) -> "Config":
        """A copy with whole keys replaced (objects are not merged); None restores the default."""
        _check_types(values, "with_overrides()")
        merged, origins = dict(self._values), dict(self._origins)
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
                origins.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
                origins[key] = "with_overrides()"
        return Config(merged, origins=origins, sources=self._sources)


def _config_files(path: Path) -> list[Path]:
    """The file itself, or a folder's *.json files in alphabetical order."""
    if path.is_dir():
        files = sorted((p for p in path.glob("*.json") if p.is_file()), key=lambda p: p.name)
        if not files:
            raise ConfigError(f"{path}: folder contains no *.json configuration file")
        return files
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    return [path]


def load_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read a configuration file or folder, then apply LANTHORN__* environment overrides.

    With path None, the LANTHORN_CONFIG variable names the file or folder; if it is unset
    too, only defaults and environment overrides apply.
    """
    env = os.environ if environ is None else environ
    target = path if path is not None else env.get(CONFIG_ENV) or None
    files = _config_files(Path(target).absolute()) if target is not None else []
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for file in files:
        _merge(values, origins, _read_file(file, env), str(file))
    _apply_environment(values, origins, env)
    return Config(values, origins=origins, sources=files)


def default_config_text() -> str:
    """Commented JSON listing every option at its default, as printed by `lanthorn config`."""
    header = (
        "  // Lanthorn configuration: every core option at its default value.\n"
        '  // Keys follow Orthanc; null means "use the default".\n\n'
    )
    entries = [
        f"  // {option.help}\n  {json.dumps(option.key)}: {json.dumps(option.default)}"
        for option in OPTIONS
    ]
    return "{\n" + header + ",\n\n".join(entries) + "\n}\n"


#: Orthanc's own options that Lanthorn does not implement (yet): an Orthanc file that
#: sets them loads with one notice instead of a warning per key.
ORTHANC_ONLY_OPTIONS = frozenset({
    "BuiltinDecoderTranscoderOrder",
    "DeidentifyLogsDicomVersion",
    "DicomAssociationCloseDelay",
    "Dictionary", "ExecuteLuaEnabled",
    "HttpCompressionEnabled", "HttpProxy", "HttpRequestTimeout", "HttpVerbose",
    "HttpsCACertificates", "HttpsVerifyPeers",
    "LoadPrivateDictionary", "LuaScripts", "MallocArenaMax",
    "MaximumStorageCacheSize", "MediaArchiveSize",
    "OrthancExplorerEnabled", "SslMinimumProtocolVersion",
    "StoreDicom", "StoreMD5ForAttachments",
    "SynchronousZipStream", "WebDavDeleteAllowed", "WebDavEnabled",
    "WebDavUploadAllowed", "ZipLoaderThreads",
})
