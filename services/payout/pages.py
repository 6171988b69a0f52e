"""What payout's two web pages (the dashboard and an artisan's own page) share: their languages, and
numbers, dates and the programme's words as their readers write them. Bahasa Indonesia first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from html import escape

from shared.timeutil import to_wib

LANGUAGES = ("id", "en")

MONTHS = {
    "id": ("Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September", "Oktober",
           "November", "Desember"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
}

#: The programme's words for its products and skills stay as they are; English readers get a gloss.
GLOSS = {"piring": "plate", "tempat mangkuk": "bowl holder", "tas": "bag", "dompet": "wallet",
         "menganyam": "weaving"}


def e(value: object) -> str:
    """`value` as HTML text or an attribute's value."""
    return escape(str(value), quote=True)


def language(lang: str | None) -> str:
    """Bahasa Indonesia unless English is asked for; anything else falls back rather than failing."""
    return lang if lang in LANGUAGES else "id"


def format_count(n: int, lang: str) -> str:
    """`1.250` in Indonesian, `1,250` in English."""
    grouped = f"{n:,}"
    return grouped.replace(",", ".") if lang == "id" else grouped


def format_date(day: date | datetime, lang: str) -> str:
    """`12 Maret 2024`: a day as Jakarta writes it (a moment is first taken to WIB)."""
    if isinstance(day, datetime):
        day = to_wib(day).date()
    return f"{day.day} {MONTHS[lang][day.month - 1]} {day.year}"


def format_short_date(day: date | datetime, lang: str) -> str:
    """`12 Mar`: for lists where the year is plain from the context."""
    if isinstance(day, datetime):
        day = to_wib(day).date()
    return f"{day.day} {MONTHS[lang][day.month - 1][:3]}"


def format_moment(moment: datetime, lang: str) -> str:
    """`12 Maret 2024, 14.30 WIB`: Jakarta writes the clock with a dot, English with a colon."""
    local = to_wib(moment)
    separator = "." if lang == "id" else ":"
    return f"{format_date(local, lang)}, {local.hour:02d}{separator}{local.minute:02d} WIB"


def glossed(word: str, lang: str) -> str:
    """A product or skill as the programme names it, glossed in English: `piring (plate)`."""
    if lang == "en" and word in GLOSS:
        return f"{word} ({GLOSS[word]})"
    return word


class Words:
    """A page's words in its language: `words(key, *args)` from its table of (Bahasa Indonesia, English)."""

    def __init__(self, lang: str, text: Mapping[str, tuple[str, str]]) -> None:
        self.lang = lang
        self._i = 0 if lang == "id" else 1
        self._text = text

    def __call__(self, key: str, *args: object) -> str:
        text = self._text[key][self._i]
        return text.format(*args) if args else text

    def has(self, key: str) -> bool:
        return key in self._text

    def pick(self, words: Mapping[str, tuple[str, str]], code: str) -> str:
        """`code` in words from `words` (a code list's table); the code itself when it has none."""
        return words[code][self._i] if code in words else code
