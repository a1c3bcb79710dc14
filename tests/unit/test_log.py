"""The task log: prefixed lines, partial-line buffering, LINE_MAX cuts, whole-line writes."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from copra.kernel.objects import ObjectKind
from copra.kernel.objects.log import LINE_MAX, Log


def new_log(name: str = "init") -> tuple[Log, list[str]]:
    lines: list[str] = []
    return Log(name, lines.append), lines


def test_log_kind_is_log() -> None:
    log, _ = new_log()
    assert log.kind is ObjectKind.LOG


def test_write_of_complete_line_emits_it_with_task_prefix() -> None:
    log, lines = new_log("shell")
    assert log.write(b"hello\n") == 6
    assert lines == ["[shell] hello"]


def test_write_of_several_lines_emits_each_separately() -> None:
    log, lines = new_log()
    log.write(b"one\ntwo\n\nthree\n")
    assert lines == ["[init] one", "[init] two", "[init] ", "[init] three"]


def test_partial_line_is_held_until_its_newline() -> None:
    log, lines = new_log()
    log.write(b"par")
    log.write(b"tial")
    assert lines == []
    log.write(b" line\nnext")
    assert lines == ["[init] partial line"]


def test_flush_emits_the_partial_line_once() -> None:
    log, lines = new_log()
    log.write(b"no newline")
    log.flush()
    log.flush()
    assert lines == ["[init] no newline"]


def test_flush_with_nothing_pending_emits_nothing() -> None:
    log, lines = new_log()
    log.write(b"done\n")
    log.flush()
    assert lines == ["[init] done"]


def test_closing_last_handle_flushes_the_partial_line() -> None:
    log, lines = new_log()
    log.acquire()
    log.write(b"last words")
    log.release()
    assert lines == ["[init] last words"]


def test_line_longer_than_line_max_is_cut_into_line_max_pieces() -> None:
    log, lines = new_log()
    log.write(b"a" * LINE_MAX + b"b" * LINE_MAX + b"c\n")
    assert lines == ["[init] " + "a" * LINE_MAX, "[init] " + "b" * LINE_MAX, "[init] c"]


def test_unterminated_line_is_emitted_as_soon_as_it_exceeds_line_max() -> None:
    log, lines = new_log()
    log.write(b"x" * (LINE_MAX + 1))
    assert lines == ["[init] " + "x" * LINE_MAX]


def test_unterminated_line_of_exactly_line_max_bytes_is_held_until_flush() -> None:
    log, lines = new_log()
    log.write(b"w" * LINE_MAX)
    assert lines == []
    log.flush()
    assert lines == ["[init] " + "w" * LINE_MAX]


def test_line_of_exactly_line_max_bytes_is_one_line() -> None:
    log, lines = new_log()
    log.write(b"y" * LINE_MAX + b"\n")
    assert lines == ["[init] " + "y" * LINE_MAX]


def test_line_of_exactly_line_max_bytes_with_newline_in_later_write_is_one_line() -> None:
    log, lines = new_log()
    log.write(b"y" * LINE_MAX)
    log.write(b"\n")
    assert lines == ["[init] " + "y" * LINE_MAX]


def test_invalid_utf8_is_shown_with_replacement_characters() -> None:
    log, lines = new_log()
    assert log.write(b"ok \xff\xfe end\n") == 10
    assert lines == ["[init] ok \ufffd\ufffd end"]


def test_utf8_split_across_writes_is_decoded_whole() -> None:
    log, lines = new_log()
    data = "grün\n".encode()
    log.write(data[:3])
    log.write(data[3:])
    assert lines == ["[init] grün"]


def test_two_threads_writing_whole_lines_never_interleave() -> None:
    log, lines = new_log()
    start = threading.Barrier(2)
    count = 300

    def writer(tag: bytes) -> None:
        start.wait()
        for i in range(count):
            log.write(tag * 40 + b" %d\n" % i)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in (b"A", b"B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {"[init] " + tag * 40 + f" {i}" for tag in ("A", "B") for i in range(count)}
    assert len(lines) == 2 * count
    assert set(lines) == expected
    for tag in ("A", "B"):  # each writer's own lines stay in order
        mine = [line for line in lines if line.startswith("[init] " + tag)]
        assert mine == ["[init] " + tag * 40 + f" {i}" for i in range(count)]


def _reference(stream: bytes) -> list[str]:
    """The documented rule, applied to the whole stream at once (then the final flush)."""
    *complete, tail = stream.split(b"\n")
    out: list[bytes] = []
    for line in complete:
        pieces = [line[i : i + LINE_MAX] for i in range(0, len(line), LINE_MAX)]
        out += pieces or [b""]
    out += [tail[i : i + LINE_MAX] for i in range(0, len(tail), LINE_MAX)]
    return ["[t] " + p.decode("utf-8", errors="replace") for p in out]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=20),
                          st.sampled_from([b"\n", b"z" * LINE_MAX, b"z" * (LINE_MAX - 1)])),
                max_size=12))
def test_lines_do_not_depend_on_how_the_stream_is_split_into_writes(chunks: list[bytes]) -> None:
    got: list[str] = []
    log = Log("t", got.append)
    for chunk in chunks:
        log.write(chunk)
    log.flush()
    assert got == _reference(b"".join(chunks))


def test_line_max_is_upstreams_223_content_bytes() -> None:
    # Upstream's line buffer is 224 bytes including the newline (kernel/src/fs/buffer.rs).
    log, lines = new_log()
    log.write(b"u" * 224 + b"\n")
    assert LINE_MAX == 223
    assert lines == ["[init] " + "u" * 223, "[init] u"]
