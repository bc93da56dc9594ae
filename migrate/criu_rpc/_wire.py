"""Protobuf's wire format for CRIU's proto2 messages, without protobuf.

Why not protobuf: importing it (the upb backend's descriptor pool, message
builder and python_message) plus pycriu's generated ``rpc_pb2`` costs 25-35 ms
of every ``checkpoint`` and ``restore`` here, even with compiled bytecode:
a sixth of a small container's whole checkpoint, where runc pays nothing of
the kind (issue 16). The messages of CRIU's RPC and of the few images
restore reads use a handful of field kinds, so a table per message
(``_messages.py``) and the code below do the same job in about a
millisecond of import. The tables are written out, not derived at import
time from pycriu's descriptors (that would import protobuf again);
``tests/unit/criu_rpc/test_wire.py`` checks every field number, kind, label
and default against those descriptors and compares our bytes with
protobuf's. Cold paths (``inspect``, ``stats``, content pre-copy) keep
using pycriu.

The format (https://protobuf.dev/programming-guides/encoding/): a message
is a sequence of (key, value) records, key = field number << 3 | wire type.
What CRIU's messages use: varints (int32, uint32, uint64, bool, enum; a
negative int32 is sign-extended to ten bytes) and length-delimited records
(strings, nested messages). Fields are written in field-number order, as
protobuf writes them, so the bytes are identical to its own.

Reading follows protobuf's rules for what a newer CRIU may send: a record
with an unknown number, or with a wire type its field does not have, is
skipped (groups included); an enum value outside the table's enum is
skipped too (proto2 enums are closed); a repeated varint field is read both
packed and unpacked; for a singular field the last record wins, and two
records of one nested message merge. Missing required fields are not an
error when reading (protobuf does not check them either) but are when
writing.

``Message`` is a plain attribute bag: an unset field reads as its default
(a nested message as an empty one, a repeated field as ``()``), ``has()``
tells whether it was set, assigning ``None`` unsets it. Assign nested
messages and repeated fields whole (``o.ps = criu_page_server_info(...)``,
``o.external = [...]``); reading an unset nested message gives a fresh
empty one that is not stored.
"""

from __future__ import annotations

__all__ = ["Message", "Field", "DecodeError", "EncodeError",
           "INT32", "UINT32", "UINT64", "BOOL", "STRING", "required", "optional", "repeated"]

# Wire types.
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

# Scalar kinds (an enum field's kind is its enum's value table, a nested
# message field's kind is its Message subclass).
INT32 = "int32"
UINT32 = "uint32"
UINT64 = "uint64"
BOOL = "bool"
STRING = "string"

