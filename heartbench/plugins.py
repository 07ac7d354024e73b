"""Methods from outside the package: plugin files, modules and installed entry points.

A plugin is Python code that registers one or more :class:`heartbench.adapters.Method`
subclasses with ``@register("name")`` when it is imported. It comes from one of:

* a suite, ``[suite] plugins = ["path/to/my_method.py", "my_package.my_module"]``: a
  string ending in ``.py`` is a file (relative to the suite file), anything else a module
  name imported as usual (``sys.path``);
* the command line: ``methods --plugins FILE_OR_MODULE`` (repeatable);
* an installed distribution announcing it under the entry-point group
  :data:`ENTRY_POINT_GROUP` (``heartbench.methods``), loaded the first time the method
  registry is asked for a name it does not know, or listed (``methods``).

Each method a plugin registers carries its :class:`Plugin`: the module, the file and the
sha256 of the file's source. A run of a plugin method stores it in its record and hashes
the sha256 into its run id (:meth:`heartbench.suite.RunSpec.identity`), so editing the
plugin re-runs its runs. Only the plugin's own file is hashed, not files it imports.

Every mistake is one :class:`~heartbench.errors.UserError` naming the file: a file that
does not exist, an import that raises, a name another method has, a class that breaks the
interface (:func:`check_interface`), a plugin that registers nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heartbench.errors import UserError

ENTRY_POINT_GROUP = "heartbench.methods"


@dataclass(frozen=True)
class Plugin:
    """Where a plugin method comes from: stored in records, hashed into run ids.

    ``how`` is "file" (imported from ``file`` by path) or "module" (imported by ``module``
    name: a suite's module or an entry point); a fresh worker process imports it the same way.
    """

    module: str
    file: str
    sha256: str
    how: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @property
    def where(self) -> str:
        """What a one-line error names: the file, else the module."""
        return self.file or self.module


# method name -> the plugin that registered it (built-in methods are absent)
PLUGIN_OF: dict[str, Plugin] = {}
# resolved file (or module name) -> the plugin loaded from it in this process
_LOADED: dict[str, Plugin] = {}
_entry_points_loaded = False


def source_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plugin_of(method: str) -> Plugin | None:
    """The plugin that registered ``method`` (None: a built-in method)."""
    return PLUGIN_OF.get(method)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
def load_plugins(entries: list[Any], base: Path, where: str) -> list[Plugin]:
    """Import each of a suite's (or the command line's) plugin entries; ``base`` is the
    folder relative file paths start from, ``where`` prefixes a mistake in the list itself."""
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise UserError(f"{where} must be a list of file paths or module names, got {entries!r}")
    return [load_plugin(entry, base) for entry in entries]


def load_plugin(entry: str, base: Path = Path(".")) -> Plugin:
    """Import one plugin: a ``.py`` file (relative to ``base``) or a module name."""
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = (base / Path(entry).expanduser()).resolve()
        if not path.is_file():
            raise UserError(f"plugin {path} does not exist (named as {entry!r})")
        return _import_file(path)
    return _import_module(entry)


def _import_file(path: Path) -> Plugin:
    sha = source_sha256(path)
    key = str(path)
    loaded = _LOADED.get(key)
    if loaded is not None and loaded.sha256 == sha:
        return loaded
    name = f"heartbench_plugin_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    plugin = Plugin(module=name, file=key, sha256=sha, how="file")
    _forget(key)  # an edited file replaces its methods (same process: tests, notebooks)

    def execute() -> None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickle look the module up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise

    _register_from(plugin, execute)
    _LOADED[key] = plugin
    return plugin


def _import_module(name: str) -> Plugin:
    loaded = _LOADED.get(name)
    if loaded is not None:
        return loaded
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as err:
        raise UserError(f"plugin module {name!r} cannot be found: {err}") from None
    if spec is None:
        raise UserError(f"plugin module {name!r} cannot be found on sys.path (a .py file needs"
                        " its path, ending in .py)")
    file = spec.origin if spec.origin and Path(spec.origin).is_file() else ""
    plugin = Plugin(module=name, file=file, sha256=source_sha256(file) if file else "",
                    how="module")
    _register_from(plugin, lambda: importlib.import_module(name))
    _LOADED[name] = plugin
    return plugin


def _forget(key: str) -> None:
    """Unregister the methods an earlier version of the plugin at ``key`` registered."""
    from heartbench.adapters.base import METHODS

    for method, plugin in list(PLUGIN_OF.items()):
        if plugin.file == key or plugin.module == key:
            METHODS.pop(method, None)
            del PLUGIN_OF[method]
    _LOADED.pop(key, None)


def _register_from(plugin: Plugin, execute: Any) -> None:
    """Run ``execute`` (the import) and attribute the methods it registers to ``plugin``."""
    import heartbench.adapters  # noqa: F401  (built-in methods first: their names are taken)
    from heartbench.adapters.base import METHODS, MethodNameTaken

    before = set(METHODS)
    try:
        execute()
    except MethodNameTaken as err:
        _rollback(before)
        raise UserError(f"plugin {plugin.where}: {err}; rename the plugin's method") from None
    except UserError as err:
        _rollback(before)
        raise UserError(f"plugin {plugin.where}: {err}") from None
    except BaseException as err:  # noqa: BLE001 - any failure of user code is one line
        _rollback(before)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise UserError(f"plugin {plugin.where} failed to import: {_where_in(err, plugin)}"
                        f"{type(err).__name__}: {err}") from None
    added = sorted(set(METHODS) - before)
    if not added:
        raise UserError(f"plugin {plugin.where} registers no method (decorate a Method subclass"
                        " with @register('name') from heartbench.adapters)")
    try:
        for name in added:
            check_interface(METHODS[name])
    except UserError as err:
        _rollback(before)
        raise UserError(f"plugin {plugin.where}: {err}") from None
    for name in added:
        PLUGIN_OF[name] = plugin


def _where_in(err: BaseException, plugin: Plugin) -> str:
    """'line N: ' of the plugin's own frame in ``err``'s traceback, or ''."""
    line = None
    tb = err.__traceback__
    while tb is not None:
        if plugin.file and tb.tb_frame.f_code.co_filename == plugin.file:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(err, SyntaxError) and err.lineno:
        line = err.lineno
    return f"line {line}: " if line else ""


def _rollback(before: set[str]) -> None:
    from heartbench.adapters.base import METHODS

    for name in set(METHODS) - before:
        del METHODS[name]


def check_interface(cls: Any) -> None:
    """One-line UserError when a registered class cannot work as a method: not a
    ``Method``, a config that is not a ``MethodConfig`` dataclass with a default for every
    field, no ``attach`` (or, for a ``QKVMethod``, no ``make_delta`` or ``targets``)."""
    from heartbench.adapters.base import Method, MethodConfig, QKVMethod

    name = getattr(cls, "name", "") or getattr(cls, "__name__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"method {name!r} is {cls!r}, not a subclass of heartbench.adapters.Method")
    config_cls = cls.config_cls
    if not (isinstance(config_cls, type) and issubclass(config_cls, MethodConfig)
            and dataclasses.is_dataclass(config_cls)):
        raise UserError(f"method {name!r}: config_cls must be a @dataclass subclass of"
                        f" heartbench.adapters.MethodConfig, got {config_cls!r}")
    try:
        config = config_cls()
    except Exception as err:  # noqa: BLE001 - the user's dataclass
        raise UserError(f"method {name!r}: {config_cls.__name__}() must build with defaults"
                        f" (every field needs one): {type(err).__name__}: {err}") from None
    if issubclass(cls, QKVMethod):
        if cls.make_delta is QKVMethod.make_delta:
            raise UserError(f"method {name!r}: a QKVMethod must implement make_delta(d_in, d_out)")
        if not isinstance(getattr(config, "targets", None), str):
            raise UserError(f"method {name!r}: a QKVMethod's config needs a str field 'targets'"
                            " (e.g. 'qv')")
    elif cls.attach is Method.attach:
        raise UserError(f"method {name!r} must implement attach(self, backbone)")


def load_entry_points() -> list[Plugin]:
    """Import every installed plugin announced under :data:`ENTRY_POINT_GROUP` (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    plugins = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":")[0].strip()
        try:
            plugins.append(_import_module(module))
        except UserError as err:
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            raise UserError(f"entry point {ep.name!r} of {dist} ({ENTRY_POINT_GROUP}): {err}") \
                from None
    return plugins


