"""How a page goes from one drawing of a body to the next: ``diff`` turns
two lists of block HTML into the few operations that do it (append new
blocks, extend the last one in place, or drop the blocks that changed and
append their new form); ``extension`` finds what was only added at the end
of an element."""
import re

# A tag, its quoted attribute values skipped whole: the sanitizer escapes "<"
# and ">" inside them, and a quoted ">" must not end the tag even if one did not.
_TAG = re.compile(r'<(/?)([a-zA-Z][a-zA-Z0-9]*)(?:"[^"]*"|[^">])*?(/?)>')
_VOID = {"br", "hr", "img", "input", "wbr"}
_CLOSING_RUN = re.compile(r"(?:\s|</[a-zA-Z][a-zA-Z0-9]*>)+\Z")
_CLOSER = re.compile(r"</([a-zA-Z][a-zA-Z0-9]*)>\s*")


def extension(old, new):
    """How ``new`` grows out of ``old`` without changing what ``old`` has: a
    list of (depth, html) to add at the end of the last element ``depth``
    levels down the block (1 = the block's own element), innermost first; or
    None when ``new`` changes something ``old`` already shows.

    ``old`` ends with the closing tags of its last elements; ``new`` must be
    ``old``'s text up to the first of them, then for each closing tag some
    whole elements or text, then that same closing tag.
    """
    run = _CLOSING_RUN.search(old)
    if run is None or len(new) <= len(old):
        return None
    first = old.find("</", run.start())
    head = old[:first]
    segments = [m.group(0) for m in _CLOSER.finditer(old[first:])]
    if "".join(segments) != old[first:] or not new.startswith(head):
        return None
    added, at, depth = [], len(head), 0
    level = len(segments)
    for match in _TAG.finditer(new, at):
        closing, name = match.group(1), match.group(2).lower()
        if name in _VOID or match.group(3):
            continue
        if not closing:
            depth += 1
            continue
        if depth:
            depth -= 1
            continue
        # A closing tag outside what was added: the next of old's closers.
        segment = segments[len(segments) - level]
        if not new.startswith(segment, match.start()):
            return None
        if match.start() > at:
            added.append((level, new[at:match.start()]))
        at = match.start() + len(segment)
        level -= 1
        if level == 0:
            break
    if level or at != len(new) or not added:
        return None
    return added


def diff(old, new):
    """Operations that turn a body showing blocks ``old`` into one showing ``new``.

    ("append", html): add blocks at the end of the body;
    ("extend", depth, html): add to the last element ``depth`` levels down the
    last block (several in a row go innermost first: an item's end, then new
    items); ("drop", k): remove the blocks from the k-th (0-based) on.
    """
    old, new = list(old), list(new)
    common = 0
    while common < len(old) and common < len(new) and old[common] == new[common]:
        common += 1
    if common == len(old):
        return [("append", "".join(new[common:]))] if common < len(new) else []
    ops = []
    grown = None
    if common == len(old) - 1 and common < len(new):
        grown = extension(old[common], new[common])
    if grown is not None:
        ops.extend(("extend", depth, html) for depth, html in grown)
        common += 1
    else:
        ops.append(("drop", common))
    if common < len(new):
        ops.append(("append", "".join(new[common:])))
    return ops
