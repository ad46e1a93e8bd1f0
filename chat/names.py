"""People's display names: what a chosen name may be.

A name is shown on every article its owner posts and goes into the model's
context as ``"<name>: <message>"`` (``chat.llm.context.build_context``). The rules
keep it plain data there: no colons, line breaks or other control or format
characters, so a name can never start a line of its own or pose as another
speaker; and never the assistant's own name.
"""
import unicodedata

from chat.web.limits import Refused

MAX_NAME_LENGTH = 40
# Besides letters, digits and spaces, the punctuation names need.
NAME_PUNCTUATION = ".'-_"
# The assistant's name (its author name, and what @mentions call).
RESERVED_NAMES = ("gpt",)
# Combining marks one letter may carry (scripts such as Devanagari stack a
# few; more only piles marks up over the page).
MAX_MARKS = 4


def _shown(ch):
    """A character as an error message names it (invisible ones by code point)."""
    if unicodedata.category(ch)[0] in "CMZ":  # controls, marks, spaces: no glyph of their own
        return "U+{:04X}".format(ord(ch))
    return "“{}”".format(ch)


def clean_name(raw):
    """Normalise a name someone typed, or raise ``Refused`` (400) saying why.

    Trimmed, inner runs of whitespace collapsed to one space, NFC-normalised;
    1-40 characters of letters (any script, with their combining marks),
    digits, spaces and ``. ' - _``; at least one letter or digit; not the
    assistant's name in any case or width.
    """
    text = unicodedata.normalize("NFC", raw).strip()
    if not text:
        raise Refused("Type a name first: it cannot be empty.", 400)
    controls = [ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")]
    if controls:
        raise Refused("A name cannot contain control characters such as tabs or line breaks.", 400)
    text = " ".join(text.split())
    if len(text) > MAX_NAME_LENGTH:
        raise Refused(
            "That name is {} characters long; the limit is {}.".format(len(text), MAX_NAME_LENGTH), 400
        )
    marks = 0
    previous = None
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Mn", "Mc"):
            marks += 1
            if previous is None or not unicodedata.category(previous).startswith("L") or marks > MAX_MARKS:
                raise Refused("{} cannot go there: accents and vowel signs belong on a letter.".format(_shown(ch)), 400)
            continue
        marks = 0
        previous = ch
        if not (category.startswith("L") or category == "Nd" or ch == " " or ch in NAME_PUNCTUATION):
            raise Refused(
                "A name can only have letters, digits, spaces and . ' - _ (not {}).".format(_shown(ch)), 400
            )
    if not any(unicodedata.category(ch).startswith("L") or unicodedata.category(ch) == "Nd" for ch in text):
        raise Refused("A name needs at least one letter or digit.", 400)
    if unicodedata.normalize("NFKC", text).casefold() in RESERVED_NAMES:
        raise Refused("“{}” is the assistant's name. Pick another one.".format(text), 400)
    return text