# ---------------------------------------------------------------------------
# Workers: import what a planned run needs, as it was planned
# ---------------------------------------------------------------------------
def ensure_plugin(stored: dict[str, Any] | None) -> None:
    """Import the plugin a RunSpec or record names (a fresh worker, ``check --reproduce``,
    ``figure5``) and check that its source is the one the run was planned with."""
    if not stored:
        return
    if stored.get("how") == "file":
        plugin = load_plugin(stored["file"])
    else:
        _reach(stored["module"], stored.get("file") or "")
        plugin = _import_module(stored["module"])
    if stored.get("sha256") and plugin.sha256 != stored["sha256"]:
        raise UserError(f"plugin {plugin.where} changed since this run was planned (sha256"
                        f" {stored['sha256'][:12]} -> {plugin.sha256[:12]}); run the suite again"
                        " to plan it with the new source")


def _reach(module: str, file: str) -> None:
    """Make ``module`` importable in a worker whose ``sys.path`` lacks the folder it was
    found in when the run was planned (a package beside the suite, not installed)."""
    if not file or importlib.util.find_spec(module.split(".")[0]) is not None:
        return
    path = Path(file)
    parts = len(module.split("."))
    root = path.parents[parts] if path.name == "__init__.py" else path.parents[parts - 1]
    sys.path.append(str(root))
