"""Backends by name: the entry-point group ``eventsnn.backends``.

A lab's package makes its chip available to `python -m calib` and the task runners by
declaring, in its own ``pyproject.toml``::

    [project.entry-points."eventsnn.backends"]
    mylab = "mylab_eventsnn:open_chip"

where ``open_chip(chip=None, **options) -> Backend`` opens the chip named `chip` (a
serial number, a board id; None: the default one) with backend-specific `options`
(strings from the command line's ``--option KEY=VALUE``, already parsed as numbers where
they look like numbers). eventsnn registers its mock the same way (``mock``). After
changing entry points, reinstall the package (``pip install -e .``) so that Python's
package metadata lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from .backend import Backend

GROUP = "eventsnn.backends"


class UnknownBackendError(ValueError):
    """No backend of that name is installed."""


def backend_names() -> list[str]:
    """The installed backends' names, sorted (without loading them)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def backend_factory(name: str) -> Callable[..., Backend]:
    """The factory registered as `name`; `UnknownBackendError` names the installed ones."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        installed = ", ".join(backend_names()) or "none"
        raise UnknownBackendError(
            f"unknown backend {name!r}; installed backends: {installed} (a backend package "
            f"registers itself under the entry-point group {GROUP!r})."
        )
    return found[0].load()


def open_backend(name: str, chip=None, **options) -> Backend:
    """Open chip `chip` of backend `name` with backend-specific `options`."""
    factory = backend_factory(name)
    backend = factory(**options) if chip is None else factory(chip=chip, **options)
    if not isinstance(backend, Backend):
        raise TypeError(
            f"backend {name!r}: its factory returned {type(backend).__name__}, not a "
            "eventsnn.hardware.Backend."
        )
    return backend


def parse_options(pairs) -> dict:
    """``["key=value", ...]`` to ``{key: value}``, values as int, float or bool where they
    read as one (else strings); `ValueError` names a malformed pair."""
    out = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"backend option {pair!r} must be KEY=VALUE.")
        out[key.strip().replace("-", "_")] = _value(text.strip())
    return out


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
