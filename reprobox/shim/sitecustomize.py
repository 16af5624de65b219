"""Install the reprobox seeding shim at interpreter start, then run the sitecustomize we shadow.

Found by `site` because reprobox puts this folder first on PYTHONPATH. Standard library only,
Python 3.8+. Debian's python ships its own sitecustomize further down sys.path; it is chained
to so that putting reprobox in front changes nothing else.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: this module loads in every process
    from types import ModuleType


def _report(where: str, exc: BaseException) -> None:
    shim = sys.modules.get("reprobox_shim")
    if shim is not None:  # it reports once per process, whoever failed
        shim.report(where, exc)
        return
    import contextlib

    with contextlib.suppress(Exception):  # stderr may be closed
        sys.stderr.write(f"reprobox shim: {where} failed ({type(exc).__name__}: {exc}); "
                         "the program continues without it\n")


def _install_shim() -> None:
    if "REPROBOX_SEED" not in os.environ:  # not under reprobox: cost nothing
        return
    try:
        import importlib

        importlib.import_module("reprobox_shim").install()
    except Exception as exc:  # noqa: BLE001 - the user's program must go on
        _report("loading reprobox_shim", exc)


def _same_dir(entry: str, here: str) -> bool:
    try:
        return os.path.realpath(entry or os.curdir) == here
    except (OSError, ValueError):
        return False


def _import_shadowed(here: str) -> ModuleType | None:
    """Import the next `sitecustomize` on sys.path with our folder hidden; None if there is none."""
    saved_path = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if not _same_dir(entry, here)]
    try:
        import importlib

        return importlib.import_module("sitecustomize")  # the next one down the path
    except ImportError as exc:
        if exc.name != "sitecustomize":
            _report("the chained sitecustomize", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - site.py would only have printed it too
        _report("the chained sitecustomize", exc)
        return None
    finally:
        sys.path[:] = saved_path


def _chain() -> None:
    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    ours = sys.modules.pop("sitecustomize", None)
    shadowed = _import_shadowed(here)
    if shadowed is None or shadowed is ours:
        sys.modules.pop("sitecustomize", None)
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_install_shim()
_chain()
