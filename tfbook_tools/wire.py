"""The plain-data wire between a sandboxed submission and the grader's judge (chapter 0).

Everything that crosses the sandbox boundary is a length-prefixed JSON message. Values are
encoded as JSON scalars or as tagged objects (``{"t": "tensor", ...}``): lists, tuples,
dicts (any hashable keys), sets, bytes, complex numbers, numpy scalars and arrays and torch
tensors of numeric dtypes, dtypes and devices. Nothing in the format can carry code: there
is no pickle, no class name that is looked up, no callable. An object that is not plain data
(a student's ``nn.Module``, a frozen layer handed to the student's function) crosses as a
*handle*: the receiving side gets a :class:`RemoteObject` proxy whose calls go back over the
same connection and run on the side that owns the object, under that side's rules.

Decoding is bounded: message size, nesting depth, number of nodes and tensor sizes are
checked before anything is allocated, and any violation raises :class:`WireError`.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_MESSAGE",
    "WireError",
    "RemoteError",
    "RemoteObject",
    "Session",
    "encode",
    "decode",
    "send",
    "recv",
]

#: Largest message accepted (bytes of JSON), both directions.
MAX_MESSAGE = 32 * 1024 * 1024
MAX_DEPTH = 48
MAX_NODES = 1_000_000
_HEADER = struct.Struct(">Q")

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_TORCH_NAMES = {v: k for k, v in _TORCH_DTYPES.items()}
_NP_DTYPES = {
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
    "int8": "i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "bool": "u1",
}


class WireError(ValueError):
    """A message or value that breaks the wire format or its limits."""


class RemoteError(Exception):
    """An exception raised on the other side of the wire (type name and message only)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name, self.message = type_name, message


# --------------------------------------------------------------------------- framing


def send(sock: socket.socket, message: Any) -> None:
    """Send one JSON message, prefixed by its length."""
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE}")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, limit: int = MAX_MESSAGE) -> dict:
    """Receive one message (a JSON object); :class:`WireError` if it is too large or malformed."""
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if length > limit:
        raise WireError(f"message of {length} bytes exceeds the limit of {limit}")
    raw = _recv_exact(sock, length)
    try:
        message = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"malformed message ({type(exc).__name__})") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("a message must be a JSON object with an 'op'")
    return message


