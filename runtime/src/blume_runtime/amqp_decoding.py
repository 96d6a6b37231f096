"""Decoding AMQP values that the client library would refuse, so one message cannot cut us off.

pamqp (under aiormq and aio-pika) turns an AMQP ``timestamp`` into a ``datetime`` and a
``shortstr`` into UTF-8 text, inside the frame decoder. A timestamp past year 9999 (a
millisecond epoch, a Java client's pre-1970 time) or a message id that is not UTF-8 makes
the decoder raise, and aiormq then drops the whole connection: every consumer of the
process goes, the message comes back on reconnect, and the loop repeats until the broker's
delivery limit, burning the delivery counts of every innocent message in flight on the way
(aiormq issue 186; pika fixed the same bug in pull request 1699). RabbitMQ range-checks
neither, so any publisher can send them.

``install`` swaps the two decoders for ones that never raise on such values: an
out-of-range timestamp stays the number it was on the wire, and a short string that is not
UTF-8 keeps its bytes as ``\\xNN`` escapes. Everything else decodes exactly as before.
"""

from __future__ import annotations

import datetime
import struct
from typing import Final

from pamqp import common, decode

_original_timestamp: Final = decode.timestamp


def timestamp(value: bytes) -> tuple[int, datetime.datetime | int]:
    try:
        return _original_timestamp(value)
    except (ValueError, OverflowError, OSError):
        try:
            (seconds,) = common.Struct.timestamp.unpack(value[0:8])
        except struct.error as error:
            raise ValueError("Could not unpack timestamp value") from error
        return 8, int(seconds)


def short_str(value: bytes) -> tuple[int, str]:
    try:
        (length,) = common.Struct.byte.unpack(value[0:1])
    except struct.error as error:
        raise ValueError("Could not unpack short string value") from error
    return length + 1, value[1 : length + 1].decode("utf-8", "backslashreplace")


def install() -> None:
    """Use the tolerant decoders for frames decoded from now on (idempotent)."""
    decode.METHODS["timestamp"] = timestamp
    decode.TABLE_MAPPING[b"T"] = timestamp
    decode.METHODS["shortstr"] = short_str
