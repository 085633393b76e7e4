"""What ``--sql URL`` and ``--sql-table NAME`` name, checked, and the Postfix table file for them.

Pure: no driver is imported and nothing is connected, so ``relaywatch check-config`` and
``relaywatch postfix-sql-map`` work on a host without psycopg or PyMySQL, and the settings
refuse a wrong URL before any sink is opened.

Two engines, each with its own URL:

- ``postgresql://USER@HOST[:PORT][,HOST[:PORT]...]/DB[?PARAM=VALUE&...]``: handed to libpq
  as it is, so everything libpq reads works: several hosts and ``target_session_attrs=
  read-write`` (a failover is followed), ``sslmode``/``sslrootcert``/``sslcert``,
  ``service``, ``passfile``, ``host=`` and ``port=`` as parameters.
- ``mysql://USER@HOST[:PORT]/DB[?PARAM=VALUE&...]`` (MariaDB 10.6+, MySQL 8): the
  parameters are PyMySQL's connect arguments of the same name, a short list (``_MY_PARAMS``):
  TLS (``ssl_ca``, ``ssl_cert``, ``ssl_key``, ``ssl_verify_cert``, ``ssl_verify_identity``),
  an option file (``read_default_file``, ``read_default_group``), ``unix_socket``.

Why a password in the URL is refused: the URL is a command-line argument (``ps`` shows it
to every user) and is named in every log line and in ``status``. The password comes from
the engine's own files (libpq's passfile, ``PGPASSFILE``, a service file; a MariaDB option
file) or from ``--sql-password-file``.

Why the table name is so strict (``check_table``): it is an identifier, written into SQL,
not a value that can be a parameter. A name of letters, digits and ``_`` needs no
escaping anywhere, and is quoted all the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

__all__ = ["SqlTarget", "parse", "check_table", "postfix_map", "DEFAULT_TABLE", "ENGINES"]

DEFAULT_TABLE = "relay_clients"
#: URL scheme -> engine.
ENGINES = {"postgresql": "pgsql", "postgres": "pgsql", "mysql": "mysql", "mariadb": "mysql"}
DEFAULT_PORTS = {"pgsql": 5432, "mysql": 3306}
#: PyMySQL connect arguments a mysql:// URL may set (all others are refused, by name).
_MY_PARAMS = frozenset({"ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert", "ssl_verify_identity",
                        "read_default_file", "read_default_group", "unix_socket", "connect_timeout"})
#: 48 characters at most, so that NAME_expires_idx stays within PostgreSQL's 63.
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


@dataclass(frozen=True, slots=True)
class SqlTarget:
    """One ``--sql URL``, taken apart.

    Attributes:
        url: the URL as given (no password in it); the sink's spec.
        engine: ``pgsql`` or ``mysql``.
        user: the user name, or None (libpq: the login name; MariaDB: an option file's).
        hosts: ``(host, port)`` pairs as written; a host starting with ``/`` is a socket
            directory (libpq). Port None: the engine's default.
        dbname: the database, or None.
        params: the query parameters, in order.
    """

    url: str
    engine: str
    user: str | None
    hosts: tuple[tuple[str, int | None], ...]
    dbname: str | None
    params: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        """The last value of parameter ``name``, or None."""
        found = [value for key, value in self.params if key == name]
        return found[-1] if found else None


def parse(url: str) -> SqlTarget:
    """Take ``url`` apart and refuse what cannot be meant.

    Raises:
        ValueError: one line starting ``--sql URL:``: an unknown scheme, a password in the
            URL, a port that is not a number, an unknown mysql parameter.
    """
    where = f"--sql {url}"
    scheme, sep, rest = url.partition("://")
    engine = ENGINES.get(scheme.lower())
    if not sep or engine is None:
        raise ValueError(f"{where}: expected postgresql://USER@HOST[:PORT]/DB or mysql://USER@HOST[:PORT]/DB")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        userinfo, hostlist = "", netloc
    if ":" in userinfo:
        raise ValueError(f"{where}: a password in the URL would show in ps and in every log line; "
                         "use --sql-password-file FILE or the engine's own password file")
    try:
        params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ValueError(f"{where}: the part after ? is not PARAM=VALUE&...") from None
    if any(key == "password" for key, _ in params):
        raise ValueError(f"{where}: password= would show in ps and in every log line; "
                         "use --sql-password-file FILE or the engine's own password file")
    if engine == "mysql":
        unknown = sorted({key for key, _ in params} - _MY_PARAMS)
        if unknown:
            raise ValueError(f"{where}: unknown parameter {unknown[0]!r}; expected one of {', '.join(sorted(_MY_PARAMS))}")
    hosts = _hosts(where, hostlist, params, engine)
    if engine == "mysql" and len(hosts) > 1:
        raise ValueError(f"{where}: one host only for mysql:// (put a proxy or a virtual address before a cluster)")
    dbname = unquote(path) if path else None
    if engine == "pgsql" and dbname is None:
        dbname = next((v for k, v in params if k == "dbname"), None)
    if not dbname:
        raise ValueError(f"{where}: no database; expected .../DB")
    return SqlTarget(url=url, engine=engine, user=unquote(userinfo) or None, hosts=hosts, dbname=dbname,
                     params=params)


def _hosts(where: str, hostlist: str, params: tuple[tuple[str, str], ...],
           engine: str) -> tuple[tuple[str, int | None], ...]:
    if not hostlist and engine == "pgsql":
        given = dict(params)
        names = given.get("host", "").split(",") if given.get("host") else []
        ports = given.get("port", "").split(",") if given.get("port") else []
        if len(ports) == 1:
            ports *= len(names)
        items = [f"{name}:{ports[n]}" if n < len(ports) and ports[n] and not name.startswith("/") else name
                 for n, name in enumerate(names)]
    else:
        items = hostlist.split(",") if hostlist else []
    out: list[tuple[str, int | None]] = []
    for item in items:
        item = unquote(item)
        if item.startswith("/"):  # a libpq socket directory (given as host=/run/postgresql)
            out.append((item, None))
            continue
        if item.startswith("["):
            host, _, tail = item[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"{where}: an empty host name")
        if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
            raise ValueError(f"{where}: port {port_text!r} is not a number from 1 to 65535")
        out.append((host, int(port_text) if port_text else None))
    return tuple(out)


def check_table(name: str) -> str:
    """Return ``name`` if it is a plain identifier, else raise.

    Raises:
        ValueError: one line naming ``--sql-table`` and what is allowed.
    """
    if not _TABLE.fullmatch(name):
        raise ValueError(f"--sql-table {name!r}: expected a letter or _, then letters, digits or _ "
                         "(48 characters at most)")
    return name


def quoted(engine: str, table: str) -> str:
    """``table`` quoted as an identifier for ``engine`` (after ``check_table``: nothing to escape)."""
    check_table(table)
    return f"`{table}`" if engine == "mysql" else f'"{table}"'


def lookup_query(engine: str, table: str) -> str:
    """The query Postfix runs, ``%s`` being the key Postfix escapes and substitutes.

    Why it never fails: Postfix asks an SQL table from ``check_client_access`` for the
    client's name (or ``unknown``), its address, then the address cut short (``192.0.2``,
    ``192.0``, ``192``, ``2001:db8:``). Each is only compared as text with the key column,
    so a key that is no address finds no row; it is never cast to an address type, which
    would make the query fail and Postfix answer 451 to every client. The expiry is in the
    query itself (DB time): a row a stopped relaywatch left behind authorises nobody.
    """
    now = "UTC_TIMESTAMP(3)" if engine == "mysql" else "now()"
    return f"SELECT 'OK' FROM {quoted(engine, table)} WHERE ip = '%s' AND expires > {now}"


def postfix_map(target: SqlTarget, table: str) -> str:
    """The whole pgsql_table(5) or mysql_table(5) file for Postfix, as text."""
    kind = target.engine
    hosts = []
    for host, port in target.hosts or (("localhost", None),):
        if host.startswith("/"):
            hosts.append(f"unix:{host}")
        else:
            hosts.append(f"inet:{host}:{port or DEFAULT_PORTS[kind]}")
    socket = target.param("unix_socket")
    if kind == "mysql" and socket:
        hosts = [f"unix:{socket}"]
    manual = "pgsql_table(5)" if kind == "pgsql" else "mysql_table(5)"
    lines = [
        f"# Postfix {manual} file for relaywatch's shared table {table}.",
        f"# Made by: relaywatch postfix-sql-map --sql {target.url}" + (
            f" --sql-table {table}" if table != DEFAULT_TABLE else ""),
        "# Use it in main.cf (proxymap shares the connections between smtpd processes):",
        "#   smtpd_relay_restrictions = permit_mynetworks,",
        f"#       check_client_access proxy:{kind}:/etc/postfix/relaywatch-{kind}.cf,",
        "#       reject_unauth_destination",
        "# While the database cannot be reached, Postfix defers (4xx) the clients this check",
        "# would have decided; it never relays for them.",
        "# Postfix also asks for the client's name and for the address cut short (192.0.2,",
        "# 2001:db8:); the query finds no row for those, which is what it must do.",
        f"hosts = {' '.join(hosts)}",
        f"user = {target.user or 'postfix'}",
        "# The password of that user (better: a user granted only SELECT on the table).",
        "# Keep this file readable by root and postfix only (chmod 640, group postfix).",
        "password =",
        f"dbname = {target.dbname}",
    ]
    if kind == "mysql":
        for param, option in (("ssl_ca", "tls_CAfile"), ("ssl_cert", "tls_cert_file"), ("ssl_key", "tls_key_file")):
            value = target.param(param)
            if value:
                lines.append(f"{option} = {value}")
        if target.param("ssl_ca") or target.param("ssl_cert"):
            lines.append("tls_verify_cert = yes")
        if target.param("read_default_file"):
            lines.append(f"option_file = {target.param('read_default_file')}")
    elif any(key.startswith("ssl") for key, _ in target.params):
        lines.append("# The URL sets TLS options: give hosts as postgresql:// URIs carrying them (pgsql_table(5)).")
    lines.append(f"query = {lookup_query(kind, table)}")
    return "\n".join(lines) + "\n"
