"""Personal data in text: the built-in detectors, the mix's own patterns, and what the usage database keeps.

Every regular expression here, built-in or the mix's, runs on RE2, whose matching time is linear in the
text, so no query can stall the gate. A detector's regular expression finds candidates; a check in Python
then keeps only the plausible ones (SSN ranges, the Luhn digit of a card, the mod-97 of an IBAN, the
shape of a phone number), so that years, prices and ordinary numbers are not flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

import re2

from moai.mix_instructions.schema import SensitiveRule

__all__ = ["DETECTORS", "Finding", "find", "redact", "sensitive_in", "stored_answer", "stored_query"]


@dataclass(frozen=True)
class Finding:
    """A span of a text that is sensitive, and what found it (a detector's name, or 'pattern')."""

    label: str
    start: int
    end: int


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS = _options()


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    """Return a compiled RE2 pattern (the schema has already refused any that RE2 cannot compile)."""
    return re2.compile(pattern, _OPTIONS)


_DIGITS = frozenset("0123456789")


def _digits(text: str) -> str:
    return "".join(c for c in text if c in _DIGITS)


def _glued(text: str, start: int, end: int) -> bool:
    """Return whether a number found at [start, end) is really part of a longer token.

    A letter or digit next to it, or a price sign, thousands comma, date slash, decimal point or
    percent sign that joins it to a neighbouring digit, makes it part of something else.
    """
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or before in "$€£¥_" or after.isalnum() or after in "%_":
        return True
    if before in ",./-+:" and start > 1 and text[start - 2] in _DIGITS:
        return True
    return after in ",./-:" and end + 1 < len(text) and text[end + 1] in _DIGITS


# US social-security numbers: 3-2-4 digits with one consistent separator, or 9 digits after the words.
_SSN = re2.compile(
    r"(\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})|(?i:\b(?:ssn|social security(?: number)?|ss#)\D{0,20}?(\d{9}))",
    _OPTIONS,
)


def _ssn(text: str) -> Iterator[tuple[int, int]]:
    for match in _SSN.finditer(text):
        group = 1 if match.group(1) is not None else 2
        start, end = match.span(group)
        digits = _digits(match.group(group))
        area, serial_group, serial = digits[:3], digits[3:5], digits[5:]
        valid = area not in ("000", "666") and area[0] != "9" and serial_group != "00" and serial != "0000"
        if valid and not _glued(text, start, end):
            yield start, end


def _groups(number: str) -> list[tuple[int, int]]:
    """Return the spans of the runs of digits in a number as written ('(555) 123-4567' has three)."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, c in enumerate(number):
        if c in _DIGITS and start is None:
            start = i
        elif c not in _DIGITS and start is not None:
            spans.append((start, i))
            start = None
    return [*spans, (start, len(number))] if start is not None else spans


# Payment cards: 13-19 digits, in one block or in groups separated by single spaces or dashes. The
# expression finds runs of at least 13 digits; the groups of a run are then tried as cards.
_CARD_RUN = re2.compile(r"\d(?:[ \-]?\d){12,}", _OPTIONS)


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card_groups(sizes: list[int]) -> bool:
    """Return whether digit groups are laid out as card numbers are printed (4-4-4-4, 4-6-5, ...)."""
    if len(sizes) == 1:
        return 13 <= sizes[0] <= 19
    return sizes[0] == 4 and all(3 <= size <= 6 for size in sizes) and 13 <= sum(sizes) <= 19


def _payment_card(text: str) -> Iterator[tuple[int, int]]:
    for run in _CARD_RUN.finditer(text):
        groups = [(run.start() + start, run.start() + end) for start, end in _groups(run.group())]
        i = 0
        while i < len(groups):
            # The longest plausible card that starts at group i, if any (a run may hold more than a card).
            found = None
            if groups[i][1] - groups[i][0] not in (4, *range(13, 20)):
                i += 1
                continue
            for j in range(i, min(i + 5, len(groups))):
                sizes = [end - start for start, end in groups[i : j + 1]]
                if sum(sizes) > 19:
                    break
                start, end = groups[i][0], groups[j][1]
                if _card_groups(sizes) and _luhn(_digits(text[start:end])) and not _glued(text, start, end):
                    found = j, start, end
            if found is None:
                i += 1
                continue
            i = found[0] + 1
            yield found[1], found[2]


_EMAIL = re2.compile(r"[\p{L}\p{N}._%+\-]+@(?:[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?\.)+\p{L}{2,}", _OPTIONS)


def _email(text: str) -> Iterator[tuple[int, int]]:
    if "@" in text:  # spares most texts a pass of RE2
        for match in _EMAIL.finditer(text):
            yield match.span()


# Phone numbers: international (+ or 00, then 8-15 digits), North American 3-3-4, national numbers with a
# trunk 0 (020 7946 0958, 01 23 45 67 89, 090-1234-5678), or any 7-15 digits right after a word such as
# "phone". The expression finds runs of at least 7 digits; _phone_shape decides.
_PHONE = re2.compile(
    r"(?i:\b(phone|tel|telephone|mobile|cell|fax|whatsapp|call me|text me|reach me)\b[^\d\n]{0,25}?)?"
    r"((?:\+|\b00)?\(?\d(?:\)?[ .\-]?\(?\d){6,})",
    _OPTIONS,
)
_PHONE_MAX_GROUPS = 7
"""The most digit groups a phone number is written in (+33 1 23 45 67 89 has six)."""


def _phone_shape(number: str, sizes: list[int], keyword: bool) -> bool:
    """Return whether a number, written in digit groups of these sizes, has the shape of a phone number."""
    digits = _digits(number)
    separators = {c for c in number if c in " .-"}
    if number.startswith("+") or (number.startswith("00") and digits[2:3] not in ("", "0")):
        country_and_number = len(digits) - (2 if number.startswith("00") else 0)
        return 8 <= country_and_number <= 15 and digits.lstrip("0")[:1] != "" and len(sizes) <= _PHONE_MAX_GROUPS
    if keyword:
        return 7 <= len(digits) <= 15
    if len(separators) > 1 and not number.startswith("("):
        return False  # 01.02.2023 10 is a date and a number, not a phone
    if sizes in ([3, 3, 4], [1, 3, 3, 4]):
        area = digits[-10:]
        if sizes[0] == 1 and digits[0] != "1":
            return False
        # Three space-separated numbers are more often just numbers: there, the area code and the
        # exchange must both start 2-9, as North American numbers do.
        return area[0] in "23456789" and (separators != {" "} or area[3] in "23456789" or number.startswith("("))
    trunk = digits[:1] == "0" and digits[1:2] not in ("", "0")
    return trunk and 9 <= len(digits) <= 12 and all(size >= 2 for size in sizes)


def _phone_ends(text: str, groups: list[tuple[int, int]], i: int, keyword: bool) -> Iterator[int]:
    """Yield the last groups a phone number that starts at group i may end with, longest first.

    Only digit counts that some phone number has are tried, so that a long run of digits costs little.
    """
    first = groups[i][0]
    sizes = [end - start for start, end in groups[i : i + _PHONE_MAX_GROUPS]]
    if keyword:
        low, high = 7, 15
    elif "+" in text[max(first - 2, 0) : first]:
        low, high = 8, 15
    elif text.startswith("00", first):
        low, high = 10, 17
    elif text[first] == "0" and sizes[0] >= 2:
        low, high = 9, 12
    elif sizes[:3] == [3, 3, 4]:  # without a +, a 0 or a word before it, only a North American number fits
        low, high = 10, 10
    elif sizes[:4] == [1, 3, 3, 4] and text[first] == "1":
        low, high = 11, 11
    else:
        return
    totals = list(accumulate(sizes))
    yield from (i + k for k in range(len(totals) - 1, -1, -1) if low <= totals[k] <= high)


def _phone(text: str) -> Iterator[tuple[int, int]]:
    for match in _PHONE.finditer(text):
        keyword = match.group(1) is not None
        groups = [(match.start(2) + start, match.start(2) + end) for start, end in _groups(match.group(2))]
        # A run of digits may hold other numbers around the phone ("20 633-615-2019 students", "0958 12
        # times"): try the longest number at each group, until one has the shape of a phone.
        i = 0
        while i < len(groups):
            start = groups[i][0] - (1 if text[groups[i][0] - 1 : groups[i][0]] == "(" else 0)
            start -= 1 if text[start - 1 : start] == "+" else 0
            for j in _phone_ends(text, groups, i, keyword and i == 0):
                end = groups[j][1]
                sizes = [e - s for s, e in groups[i : j + 1]]
                if _phone_shape(text[start:end], sizes, keyword and i == 0) and not _glued(text, start, end):
                    yield start, end
                    i = j
                    break
            i += 1


# IBAN: two capital letters, two check digits, then 11-30 letters or digits, maybe in groups of four.
_IBAN = re2.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", _OPTIONS)
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
"""Length of each country's IBAN (the SWIFT registry); another country's must fill its whole token."""


def _mod97(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(text: str) -> Iterator[tuple[int, int]]:
    for match in _IBAN.finditer(text):
        start = match.start()
        chars = [(i, c) for i, c in enumerate(match.group(), start) if c != " "]
        length = _IBAN_LENGTHS.get(match.group()[:2], len(chars))
        if not 15 <= length <= len(chars):
            continue
        end = chars[length - 1][0] + 1
        if _mod97("".join(c for _, c in chars[:length])) and not (end < len(text) and text[end].isalnum()):
            yield start, end


DETECTORS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "ssn": _ssn,
    "payment_card": _payment_card,
    "email": _email,
    "phone": _phone,
    "iban": _iban,
}
"""The built-in detectors by the name a mix gives them in `gate.constraints.sensitive.detectors`."""


def _findings(text: str, rule: SensitiveRule) -> Iterator[Finding]:
    for name in dict.fromkeys(rule.detectors):
        for start, end in DETECTORS[name](text):
            yield Finding(name, start, end)
    for pattern in rule.patterns:
        for match in _compiled(pattern).finditer(text):
            if match.end() > match.start():  # an empty match makes the text sensitive, but hides nothing
                yield Finding("pattern", match.start(), match.end())


def sensitive_in(text: str, rule: SensitiveRule) -> bool:
    """Return whether a detector of the rule or one of its patterns finds something in a text.

    It stops at the first finding. An empty match of a pattern (`^`, `x*`) counts, as with `re.search`.
    """
    detected = any(True for name in dict.fromkeys(rule.detectors) for _ in DETECTORS[name](text))
    return detected or any(_compiled(pattern).search(text) is not None for pattern in rule.patterns)


def find(text: str, rule: SensitiveRule) -> list[Finding]:
    """Return the sensitive spans of a text, in order; overlapping spans are merged into the first."""
    merged: list[Finding] = []
    for finding in sorted(_findings(text, rule), key=lambda f: (f.start, -f.end)):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Finding(last.label, last.start, max(last.end, finding.end))
        else:
            merged.append(finding)
    return merged


def redact(text: str, rule: SensitiveRule) -> str:
    """Replace what each detector found by its name in brackets ([ssn], [email], ...), pattern matches by [redacted]."""
    parts: list[str] = []
    last = 0
    for finding in find(text, rule):
        label = "redacted" if finding.label == "pattern" else finding.label
        parts += [text[last : finding.start], f"[{label}]"]
        last = finding.end
    return "".join([*parts, text[last:]])


def stored_query(query: str, rule: SensitiveRule, *, sensitive: bool, flagged: bool) -> str:
    """Return what the usage database may keep of a query.

    A query that is not sensitive is kept as it is. Of a sensitive one, under `store: redacted`, what
    the detectors and patterns found is replaced; when the caller flagged it, the whole text is (the
    caller knows it is private, not which part). Under `store: none`, no text of it is kept.
    """
    if not sensitive:
        return query
    if rule.store == "none":
        return "[sensitive query]"
    return f"[sensitive query: {len(query)} chars]" if flagged else redact(query, rule)


def stored_answer(answer: str, rule: SensitiveRule, *, sensitive: bool) -> str:
    """Return what the usage database may keep of an answer.

    The answer to a sensitive query is never kept: a model may restate the private data in a form no
    detector knows, and a flag or a pattern marks a topic, not a span of the answer.
    """
    if not sensitive:
        return answer
    return "[sensitive answer]" if rule.store == "none" else f"[sensitive answer: {len(answer)} chars]"
