"""Decorators for worker methods, and the same wrapping applied from outside (wrapt).

Where the batch's requests, the accepted and proposed counts and the batch attributes come from is
given per hook, as a callable `(instance, args, kwargs[, result])` or as a dotted path rooted at
`self`, `result` or one of the method's parameter names ("batch.reqs", "result.accepted",
"self.num_steps"). Defaults: requests are the `.reqs` of the first argument that has one (or the
first argument if it is a list or tuple); for spec_verify, `result.accepted_tokens` and
`result.proposed_tokens` when the result has them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import weakref
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

import wrapt

from ..stages import RequestStage, StageConfig, get_stage
from . import hotpath
from .hotpath import make_stage_core, make_stage_wrapper, make_traced_function

Spec = str | Callable | None


def _all_params(fn: Callable) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _takes_self(fn: Callable) -> bool:
    names = _all_params(fn)
    return bool(names) and names[0] in ("self", "cls")


def _param_names(fn: Callable) -> list[str]:
    # Wrappers see a method's args without self.
    names = _all_params(fn)
    return names[1:] if _takes_self(fn) else names


def _path_getter(spec: str, params: list[str], with_result: bool):
    root, _, rest = spec.partition(".")
    tail = attrgetter(rest) if rest else (lambda obj: obj)
    if root == "self":
        return lambda instance, args, kwargs, result=None: tail(instance)
    if root == "result":
        if not with_result:
            raise ValueError(
                f"{spec!r}: the result is not known before the call; use self or a parameter name"
            )
        return lambda instance, args, kwargs, result=None: tail(result)
    if root not in params:
        raise ValueError(
            f"{spec!r}: {root!r} is not self, result or a parameter "
            f"(parameters: {', '.join(params) or 'none'})"
        )
    index = params.index(root)

    def get(instance, args, kwargs, result=None):
        return tail(args[index] if index < len(args) else kwargs[root])

    return get


def _getter(spec: Spec, params: list[str], with_result: bool, what: str):
    if spec is None:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, str):
        return _path_getter(spec, params, with_result)
    raise TypeError(f"{what}={spec!r}: use a callable or a dotted path string")


def _default_reqs(instance, args, kwargs):
    for value in (*args, *kwargs.values()):
        reqs = getattr(value, "reqs", None)
        if reqs is not None:
            return reqs
    if args and isinstance(args[0], (list, tuple)):
        return args[0]
    raise LookupError("no argument with .reqs")


def _build_core(
    stage: StageConfig,
    fn: Callable,
    reqs: Spec,
    accepted: Spec,
    proposed: Spec,
    attrs: Mapping[str, Spec] | None,
):
    params = _param_names(fn)
    get_reqs = _getter(reqs, params, False, "reqs") or _default_reqs
    get_acc = _getter(accepted, params, True, "accepted")
    get_prop = _getter(proposed, params, True, "proposed")
    is_verify = stage == RequestStage.SPEC_VERIFY
    if is_verify and get_acc is None and get_prop is not None:
        get_acc = _optional(_getter("result.accepted_tokens", params, True, ""))
    if is_verify and get_prop is None and get_acc is not None:
        get_prop = _optional(_getter("result.proposed_tokens", params, True, ""))
    attr_getters = tuple(
        (name, _getter(spec, params, True, f"attrs[{name!r}]"))
        for name, spec in (attrs or {}).items()
    )

    if len(attr_getters) == 1:  # the usual case, without a comprehension's call (~0.1 us)
        ((name, get),) = attr_getters

        def get_attrs(instance, args, kwargs, result):
            return {name: get(instance, args, kwargs, result)}
    else:

        def get_attrs(instance, args, kwargs, result):
            return {name: get(instance, args, kwargs, result) for name, get in attr_getters}

    return make_stage_core(
        stage,
        get_reqs,
        get_acc,
        get_prop,
        get_attrs if attr_getters else None,
        default_reqs=reqs is None,
        default_counts=is_verify and accepted is None and proposed is None,
    )


def _optional(get):
    def safe(instance, args, kwargs, result=None):
        try:
            return get(instance, args, kwargs, result)
        except AttributeError:
            return None

    return safe


def trace_stage(
    stage: StageConfig | str,
    *,
    reqs: Spec = None,
    accepted: Spec = None,
    proposed: Spec = None,
    attrs: Mapping[str, Spec] | None = None,
) -> Callable[[Callable], Callable]:
    """Decorate a worker method so each call records `stage` for its batch: one span per request,
    from the call's start to its return. With tracing off the call costs one flag read more.

    `attrs` maps span attribute names to getters, evaluated after the call (e.g. the draft width
    in force: `{"spec_decode.num_steps": "self.num_steps"}`).
    """

    def decorate(fn: Callable) -> Callable:
        config = get_stage(stage)
        core = _build_core(config, fn, reqs, accepted, proposed, attrs)
        traced = make_traced_function(fn, config, core, _takes_self(fn))
        return _StageMethod(fn, traced) if _takes_self(fn) else traced

    return decorate


# owner class -> {method name: (plain function, traced function)}: what @trace_stage put on
# classes. While tracing is off the class holds the plain function, so a disabled hook costs
# exactly a plain call; enable() swaps in the traced one, shutdown() swaps it back.
_decorated: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _StageMethod:
    """What @trace_stage returns for a method: on class creation (__set_name__) it registers
    itself and leaves the plain or the traced function on the class, by the tracing state."""

    def __init__(self, fn: Callable, traced: Callable):
        self.fn, self.traced = fn, traced
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        _decorated.setdefault(owner, {})[name] = (self.fn, self.traced)
        setattr(owner, name, self.traced if hotpath.LEVEL else self.fn)

    # Used only if the descriptor ends up somewhere __set_name__ never ran.
    def __get__(self, instance, owner=None):
        return self.traced.__get__(instance, owner)

    def __call__(self, *args, **kwargs):
        return self.traced(*args, **kwargs)


def _swap_decorated(on: bool) -> None:
    for owner, methods in list(_decorated.items()):
        for name, (fn, traced) in methods.items():
            setattr(owner, name, traced if on else fn)


hotpath._toggle_listeners.append(_swap_decorated)


def _import_owner(path: str) -> tuple[Any, str]:
    """The module a "pkg.mod.Class.method" or "pkg.mod:Class.method" path starts with, and the
    qualified name inside it."""
    if ":" in path:
        module_name, qualname = path.split(":", 1)
        return importlib.import_module(module_name), qualname
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            return importlib.import_module(".".join(parts[:cut])), ".".join(parts[cut:])
        except ImportError:
            continue
    raise ValueError(f"cannot import a module from {path!r}")


def _resolve(target: type | str, method: str | None) -> tuple[Any, str]:
    """(owner, attribute name) from a class + method name or an import path."""
    if isinstance(target, str):
        module, qualname = _import_owner(target)
        if method is not None:
            qualname = f"{qualname}.{method}"
        owner_path, _, name = qualname.rpartition(".")
        return (attrgetter(owner_path)(module) if owner_path else module), name
    if method is None:
        raise ValueError(f"instrument_method({target!r}): name the method to wrap")
    return target, method


_MISSING = object()
# (owner, name) -> the owner's own attribute before wrapping (_MISSING if it was inherited).
_originals: dict[tuple[Any, str], Any] = {}


def _is_ours(owner: Any, name: str, attr: Any) -> bool:
    # A wrapt proxy around one of our wrappers, or a method @trace_stage registered.
    if isinstance(owner, type) and name in _decorated.get(owner, {}):
        return True
    wrapper = getattr(attr, "_self_wrapper", attr)
    return getattr(wrapper, "_spec_tracing_stage", None) is not None


def instrument_method(
    target: type | str,
    method: str | None = None,
    *,
    stage: StageConfig | str,
    reqs: Spec = None,
    accepted: Spec = None,
    proposed: Spec = None,
    attrs: Mapping[str, Spec] | None = None,
) -> bool:
    """Wrap a method of a class you cannot edit, as `trace_stage` would. `target` is a class
    (with `method`) or an import path ("pkg.mod.Class.method" or "pkg.mod:Class.method").
    Returns False if it was already wrapped by spec-tracing (wrapping is idempotent)."""
    owner, name = _resolve(target, method)
    current = inspect.getattr_static(owner, name)
    if _is_ours(owner, name, current):
        return False
    fn = getattr(owner, name)
    config = get_stage(stage)
    wrapper = make_stage_wrapper(config, _build_core(config, fn, reqs, accepted, proposed, attrs))
    _originals[(owner, name)] = vars(owner).get(name, _MISSING)
    wrapt.wrap_function_wrapper(owner, name, wrapper)
    return True


def uninstrument_method(target: type | str, method: str | None = None) -> bool:
    """Undo `instrument_method`; the class is left exactly as it was. False if not wrapped."""
    owner, name = _resolve(target, method)
    current = inspect.getattr_static(owner, name)
    if (owner, name) not in _originals or not _is_ours(owner, name, current):
        return False  # not wrapped, or wrapped by @trace_stage in the class itself
    original = _originals.pop((owner, name), _MISSING)
    if original is _MISSING:  # it was inherited: remove what wrapping put on the class
        delattr(owner, name)
    else:
        setattr(owner, name, original)
    return True
