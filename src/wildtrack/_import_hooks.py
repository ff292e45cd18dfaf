"""Run code around the first import of a heavy module (TensorFlow, Keras) without importing it now.

``import wildtrack`` must stay cheap (the ONNX backend, ``--help`` and the data commands never need TensorFlow), yet
two things have to happen exactly when TensorFlow or Keras is imported by anyone: our Keras layers must be
registered (so ``keras.models.load_model("model.keras")`` finds them), and the CLI hides TensorFlow's start-up lines,
which its C++ logging writes to file descriptor 2 before any environment variable can silence them.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any


class _Loader(importlib.abc.Loader):
    """The real loader of the module, with ``around`` wrapped about its execution and ``after`` called after it."""

    def __init__(self, loader: Any, around: Callable[[], contextlib.AbstractContextManager] | None,
                 after: Callable[[], None] | None) -> None:
        self._loader, self._around, self._after = loader, around, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with self._around() if self._around else contextlib.nullcontext():
            self._loader.exec_module(module)
        if self._after:
            self._after()

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, resource readers...
        return getattr(self._loader, name)


class _Hook(importlib.abc.MetaPathFinder):
    """Finds ``name`` with the other finders, hands back its spec with a wrapping loader, then removes itself."""

    def __init__(self, name: str, around=None, after=None) -> None:
        self.name, self.around, self.after = name, around, after

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self.around, self.after)
                return spec
        return None


def on_import(name: str, *, around: Callable[[], contextlib.AbstractContextManager] | None = None,
              after: Callable[[], None] | None = None) -> None:
    """Wrap the first import of top-level module ``name`` in ``around()`` and call ``after()`` once it is done;
    if ``name`` is already imported, only ``after()`` runs, now."""
    if name in sys.modules:
        if after:
            after()
        return
    if not any(isinstance(f, _Hook) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook(name, around, after))


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null meanwhile: what C++ libraries print at load time goes nowhere.
    Python exceptions still propagate (they are raised, not printed)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
