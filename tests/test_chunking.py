"""The rules that decide when a piece of a reply is worth a commit."""
import pytest

from chat.stream.chunking import Chunker


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run(tokens, **kwargs):
    chunker = Chunker(time_cap=kwargs.pop("time_cap", 1000), **kwargs)
    chunks = []
    for token in tokens:
        chunks.extend(chunker.feed(token))
    rest = chunker.flush()
    return chunks, rest


def test_commits_at_sentence_ends():
    tokens = ["Hello", " there", ".", " How", " are", " you", "?", " Fine", "!", " Bye"]
    chunks, rest = run(tokens)
    assert chunks == ["Hello there. ", "How are you? ", "Fine! "]
    assert rest == "Bye"


def test_punctuation_needs_following_whitespace():
    chunks, rest = run(["Pi is 3", ".", "14 and e is 2.71", "8 roughly"])
    assert chunks == []
    assert rest == "Pi is 3.14 and e is 2.718 roughly"


def test_closing_quotes_stay_with_their_sentence():
    chunks, _ = run(['He said "stop."', " Then", " left."])
    assert chunks[0] == 'He said "stop." '


def test_blank_line_ends_a_chunk_without_punctuation():
    chunks, rest = run(["# Title", "\n\n", "- one", "\n- two", "\n\n", "more"])
    assert chunks == ["# Title\n\n", "- one\n- two\n\n"]
    assert rest == "more"


def test_numbered_list_markers_are_not_sentence_ends():
    chunks, rest = run(["1", ".", " First", " step", "\n2", ".", " Second"])
    assert chunks == []
    assert rest == "1. First step\n2. Second"


def test_size_cap_cuts_long_text_without_punctuation_between_words():
    words = ["word{} ".format(i) for i in range(200)]
    chunks, rest = run(words, size_cap=100)
    assert chunks, "a long unpunctuated reply must still be committed"
    assert all(len(c) <= 100 for c in chunks)
    assert all(c.endswith(" ") for c in chunks), "cuts fall between words"
    assert "".join(chunks) + rest == "".join(words)


def test_size_cap_on_one_huge_word_still_cuts():
    chunks, rest = run(["x" * 250], size_cap=100)
    assert [len(c) for c in chunks] == [100, 100]
    assert rest == "x" * 50


def test_time_cap_commits_slow_text():
    clock = FakeClock()
    chunker = Chunker(size_cap=300, time_cap=1.0, clock=clock)
    assert chunker.feed("```python\nx = 1") == []
    assert chunker.seconds_left() == pytest.approx(1.0)
    clock.now = 0.4
    assert chunker.feed("\ny = 2") == []
    assert chunker.flush_due() == ""
    clock.now = 1.0
    assert chunker.seconds_left() == 0
    assert chunker.flush_due() == "```python\nx = 1\ny = 2"
    assert chunker.seconds_left() is None
    clock.now = 1.5
    assert chunker.feed("\nz = 3") == []
    clock.now = 2.6
    assert chunker.feed("\n") == ["\nz = 3\n"]


def test_whitespace_is_never_a_chunk_of_its_own():
    clock = FakeClock()
    chunker = Chunker(time_cap=1.0, clock=clock)
    assert chunker.feed("Done.") == []
    assert chunker.feed("\n\n") == ["Done.\n\n"]
    assert chunker.feed("  ") == []
    clock.now = 5
    assert chunker.flush_due() == "", "waiting whitespace alone is not due"
    assert chunker.feed("\n\n") == []
    assert chunker.feed("Next") == []
    assert chunker.flush() == "  \n\nNext"


def test_unicode_sentences_and_combining_marks():
    chunks, rest = run(["你好", "。", "世界", "！", "Café", " au", " lait", "…", " Olé"])
    assert chunks == ["你好。", "世界！", "Café au lait… "]
    assert rest == "Olé"
    # A size cut never separates a combining accent from its letter.
    text = "e\u0301" * 80
    chunks, rest = run([text], size_cap=101)
    assert all(not c[0] == "\u0301" for c in chunks + [rest] if c)
    assert "".join(chunks) + rest == text


def test_everything_fed_comes_back_exactly_once():
    tokens = ["A", " b", ".", " C", "\n\n", "d" * 400, " e", "?", "  ", "f", "\n"]
    chunks, rest = run(tokens, size_cap=120)
    assert "".join(chunks) + rest == "".join(tokens)
    assert all(c.strip() for c in chunks)
