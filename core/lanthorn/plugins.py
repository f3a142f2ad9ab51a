"""Building the plugin manager: built-ins first, installed plugins after, then the site's.

A plugin that fails to import is logged, skipped and listed as failed; a plugin whose
hook names or signatures are wrong stops start-up (a typo must never be silent).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger(__name__)

hookimpl = pluggy.HookimplMarker("lanthorn")

#: Features of the core, registered exactly like external plugins.
BUILTIN_PLUGINS = (
    "lanthorn.builtin.filesystem",
    "lanthorn.builtin.sqlite",
    "lanthorn.builtin.errors",
    "lanthorn.builtin.auth",
    "lanthorn.builtin.dimse",
    "lanthorn.builtin.codecs",
    "lanthorn.builtin.metrics",
    "lanthorn.rest.routes",
)

ENTRY_POINT_GROUP = "lanthorn"


@dataclass
class PluginInfo:
    """What ``GET /plugins/{name}`` and ``lanthorn plugins`` show."""

    name: str
    source: str  # "builtin", "entry point" or "config"
    module: str
    version: str = ""
    description: str = ""
    status: str = "loaded"  # "loaded", "failed" or "disabled"
    error: str = ""
    config_sections: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "ID": self.name,
            "Version": self.version,
            "Description": self.description,
            "Status": self.status,
            "Error": self.error,
            "Source": self.source,
            "Module": self.module,
        }


class PluginHost:
    """One plugin manager and what it loaded (one per Server, so tests stay isolated)."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("lanthorn")
        self.manager.add_hookspecs(hookspecs)
        # Before any registration, so plugins' own hookspecs exist when check_pending runs.
        self.manager.hook.add_hookspecs.call_historic(kwargs={"plugin_manager": self.manager})
        self.plugins: dict[str, PluginInfo] = {}

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.manager.hook

    def register(self, module: ModuleType | object, info: PluginInfo) -> None:
        """Register and validate one plugin; a wrong hook signature is a PluginError."""
        try:
            self.manager.register(module, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f'plugin "{info.name}" is invalid: {exc}') from None
        info.config_sections = tuple(getattr(module, "config_sections", ()))
        self.plugins[info.name] = info

    def notify(self, name: str, **kwargs: object) -> None:
        """Call a notification hook one plugin at a time: a failure is logged and
        neither stops the other plugins nor reaches the caller."""
        for impl in reversed(getattr(self.hook, name).get_hookimpls()):
            try:
                impl.function(*(kwargs[arg] for arg in impl.argnames))
            except Exception:
                log.exception('plugin "%s" failed in %s', impl.plugin_name, name)

    def fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error('plugin "%s" failed to load and is skipped: %s', info.name, info.error)
        self.plugins[info.name] = info

    def check_pending(self) -> None:
        """Refuse hook implementations that match no specification (misspelled hooks)."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{exc} (is the hook name misspelled?)") from None

    def loaded_sections(self) -> set[str]:
        return {s for p in self.plugins.values() if p.status == "loaded"
                for s in p.config_sections}


def make_plugin_host(
    *,
    extra: list[str] | tuple[str, ...] = (),
    disabled: list[str] | tuple[str, ...] = (),
    load_entry_points: bool = True,
    base_dir: Path | None = None,
    objects: list[object] | tuple[object, ...] = (),
) -> PluginHost:
    """Built-ins, then installed entry points, then ``extra`` (module paths or .py files).

    ``objects`` are already-imported plugin objects (tests and embedding code).
    """
    host = PluginHost()
    for module_name in BUILTIN_PLUGINS:
        host.register(importlib.import_module(module_name),
                      PluginInfo(module_name.rsplit(".", 1)[-1], "builtin", module_name,
                                 _core_version()))
    if load_entry_points:
        for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                                  key=lambda e: e.name):
            _load_entry_point(host, entry_point, disabled)
    for reference in extra:
        _load_site_plugin(host, reference, base_dir or Path.cwd(), disabled)
    for index, plugin in enumerate(objects):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        host.register(plugin, PluginInfo(name, "object", type(plugin).__module__))
    host.check_pending()
    return host


def _load_entry_point(host: PluginHost, entry_point: importlib.metadata.EntryPoint,
                      disabled: list[str] | tuple[str, ...]) -> None:
    dist = entry_point.dist
    info = PluginInfo(entry_point.name, "entry point", entry_point.value,
                      dist.version if dist else "",
                      (dist.metadata["Summary"] or "") if dist else "")
    if entry_point.name in disabled:
        info.status = "disabled"
        host.plugins[info.name] = info
        return
    try:
        module = entry_point.load()
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, not fatal
        host.fail(info, exc)
        return
    host.register(module, info)


def _load_site_plugin(host: PluginHost, reference: str, base_dir: Path,
                      disabled: list[str] | tuple[str, ...]) -> None:
    """A site's own plugin from the ``Plugins`` option: a module path or a .py file."""
    path = Path(reference)
    name = path.stem if reference.endswith(".py") else reference
    info = PluginInfo(name, "config", reference)
    if name in disabled:
        info.status = "disabled"
        host.plugins[name] = info
        return
    try:
        module = _import_file(base_dir / path, name) if reference.endswith(".py") \
            else importlib.import_module(reference)
    except Exception as exc:  # noqa: BLE001
        host.fail(info, exc)
        return
    info.version = str(getattr(module, "__version__", ""))
    info.description = (module.__doc__ or "").strip().split("\n")[0]
    host.register(module, info)


def _import_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lanthorn_site_plugins.{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]  # no half-imported module left behind
        raise
    return module


def _core_version() -> str:
    from . import __version__

    return __version__
