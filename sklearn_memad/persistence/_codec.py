"""Fitted estimators as JSON plus named arrays, and back, without pickle.

An estimator becomes ``{"__type__": "estimator", "class": name, "params": {...},
"state": {...}}``: its constructor parameters and the rest of its ``__getstate__()``, both
encoded recursively. JSON holds ``None``, ``bool``, ``int``, ``str``, finite ``float`` and lists
as themselves; everything else is an object tagged by ``"__type__"``: ``tuple``, ``dict`` (keys
that are not strings), ``float`` (nan and infinities), ``scalar`` (a NumPy scalar and its
dtype), ``array`` (a reference to a named array, with its dtype and shape), ``strings`` (an
array of str, such as category names, its items in the JSON: safetensors holds numbers only),
``sparse`` (a SciPy CSR or CSC matrix as three arrays), ``random_state``, ``path`` and ``ref``
(an object already written at another path: shared objects stay shared).

Decoding builds estimators only from the classes it is given, by name; no name read from a
file is ever imported, and nothing in a file is executed.
"""

import inspect
import math
import os
from pathlib import Path

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator

__all__ = ["ARRAY_DTYPES", "Decoder", "Encoder", "ModelFileError"]

TAG = "__type__"

#: The dtypes an array or a NumPy scalar may have in a model file.
ARRAY_DTYPES = frozenset(
    np.dtype(name).name
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
)
_SPARSE = {
    (scipy.sparse.csr_matrix, "csr", True),
    (scipy.sparse.csc_matrix, "csc", True),
    (scipy.sparse.csr_array, "csr", False),
    (scipy.sparse.csc_array, "csc", False),
}
# The JSON value each kind of NumPy scalar is written as.
_SCALAR_VALUES = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float)}
_PLAIN = "arrays, numbers, strings, None, lists, tuples, dicts and the estimators listed"


class ModelFileError(ValueError):
    """A model file cannot be used: it is not a sklearn_memad model, or not a compatible one."""


