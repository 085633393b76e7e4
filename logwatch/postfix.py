"""Run Postfix's own tools (postconf, postmap, postfix) for relaywatch: the one edge that does.

Why a module: the Postfix sink, ``--never postfix:mynetworks`` and the tests all need the
same three things done the same way: find the binary (``/usr/sbin`` is often not on a
service's PATH), pass ``-c DIR`` for a non-default instance, and run it with an argument
list, never a shell, so no map path or config directory is ever interpreted as syntax.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from logwatch.addresses import NeverList

#: Where Debian, RHEL and the BSD ports put Postfix's commands, searched after $PATH.
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin")

#: Map types packaged separately on Debian and Ubuntu, and the package that adds each.
DEBIAN_PACKAGES = {
    "lmdb": "postfix-lmdb",
    "cdb": "postfix-cdb",
    "mysql": "postfix-mysql",
    "pgsql": "postfix-pgsql",
    "ldap": "postfix-ldap",
    "sqlite": "postfix-sqlite",
    "pcre": "postfix-pcre",
}

#: The spelling of ``--never`` that imports Postfix's mynetworks.
MYNETWORKS = "postfix:mynetworks"


class PostfixError(Exception):
    """A Postfix command is missing or failed; the message is one line."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a Postfix command did.

    Attributes:
        argv: the command as run.
        status: its exit status.
        stdout: its output.
        stderr: its error output, stripped, lines joined with `` | `` for one-line logs.
    """

    argv: tuple[str, ...]
    status: int
    stdout: str
    stderr: str


def find(command: str) -> str:
    """Return the path of a Postfix command, searching $PATH and then ``SBIN``.

    Raises:
        PostfixError: not installed.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    found = shutil.which(command, path=search)
    if found is None:
        raise PostfixError(f"{command}: not found in $PATH or {', '.join(SBIN)}; "
                           "is Postfix installed (Debian package postfix)?")
    return found


def run(command: str, args: Sequence[str], config_dir: str | None = None,
        timeout: float = 300.0, input: str | None = None) -> Result:
    """Run ``command [-c config_dir] args...`` without a shell and capture its output.

    ``input`` is written to its standard input (``postmap -i``, ``postmap -d -``); without
    it, standard input is /dev/null, so a command never waits for a terminal.

    Raises:
        PostfixError: the command is missing, could not start, or timed out.
    """
    argv = [find(command)]
    if config_dir is not None:
        argv += ["-c", config_dir]
    argv += list(args)
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL if input is None else None, input=input,
            capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        raise PostfixError(f"{' '.join(argv)}: no answer after {timeout:g}s") from None
    except OSError as error:
        raise PostfixError(f"{' '.join(argv)}: cannot run ({error.strerror})") from None
    stderr = " | ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
    return Result(tuple(argv), done.returncode, done.stdout, stderr)


def map_types(config_dir: str | None = None) -> frozenset[str]:
    """The lookup table types this Postfix supports (``postconf -m``).

    Raises:
        PostfixError: postconf is missing or failed.
    """
    result = run("postconf", ["-m"], config_dir, timeout=60)
    if result.status != 0:
        raise PostfixError(f"postconf -m failed: {result.stderr or f'exit {result.status}'}")
    return frozenset(result.stdout.split())


def missing_type_hint(map_type: str) -> str:
    """The advice for a map type ``postconf -m`` does not list."""
    package = DEBIAN_PACKAGES.get(map_type)
    if package:
        return f"install the Debian/Ubuntu package {package} (or your system's equivalent)"
    return "use a type that postconf -m lists, such as hash or texthash"


def is_running(config_dir: str | None = None) -> bool:
    """True if this Postfix instance's master is running (``postfix status``)."""
    return run("postfix", ["status"], config_dir, timeout=60).status == 0


def mynetworks(config_dir: str | None = None) -> list[str]:
    """Postfix's ``mynetworks`` as CIDR strings (``postconf -h mynetworks``).

    Postfix writes IPv6 networks in brackets (``[::1]/128``); they come back unbracketed.

    Raises:
        PostfixError: postconf failed, or mynetworks names a table or file (``hash:...``,
            ``/etc/postfix/networks``), whose contents relaywatch does not read.
    """
    result = run("postconf", ["-h", "mynetworks"], config_dir, timeout=60)
    if result.status != 0:
        raise PostfixError(
            f"--never {MYNETWORKS}: postconf -h mynetworks failed: "
            f"{result.stderr or f'exit {result.status}'}")
    networks = []
    for item in result.stdout.replace(",", " ").split():
        text = item.replace("[", "").replace("]", "")
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise PostfixError(
                f"--never {MYNETWORKS}: mynetworks item {item!r} is not a network "
                "(tables and files are not imported); list the networks in --never instead"
            ) from None
    return networks


def never_list(text: str, config_dir: str | None = None) -> NeverList:
    """Parse ``--never``, expanding ``postfix:mynetworks`` into Postfix's own networks.

    Why import them: clients in mynetworks relay through ``permit_mynetworks`` already;
    granting them as well would only make the map hide a misconfiguration.

    Raises:
        ValueError: an item is not a network (one line, from ``NeverList.parse``).
        PostfixError: ``postfix:mynetworks`` could not be read.
    """
    items: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item == MYNETWORKS:
            items.extend(mynetworks(config_dir))
        elif item:
            items.append(item)
    if not items and MYNETWORKS in text:
        return NeverList(())
    return NeverList.parse(items)
