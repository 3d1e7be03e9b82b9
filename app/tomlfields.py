"""Helpers shared by the TOML loaders (simulator and roofline profiles, sweep specs): reading
a file, strict key checks whose errors name the file and the field, and TOML string quoting
for writers."""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Mapping


def read_toml(error: type[Exception], path: Path) -> tuple[str, dict[str, Any]]:
    """(text, parsed table) of a TOML file; an unreadable file or a syntax error raises
    ``error("<file>: ...")``."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{where}: cannot read: {exc}") from exc
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: TOML syntax error: {exc}") from exc


def fail(error: type[Exception], where: str | None, fieldname: str, why: str) -> None:
    """Raise ``error("<file>: <field>: <why>")``."""
    prefix = f"{where}: " if where else ""
    raise error(f"{prefix}{fieldname}: {why}")


def check_keys(error: type[Exception], where: str | None, prefix: str,
               table: Mapping[str, Any], required, optional) -> None:
    """Reject unknown keys (with a did-you-mean hint) and missing required ones."""
    known = tuple(required) + tuple(optional)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            fail(error, where, f"{prefix}{key}", f"unknown key{hint}; known keys: {', '.join(known)}")
    for key in required:
        if key not in table:
            fail(error, where, f"{prefix}{key}", "missing (required)")


def toml_str(text: str) -> str:
    """A TOML basic string (quotes, backslash and control characters escaped)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