class Encoder:
    """Turn a value into JSON, collecting its arrays in ``tensors`` (name -> C-ordered array).

    Parameters
    ----------
    classes : dict of str to type
        The estimator classes that may be written, by the name the file records.
    arrays : bool, default=True
        Whether arrays (and so estimators) may be written; False for plain metadata.
    """

    def __init__(self, classes, *, arrays=True):
        self._names = {cls: name for name, cls in classes.items()}
        self.tensors = {} if arrays else None
        self._seen = {}
        # Ids are only unique among live objects: keep every encoded object alive.
        self._alive = []

    def encode(self, value, path):
        """The JSON of ``value``; ``path`` names it in messages and array names."""
        if value is None or type(value) in (bool, int, str):
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {TAG: "float", "value": repr(value)}
        if type(value) is list:
            return [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if type(value) is tuple:
            return {TAG: "tuple", "items": self.encode(list(value), path)}
        if type(value) is dict:
            return self._dict(value, path)
        if isinstance(value, np.generic):
            return self._scalar(value, path)
        if isinstance(value, os.PathLike):
            return {TAG: "path", "value": os.fspath(value)}
        return self._shared(value, path)

    def _dict(self, value, path):
        if all(type(key) is str for key in value) and TAG not in value:
            return {key: self.encode(item, f"{path}[{key!r}]") for key, item in value.items()}
        items = [
            [self.encode(key, f"{path}<key {i}>"), self.encode(item, f"{path}[{i}]")]
            for i, (key, item) in enumerate(value.items())
        ]
        return {TAG: "dict", "items": items}

    def _scalar(self, value, path):
        if value.dtype.name not in ARRAY_DTYPES:
            raise TypeError(
                f"{path} is a NumPy scalar of dtype {value.dtype}, which a model file cannot "
                f"hold; expected one of {sorted(ARRAY_DTYPES)}."
            )
        return {TAG: "scalar", "dtype": value.dtype.name, "value": self.encode(value.item(), path)}

    def _shared(self, value, path):
        """Objects with an identity: written once, referred to wherever they appear again."""
        kind = type(value)
        if self.tensors is None:
            raise TypeError(
                f"{path} is a {kind.__module__}.{kind.__qualname__}; metadata holds plain "
                "values only (numbers, strings, None, lists, tuples, dicts)."
            )
        if id(value) in self._seen:
            return {TAG: "ref", "path": self._seen[id(value)]}
        if isinstance(value, BaseEstimator):
            write = self._estimator
        elif type(value) in (np.ndarray, np.memmap) and value.dtype.kind == "U":
            write = self._strings
        elif type(value) in (np.ndarray, np.memmap):
            write = self._array
        elif type(value) is np.random.RandomState:
            write = self._random_state
        elif any(type(value) is kind for kind, _, _ in _SPARSE):
            write = self._sparse
        else:
            raise TypeError(
                f"{path} is a {kind.__module__}.{kind.__qualname__}, which a model file cannot "
                f"hold; a model file holds {_PLAIN} in sklearn_memad.persistence."
            )
        self._seen[id(value)] = path
        self._alive.append(value)
        return write(value, path)

    def _array(self, value, path):
        if value.dtype.name not in ARRAY_DTYPES:
            raise TypeError(
                f"{path} is an array of dtype {value.dtype}, which a model file cannot hold; "
                f"expected one of {sorted(ARRAY_DTYPES)}."
            )
        # Native byte order, C order; astype, as ascontiguousarray makes 0-d arrays 1-d.
        self.tensors[path] = value.astype(value.dtype.newbyteorder("="), order="C", copy=False)
        return {TAG: "array", "key": path, "dtype": value.dtype.name, "shape": list(value.shape)}

    def _estimator(self, value, path):
        name = self._names.get(type(value))
        if name is None:
            kind = type(value)
            raise TypeError(
                f"{path} is a {kind.__module__}.{kind.__qualname__}, which is not among the "
                f"estimators a model file may hold: {sorted(self._names.values())}."
            )
        params = value.get_params(deep=False)
        state = dict(value.__getstate__())
        # Recorded once for the whole file: the state does not depend on it.
        state.pop("_sklearn_version", None)
        for key, param in params.items():
            if key in state and state[key] is param:
                del state[key]
        return {
            TAG: "estimator",
            "class": name,
            "params": {key: self.encode(item, f"{path}.{key}") for key, item in params.items()},
            "state": {key: self.encode(item, f"{path}.{key}") for key, item in state.items()},
        }

    def _strings(self, value, path):
        # A string array comes back as wide as its longest item (numpy's own choice).
        return {TAG: "strings", "shape": list(value.shape), "items": value.ravel().tolist()}

    def _random_state(self, value, path):
        return {TAG: "random_state", "state": self.encode(value.get_state(), path)}

    def _sparse(self, value, path):
        _, layout, matrix = next(spec for spec in _SPARSE if type(value) is spec[0])
        parts = {key: getattr(value, key) for key in ("data", "indices", "indptr")}
        return {
            TAG: "sparse",
            "format": layout,
            "matrix": matrix,
            "shape": list(value.shape),
            **{key: self._array(part, f"{path}.{key}") for key, part in parts.items()},
        }


def _fail(path, message):
    return ModelFileError(f"{path}: {message}")


def _field(node, name, kinds, path):
    """``node[name]``, checked to be of one of the JSON ``kinds``."""
    value = node.get(name)
    if type(value) not in kinds:
        expected = " or ".join(kind.__name__ for kind in kinds)
        raise _fail(path, f"a {node[TAG]!r} entry needs '{name}' as {expected}; got {value!r}.")
    return value


class Decoder:
    """Rebuild values from the JSON of :class:`Encoder` and the arrays of an open file.

    Parameters
    ----------
    classes : dict of str to type
        The only estimator classes that may be built, by name.
    tensors : safetensors handle or None
        The open file (``keys()``, ``get_tensor(key)``); None where no array may appear.
    """

    def __init__(self, classes, tensors=None):
        self._classes = classes
        self._tensors = tensors
        self._keys = set(tensors.keys()) if tensors is not None else set()
        self.used = set()
        self._objects = {}
        self._tags = {
            "tuple": self._tuple,
            "dict": self._dict,
            "float": self._float,
            "scalar": self._scalar,
            "path": self._path,
            "ref": self._ref,
            "array": self._array,
            "strings": self._strings,
            "estimator": self._estimator,
            "random_state": self._random_state,
            "sparse": self._sparse,
        }

    def unused_arrays(self):
        """Names of the file's arrays that nothing decoded so far refers to."""
        return sorted(self._keys - self.used)

    def decode(self, node, path):
        """The value ``node`` (parsed JSON) stands for; ``path`` names it in messages."""
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(item, f"{path}[{i}]") for i, item in enumerate(node)]
        tag = node.get(TAG)
        if tag is None:
            return {key: self.decode(item, f"{path}[{key!r}]") for key, item in node.items()}
        if type(tag) is not str or tag not in self._tags:
            raise _fail(path, f"unknown entry type {tag!r}; expected one of {sorted(self._tags)}.")
        return self._tags[tag](node, path)

    def _tuple(self, node, path):
        return tuple(self.decode(_field(node, "items", (list,), path), path))

    def _dict(self, node, path):
        out = {}
        for i, pair in enumerate(_field(node, "items", (list,), path)):
            if type(pair) is not list or len(pair) != 2:
                raise _fail(f"{path}[{i}]", f"a dict item must be [key, value]; got {pair!r}.")
            key = self.decode(pair[0], f"{path}<key {i}>")
            value = self.decode(pair[1], f"{path}[{i}]")
            try:
                out[key] = value
            except TypeError:
                raise _fail(path, f"the key {key!r} cannot be a dict key.") from None
        return out

    def _float(self, node, path):
        value = _field(node, "value", (str,), path)
        if value not in ("nan", "inf", "-inf"):
            raise _fail(path, f"a float entry holds 'nan', 'inf' or '-inf'; got {value!r}.")
        return float(value)

    def _dtype(self, node, path):
        dtype = _field(node, "dtype", (str,), path)
        if dtype not in ARRAY_DTYPES:
            raise _fail(path, f"dtype {dtype!r} is not one of {sorted(ARRAY_DTYPES)}.")
        return np.dtype(dtype)

    def _scalar(self, node, path):
        dtype = self._dtype(node, path)
        value = self.decode(node.get("value"), path)
        if type(value) not in _SCALAR_VALUES[dtype.kind]:
            raise _fail(path, f"a {dtype} scalar cannot hold {value!r}.")
        try:
            return dtype.type(value)
        except OverflowError:
            raise _fail(path, f"{value!r} does not fit in {dtype}.") from None

    def _path(self, node, path):
        return Path(_field(node, "value", (str,), path))

    def _ref(self, node, path):
        target = _field(node, "path", (str,), path)
        if target not in self._objects:
            raise _fail(path, f"refers to {target!r}, which comes nowhere before it.")
        return self._objects[target]

    def _array(self, node, path):
        key = _field(node, "key", (str,), path)
        dtype, shape = self._dtype(node, path), _field(node, "shape", (list,), path)
        if key not in self._keys:
            raise _fail(path, f"the array {key!r} is missing from the file.")
        value = self._tensors.get_tensor(key)
        if value.dtype != dtype or list(value.shape) != shape:
            raise _fail(
                path,
                f"the array {key!r} has dtype {value.dtype} and shape {list(value.shape)}; "
                f"the model expects dtype {dtype} and shape {shape}.",
            )
        self.used.add(key)
        self._objects[path] = value
        return value

    def _strings(self, node, path):
        shape = _field(node, "shape", (list,), path)
        items = _field(node, "items", (list,), path)
        if self._tensors is None:
            raise _fail(path, "plain metadata holds no arrays.")
        if not all(type(n) is int and n >= 0 for n in shape) or math.prod(shape) != len(items):
            raise _fail(path, f"a strings entry of shape {shape} cannot hold {len(items)} items.")
        if not all(type(item) is str for item in items):
            raise _fail(path, "a strings entry holds str items only.")
        value = np.array(items, dtype=str).reshape(shape)
        self._objects[path] = value
        return value

    def _estimator(self, node, path):
        name = _field(node, "class", (str,), path)
        cls = self._classes.get(name)
        if cls is None or self._tensors is None:
            raise _fail(
                path,
                f"the class {name!r} is not among the estimators a model file may hold: "
                f"{sorted(self._classes)}.",
            )
        params = self._named(_field(node, "params", (dict,), path), path)
        estimator = _construct(cls, name, params, path)
        self._objects[path] = estimator
        state = self._named(_field(node, "state", (dict,), path), path)
        bad = sorted(key for key in state if key.startswith("__"))
        if bad:
            raise _fail(path, f"the attributes {bad} cannot be set from a file.")
        # Not __setstate__: scikit-learn's warns about versions the state does not depend on.
        vars(estimator).update(state)
        return estimator

    def _named(self, node, path):
        if TAG in node:
            raise _fail(path, f"parameters and attributes cannot be named {TAG!r}.")
        return {key: self.decode(item, f"{path}.{key}") for key, item in node.items()}

    def _random_state(self, node, path):
        rng = np.random.RandomState()
        try:
            rng.set_state(self.decode(node.get("state"), path))
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise _fail(path, f"not the state of a RandomState ({exc!r}).") from None
        self._objects[path] = rng
        return rng

    def _sparse(self, node, path):
        layout = _field(node, "format", (str,), path)
        kinds = {(spec[1], spec[2]): spec[0] for spec in _SPARSE}
        kind = kinds.get((layout, _field(node, "matrix", (bool,), path)))
        if kind is None:
            raise _fail(path, f"sparse format {layout!r} is not 'csr' or 'csc'.")
        parts = [
            self._array(_field(node, key, (dict,), path), f"{path}.{key}")
            for key in ("data", "indices", "indptr")
        ]
        try:
            value = kind(tuple(parts), shape=tuple(_field(node, "shape", (list,), path)))
        except (TypeError, ValueError) as exc:
            raise _fail(path, f"not a valid sparse matrix ({exc}).") from None
        self._objects[path] = value
        return value


def _construct(cls, name, params, path):
    """``cls(**params)``, with a clear message when the class takes other parameters."""
    signature = inspect.signature(cls.__init__)
    accepted = [key for key in signature.parameters if key != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise _fail(
            path,
            f"{name} takes no parameter {unknown} in the installed versions (it takes "
            f"{accepted}); the file was written with other versions. Refit the model.",
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"{name} cannot be built from the file's parameters ({exc}).") from None
