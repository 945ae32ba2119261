"""A real number parser for numeric answers: no `eval` of model text, ever.

Accepts what answer sentences contain: signs (including the Unicode minus), currency symbols and
words before the number ($ £ € ¥, USD, US, RMB, ...), thousands separators (also Indian 1,23,456),
decimals, scientific `1.5e-3`, `1.5 × 10^3` / `1.5 x 10^3` / `10^k`, simple fractions `1/3`, and a
trailing %, "percent", or scale word (thousand, million, billion, trillion: multiplied in). Text
after the last `=` or `≈` is what counts ("x = 5"). Booleans: true/yes/false/no. Anything else
(`2^10`, words) is not a number.
"""

from __future__ import annotations

import re

SCALE_WORDS = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_NUMBER = re.compile(
    r"""
    (?P<neg>[-−–])?\s*
    (?:[$£€¥]\s*)?
    (?P<neg2>[-−–])?
    (?P<mantissa>\d{1,3}(?:,\d{2,3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    (?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d/]))?
    (?:[eE](?P<exp>[-+]?\d+))?
    (?:\s*(?:x|×|\*|·)\s*10\s*\^\s*(?P<pow>[-+]?\d+))?
    (?P<caret>\s*\^\s*[-+]?\d+)?
    (?:\s*(?P<scale>thousand|million|billion|trillion)\b)?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_BOOL = re.compile(r"^\W*(true|yes|false|no)\b", re.IGNORECASE)


def parse_bool(text: str) -> bool | None:
    match = _BOOL.match(text.strip())
    if match is None:
        return None
    return match.group(1).lower() in ("true", "yes")


def parse_number(text: str | None) -> float | None:
    """The first number in `text` (after its last '=' / '≈'), as a float; None if there is none."""
    if text is None:
        return None
    text = text.replace("`", "").replace("*", "")
    for sep in ("=", "≈"):
        if sep in text:
            text = text.rsplit(sep, 1)[-1]
    match = _NUMBER.search(text)
    if match is None:
        return None
    mantissa, caret = match.group("mantissa"), match.group("caret")
    if caret is not None:
        if mantissa != "10" or match.group("pow") is not None:
            return None  # "2^10" is not a number we read (the released scorer turns it into 8, bitwise XOR)
        value = 10.0 ** int(caret.strip().lstrip("^").strip())
    else:
        value = float(mantissa.replace(",", ""))
    if match.group("den") is not None:
        den = float(match.group("den"))
        if den == 0:
            return None
        value /= den
    if match.group("exp") is not None:
        value *= 10.0 ** int(match.group("exp"))
    if match.group("pow") is not None:
        value *= 10.0 ** int(match.group("pow"))
    if match.group("scale") is not None:
        value *= SCALE_WORDS[match.group("scale").lower()]
    if match.group("neg") or match.group("neg2"):
        value = -value
    return value


def parse_answer_value(text: str | None) -> float | bool | None:
    """A boolean when the text opens with true/yes/false/no, else the first number, else None."""
    if text is None:
        return None
    as_bool = parse_bool(text)
    return as_bool if as_bool is not None else parse_number(text)
