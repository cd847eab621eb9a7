"""The tokens of the query language (``jobtrack.query``): names, strings, numbers, ages, operators; and globs.

Pure. Positions are 0-based offsets into the query, for ``InvalidQuery``'s caret.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from jobtrack.errors import InvalidQuery

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
"""Units of ages and durations in seconds."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "ident", "string", "number", "age", "op", "(", ")", ",", "end"
    value: Any
    pos: int
    text: str


_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_IDENT_START = re.compile(r"[A-Za-z_`]")
_IDENT_PART = re.compile(r"[A-Za-z0-9_\-]+")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def tokenize(query: str) -> list[Token]:
    """The tokens of ``query``, ending with an ``end`` token at ``len(query)``.

    Raises:
        InvalidQuery: an unterminated string, a malformed number or an unexpected character.
    """
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c in "()," :
            tokens.append(Token(c, c, i, c))
            i += 1
        elif c in "=!<>":
            op = query[i:i + 2] if query[i:i + 2] in ("==", "!=", "<>", "<=", ">=") else c
            if op == "!":
                raise InvalidQuery(query, i, "'!' must be followed by '=' (use != or not)")
            tokens.append(Token("op", {"==": "=", "<>": "!="}.get(op, op), i, op))
            i += len(op)
        elif c in "'\"":
            value, end = _string(query, i)
            tokens.append(Token("string", value, i, query[i:end]))
            i = end
        elif c.isdigit() or c == "." or (c in "+-" and i + 1 < n and (query[i + 1].isdigit() or query[i + 1] == ".")):
            tok = _number(query, i)
            tokens.append(tok)
            i += len(tok.text)
        elif _IDENT_START.match(c):
            name, end = read_ident(query, i)
            tokens.append(Token("ident", name, i, query[i:end]))
            i = end
        else:
            raise InvalidQuery(query, i, f"unexpected character {c!r}")
    tokens.append(Token("end", None, n, ""))
    return tokens


def _string(query: str, start: int) -> tuple[str, int]:
    quote, i = query[start], start + 1
    out: list[str] = []
    while i < len(query):
        c = query[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and i + 1 < len(query):
            nxt = query[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise InvalidQuery(query, start, f"unterminated string: no closing {quote} for the one opened here")


def _number(query: str, start: int) -> Token:
    sign = -1 if query[start] == "-" else 1
    i = start + (query[start] in "+-")
    m = _NUMBER.match(query, i)
    if m is None:
        raise InvalidQuery(query, start, "a number was expected here")
    end = m.end()
    rest = re.match(r"[A-Za-z_][A-Za-z0-9_]*", query[end:])
    if rest:
        unit = rest.group(0)
        if unit not in UNITS or m.group(2):
            raise InvalidQuery(query, end, f"{unit!r} after a number; an age or duration takes one unit of "
                                           f"{', '.join(UNITS)} (e.g. 7d), and names start with a letter")
        seconds = float(m.group(0)) * UNITS[unit]
        if not math.isfinite(seconds):
            raise InvalidQuery(query, start, "this age is too large")
        return Token("age", sign * seconds, start, query[start:end + len(unit)])
    value: float | int = float(m.group(0)) if ("." in m.group(0) or m.group(2)) else int(m.group(0))
    if not math.isfinite(value) or (isinstance(value, int) and abs(value) >= 2**63):
        raise InvalidQuery(query, start, "this number is too large")
    return Token("number", sign * value, start, query[start:end])


def read_ident(query: str, start: int) -> tuple[str, int]:
    """A dotted name; a part in backticks may hold any character (``config.`learning rate```), a backtick
    written twice (``config.`a``b``` is the key ``a`b``)."""
    parts, i = [], start
    while True:
        if i < len(query) and query[i] == "`":
            close = query.find("`", i + 1)
            while close >= 0 and query.startswith("``", close):  # a doubled backtick: one in the name
                close = query.find("`", close + 2)
            if close < 0:
                raise InvalidQuery(query, i, "unterminated `name`: no closing backtick (write a backtick in a "
                                             "name twice)")
            parts.append(query[i + 1:close].replace("``", "`"))
            i = close + 1
        else:
            m = _IDENT_PART.match(query, i)
            if m is None:
                raise InvalidQuery(query, i, "a name was expected after '.'")
            parts.append(m.group(0))
            i = m.end()
        if i < len(query) and query[i] == ".":
            i += 1
            continue
        return ".".join(parts), i


def glob_parts(pattern: str) -> list[tuple[bool, str]]:
    """A ``like`` pattern as pieces ``(is_wildcard, text)``: ``*`` and ``?`` wildcards, and literal text.

    >>> glob_parts(r"v1\\*-*")
    [(False, 'v1*-'), (True, '*')]
    """
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?\\":
            literal.append(pattern[i + 1])
            i += 2
            continue
        if c in "*?":
            if literal:
                parts.append((False, "".join(literal)))
                literal = []
            parts.append((True, c))
        else:
            literal.append(c)
        i += 1
    if literal:
        parts.append((False, "".join(literal)))
    return parts
