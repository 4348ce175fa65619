"""The backend registry: every ``ops_<name>.py`` in this folder is a backend, found by name.

Installed as ``microconv.backends``. Nothing here touches hardware at import time: a backend
module is imported, and its device opened, only when it is asked for.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from microconv.errors import BackendError

_instances = {}
_user_factories = {}


def names():
    """Every backend this installation knows, usable or not."""
    modules = pkgutil.iter_modules(__path__)
    found = [m.name[len("ops_"):] for m in modules if m.name.startswith("ops_")]
    preferred = ["python", "numpy", "opencl"]
    ordered = [n for n in preferred if n in found] + sorted(n for n in found if n not in preferred)
    return ordered + [n for n in _user_factories if n not in ordered]


def register(name, factory):
    """Add a backend from user code: ``factory(**options)`` returns a Backend object."""
    _user_factories[name] = factory
    _instances.pop(name, None)


def _module(name):
    if name not in names():
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.ops_{name}")


def options(name):
    """The names of the options a backend takes (for example ``device``)."""
    factory = _user_factories.get(name) or _module(name).create
    return tuple(p for p in inspect.signature(factory).parameters
                 if p not in ("args", "kwargs"))


def unavailable_reason(name):
    """None when the backend can run here, otherwise one sentence saying why not."""
    if name in _user_factories:
        return None
    try:
        return _module(name).unavailable_reason()
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken driver must not break the listing
        return f"{type(exc).__name__}: {exc}"


def available():
    """The names of the backends that can run on this machine."""
    return [n for n in names() if unavailable_reason(n) is None]


def get(name, **options):
    """The backend object for a name, created once per set of options."""
    key = (name, tuple(sorted(options.items())))
    if key not in _instances:
        if name in _user_factories:
            _instances[key] = _user_factories[name](**options)
        else:
            # create() raises a BackendError with the whole story (what is missing, how to get
            # it) when the backend cannot run here
            module = _module(name)
            try:
                _instances[key] = module.create(**options)
            except TypeError:
                raise BackendError(f"backend '{name}' does not take the options "
                                   f"{', '.join(options) or '(none)'}") from None
    return _instances[key]


def resolve(backend, **options):
    """The backend object for a name (see ``get``), or the object itself when given one (a
    Backend, or anything with its primitives, such as a wrapper that times them)."""
    if isinstance(backend, str):
        return get(backend, **options)
    if callable(getattr(backend, "from_numpy", None)) and not options:
        return backend
    raise BackendError(f"a backend is a name ({', '.join(names())}) or a backend object, "
                       f"not {type(backend).__name__}" + (" with options" if options else ""))
