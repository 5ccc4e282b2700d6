"""Text that came from a store, a server or a user, made safe where gradlab prints or writes it:

    uri("http://u:pw@host/")       ->  "http://u:***@host/"   (a password is never printed)
    text("a\\x1b]0;owned\\x07b")     ->  "a\\\\x1b]0;owned\\\\x07b"  (a terminal runs no escape sequence)
    cell("=HYPERLINK(...)")        ->  "'=HYPERLINK(...)"     (a spreadsheet runs no formula)

Imports nothing of gradlab: every wing may use it.
"""

from __future__ import annotations

import io
import re
import sys
import urllib.parse

# C0 and C1 control characters (ESC starts every terminal escape sequence; CSI, OSC, BEL end or
# start others), and the bidirectional overrides that reorder what a terminal shows. Tab and
# newline (and a progress line's carriage return) are kept where a message may hold them
# (`text(..., lines=True)`).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A cell a spreadsheet would read as a formula (OWASP's list), or a command after a separator.
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n")


def text(value: object, lines: bool = False) -> str:
    """`value` as printable text: control characters written as \\xNN escapes; `lines`: keep
    newlines and tabs (a multi-line message)."""
    s = str(value)
    if not lines:
        s = s.replace("\t", "\\t").replace("\n", "\\n")
    pattern = _CONTROL_LINES if lines else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)


def uri(value: object) -> str:
    """A URI with its password (and a token in the user part) replaced by ***; anything that is
    not a URI with a user part is returned as it is."""
    s = str(value)
    if "@" not in s or "://" not in s:
        return s
    try:
        parts = urllib.parse.urlsplit(s)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", s)
    if "@" not in parts.netloc:
        return s
    user, _, host = parts.netloc.rpartition("@")
    name, colon, _ = user.partition(":")
    masked = f"{name}:***" if colon else "***" if name else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{masked}@{host}"))


def message(value: object) -> str:
    """An error's text for a terminal: passwords in its URIs masked, its control characters escaped."""
    return text(_URI.sub(lambda m: uri(m.group()), str(value)), lines=True)


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def cell(value: object) -> object:
    """A value for a CSV cell: text a spreadsheet would run as a formula (=, +, -, @ first, also
    after blanks, or a tab or line break first) is prefixed with '."""
    if isinstance(value, str) and (value.startswith(_FORMULA) or value.lstrip()[:1] in ("=", "+", "-", "@")) and value.strip():
        return "'" + value
    return value


class Printable(io.TextIOBase):
    """A terminal stream that prints what it is given through `message`: every line gradlab, its
    libraries or a traceback write reaches the terminal with its passwords masked and without
    escape sequences (a store's experiment name, a server's error body). Line breaks, tabs and
    the carriage return of a progress line pass."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> int:
        self.stream.write(message(s))
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self.stream, name)


def guard_output() -> None:
    """Send this process's stdout and stderr through Printable (a console entry point's first step)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, Printable):
            setattr(sys, name, Printable(stream))
