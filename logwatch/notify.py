"""Tell systemd how the daemon is doing (``Type=notify``): READY=1, STOPPING=1, STATUS=...

Thin I/O: one datagram to ``$NOTIFY_SOCKET`` per message; nothing when the variable is
unset (plain foreground). Why not a library: the protocol is one ``sendto`` of
``KEY=value`` lines to a unix datagram socket, whose name starting with ``@`` means the
abstract namespace (sd_notify(3)).
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) to systemd; True if sent.

    A failure to send is not an error of the daemon: systemd then times the service out
    and says so itself.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode("utf-8"), address)
    except OSError:
        return False
    return True
