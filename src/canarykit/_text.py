r"""Text from outside, made safe to keep and to show: secrets blanked, controls escaped.

How this works. Free text reaches canarykit from operators (a pause reason), servers (an
error body, a webhook's answer) and files (a command file). Before it is stored, printed,
logged or sent on, it goes through two steps, always in this order:

1. `Redactor` blanks every secret the component knows, in every form the text may carry
   it: as given, backslash-escaped (``repr``, JSON), and percent-encoded. It runs on the
   raw text, before anything cuts, quotes or escapes it, so no transformation can split a
   secret into pieces that no longer match. When the raw text itself was cut short (a
   bounded read of a response body), a secret may have been cut with it: ``cut=True``
   also blanks a tail that is the start of a secret.
2. `shown` escapes control characters (line breaks, ESC, bidirectional overrides) so one
   piece of text stays on one line and cannot forge others, and limits its length.

>>> redact = Redactor(["pa\\ss"])
>>> redact(r"as given pa\ss, by repr() pa\\ss, in a URL pa%5Css")
'as given ***, by repr() ***, in a URL ***'
>>> print(shown("looking\n14:35:00 succeeded\x1b[2J"))
looking\n14:35:00 succeeded\x1b[2J
>>> shown("x" * 30, limit=10)
'xxxxxxxxxx... (20 more characters)'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["HIDDEN", "MAX_TEXT", "Redactor", "shown"]

HIDDEN = "***"
# Characters of one piece of free text that canarykit keeps (a reason, an answer, an error
# message): enough for any message a person writes, small enough that a hostile one
# cannot bloat the state file, the output or a notification.
MAX_TEXT = 1000
_PERCENT = re.compile("%[0-9A-F]{2}")


def _forms(secret: str) -> set[str]:
    """The ways `secret` may appear in text that quoted, escaped or encoded it."""
    forms = {
        secret,
        secret.encode("unicode_escape").decode("ascii"),  # repr() of a str, doubled \\
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(secret.encode("utf-8"))[2:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    for form in list(forms):
        if "%" in form:
            forms.add(_lower_percent(form))
    return forms


def _lower_percent(text: str) -> str:
    return _PERCENT.sub(lambda match: match.group().lower(), text)


class Redactor:
    """Blanks a fixed set of secrets out of text, in every form they may take there.

    Secrets shorter than `min_length` characters are ignored: blanking every ``a`` of a
    message would hide it whole and protect nothing.
    """

    __slots__ = ("_forms",)

    def __init__(self, secrets: Iterable[str] = (), *, min_length: int = 4) -> None:
        found: set[str] = set()
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= min_length:
                found |= _forms(secret)
        self._forms = tuple(sorted(found, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __or__(self, other: Redactor) -> Redactor:
        joined = Redactor()
        joined._forms = tuple(sorted(set(self._forms) | set(other._forms), key=len, reverse=True))
        return joined

    def __call__(self, text: str, *, cut: bool = False) -> str:
        """`text` with every secret replaced by ``***``.

        ``cut=True`` says `text` was cut short at its end, which may have cut a secret in
        two: a tail that begins any secret is blanked too.
        """
        for form in self._forms:
            if form in text:
                text = text.replace(form, HIDDEN)
        if cut:
            for form in self._forms:
                for size in range(min(len(form) - 1, len(text)), 0, -1):
                    if text.endswith(form[:size]):
                        text = text[:-size] + HIDDEN
                        break
        return text

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._forms)} forms hidden>)"


def _escape(char: str) -> str:
    if char.isprintable() or char == " ":
        return char
    return char.encode("unicode_escape").decode("ascii")


def shown(text: object, *, limit: int = MAX_TEXT) -> str:
    """`text` on one line, control characters escaped, at most `limit` characters of it.

    Redact first (`Redactor`): escaping and cutting change the text a secret must match.
    """
    text = text if isinstance(text, str) else str(text)
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    escaped = "".join(map(_escape, text)) if not text.isprintable() else text
    if extra > 0:
        escaped += f"... ({extra} more characters)"
    return escaped