_REQUIRED, _OPTIONAL, _REPEATED = "required", "optional", "repeated"


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the message."""


class EncodeError(ValueError):
    """A message that cannot be encoded (a required field unset, a value out
    of its field's range): a bug of the caller."""


class Field:
    """One field of a message table: ``number``, ``name``, ``kind`` (INT32,
    UINT32, UINT64, BOOL, STRING, an enum's ``{name: value}`` dict or a Message
    subclass), ``label`` and, where the .proto declares one, ``default``."""

    __slots__ = ("number", "name", "kind", "label", "default", "packed", "wire_type")

    def __init__(self, number: int, name: str, kind, label: str, default=None,
                 packed: bool = False) -> None:
        self.number, self.name, self.kind, self.label = number, name, kind, label
        self.packed = packed
        is_message = isinstance(kind, type)
        self.wire_type = _LEN if is_message or kind == STRING else _VARINT
        if default is None and label != _REPEATED and not is_message:
            # proto2's implicit defaults: zero, false, "", an enum's first value.
            default = {INT32: 0, UINT32: 0, UINT64: 0, BOOL: False, STRING: ""}.get(kind) if \
                isinstance(kind, str) else next(iter(kind.values()))
        self.default = default

    def __repr__(self) -> str:
        return f"Field({self.number}, {self.name!r}, {self.label})"


def required(number: int, name: str, kind, **kw) -> Field:
    return Field(number, name, kind, _REQUIRED, **kw)


def optional(number: int, name: str, kind, **kw) -> Field:
    return Field(number, name, kind, _OPTIONAL, **kw)


def repeated(number: int, name: str, kind, **kw) -> Field:
    return Field(number, name, kind, _REPEATED, **kw)


class Message:
    """A message of a table: subclasses set ``FIELDS`` (a tuple of Field)."""

    FIELDS: tuple[Field, ...] = ()
    _by_name: dict[str, Field] = {}
    _by_number: dict[int, Field] = {}

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        cls.FIELDS = tuple(sorted(cls.FIELDS, key=lambda f: f.number))
        cls._by_name = {f.name: f for f in cls.FIELDS}
        cls._by_number = {f.number: f for f in cls.FIELDS}

    def __init__(self, **values) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        field = self._by_name.get(name)
        if field is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        if value is None or (field.label == _REPEATED and not value):
            self.__dict__.pop(name, None)
        else:
            self.__dict__[name] = value

    def __getattr__(self, name: str):
        # Only called for what is not set.
        field = self._by_name.get(name)
        if field is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        if field.label == _REPEATED:
            return ()
        if isinstance(field.kind, type):
            return field.kind()
        return field.default

    def has(self, name: str) -> bool:
        """Whether field ``name`` is set (protobuf's ``HasField``)."""
        if name not in self._by_name:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        return name in self.__dict__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        mine = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        theirs = {k: list(v) if isinstance(v, tuple) else v for k, v in other.__dict__.items()}
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(
            self.__dict__.items(), key=lambda kv: self._by_name[kv[0]].number))
        return f"{type(self).__name__}({inner})"

    def encode(self) -> bytes:
        """The wire bytes. Raises EncodeError."""
        out = bytearray()
        _encode_into(self, out)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes):
        """The message in ``data``. Raises DecodeError."""
        msg = cls()
        _decode_into(msg, memoryview(data))
        return msg


# -- writing ----------------------------------------------------------------

def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _encode_into(msg: Message, out: bytearray) -> None:
    values = msg.__dict__
    cls = type(msg)
    for field in cls.FIELDS:
        value = values.get(field.name)
        if value is None:
            if field.label == _REQUIRED:
                raise EncodeError(f"{cls.__name__}.{field.name} is required")
            continue
        items = value if field.label == _REPEATED else (value,)
        if isinstance(items, (str, bytes)):
            raise EncodeError(f"{cls.__name__}.{field.name} is repeated: a string is not a list")
        if field.packed:
            body = bytearray()
            for item in items:
                _put_varint(body, _scalar(cls, field, item))
            _put_varint(out, field.number << 3 | _LEN)
            _put_varint(out, len(body))
            out += body
            continue
        key = field.number << 3 | field.wire_type
        for item in items:
            _put_varint(out, key)
            if field.wire_type == _VARINT:
                _put_varint(out, _scalar(cls, field, item))
            else:
                if field.kind == STRING:
                    if not isinstance(item, str):
                        raise EncodeError(f"{cls.__name__}.{field.name}: {item!r} is not a string")
                    # surrogateescape: a path os.fsdecode() made goes back to its bytes.
                    body = item.encode("utf-8", "surrogateescape")
                else:
                    if type(item) is not field.kind:
                        raise EncodeError(f"{cls.__name__}.{field.name}: {item!r} is not a "
                                          f"{field.kind.__name__}")
                    body = item.encode()
                _put_varint(out, len(body))
                out += body


