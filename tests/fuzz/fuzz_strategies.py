"""Hypothesis strategies for arbitrary protobuf messages, built from their descriptors.

``messages(GossipMessage)`` draws a GossipMessage with any member of its oneof set (the "wrong" kind for its tag
as often as not), integers anywhere in their range (hypothesis favours 0, the extremes and their neighbours),
empty, short or dictionary bytes, any text, repeated fields of a few elements, sub-messages three levels deep.
Where the structure-aware mutators start from valid messages and stay close to them, these start from nothing:
together they cover both the deep paths and the shapes nobody thought of.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor, dictionary: Sequence[bytes]) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-3, 100)  # proto3 enums are open: unknown numbers arrive too
    if cpp in _RANGES:
        lo, hi = _RANGES[cpp]
        return st.integers(lo, hi)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=24)
    if field.type == FieldDescriptor.TYPE_BYTES:
        choices = st.binary(max_size=48)
        return choices | st.sampled_from(list(dictionary)) if dictionary else choices
    return st.floats(allow_nan=True)


def messages(cls: type[Message], *, dictionary: Sequence[bytes] = (), max_depth: int = 3) -> st.SearchStrategy[Message]:
    """Arbitrary messages of type ``cls``; bytes fields draw from ``dictionary`` too (ids, identities, ...)."""

    def build(descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        @st.composite
        def draw_message(draw: st.DrawFn) -> Message:
            msg = GetMessageClass(descriptor)()
            oneof_choice = {
                oneof.name: draw(st.sampled_from([None, *[f.name for f in oneof.fields]]))
                for oneof in descriptor.oneofs
            }
            for field in descriptor.fields:
                if field.containing_oneof is not None:
                    if oneof_choice[field.containing_oneof.name] != field.name:
                        continue
                elif not draw(st.booleans()):
                    continue
                _assign(draw, msg, field, depth)
            return msg

        return draw_message()

    def _assign(draw: st.DrawFn, msg: Message, field: FieldDescriptor, depth: int) -> None:
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if field.is_repeated and is_message and field.message_type.GetOptions().map_entry:
            if depth >= max_depth:
                return
            value_field = field.message_type.fields_by_name["value"]
            entries = getattr(msg, field.name)
            for key in draw(st.lists(st.text(max_size=12), max_size=3, unique=True)):
                if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    entries[key].CopyFrom(draw(build(value_field.message_type, depth + 1)))
                else:
                    entries[key] = draw(_scalar(value_field, dictionary))
            return
        if is_message and depth >= max_depth:
            return
        element = build(field.message_type, depth + 1) if is_message else _scalar(field, dictionary)
        if field.is_repeated:
            getattr(msg, field.name).extend(draw(st.lists(element, max_size=4)))
        elif is_message:
            getattr(msg, field.name).CopyFrom(draw(element))
        else:
            setattr(msg, field.name, draw(element))

    return build(cls.DESCRIPTOR, 0)
