"""Plain sentences a sales rep can quote, from signal values."""

from __future__ import annotations

from upsignal.signals.model import AGGREGATE_TYPES, ScoringModel
from upsignal.signals.windows import describe_window


def format_number(value: float | int | None) -> str:
    """Render a signal value as people write it.

    >>> format_number(152.0), format_number(91.66666), format_number(None)
    ('152', '91.7', 'no data')
    """
    if value is None:
        return "no data"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def change_phrase(value: float, previous: float | None, window: str) -> str:
    """Describe a value against its previous window.

    >>> change_phrase(52, 40, "7d")
    'up from 40 the 7 days before'
    >>> change_phrase(150, 50, "week")
    '3x by this point last week'
    >>> change_phrase(5, 0, "7d")
    'none the 7 days before'
    """
    if previous is None:
        return ""
    before = describe_window(window, previous=True)
    if previous == 0:
        return f"none {before}" if value else f"also none {before}"
    if value >= 3 * previous:
        return f"{format_number(round(value / previous, 1))}x {before}"
    if value > previous:
        return f"up from {format_number(previous)} {before}"
    if value < previous:
        return f"down from {format_number(previous)} {before}"
    return f"the same as {before}"


def signal_sentence(model: ScoringModel, name: str, signals: dict[str, float | None]) -> str:
    """Write one sentence for a signal's value, with its change against the previous window if computed.

    A template that places ``{previous}`` itself gets no change phrase appended.
    """
    signal = model.signals[name]
    value = signals.get(name)
    window = getattr(signal, "window", None)
    previous_key = f"{name}__previous"
    template = signal.sentence or "{label}: {value} {window}"
    sentence = template.format(
        value=format_number(value),
        previous=format_number(signals.get(previous_key)),
        label=name.replace("_", " "),
        window=describe_window(window) if window else "",
    ).strip()
    if "{previous}" in template:
        return sentence
    if isinstance(signal, AGGREGATE_TYPES) and previous_key in signals and value is not None:
        phrase = change_phrase(value, signals[previous_key], window)
        if phrase:
            sentence += f", {phrase}"
    return sentence
