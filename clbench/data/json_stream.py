"""Streaming a JSON file's top-level array element by element: CLEVR's 700k-question files are read without
holding the whole text, and a malformed file is reported with the line and byte where it breaks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clbench.core.errors import DataError

CHUNK_CHARS = 1 << 20  # characters read per chunk while streaming


_MAX_ELEMENT_CHARS = 64 << 20  # a single question or scene larger than this is certainly malformed


def _location(text_before: str, consumed_bytes: int, consumed_lines: int) -> str:
    line = consumed_lines + text_before.count("\n") + 1
    byte = consumed_bytes + len(text_before.encode("utf-8", "surrogatepass"))
    return f"line {line}, byte {byte}"


class _Stream:
    """A growing text window over a file, remembering how much was dropped, for error locations."""

    _whitespace = re.compile(r"[ \t\n\r]*")

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self.handle = handle
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.dropped_bytes = 0
        self.dropped_lines = 0

    def where(self, pos: int | None = None) -> str:
        return _location(self.buf[: self.pos if pos is None else pos], self.dropped_bytes, self.dropped_lines)

    def fail(self, problem: str, pos: int | None = None) -> DataError:
        return DataError(
            f"{self.path} is not valid JSON: {problem.removesuffix(' at')} at {self.where(pos)}",
            "the file is truncated or corrupt; download or generate it again",
        )

    def more(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.handle.read(CHUNK_CHARS)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{self.path} is not UTF-8 text ({err.reason} near byte {self.dropped_bytes + err.start})",
                "download or generate the file again",
            ) from err
        if not chunk:
            self.eof = True
            return False
        if self.pos > CHUNK_CHARS:  # drop what was consumed so the window stays small
            dropped = self.buf[: self.pos]
            self.dropped_bytes += len(dropped.encode("utf-8", "surrogatepass"))
            self.dropped_lines += dropped.count("\n")
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += chunk
        return True

    def skip_ws(self) -> None:
        while True:
            self.pos = self._whitespace.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return

    def peek(self) -> str:
        self.skip_ws()
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def expect(self, char: str, context: str) -> None:
        got = self.peek()
        if got != char:
            found = repr(got) if got else "end of file"
            raise self.fail(f"expected {char!r} {context}, found {found}")
        self.pos += 1

    def value(self, decoder: json.JSONDecoder) -> Any:
        """Decode one JSON value, reading more only when the value runs past the window."""
        self.skip_ws()
        while True:
            try:
                obj, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                # An error near the window's end (a cut literal, an unterminated string) may need more text.
                near_end = err.pos >= len(self.buf) - 16 or err.msg.startswith("Unterminated string")
                too_big = len(self.buf) - self.pos > _MAX_ELEMENT_CHARS
                if near_end and not too_big and self.more():
                    continue
                raise self.fail(err.msg, err.pos) from None
            if end >= len(self.buf) and not isinstance(obj, dict | list | str) and self.more():
                continue  # a number or literal cut at the window's end may go on in the next chunk
            self.pos = end
            return obj


_JSON_KINDS = {"{": "an object", "[": "an array", '"': "a string", "t": "true", "f": "false", "n": "null"}


def _require_shape(stream: _Stream, opening: str, wanted: str) -> None:
    """Valid JSON of another shape (a bare list of questions, a number) is the wrong file, not a corrupt one."""
    found = stream.peek()
    kind = _JSON_KINDS.get(found, "a number" if found and found in "-0123456789" else None)
    if found == opening or kind is None:  # the start of the expected value, or not JSON at all
        return
    raise DataError(
        f"{stream.path} holds {kind} at {stream.where()} where CLEVR's format has {wanted}",
        "give the file as the dataset ships it, or download or generate it again",
    )


def iter_json_array(path: Path, key: str) -> Iterator[Any]:
    """Yield the elements of the top-level ``{..., key: [...]}`` array one at a time, never the whole file.

    Other top-level values (CLEVR's small ``info``) are decoded and skipped. Malformed or truncated JSON
    raises :class:`DataError` naming the file and the line and byte where it went wrong.
    """
    decoder = json.JSONDecoder()
    found = False
    try:
        handle = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed in finally
    except FileNotFoundError:
        raise DataError(f"{path} not found", "download or generate the dataset again") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror})", "check the file and its permissions") from None
    try:
        stream = _Stream(Path(path), handle)
        _require_shape(stream, "{", f"an object with a {key!r} array")
        stream.expect("{", "at the start of the file")
        if stream.peek() == "}":
            stream.pos += 1
        else:
            while True:
                if stream.peek() != '"':
                    raise stream.fail("expected a quoted key")
                name = stream.value(decoder)
                stream.expect(":", f"after key {name!r}")
                if name == key:
                    found = True
                    _require_shape(stream, "[", f"an array under {key!r}")
                    stream.expect("[", f"to open the {key!r} array")
                    if stream.peek() == "]":
                        stream.pos += 1
                    else:
                        while True:
                            yield stream.value(decoder)
                            sep = stream.peek()
                            if sep == "]":
                                stream.pos += 1
                                break
                            stream.expect(",", f"between {key!r} entries")
                else:
                    stream.value(decoder)
                sep = stream.peek()
                if sep == "}":
                    stream.pos += 1
                    break
                stream.expect(",", "between top-level keys")
        if stream.peek():
            raise stream.fail("unexpected text after the top-level object")
    finally:
        handle.close()
    if not found:
        raise DataError(f"{path} has no top-level {key!r} array", "download or generate the file again")
