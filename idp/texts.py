"""Texts for people, marked where they are made and translated where they are shown.

This module knows no language and no web: domain code (``idp.oauth`` must not import ``idp.web``) marks its
texts with ``N_()`` here, and ``idp.web.i18n`` (which re-exports ``Message``, ``Text`` and ``N_``) translates
them into the reader's language when a page is rendered. ``str()`` of a ``Message`` is its English source text,
for protocol answers (an RFC 7591 ``error_description``), the command line and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, overload


@dataclass(frozen=True)
class Message:
    """A text for a page, with named values filled in after translation."""

    msgid: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return english(self)


Text = Message | str
"""What a page is given to show: a marked message, or a plain string looked up as it is."""


@overload
def N_(msgid: str) -> str: ...
@overload
def N_(msgid: str, **params: Any) -> Text: ...
def N_(msgid: str, **params: Any) -> Text:
    """Mark a text for extraction; it is translated when shown. Returns the text itself without params.

    Values go in as placeholders (``N_("no user {name}", name=...)``), never into the msgid itself, so that
    a translation can move them and the catalog holds one text, not one per value."""
    return Message(msgid, params) if params else msgid


def english(text: Text) -> str:
    """The text in the source language (English), its values filled in."""
    return text.msgid.format(**text.params) if isinstance(text, Message) else text
