"""Synthetic replies, and the keys that name them.

A question carries ``bench-key:KEY``; a key made by ``script_key`` says which
tokens the fake model streams for it and how fast, so every process of the
benchmark can rebuild a reply's tokens from its key alone."""
import functools
import random
import re

_WORDS = """the of and to a in is it that for you was on are as with be this have from or
by one had not but what all were when we there can an your which their said if do will each
about how up out them then she many some so these would other into has more her two like him
see time could no make than first been its who now people my made over did down only way find
use may water long little very after words called just where most know get through back much
before go good new write our used me man too any day same right look think also around another
came come work three word must because does part even place well such here take why things help
put years different away again off went old number great tell men say small every found still
between name should home big give air line set own under read last never us left end along while
might next sound below saw something thought both few those always looked show large often
together asked house world going want school important until form food keep children feet land
side without boy once animals life enough took sometimes four head above kind began almost live
page got earth need far hand high year mother light parts country father let night following
picture being study second eyes soon times story boys since white days paper hard near better
best across during today others however sure means knew try told young miles sun ways thing whole
hear example heard several change answer room sea against top turned learn point city play toward
five using himself usually server stream token reply message chunk sentence browser socket
latency database request response fragment model question network memory worker""".split()
_CONTRACTIONS = ["it's", "don't", "you're", "that's", "isn't", "we'll", "can't", "there's", "I'm",
                 "doesn't", "won't", "they're", "let's", "what's", "you'll"]


def make_tokens(count, seed):
    """``count`` word tokens of English-like text, the way chat models stream it:
    a leading space on each word, punctuation as its own token, a few commas and
    contractions, rare **bold**, and
    a blank-line token between paragraphs of 3 to 6 sentences."""
    rng = random.Random(seed)
    tokens = []
    start_of_paragraph = True
    sentences = 0
    paragraph_length = rng.randint(3, 6)
    while len(tokens) < count:
        length = rng.randint(6, 20)
        for i in range(length):
            r = rng.random()
            word = rng.choice(_CONTRACTIONS) if r < 0.04 else rng.choice(_WORDS)
            if i == 0:
                word = word[0].upper() + word[1:]
            elif r > 0.99:
                word = "**{}**".format(word)
            tokens.append(word if start_of_paragraph else " " + word)
            start_of_paragraph = False
            if 0 < i < length - 2 and rng.random() < 0.06:
                tokens.append(",")
        tokens.append(rng.choices([".", "?", "!"], [85, 10, 5])[0])
        sentences += 1
        if sentences >= paragraph_length:
            tokens.append("\n\n")
            start_of_paragraph = True
            sentences = 0
            paragraph_length = rng.randint(3, 6)
    tokens = tokens[:count]
    if tokens[-1] not in (".", "?", "!"):
        tokens[-1] = "."
    if len(tokens) > 1 and tokens[-2] in ("\n\n", ",", ".", "?", "!"):
        tokens[-2] = " done"
    return tokens


_KEY_RE = re.compile(r"bench-key:([\w.-]+)")


def request_key(body):
    """The ``bench-key:...`` tag in the last user message of a request body."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            found = _KEY_RE.search(str(message.get("content")))
            return found.group(1) if found else None
    return None


def script_key(label, count, seed, delay):
    """A request key that carries its own script: ``count`` tokens from
    ``make_tokens(count, seed)``, ``delay`` seconds apart."""
    return "{}.n{}.s{}.d{}".format(label, count, seed, repr(float(delay)))


_SCRIPT_RE = re.compile(r"\.n(\d+)\.s(\d+)\.d([\d.e-]+)$")


@functools.lru_cache(maxsize=64)
def _script_tokens(count, seed):
    return tuple(make_tokens(count, seed))


def script_of(key):
    """(tokens, delay) for a key made by ``script_key``, or None."""
    found = _SCRIPT_RE.search(key or "")
    if not found:
        return None
    return list(_script_tokens(int(found.group(1)), int(found.group(2)))), float(found.group(3))
