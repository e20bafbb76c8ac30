"""The plugin registry: built-in components registered directly, third-party ones from entry points.

The built-ins are the modules of :data:`DEFAULT_PLUGINS`, imported and registered the same way a
third-party plugin is (simonw/llm's ``DEFAULT_PLUGINS``), so a source checkout has every built-in
without install metadata. Third-party packages publish a module under the entry-point group
``attn_plugins``; the environment variable :data:`ENV_VAR` chooses which of them load.

Registration hooks are called through pluggy (``tryfirst``, hook wrappers and ``pm.trace`` work), and
each plugin's implementation is isolated: a plugin that fails to import, is not a valid plugin, or raises
inside a hook is reported once by name and distribution (:class:`PluginWarning`) and skipped, and the
components it registered before raising are dropped. Two plugins registering the same name is an error
that names both distributions.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from types import ModuleType
from typing import Any

import pluggy

from ..errors import PluginError
from ..results import Result
from . import hookspecs

ENTRY_POINT_GROUP = "attn_plugins"
# "all" (the default), "none", or a comma-separated list of entry-point or distribution names to load.
ENV_VAR = "ATTN_PLUGINS_LOAD"
DISTRIBUTION = "attn-plugins"
DEFAULT_PLUGINS = (
    "attn_adapters.eager",
    "attn_adapters.huggingface",
    "attn_adapters.torch_mha",
    "attn_adapters.sentence_transformers",
    "attn_plugins.methods.plugin",
    "attn_plugins.views.plugin",
    "attn_plugins.metrics.plugin",
)
_KIND_OF_HOOK = {hook: kind for kind, hook in hookspecs.HOOKS_BY_KIND.items()}


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to import or raised inside a hook."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered component: its kind, name, and the distribution and plugin module that provide it."""

    kind: str
    name: str
    distribution: str
    version: str
    plugin: str

    def to_dict(self) -> dict[str, str]:
        """The fields as a plain dict (for JSON)."""
        return asdict(self)


class PluginList(list, Result):
    """``ap.plugins()``: a list of :class:`PluginInfo` that also prints as a table and converts to pandas."""

    def rows(self) -> list[dict[str, Any]]:
        """One row per component."""
        return [info.to_dict() for info in self]

    def to_dict(self) -> dict[str, Any]:
        """``{"plugins": [...]}``."""
        return {"plugins": self.rows()}

    __str__ = Result.__str__


@dataclass(frozen=True)
class _Source:
    distribution: str
    version: str
    plugin: str


# The registration in progress: (kind, staged components, source) of the hook implementation being called.
_staging: contextvars.ContextVar[tuple[str, list, _Source] | None] = contextvars.ContextVar(
    "attn_plugins_staging", default=None
)


def _register(name: str, component: Any) -> None:
    """The ``register`` argument every registration hook receives."""
    current = _staging.get()
    if current is None:
        raise PluginError("register() can only be called from inside a registration hook")
    if not isinstance(name, str) or not name:
        raise PluginError(f"component names must be non-empty strings, got {name!r}")
    current[1].append((name, component))


def _package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source checkout that is not installed
        return "0+unknown"


