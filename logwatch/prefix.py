"""The strict grammar of what stands before a Dovecot login process's message.

Pure data: regular-expression source that ``matcher`` compiles once, in front of every
pattern set's message patterns. A set's patterns are anchored right after this prefix
and at the end of the line, so they never see -- and can never be fooled by -- text that
an attacker put earlier or later in the line.

The layouts, each with every timestamp form below (``TS``):

====================================  =========================================================
``TS HOST dovecot: SERVICE: MSG``     syslog (rsyslog, syslog-ng, journald ``-o short*``);
                                      also ``dovecot[812]:``, and without ``HOST``
``TS HOST SERVICE: MSG``              syslog, Dovecot 0.99 / 1.0 test (the process is the tag)
``TS SERVICE: Info: MSG``             Dovecot 2.x's own file (``log_path``); with ``TS`` a
                                      TAI64N label or an svlogd/s6-log stamp, Dovecot's
                                      standard error through multilog, svlogd or s6-log
``TS dovecot: Info: SERVICE: MSG``    Dovecot 1.x's standard error through a logger
``dovecot: TS Info: SERVICE: MSG``    Dovecot 1.x's own file; also without ``TS``
``SERVICE: TS Info: MSG``             Dovecot 0.99 / 1.0 test own file (Fedora)
``SERVICE: Info: MSG``                Dovecot 2.x with ``log_timestamp = ""`` and no stamp
                                      from a logger (the line's time is when it was read)
====================================  =========================================================

A TAI64N label (``@4000000068b1c2d30a1b2c3d``) may also stand before a line that carries
Dovecot's own stamp (multilog ``t`` over the default ``log_timestamp``); Dovecot's stamp
is then the one read.

``TS`` is one of ``Jun 10 12:00:00`` / ``Jun  1 12:00:00`` / ``Jun 01 12:00:00`` (classic
syslog and Dovecot's default ``log_timestamp``; optional fraction), RFC 3339
``2024-06-10T12:00:00.123456+02:00`` (also ``+0200`` and ``Z``; s6-log ``T`` and svlogd
``-ttt`` write it without a zone), ISO ``2024-06-10 12:00:00`` (optional fraction and
zone), svlogd ``-tt``'s ``2024-06-10_12:00:00.12345``, or a TAI64N label
``@4000000068b1c2d30a1b2c3d`` (multilog ``t``, svlogd ``-t``, s6-log ``t``).

``SERVICE`` is a Dovecot login process, ``<name>-login``; which services may authorise is
policy (``matcher.Matcher(services=...)``), not grammar. Only the ``Info`` level (or none,
in syslog) is accepted: a login process's warnings and errors are never logins.

Why so strict: every other program on the host writes to the same syslog file, and a
client controls text inside many of their lines (an SMTP ``HELO``, a user name). A line is
Dovecot's only if its syslog tag is Dovecot's, in the tag's position. The forms without a
stamp (``SERVICE: Info: ``, ``dovecot: Info: SERVICE: ``) start at the start of a line,
where only the writer of the file puts text: a syslog daemon starts every line with its
stamp and escapes a newline inside a message, multilog and its kin read only Dovecot's
standard error, and Dovecot repeats its own prefix on every piece of a message it splits.
"""

from __future__ import annotations

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_FRACTION = r"(?:[.,]\d{1,9})?"
#: Classic syslog / Dovecot default: month, day (space- or zero-padded), time.
CLASSIC = _MONTH + r" (?: [1-9]|[0-3]\d) [0-2]\d:[0-5]\d:[0-6]\d" + _FRACTION
#: RFC 3339 (rsyslog high precision, journald short-iso) and ISO with a space.
ISO = r"\d{4}-[01]\d-[0-3]\d[T _][0-2]\d:[0-5]\d:[0-6]\d" + _FRACTION + r"(?:Z|[+-][0-2]\d:?[0-5]\d)?"

#: A TAI64N label: ``@``, 16 hex digits of seconds (TAI, offset by 2**62), 8 of nanoseconds.
TAI64N = r"@4[0-9a-f]{23}"

TIMESTAMP = f"(?:{CLASSIC}|{ISO}|{TAI64N})"
#: Possessive (``*+``): a host name never gives characters back, so an own-file line such as
#: ``pop3-login: Info: ...`` is not re-read as a host one character shorter at a time.
HOST = r"[A-Za-z0-9_][A-Za-z0-9_.-]*+"
PID = r"\[\d{1,10}\]"
SERVICE = r"[a-z][a-z0-9]*-login"

#: The prefix. Each layout captures its own ``ts<N>`` and ``service<N>`` (the standard
#: library's ``re`` runs it: it is our fixed grammar, not an admin's pattern, and ``re``
#: parses it in well under half the time ``regex`` takes). The message starts where it ends.
SOURCE = (
    "(?:"
    # syslog, or Dovecot 2.x's own file or standard error through a logger:
    # [TAI64N ]TS [HOST ] (dovecot[PID]: [Info: ]SERVICE | SERVICE[PID]): [Info: ]
    f"(?:{TAI64N} )?(?P<ts1>{TIMESTAMP}) (?:{HOST} )?"
    f"(?:dovecot(?:{PID})?: (?:Info: )?(?P<service1>{SERVICE})|(?P<service2>{SERVICE})(?:{PID})?): (?:Info: )?"
    # Dovecot 1.x's own file (also without a stamp)
    f"|(?:{TAI64N} )?dovecot: (?:(?P<ts2>{TIMESTAMP}) )?Info: (?P<service3>{SERVICE}): "
    # Dovecot 0.99 / 1.0 test own file (Fedora); 2.x with no stamp at all
    f"|(?:{TAI64N} )?(?P<service4>{SERVICE}): (?:(?P<ts3>{TIMESTAMP}) )?Info: "
    ")"
)

#: Group names, in the order ``matcher`` reads them: timestamps, then services.
TS_GROUPS = ("ts1", "ts2", "ts3")
SERVICE_GROUPS = ("service1", "service2", "service3", "service4")
