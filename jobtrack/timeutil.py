"""The one place datetimes are created, checked, formatted and parsed: aware UTC everywhere."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from jobtrack import runtime
from jobtrack.errors import InvalidArgument

UTC = UTC


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the clock tests may shift: ``runtime.set_clock_offset``)."""
    return datetime.now(UTC) + runtime.clock_offset()


def now_ns() -> int:
    """``utcnow()`` as nanoseconds since the epoch: no datetime made (the per-epoch path, #14)."""
    offset = runtime.clock_offset()
    if not offset:
        return time.time_ns()
    return time.time_ns() + (offset.days * 86_400 + offset.seconds) * 1_000_000_000 + offset.microseconds * 1000


def ns_of(value: datetime) -> int:
    """An aware datetime as nanoseconds since the epoch (exact: whole microseconds)."""
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


def iso_ns(ns: int) -> str:
    """``to_iso`` of the instant ``ns`` nanoseconds after the epoch, without a datetime: the text up to the
    second is made once per second (a lease's second too), the fraction by integer formatting (#14)."""
    second, micro = divmod(ns // 1000, 1_000_000)
    head = _seconds.get(second)
    if head is None:
        if len(_seconds) >= 64:
            _seconds.clear()
        head = _seconds[second] = (_EPOCH + timedelta(seconds=second)).isoformat()[:19]
    return f"{head}.{micro:06d}+00:00"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_seconds: dict[int, str] = {}  # second since the epoch -> its "YYYY-MM-DDTHH:MM:SS"


def require_aware(value: datetime, what: str = "datetime") -> datetime:
    """Return value converted to UTC, or raise InvalidArgument for a naive datetime."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidArgument(
            f"{what} {value.isoformat()} has no time zone; pass an aware datetime "
            "(for example datetime.now(timezone.utc))."
        )
    return value.astimezone(UTC)


def to_iso(value: datetime) -> str:
    """Fixed-width ISO 8601 UTC text with offset; sorts the same as the instants it names."""
    if value.tzinfo is not UTC:
        value = require_aware(value)
    return iso_ns(ns_of(value))  # four-digit year, six-digit fraction, "+00:00": the one formatter (#14)


def from_iso(text: str) -> datetime:
    """Parse stored ISO text back into an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:  # never written by jobtrack; refuse to guess
        raise InvalidArgument(f"timestamp {text!r} has no offset")
    return value.astimezone(UTC)


# an age counts back from now; a leading "-" is allowed, as the query language writes ages (``created > -7d``):
# without it dateutil read "-2h" as 02:00 today, a time in the future, and "-30m" as minute 30 of this hour
_RELATIVE = re.compile(r"^\s*-?\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str | datetime, *, now: datetime | None = None) -> datetime:
    """Parse a user's time bound: an aware datetime, ISO/free text via dateutil, or an age like ``2h``.

    Text without a zone is read as local time (what a person typing it means) and converted to UTC.

    Raises:
        InvalidArgument: text that is not a time, or an age or date outside the years 1-9999.
    """
    if isinstance(value, datetime):
        return require_aware(value, "time bound")
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"Cannot read {value!r} as a time; use e.g. '2h', '3d' or '2026-11-01'.")
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        try:
            return (now or utcnow()) - timedelta(seconds=seconds)
        except OverflowError:  # timedelta beyond 999,999,999 days, or a time before the year 1 (#21)
            raise InvalidArgument(
                f"The age {_shown(value)} reaches back before the year 1; use a smaller age such as '30d' "
                "or a date such as '2026-11-01'."
            ) from None
    if value.strip().isdigit() and len(value.strip()) <= 4:  # dateutil reads "30" as a day, "2030" as a year
        raise InvalidArgument(f"Cannot read {value.strip()!r} as a time: a bare number is no age and no date. Give "
                              f"an age with its unit ('{value.strip()}d', '{value.strip()}h') or a whole date "
                              "('2026-11-01').")
    import warnings

    from dateutil import parser as dtparser  # only free-text times need it: the CLI starts without it (#14)

    try:
        with warnings.catch_warnings():  # a zone name dateutil does not know ("EST") would be dropped silently,
            warnings.simplefilter("error", dtparser.UnknownTimezoneWarning)  # the time read as local time
            parsed = dtparser.parse(value)
    except dtparser.UnknownTimezoneWarning:
        raise InvalidArgument(
            f"Cannot read {value!r} as a time: its time zone name is not one jobtrack can know (only UTC, Z and "
            "this machine's own zone are); write the offset instead, e.g. '2026-11-01 12:00-05:00'."
        ) from None
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(
            f"Cannot read {value!r} as a time ({exc}); use e.g. '2h', '3d', '2026-11-01' "
            "or '2026-11-01T12:00:00+00:00'."
        ) from None
    try:
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()  # local time, as the user typed it
        result: datetime = parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. 0001-01-01 east of UTC is in the year 0 (#21)
        raise InvalidArgument(
            f"The time {_shown(value)} falls outside the years 1-9999 once converted to UTC; "
            "use a date inside them, e.g. '2026-11-01'."
        ) from None
    return result


def _shown(value: str) -> str:
    text = value.strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")