def load_setting(value: str | None = None) -> set[str] | None:
    """The plugins :data:`ENV_VAR` asks for: None for all, an empty set for none, else the named ones."""
    value = os.environ.get(ENV_VAR, "all") if value is None else value
    value = value.strip()
    if value.lower() in ("", "all", "*"):
        return None
    if value.lower() == "none":
        return set()
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginRegistry:
    """Components registered by plugins, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[int, _Source] = {}
        self._components: dict[str, dict[str, tuple[Any, _Source]]] = {k: {} for k in hookspecs.HOOKS_BY_KIND}
        self.skipped: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ loading
    def load_builtins(self, modules: Iterable[str] = DEFAULT_PLUGINS) -> PluginRegistry:
        """Import and register the built-in plugin modules."""
        source_version = _package_version()
        for name in modules:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                self._skip(DISTRIBUTION, name, f"skipped, it failed to import ({type(exc).__name__}: {exc})")
                continue
            self._register_plugin(module, _Source(DISTRIBUTION, source_version, name))
        return self

    def load_entry_points(
        self, eps: Iterable[EntryPoint] | None = None, only: set[str] | None = None
    ) -> PluginRegistry:
        """Import the entry points of the group (those :data:`ENV_VAR` allows); a failing one is skipped."""
        if eps is None:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        wanted = load_setting() if only is None else only
        seen: set[tuple[str, str]] = set()
        found: set[str] = set()
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
            ep_version = ep.dist.version if ep.dist is not None else "unknown"
            if ep.module in DEFAULT_PLUGINS:
                continue  # an older install of this package still lists its built-ins as entry points
            if wanted is not None and ep.name not in wanted and dist not in wanted:
                continue
            found |= {ep.name, dist}
            # The same distribution can be visible twice (e.g. an editable install next to a build dir).
            if (dist, ep.value) in seen:
                continue
            seen.add((dist, ep.value))
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party package must not break the others
                self._skip(dist, ep.name, f"skipped, it failed to import ({type(exc).__name__}: {exc})")
                continue
            self._register_plugin(module, _Source(dist, ep_version, ep.name))
        for missing in sorted((wanted or set()) - found):
            self._skip(missing, missing, f"{ENV_VAR} names it, but no installed plugin has that name")
        return self

    def register(self, plugin: ModuleType | object, name: str | None = None, distribution: str = "<local>") -> None:
        """Register an in-process plugin object or module (for notebooks and tests), then its components."""
        plugin_name = name or getattr(plugin, "__name__", type(plugin).__name__)
        if self._register_plugin(plugin, _Source(distribution, "local", plugin_name)):
            self._collect(only=plugin)

    def _register_plugin(self, plugin: object, source: _Source) -> bool:
        try:
            self.pm.register(plugin, name=f"{source.distribution}:{source.plugin}")
        except ValueError:
            return False  # already registered
        except Exception as exc:
            self._skip(source.distribution, source.plugin, f"skipped, it is not a valid plugin ({exc})")
            return False
        self._sources[id(plugin)] = source
        for caller in self.pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                # pluggy accepts unknown hook names silently; a typo would leave a plugin mysteriously inert.
                self._skip(source.distribution, source.plugin, f"unknown hook {caller.name} ignored")
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.hookwrapper or impl.wrapper):
                    impl.function = self._isolated(impl.function, _KIND_OF_HOOK[caller.name], caller.name, source)
        return True

    def _isolated(self, function: Callable[..., Any], kind: str, hook: str, source: _Source) -> Callable[..., Any]:
        """``function`` run with its own staging area: its components count only if it returns normally."""

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            staged: list[tuple[str, Any]] = []
            token = _staging.set((kind, staged, source))
            try:
                result = function(*args, **kwargs)
            except Exception as exc:  # isolate: this plugin's components are dropped, the others stay
                self._skip(
                    source.distribution,
                    source.plugin,
                    f"{hook} raised {type(exc).__name__}: {exc}; its components are skipped",
                )
                return None
            finally:
                _staging.reset(token)
            for name, component in staged:
                self._add(kind, name, component, source)
            return result

        return call

    def _skip(self, dist: str, plugin: str, why: str) -> None:
        self.skipped.append((dist, why))
        warnings.warn(f"attn-plugins: plugin {plugin!r} of distribution {dist!r}: {why}", PluginWarning, stacklevel=3)

    def collect(self) -> PluginRegistry:
        """Call every registration hook through pluggy and index the components."""
        self._collect(only=None)
        return self

    def _collect(self, only: object | None) -> None:
        for hook_name in hookspecs.HOOKS_BY_KIND.values():
            if only is None:
                getattr(self.pm.hook, hook_name)(register=_register)
            else:
                others = [p for p in self.pm.get_plugins() if p is not only]
                self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=_register)

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

    def source(self, kind: str, name: str) -> PluginInfo:
        """Where the component ``name`` of ``kind`` comes from (for error messages that blame a plugin)."""
        self.get(kind, name)
        src = self._components[kind][name][1]
        return PluginInfo(kind, name, src.distribution, src.version, src.plugin)

    def is_builtin(self, kind: str, name: str) -> bool:
        """Whether the component comes from attn-plugins itself (not a third-party or in-process plugin)."""
        return self.source(kind, name).distribution == DISTRIBUTION

    def blame(self, kind: str, name: str) -> str:
        """How an error names a component and where it comes from: ``method 'x' of plugin 'p' (distribution 'd' 1.0)``."""
        info = self.source(kind, name)
        version = f" {info.version}" if info.version not in ("", "local", "unknown") else ""
        return f"{kind} {name!r} of plugin {info.plugin!r} (distribution {info.distribution!r}{version})"

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self._components[kind])

    def components(self, kind: str) -> dict[str, Any]:
        """Name to component, for one kind."""
        return {name: comp for name, (comp, _) in self._components[kind].items()}

    def infos(self) -> PluginList:
        """Every component with its kind, name, distribution and version."""
        out = PluginList()
        for kind, comps in self._components.items():
            for name, (_, src) in sorted(comps.items()):
                out.append(PluginInfo(kind, name, src.distribution, src.version, src.plugin))
        return out


_lock = threading.Lock()
_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry: the built-ins, then the entry points, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = PluginRegistry().load_builtins().load_entry_points().collect()
        return _registry


def reload_plugins() -> PluginRegistry:
    """Forget the loaded plugins and load them again (after installing a plugin or changing the setting)."""
    global _registry
    with _lock:
        _registry = None
    return get_registry()


def register_plugin(plugin: ModuleType | object, name: str | None = None) -> None:
    """Register an in-process plugin (a module or object with hook implementations)."""
    get_registry().register(plugin, name=name)


def plugins() -> PluginList:
    """Every registered adapter, method, view and metric, with its source distribution."""
    return get_registry().infos()


def get_component(kind: str, name: str) -> Any:
    """Look up a component by kind (``adapter``, ``method``, ``view``, ``metric``) and name."""
    return get_registry().get(kind, name)
