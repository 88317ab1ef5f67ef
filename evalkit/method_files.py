"""Methods from one ``.py`` file: ``--methods ./my_method.py:MyAdapter`` or ``--methods ./my_method.py:stylize``.

An adapter class is used as it is; a plain function ``stylize(content, style, **params) -> image`` is wrapped in an
adapter whose parameters are the function's keyword arguments with defaults. Either way the method's version carries
the file's sha256, so its job keys change when the code changes and resume never mixes outputs of two versions.

Worker processes (isolated executor, Ray actors) import the same file: the driver's
:class:`~evalkit.worker.WorkerConfig` carries ``method_files`` (method name -> absolute path and attribute), and
:func:`register` runs there before the first job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.adapter import MethodAdapter, Param
from evalkit.errors import EvalkitError, UnknownMethodError

FILE_SELECTOR = re.compile(
    r"^\s*(?P<path>[^\[\]:]+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(?P<weights>[A-Za-z0-9_.\-]+)\s*\])?\s*$"
)

_registered: dict[str, type[MethodAdapter]] = {}  # method name -> adapter class, in this process
_sources: dict[str, tuple[str, str]] = {}  # method name -> (absolute path, attribute), for worker processes


def is_file_selector(text: str) -> bool:
    return FILE_SELECTOR.match(text) is not None


def registered(name: str) -> type[MethodAdapter] | None:
    return _registered.get(name)


def sources() -> dict[str, tuple[str, str]]:
    """``method name -> (path, attribute)`` of every file method loaded in this process (for worker configs)."""
    return dict(_sources)


def load_selector(text: str) -> tuple[type[MethodAdapter], str | None]:
    """The adapter class of a file selector and the weight set it names (``None``: the default)."""
    match = FILE_SELECTOR.match(text)
    if match is None:
        raise UnknownMethodError(f"cannot parse method selector '{text}': write ./FILE.py:NAME")
    return register(match.group("path"), match.group("attr")), match.group("weights")


def register(path: str | Path, attr: str) -> type[MethodAdapter]:
    """Import ``attr`` from the file at ``path`` (once per file content) and register it as a method."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise UnknownMethodError(f"method file {path} does not exist: give the path of a .py file, e.g. ./my_method.py")
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    module_name = f"evalkit_file_{re.sub(r'[^A-Za-z0-9_]', '_', file.stem)}_{digest}"
    module = sys.modules.get(module_name) or _import(file, module_name)
    if not hasattr(module, attr):
        found = [n for n, v in vars(module).items() if _usable(v) and not n.startswith("_")]
        raise UnknownMethodError(
            f"{path} has no '{attr}': define a MethodAdapter subclass or a function stylize(content, style, **params)"
            f" there (it defines: {', '.join(found) or 'nothing usable'})"
        )
    cls = adapter_for(getattr(module, attr), default_name=f"{file.stem}:{attr}", version=f"file-{digest}")
    _registered[cls.name] = cls
    _sources[cls.name] = (str(file), attr)
    return cls


def register_object(obj: Any) -> type[MethodAdapter]:
    """An adapter class or a function given in Python (``evalkit.evaluate(methods=[fn])``): through its module's file
    when it has one (so worker processes can import it, and keys are those of ``--methods FILE.py:NAME``), else - a
    notebook cell, the script being run - in this process only, named ``python:NAME`` and versioned by its source."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    name = getattr(obj, "__name__", None)
    importable = module is not None and module.__name__ != "__main__"  # re-importing a script would rerun it
    if importable and file and name and str(file).endswith(".py") and getattr(module, name, None) is obj:
        return register(file, name)
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = repr(getattr(obj, "__code__", obj))
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    cls = adapter_for(obj, default_name=f"python:{name or 'method'}", version=f"python-{digest}")
    _registered[cls.name] = cls
    return cls


def _import(file: Path, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise EvalkitError(f"cannot import {file}: is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EvalkitError(f"method file {file} failed to import ({type(exc).__name__}: {first})") from exc
    return module


def _usable(value: Any) -> bool:
    return (isinstance(value, type) and issubclass(value, MethodAdapter) and value is not MethodAdapter) or (
        inspect.isfunction(value)
    )


def adapter_for(obj: Any, default_name: str, version: str) -> type[MethodAdapter]:
    """``obj`` itself when it is an adapter class (its version gains the file's digest), else a function wrapper."""
    if isinstance(obj, type) and issubclass(obj, MethodAdapter):
        name = getattr(obj, "name", None) or default_name
        return type(obj.__name__, (obj,), {"name": name, "version": f"{obj.version}+{version}"})
    if not callable(obj):
        raise EvalkitError(f"{default_name} is neither a MethodAdapter subclass nor a function")
    return function_adapter(obj, default_name, version)


def function_adapter(fn: Callable[..., Any], name: str, version: str) -> type[MethodAdapter]:
    """An adapter around ``fn(content, style, **params)``: its keyword arguments with defaults are the method's
    parameters (``--param NAME.k=v``); a ``seed`` argument makes it seed-dependent; it may return a tensor (1, 3, H, W)
    or (3, H, W) in [0, 1], a numpy array (H, W, 3) in [0, 1] or [0, 255], or a PIL image."""
    signature = inspect.signature(fn)
    takes_seed = "seed" in signature.parameters
    params = {
        p.name: Param(p.default, "a keyword argument of the function")
        for p in list(signature.parameters.values())[2:]
        if p.default is not inspect.Parameter.empty and p.name != "seed"
    }

    def stylize(self, content, style, masks=None, seed=0, **values):
        extra = {"seed": seed} if takes_seed else {}
        return as_image_tensor(fn(content, style, **values, **extra), content.device)

    attrs = {
        "name": name,
        "kind": "artistic",
        "version": version,
        "params": params,
        "deterministic": not takes_seed,
        "stylize": stylize,
        "__doc__": inspect.getdoc(fn) or f"the function {name}",
    }
    return type(f"FunctionAdapter_{re.sub(r'[^A-Za-z0-9_]', '_', name)}", (MethodAdapter,), attrs)


def as_image_tensor(value: Any, device: torch.device) -> torch.Tensor:
    """A function's output as a (1, 3, H, W) float tensor on ``device``; one-line error for anything else."""
    from PIL import Image

    if isinstance(value, Image.Image):
        value = np.asarray(value.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(value, np.ndarray):
        array = value.astype(np.float32)
        if array.ndim == 3 and array.shape[-1] == 3:
            array = array.transpose(2, 0, 1)
        if array.max(initial=0.0) > 1.5:  # 0-255 values
            array = array / 255.0
        value = torch.from_numpy(np.ascontiguousarray(array))
    if not isinstance(value, torch.Tensor):
        raise EvalkitError(f"the method returned {type(value).__name__}: return a tensor, a numpy array or an image")
    tensor = value.to(device=device, dtype=torch.float32)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[:2] != (1, 3):
        raise EvalkitError(f"the method returned shape {tuple(value.shape)}: return (1, 3, H, W) or (3, H, W)")
    return tensor
