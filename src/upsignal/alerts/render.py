"""Alert text shared by the destinations: a headline, plain text and HTML."""

from __future__ import annotations

import html

from upsignal.alerts.context import ActiveUser, Alert
from upsignal.scoring.sentences import format_number
from upsignal.signals.windows import describe_window


def headline(alert: Alert) -> str:
    """Return one line naming the account, what happened and the score.

    The score change is against the account's previous scoring run.
    """
    account = alert.display_name
    if alert.domain and alert.domain != account:
        account += f" ({alert.domain})"
    if alert.event == "entered":
        change = "is a PQL" if alert.is_pql else f"entered tier {alert.tier}"
    else:
        change = f"left tier {alert.from_tier} for {alert.tier}"
    return f"{account} {change}: {score_phrase(alert)}"


def score_phrase(alert: Alert) -> str:
    phrase = f"score {format_number(alert.score)}"
    if alert.previous_score is not None and alert.previous_score != alert.score:
        direction = "up" if alert.score > alert.previous_score else "down"
        phrase += f", {direction} from {format_number(alert.previous_score)}"
    return phrase


def user_phrase(user: ActiveUser) -> str:
    """Describe a user as a rep would: name and email where known, and their event count."""
    if user.name and user.email:
        person = f"{user.name} <{user.email}>"
    else:
        person = user.name or user.email or "an unnamed user"
    return f"{person} ({format_number(user.events)} events)"


def activity_line(alert: Alert) -> str:
    return f"{format_number(alert.active_users)} active users {describe_window(alert.active_users_window)}"


def plain_text(alert: Alert) -> str:
    """Render the whole alert as plain text, for tasks and message fallbacks."""
    lines = [headline(alert), ""]
    if alert.reasons:
        lines.append("Why:")
        lines.extend(f"- {reason}" for reason in alert.reasons)
    lines.append(activity_line(alert))
    if alert.top_users:
        lines.append("Most active: " + "; ".join(user_phrase(user) for user in alert.top_users))
    lines.append(f"Account: {alert.url}")
    return "\n".join(lines)


def html_text(alert: Alert) -> str:
    """Render the whole alert as simple HTML, for CRM notes."""
    parts = [f"<p><strong>{html.escape(headline(alert))}</strong></p>"]
    if alert.reasons:
        items = "".join(f"<li>{html.escape(reason)}</li>" for reason in alert.reasons)
        parts.append(f"<p>Why:</p><ul>{items}</ul>")
    parts.append(f"<p>{html.escape(activity_line(alert))}</p>")
    if alert.top_users:
        users = "; ".join(user_phrase(user) for user in alert.top_users)
        parts.append(f"<p>Most active: {html.escape(users)}</p>")
    url = html.escape(alert.url, quote=True)
    parts.append(f'<p><a href="{url}">{url}</a></p>')
    return "".join(parts)
