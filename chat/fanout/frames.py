"""What a page socket sends on the wire: whole unmasked text frames, each hub
event's framed once for every socket of its room, and no compression (its
zlib state would cost each socket several times what the rest of it does)."""
import functools
import struct

from flask import request


def decline_compression():
    """Before the socket route: forget the page's ``permessage-deflate`` offer.

    Browsers always offer it and simple-websocket accepts it, and then every
    socket keeps a zlib compressor of its own for as long as it is open
    (about 100 KB resident once a message went through it), several times
    what the rest of an idle socket costs; each fragment would also be
    compressed once per socket instead of rendered once for all. Frames go out
    uncompressed instead."""
    if request.endpoint == "socket":
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def text_frame(html):
    """A whole unmasked text frame from the server carrying ``html`` (no
    extension is ever negotiated on a page socket: ``decline_compression``)."""
    data = str(html).encode("utf-8")
    size = len(data)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + data


# A hub event's fragment goes to every socket of the room: framed once.
shared_frame = functools.lru_cache(maxsize=64)(text_frame)


def header_size(frame_size):
    return 2 if frame_size < 128 else 4 if frame_size < (1 << 16) + 4 else 10