# --------------------------------------------------------------------------- values


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(value: Any, export: Callable[[Any], dict] | None = None, _depth: int = 0) -> Any:
    """Encode ``value`` as JSON-ready plain data.

    ``export(obj)`` is called for anything that is not plain data and must return a handle
    node (``{"t": "remote", ...}``); without it such a value raises :class:`WireError`.
    """
    if _depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, str):
        return value
    if kind is int:
        return value if abs(value) < 2**63 else {"t": "bigint", "v": str(value)}
    if kind is float:
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    d = _depth + 1
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value, export)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        name = value.dtype.name
        if name not in _NP_DTYPES:
            raise WireError(f"cannot send a numpy array of dtype {name}")
        arr = np.ascontiguousarray(value, dtype=np.dtype(_NP_DTYPES[name]))
        return {"t": "ndarray", "dtype": name, "shape": list(arr.shape), "b64": _b64(arr.tobytes())}
    if isinstance(value, np.generic) and np.dtype(type(value)).kind in "biufc":
        name = np.dtype(type(value)).name
        if name not in _NP_DTYPES:
            raise WireError(f"cannot send a numpy scalar of dtype {name}")
        raw = np.asarray(value, dtype=np.dtype(_NP_DTYPES[name])).tobytes()
        return {"t": "npscalar", "dtype": name, "b64": _b64(raw)}
    if isinstance(value, tuple):
        return {"t": "tuple", "v": [encode(v, export, d) for v in value]}
    if isinstance(value, list):
        return {"t": "list", "v": [encode(v, export, d) for v in value]}
    if isinstance(value, dict):
        items = [[encode(k, export, d), encode(v, export, d)] for k, v in value.items()]
        return {"t": "dict", "v": items}
    if isinstance(value, (set, frozenset)):
        tag = "frozenset" if isinstance(value, frozenset) else "set"
        return {"t": tag, "v": [encode(v, export, d) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        return {"t": "bytes", "b64": _b64(bytes(value))}
    if isinstance(value, complex):
        return {"t": "complex", "re": encode(value.real), "im": encode(value.imag)}
    if isinstance(value, float):
        return encode(float(value), export, d)
    if isinstance(value, int):
        return encode(int(value), export, d)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, torch.dtype) and value in _TORCH_NAMES:
        return {"t": "torch_dtype", "v": _TORCH_NAMES[value]}
    if isinstance(value, torch.device):
        return {"t": "device", "v": str(value)}
    if isinstance(value, slice):
        parts = [value.start, value.stop, value.step]
        return {"t": "slice", "v": [encode(p, export, d) for p in parts]}
    if value is Ellipsis:
        return {"t": "ellipsis"}
    if export is None:
        raise WireError(f"cannot send a {type(value).__name__} (only plain data crosses here)")
    return export(value)


def _encode_tensor(value: torch.Tensor, export) -> dict:
    t = torch.Tensor.detach(value)
    if t.layout != torch.strided or t.is_quantized or t.dtype not in _TORCH_NAMES:
        if export is None:
            raise WireError(f"cannot send a tensor of dtype {t.dtype} / layout {t.layout}")
        return export(value)
    name = _TORCH_NAMES[t.dtype]
    t = t.cpu().contiguous()
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    elif t.dtype == torch.bool:
        arr = t.to(torch.uint8).numpy()
    else:
        arr = t.numpy()
    arr = np.ascontiguousarray(arr, dtype=np.dtype(_NP_DTYPES.get(name, "<i2")))
    return {
        "t": "tensor",
        "dtype": name,
        "shape": list(t.shape),
        "grad": bool(value.requires_grad),
        "b64": _b64(arr.tobytes()),
    }


class _Budget:
    def __init__(self, nodes: int) -> None:
        self.nodes = nodes

    def take(self, n: int = 1) -> None:
        self.nodes -= n
        if self.nodes < 0:
            raise WireError("value has too many parts")


def decode(
    data: Any, remote: Callable[[dict], Any] | None = None, *, max_nodes: int = MAX_NODES
) -> Any:
    """Decode what :func:`encode` produced, checking every node.

    ``remote(node)`` turns a handle node into a proxy; without it a handle raises
    :class:`WireError`. Nothing is imported or instantiated by name.
    """
    return _decode(data, remote, _Budget(max_nodes), 0)


def _str(node: dict, key: str, limit: int = 100) -> str:
    value = node.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise WireError(f"field {key!r} must be a short string")
    return value


def _shape(node: dict) -> tuple[int, ...]:
    shape = node.get("shape")
    if not isinstance(shape, list) or len(shape) > 32:
        raise WireError("bad shape")
    if not all(type(n) is int and 0 <= n < 2**31 for n in shape):
        raise WireError("bad shape")
    return tuple(shape)


def _raw(node: dict, shape: tuple[int, ...], itemsize: int) -> bytes:
    text = node.get("b64")
    if not isinstance(text, str):
        raise WireError("missing data")
    count = math.prod(shape)
    if count * itemsize != len(text) * 3 // 4 - text[-2:].count("="):
        raise WireError("data does not match the shape")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise WireError("bad base64 data") from None
    if len(raw) != count * itemsize:
        raise WireError("data does not match the shape")
    return raw


def _array(node: dict, name: str) -> np.ndarray:
    if name not in _NP_DTYPES:
        raise WireError(f"unsupported dtype {name!r}")
    dtype = np.dtype(_NP_DTYPES[name])
    shape = _shape(node)
    raw = _raw(node, shape, dtype.itemsize)
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if name == "bool":
        return arr != 0
    return arr.astype(np.dtype(name), copy=False) if dtype.byteorder not in "=|" else arr


def _decode(data: Any, remote, budget: _Budget, depth: int) -> Any:
    budget.take()
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if data is None or isinstance(data, (bool, str, float)):
        return data
    if isinstance(data, int):
        return data
    if not isinstance(data, dict):
        raise WireError(f"unexpected JSON {type(data).__name__} in a value")
    tag = data.get("t")
    d = depth + 1
    if tag in ("list", "tuple", "set", "frozenset"):
        items = data.get("v")
        if not isinstance(items, list):
            raise WireError(f"{tag} without items")
        values = [_decode(v, remote, budget, d) for v in items]
        if tag == "list":
            return values
        if tag == "tuple":
            return tuple(values)
        try:
            return set(values) if tag == "set" else frozenset(values)
        except TypeError:
            raise WireError("unhashable set element") from None
    if tag == "dict":
        items = data.get("v")
        if not isinstance(items, list):
            raise WireError("dict without items")
        out = {}
        for pair in items:
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError("bad dict item")
            key = _decode(pair[0], remote, budget, d)
            try:
                out[key] = _decode(pair[1], remote, budget, d)
            except TypeError:
                raise WireError("unhashable dict key") from None
        return out
    if tag == "tensor":
        name = _str(data, "dtype")
        if name not in _TORCH_DTYPES:
            raise WireError(f"unsupported tensor dtype {name!r}")
        budget.take(math.prod(_shape(data)) // 4096)
        if name == "bfloat16":
            arr = _array(data, "int16")
            tensor = torch.from_numpy(arr).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(_array(data, name))
        if data.get("grad") is True and tensor.is_floating_point():
            tensor.requires_grad_(True)
        return tensor
    if tag == "ndarray":
        budget.take(math.prod(_shape(data)) // 4096)
        return _array(data, _str(data, "dtype"))
    if tag == "npscalar":
        name = _str(data, "dtype")
        data = dict(data, shape=[])
        return _array(data, name)[()]
    if tag == "bigint":
        text = _str(data, "v", 5000)
        try:
            return int(text)
        except ValueError:
            raise WireError("bad integer") from None
    if tag == "float":
        text = _str(data, "v")
        if text not in ("nan", "inf", "-inf"):
            raise WireError("bad float")
        return float(text)
    if tag == "complex":
        re, im = _decode(data.get("re"), None, budget, d), _decode(data.get("im"), None, budget, d)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (re, im)):
            raise WireError("bad complex number")
        return complex(re, im)
    if tag == "bytes":
        text = data.get("b64")
        if not isinstance(text, str):
            raise WireError("bytes without data")
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise WireError("bad base64 data") from None
    if tag == "torch_dtype":
        name = _str(data, "v")
        if name not in _TORCH_DTYPES:
            raise WireError("unknown dtype")
        return _TORCH_DTYPES[name]
    if tag == "device":
        name = _str(data, "v")
        if name != "cpu":
            raise WireError("only the cpu device crosses the wire")
        return torch.device("cpu")
    if tag == "slice":
        parts = data.get("v")
        if not isinstance(parts, list) or len(parts) != 3:
            raise WireError("bad slice")
        values = [_decode(p, None, budget, d) for p in parts]
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
            raise WireError("bad slice")
        return slice(*values)
    if tag == "ellipsis":
        return Ellipsis
    if tag == "remote":
        if remote is None:
            raise WireError("an object handle is not accepted here")
        if not isinstance(data.get("id"), int) or isinstance(data.get("id"), bool):
            raise WireError("bad handle")
        return remote(data)
    raise WireError(f"unknown value tag {str(tag)[:40]!r}")


# --------------------------------------------------------------------------- handles


def _safe_name(text: Any, default: str = "object") -> str:
    if not isinstance(text, str):
        return default
    name = "".join(c for c in text[:60] if c.isalnum() or c == "_")
    if not name or not (name[0].isalpha() or name[0] == "_"):
        return default
    return name


class RemoteObject:
    """A proxy for an object that lives on the other side of the wire.

    Calling it, or calling one of its public methods, sends the arguments (plain data only)
    to the owner, which runs the call under its own rules and sends back the result. Its
    ``repr`` is the owner's ``repr`` taken when the handle was made; it deep-copies to itself.
    """

    __slots__ = ("_session", "_id", "_repr", "_callable")

    def __init__(self, session: Any, node: dict) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_id", node["id"])
        text = node.get("repr") if isinstance(node.get("repr"), str) else ""
        text = "".join(c if c.isprintable() else "?" for c in text[:200])
        object.__setattr__(self, "_repr", text or "<remote>")
        object.__setattr__(self, "_callable", node.get("callable") is True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._callable:
            raise TypeError(f"{self._repr} is not callable")
        return self._session.remote_call(self._id, None, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._session.remote_getattr(self._id, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("attributes of a remote object cannot be set")

    def __repr__(self) -> str:
        return self._repr

    def __deepcopy__(self, memo: dict) -> RemoteObject:
        return self

    def __copy__(self) -> RemoteObject:
        return self

    def __reduce__(self):
        raise TypeError("a remote object cannot be pickled")


def remote_class(node: dict, base: type = RemoteObject) -> type:
    """A proxy class named like the remote object's type (so feedback names the real type)."""
    name = _safe_name(node.get("type"))
    return type(name, (base,), {"__slots__": (), "__module__": "remote"})


class Session:
    """One connection between the sandbox and the judge, usable in both directions.

    :meth:`request` sends a message and waits for the answer; while it waits, calls the
    other side makes on this side's objects (``call``/``getattr`` messages) are served under
    ``policy``. Objects this side hands out become handles (:meth:`export`); handles from
    the other side become :class:`RemoteObject` proxies (``proxy(session, node)``).

    ``policy`` decides what the other side may do with this side's objects:
    ``policy.call(obj, method, args, kwargs)``, ``policy.getattr(obj, name)`` returning
    ``("value", v)`` or ``("method", None)``, and ``policy.exportable(obj)``.
    """

    MAX_NESTING = 8

    def __init__(self, sock: socket.socket, policy: Any, proxy=None, *, wait_timeout=None):
        self.sock = sock
        self.policy = policy
        self.proxy = proxy or (lambda session, node: remote_class(node)(session, node))
        self.handles: dict[int, Any] = {}
        self.wait_timeout = wait_timeout
        self._depth = 0

    # -- values
    def export(self, obj: Any) -> dict:
        if not self.policy.exportable(obj):
            raise WireError(f"a {type(obj).__name__} cannot be handed to the other side")
        hid = len(self.handles) + 1
        self.handles[hid] = obj
        try:
            text = repr(obj)
        except Exception:  # noqa: BLE001 - a repr that fails still gets a handle
            text = f"<{type(obj).__name__}>"
        return {
            "t": "remote",
            "id": hid,
            "type": type(obj).__name__[:60],
            "repr": text[:200],
            "callable": callable(obj),
            "module": isinstance(obj, torch.nn.Module),
        }

    def encode(self, value: Any, handles: bool = True) -> Any:
        return encode(value, self.export if handles else None)

    def decode(self, data: Any) -> Any:
        return decode(data, lambda node: self.proxy(self, node))

    # -- messages
    def send(self, message: dict) -> None:
        send(self.sock, message)

    def request(self, message: dict) -> dict:
        """Send ``message``; serve the other side's calls until its answer arrives."""
        if self._depth >= self.MAX_NESTING:
            raise WireError("calls nested too deeply across the sandbox boundary")
        self._depth += 1
        try:
            self.send(message)
            return self.wait()
        finally:
            self._depth -= 1

    def wait(self) -> dict:
        """Receive the next message that is not a call on this side's objects."""
        while True:
            self.sock.settimeout(self.wait_timeout)
            message = recv(self.sock)
            if message["op"] in ("call", "getattr"):
                self._serve(message)
                continue
            return message

    def _serve(self, message: dict) -> None:
        try:
            hid = message.get("id")
            obj = self.handles.get(hid) if isinstance(hid, int) else None
            if obj is None:
                raise WireError("unknown object handle")
            name = message.get("method" if message["op"] == "call" else "name")
            if name is not None and (not isinstance(name, str) or len(name) > 100):
                raise WireError("bad attribute name")
            if message["op"] == "getattr":
                if name is None or name.startswith("_"):
                    raise AttributeError(f"no public attribute {name!r}")
                kind, value = self.policy.getattr(obj, name)
                if kind == "method":
                    self.send({"op": "method"})
                    return
                reply = {"op": "return", "value": self.encode(value)}
            else:
                # Arguments are plain data only: never a handle to the caller's objects.
                args = decode(message.get("args", {"t": "list", "v": []}))
                kwargs = decode(message.get("kwargs", {"t": "dict", "v": []}))
                if not isinstance(args, list) or not isinstance(kwargs, dict):
                    raise WireError("bad call arguments")
                if not all(isinstance(k, str) for k in kwargs):
                    raise WireError("keyword names must be strings")
                result = self.policy.call(obj, name, args, kwargs)
                reply = {"op": "return", "value": self.encode(result)}
        except (ConnectionError, OSError):
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, never fatal here
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not getattr(
                self.policy, "report_exits", False
            ):
                raise
            text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
            reply = {"op": "raise", "type": type(exc).__name__[:100], "message": text}
        self.send(reply)

    # -- calls on the other side's objects
    def _answer(self, reply: dict) -> Any:
        if reply.get("op") == "return":
            return self.decode(reply.get("value"))
        if reply.get("op") == "raise":
            name, text = reply.get("type"), reply.get("message")
            raise RemoteError(
                name[:100] if isinstance(name, str) else "Error",
                text[:500] if isinstance(text, str) else "",
            )
        raise WireError(f"unexpected answer {str(reply.get('op'))[:40]!r}")

    def remote_call(self, hid: int, method: str | None, args: tuple, kwargs: dict) -> Any:
        message = {
            "op": "call",
            "id": hid,
            "method": method,
            "args": encode(list(args)),
            "kwargs": encode(dict(kwargs)),
        }
        return self._answer(self.request(message))

    def remote_getattr(self, hid: int, name: str) -> Any:
        reply = self.request({"op": "getattr", "id": hid, "name": name})
        if reply.get("op") == "method":

            def method(*args: Any, **kwargs: Any) -> Any:
                return self.remote_call(hid, name, args, kwargs)

            method.__name__ = name
            return method
        try:
            return self._answer(reply)
        except RemoteError as exc:
            if exc.type_name == "AttributeError":
                raise AttributeError(exc.message) from None
            raise