def _scalar(cls: type, field: Field, value) -> int:
    """The varint a scalar value is written as."""
    kind = field.kind
    if kind == BOOL:
        if not isinstance(value, bool):
            raise EncodeError(f"{cls.__name__}.{field.name}: {value!r} is not a bool")
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EncodeError(f"{cls.__name__}.{field.name}: {value!r} is not an integer")
    if kind in (UINT32, UINT64):
        if not 0 <= value < 1 << (32 if kind == UINT32 else 64):
            raise EncodeError(f"{cls.__name__}.{field.name}: {value} is not a {kind}")
        return value
    if kind != INT32 and value not in kind.values():
        raise EncodeError(f"{cls.__name__}.{field.name}: {value} is not one of its enum's values")
    if not -(1 << 31) <= value < 1 << 31:
        raise EncodeError(f"{cls.__name__}.{field.name}: {value} is not an int32")
    return value & 0xFFFFFFFFFFFFFFFF   # negative: ten bytes, as protobuf writes them


# -- reading ----------------------------------------------------------------

def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise DecodeError(f"truncated varint at byte {pos}")
        if shift >= 70:
            raise DecodeError(f"varint longer than ten bytes at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def _skip(data: memoryview, pos: int, wire_type: int, number: int) -> int:
    """The position after the value of a record we do not read."""
    if wire_type == _VARINT:
        return _varint(data, pos)[1]
    if wire_type == _I64:
        pos += 8
    elif wire_type == _I32:
        pos += 4
    elif wire_type == _LEN:
        size, pos = _varint(data, pos)
        pos += size
    elif wire_type == _SGROUP:
        while True:
            key, pos = _varint(data, pos)
            if key & 7 == _EGROUP:
                if key >> 3 != number:
                    raise DecodeError(f"group {number} ends as group {key >> 3}")
                return pos
            pos = _skip(data, pos, key & 7, key >> 3)
    else:
        raise DecodeError(f"field {number}: invalid wire type {wire_type}")
    if pos > len(data):
        raise DecodeError(f"field {number} runs past the end ({len(data)} bytes)")
    return pos


def _convert(field: Field, raw: int):
    """The value of a varint read for ``field``; None for an unknown enum value."""
    kind = field.kind
    if kind == BOOL:
        return raw != 0
    if kind == UINT32:
        return raw & 0xFFFFFFFF
    if kind == UINT64:
        return raw
    value = raw & 0xFFFFFFFF
    if value >= 1 << 31:
        value -= 1 << 32
    if kind != INT32 and value not in kind.values():
        return None
    return value


def _decode_into(msg: Message, data: memoryview) -> None:
    cls = type(msg)
    values = msg.__dict__
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise DecodeError(f"{cls.__name__}: field number 0 at byte {pos}")
        field = cls._by_number.get(number)
        packed = field is not None and wire_type == _LEN and field.label == _REPEATED and \
            field.wire_type == _VARINT
        if field is None or (wire_type != field.wire_type and not packed):
            pos = _skip(data, pos, wire_type, number)
            continue
        if wire_type == _VARINT:
            raw, pos = _varint(data, pos)
            value = _convert(field, raw)
            if value is None:
                continue
            if field.label == _REPEATED:
                values.setdefault(field.name, []).append(value)
            else:
                values[field.name] = value
            continue
        size, pos = _varint(data, pos)
        if pos + size > end:
            raise DecodeError(f"{cls.__name__}.{field.name}: {size} bytes run past the end "
                              f"({end - pos} left)")
        body = data[pos:pos + size]
        pos += size
        if packed:
            items, at = values.setdefault(field.name, []), 0
            while at < size:
                raw, at = _varint(body, at)
                value = _convert(field, raw)
                if value is not None:
                    items.append(value)
            continue
        if field.kind == STRING:
            value = bytes(body).decode("utf-8", "surrogateescape")
        elif field.label != _REPEATED and field.name in values:
            _decode_into(values[field.name], body)   # a second record merges into the first
            continue
        else:
            value = field.kind()
            _decode_into(value, body)
        if field.label == _REPEATED:
            values.setdefault(field.name, []).append(value)
        else:
            values[field.name] = value
