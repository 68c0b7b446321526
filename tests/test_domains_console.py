"""Console ring buffers: console-limit truncation drops the oldest output, never the newest;
offsets are absolute so a reader resumes where it stopped."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings, strategies as st

from xend.console import ConsoleBuffer, ConsoleHub

pytestmark = pytest.mark.timeout(60)


def test_small_output_is_kept_whole():
    buf = ConsoleBuffer(100)
    buf.append(b"hello ")
    buf.append(b"world")
    assert buf.read(0) == (11, b"hello world")
    assert (buf.start, buf.end) == (0, 11)


def test_oldest_bytes_dropped_first():
    buf = ConsoleBuffer(10)
    buf.append(b"0123456789")
    buf.append(b"abc")
    assert buf.read(0) == (13, b"3456789abc")
    assert buf.start == 3


def test_a_chunk_larger_than_the_limit_keeps_its_end():
    buf = ConsoleBuffer(4)
    buf.append(b"xx")
    buf.append(b"0123456789")
    assert buf.read(0) == (12, b"6789")


def test_resume_from_offset():
    buf = ConsoleBuffer(1000)
    buf.append(b"line 1\n")
    off, data = buf.read(0)
    buf.append(b"line 2\n")
    assert buf.read(off) == (14, b"line 2\n")
    assert buf.read(14) == (14, b"")
    assert buf.read(500) == (14, b"")       # beyond the end: nothing, offset of the end


def test_reader_that_fell_behind_gets_what_is_left():
    buf = ConsoleBuffer(5)
    buf.append(b"abcdefgh")
    assert buf.read(1) == (8, b"defgh")


def test_read_size_limit():
    buf = ConsoleBuffer(100)
    buf.append(b"abcdef")
    assert buf.read(0, 2) == (2, b"ab")
    assert buf.read(2, 100) == (6, b"cdef")


def test_shrinking_the_limit_trims():
    buf = ConsoleBuffer(10)
    buf.append(b"0123456789")
    buf.set_limit(3)
    assert buf.read(0) == (10, b"789")


def test_bad_limit():
    with pytest.raises(ValueError):
        ConsoleBuffer(0)
    with pytest.raises(ValueError):
        ConsoleHub(0)


def test_hub_uses_console_limit_kib():
    hub = ConsoleHub(1)
    hub.feed(7, b"a" * 1000)
    hub.feed(7, b"b" * 100)
    off, data = hub.read(7)
    assert off == 1100 and len(data) == 1024 and data.endswith(b"b" * 100)
    assert hub.read(8) == (0, b"")
    hub.set_limit_kib(2)
    hub.feed(7, b"c" * 2000)
    assert len(hub.read(7)[1]) == 2048
    hub.drop(7)
    assert hub.read(7) == (0, b"")


def test_hub_pull_keeps_order_across_threads():
    hub = ConsoleHub(64)
    counter = iter(range(10 ** 6))
    lock = threading.Lock()

    def source():
        with lock:
            return b"%06d" % next(counter)

    threads = [threading.Thread(target=lambda: [hub.pull(1, source) for _ in range(200)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = hub.read(1)[1]
    numbers = [int(data[i:i + 6]) for i in range(0, len(data), 6)]
    assert numbers == sorted(numbers) and len(numbers) == 800


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 64), chunks=st.lists(st.binary(max_size=100), max_size=30))
def test_buffer_is_the_tail_of_everything(limit, chunks):
    buf = ConsoleBuffer(limit)
    for c in chunks:
        buf.append(c)
    everything = b"".join(chunks)
    end, data = buf.read(0)
    assert end == len(everything)
    assert data == everything[-limit:] if everything else data == b""
    assert buf.start == len(everything) - len(data)
