"""Reading a trusted scikit-learn pickle with the names it may use narrowed down.

A pickle names the callables that rebuild it (`module.name` globals); an ordinary unpickler imports
and calls whatever it names, `os.system` included. Estimators need only a few kinds: classes of
scikit-learn, SciPy's sparse matrices, the XGBoost / LightGBM scikit-learn wrappers and boosters,
numpy arrays, dtypes and random states, Cython's own `__pyx_unpickle_*` rebuilders and plain
containers. Anything else is refused by name before it is imported. This narrows what a pickle can
do, it does not make an untrusted one safe (a permitted class's constructor still runs), hence the
--trust-pickle that must come first. Plain pickles and uncompressed joblib files are read.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from modelfleet.compile.errors import CompileError

_BUILTINS = frozenset(
    {"object", "slice", "range", "complex", "set", "frozenset", "bytearray", "bytes", "dict", "list",
     "tuple", "int", "float", "str", "bool"}
)  # fmt: skip
_FUNCTIONS = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),  # bytes in protocol 2 pickles
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol 5 pickles
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
    }
)
_CLASSES = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("xgboost.core", "Booster"),
        ("lightgbm.basic", "Booster"),
    }
)
# any class of these modules (not functions): estimators, their parts, bit generators, sparse matrices
_CLASS_MODULES = ("sklearn.", "xgboost.sklearn", "lightgbm.sklearn", "numpy.random.", "scipy.sparse.")
_NEVER = ("testing", "_testing", "datasets")  # module parts whose classes touch files or run code


def may_import(module: str, name: str) -> bool:
    """Whether the global `module.name` may be imported at all (importing runs module code)."""
    if (module, name) in _FUNCTIONS or (module, name) in _CLASSES:
        return True
    if module == "builtins":
        return name in _BUILTINS
    if any(part in _NEVER for part in module.split(".")):
        return False
    return any(module == p.rstrip(".") or module.startswith(p) for p in _CLASS_MODULES)


def allowed(module: str, name: str, found: Any) -> bool:
    """Whether the imported global may rebuild an estimator: named above, or a class (or Cython's
    rebuilder of one) of the estimator modules; never any other function."""
    if (module, name) in _FUNCTIONS or (module, name) in _CLASSES or module == "builtins":
        return True
    return isinstance(found, type) or name.startswith("__pyx_unpickle_")


def _check(module: str, name: str, find: Any) -> Any:
    if not may_import(module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")
    found = find(module, name)
    if not allowed(module, name, found):
        raise pickle.UnpicklingError(f"{module}.{name}")
    return found


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _check(module, name, super().find_class)


def load(path: Path) -> Any:
    """The estimator in a plain pickle or an uncompressed joblib file; CompileError naming a
    refused global, or a format that is not read."""
    with path.open("rb") as f:
        head = f.read(1)
        f.seek(0)
        if head != b"\x80":
            raise CompileError(
                f"{path.name} is not an uncompressed pickle (compressed joblib files are not read): "
                "save the model with pickle.dump, or joblib.dump without compress"
            )
        try:
            return _unpickler(path, f).load()
        except pickle.UnpicklingError as exc:
            raise CompileError(
                f"{path.name} calls {exc}, which a scikit-learn, XGBoost or LightGBM model does not need; "
                "refused even with --trust-pickle"
            ) from None
        except Exception as exc:
            raise CompileError(
                f"cannot unpickle {path.name}: {type(exc).__name__}: {str(exc)[:300]}"
            ) from None


def _unpickler(path: Path, f: Any) -> Any:
    """joblib's unpickler (arrays stored beside the pickle stream) when joblib wrote the file,
    narrowed the same way; the standard one otherwise."""
    if path.suffix != ".joblib":
        return _Restricted(f)
    from joblib.numpy_pickle import NumpyUnpickler  # type: ignore[import-untyped]

    class RestrictedJoblib(NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            return _check(module, name, super().find_class)

    import inspect

    # joblib >= 1.5 takes ensure_native_byte_order; earlier versions do not
    native = "ensure_native_byte_order" in inspect.signature(NumpyUnpickler.__init__).parameters
    return RestrictedJoblib(path.name, f, **({"ensure_native_byte_order": True} if native else {}))
