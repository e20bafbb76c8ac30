"""The plugin manager: loads the ``attn_plugins`` entry points and keeps the registered components."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "attn_plugins"


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to import or raised inside a hook."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered component: its kind, name, and the distribution that provides it."""

    kind: str
    name: str
    distribution: str
    version: str
    plugin: str

    def as_dict(self) -> dict[str, str]:
        """The fields as a plain dict (for JSON)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "plugin": self.plugin,
        }


@dataclass(frozen=True)
class _Source:
    distribution: str
    version: str
    plugin: str


class PluginRegistry:
    """Components registered by plugins, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[int, _Source] = {}
        self._components: dict[str, dict[str, tuple[Any, _Source]]] = {k: {} for k in hookspecs.HOOKS_BY_KIND}
        self.skipped: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ loading
    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> PluginRegistry:
        """Import every entry point of the group; a plugin that fails is skipped with one warning."""
        if eps is None:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        seen: set[tuple[str, str]] = set()
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
            version = ep.dist.version if ep.dist is not None else "unknown"
            # The same distribution can be visible twice (e.g. an editable install next to a build dir).
            if (dist, ep.value) in seen:
                continue
            seen.add((dist, ep.value))
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party package must not break the others
                self._skip(dist, ep.name, f"skipped, it failed to import ({type(exc).__name__}: {exc})")
                continue
            self._register_plugin(module, _Source(dist, version, ep.name))
        return self

    def register(self, plugin: ModuleType | object, name: str | None = None, distribution: str = "<local>") -> None:
        """Register an in-process plugin object or module (for notebooks and tests), then its components."""
        plugin_name = name or getattr(plugin, "__name__", type(plugin).__name__)
        source = _Source(distribution, "local", plugin_name)
        before = set(self.pm.get_plugins())
        self._register_plugin(plugin, source)
        new = [p for p in self.pm.get_plugins() if p not in before]
        self._collect(only=new)

    def _register_plugin(self, plugin: object, source: _Source) -> None:
        try:
            self.pm.register(plugin, name=f"{source.distribution}:{source.plugin}")
        except ValueError:
            return  # already registered under this name
        except Exception as exc:
            self._skip(source.distribution, source.plugin, f"skipped, it is not a valid plugin ({exc})")
            return
        self._sources[id(plugin)] = source
        # pluggy accepts unknown hook names silently; a typo would leave a plugin mysteriously inert.
        unknown = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [] if not h.has_spec())
        if unknown:
            self._skip(source.distribution, source.plugin, f"unknown hook(s) {', '.join(unknown)} ignored")

    def _skip(self, dist: str, plugin: str, why: str) -> None:
        self.skipped.append((dist, why))
        warnings.warn(
            f"attn-plugins: plugin {plugin!r} of distribution {dist!r}: {why}",
            PluginWarning,
            stacklevel=3,
        )

    def collect(self) -> PluginRegistry:
        """Call every registration hook of every loaded plugin and index the components."""
        self._collect(only=None)
        return self

    def _collect(self, only: list[object] | None) -> None:
        for kind, hook_name in hookspecs.HOOKS_BY_KIND.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if only is not None and impl.plugin not in only:
                    continue
                source = self._sources.get(id(impl.plugin), _Source("<unknown>", "unknown", impl.plugin_name))
                staged: list[tuple[str, Any]] = []

                def register(name: str, component: Any, _staged: list = staged) -> None:
                    if not isinstance(name, str) or not name:
                        raise PluginError(f"component names must be non-empty strings, got {name!r}")
                    _staged.append((name, component))

                try:
                    impl.function(register=register)
                except Exception as exc:  # isolate: this plugin's components are dropped, others stay
                    self._skip(
                        source.distribution,
                        source.plugin,
                        f"{hook_name} raised {type(exc).__name__}: {exc}; its components are skipped",
                    )
                    continue
                for name, component in staged:
                    self._add(kind, name, component, source)

    def _add(self, kind: str, name: str, component: Any, source: _Source) -> None:
        existing = self._components[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"two plugins register a {kind} named {name!r}: distribution {existing[1].distribution!r} "
                f"(plugin {existing[1].plugin!r}) and distribution {source.distribution!r} "
                f"(plugin {source.plugin!r}); uninstall one of them"
            )
        self._components[kind][name] = (component, source)

    # ------------------------------------------------------------------ lookup
    def get(self, kind: str, name: str) -> Any:
        """The component of ``kind`` registered as ``name``; an unknown name lists the known ones."""
        if kind not in self._components:
            raise PluginError(f"unknown component kind {kind!r}; kinds are {', '.join(self._components)}")
        try:
            return self._components[kind][name][0]
        except KeyError:
            known = ", ".join(sorted(self._components[kind])) or "none"
            raise PluginError(f"no {kind} named {name!r}; registered {kind}s: {known}") from None

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self._components[kind])

    def components(self, kind: str) -> dict[str, Any]:
        """Name to component, for one kind."""
        return {name: comp for name, (comp, _) in self._components[kind].items()}

    def infos(self) -> list[PluginInfo]:
        """Every component with its kind, name, distribution and version."""
        out = []
        for kind, comps in self._components.items():
            for name, (_, src) in sorted(comps.items()):
                out.append(PluginInfo(kind, name, src.distribution, src.version, src.plugin))
        return out


_lock = threading.Lock()
_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loaded from the entry points on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = PluginRegistry().load_entry_points().collect()
        return _registry


def reload_plugins() -> PluginRegistry:
    """Forget the loaded plugins and load the entry points again (after installing a plugin)."""
    global _registry
    with _lock:
        _registry = None
    return get_registry()


def register_plugin(plugin: ModuleType | object, name: str | None = None) -> None:
    """Register an in-process plugin (a module or object with hook implementations)."""
    get_registry().register(plugin, name=name)


def plugins() -> list[PluginInfo]:
    """Every registered adapter, method, view and metric, with its source distribution."""
    return get_registry().infos()


def get_component(kind: str, name: str) -> Any:
    """Look up a component by kind (``adapter``, ``method``, ``view``, ``metric``) and name."""
    return get_registry().get(kind, name)
