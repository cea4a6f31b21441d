"""The URLs ``resp`` understands: ``parse_url`` for one server, ``from_url``
for every form.

- ``redis://``, ``rediss://``, ``unix://`` — one server (``Client.from_url``).
- ``redis+cluster://[[user]:password@]host:port[,host:port…][?options]`` — a
  Redis Cluster, seeded by those nodes (``ClusterClient``); ``rediss+cluster``
  for TLS.
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db][?options]``
  — the primary that those sentinels name for ``service`` (``SentinelClient``);
  the user and password are the primary's. ``rediss+sentinel`` reaches the
  primary over TLS.

The query string takes the options ``Client.from_url`` takes.
"""

TYPE_CHECKING = False  # not typing's: importing typing would slow Client.from_url
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Tuple, Union

    from .client import Client
    from .cluster import ClusterClient

__all__ = ["from_url", "parse_url"]


def _database_number(text: str) -> int:
    # A database number in a URL: ASCII digits only (int() also takes "1_0",
    # " 1" and other scripts' digits).
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"the database in a Redis URL must be a number, not {text!r}")
    return int(text)


_URL_QUERY_OPTIONS: "Dict[str, Callable[[str], Any]]" = {
    "db": _database_number,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "client_name": str,
    "ssl_ca_certs": str,
}


def _check_no_at_after_host(url: str) -> None:
    # An '@' anywhere but before the host: a password holding an unescaped
    # '/', '?' or '#' ended the host part early, or a slash too many or too
    # few (redis:///:pw@host, redis:/:pw@host) left no host part at all, and
    # the rest of it would reach error messages as a database, an option, a
    # socket path or a scheme. Refused, repeating nothing of the URL. (A
    # socket path with an '@' in it gives it as %40.)
    scheme, has_scheme, rest = url.partition("://")
    if has_scheme:
        ends = [index for index in (rest.find("/"), rest.find("?"), rest.find("#")) if index >= 0]
        after_host = rest[min(ends, default=len(rest)) :]
    else:
        scheme, after_host = "", url  # no '//': no host part, nor user name and password before one
    if "@" in scheme or "@" in after_host:
        raise ValueError(
            "malformed Redis URL: an '@' that is not the one before the host; percent-encode '@', '/', "
            "'?' and '#' in a user name, password, option or socket path (e.g. '/' as %2F, '@' as %40)"
        )


def _node_address(node: object) -> "Tuple[str, int]":
    # A cluster or sentinel node given as "host:port" or a (host, port) pair.
    # int() alone would take " 7000", "7_000" and other scripts' digits, and
    # a bare host or a None failed as "invalid literal for int()" or "cannot
    # unpack non-iterable NoneType object".
    from .connection import _HOST_WITH_AT

    if isinstance(node, str):
        if "@" in node:  # not repeated: what comes before it may be a password
            raise ValueError(_HOST_WITH_AT)
        host, _, port = node.rpartition(":")
        if host.startswith("[") and host.endswith("]") and len(host) > 2:
            host = host[1:-1]  # an IPv6 address, bracketed as in a URL
        if host and "[" not in host and "]" not in host and port.isascii() and port.isdigit() \
                and 0 < int(port) < 65536:
            return host, int(port)
        raise ValueError(f"a node is 'host:port' or a (host, port) pair, not {node!r}")
    if isinstance(node, (tuple, list)) and len(node) == 2:
        host, port = node
        if isinstance(host, str) and "@" in host:
            raise ValueError(_HOST_WITH_AT)
        if isinstance(host, str) and host and isinstance(port, int) and not isinstance(port, bool) \
                and 0 < port < 65536:
            return host, int(port)
    raise TypeError(f"a node is 'host:port' or a (host, port) pair, not {node!r}")


def parse_url(url: str) -> "Dict[str, Any]":
    """Return the ``Client`` options that a ``redis://``, ``rediss://`` or
    ``unix://`` URL gives.

    :raises ValueError: the URL is malformed; the message never repeats a password.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    _check_no_at_after_host(url)
    from urllib.parse import parse_qsl, unquote, urlsplit  # only programs that use URLs pay for it

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("malformed Redis URL (expected redis://[[user]:password@]host[:port][/db])") from None
    options: Dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:  # redis://:@host has no password, as in redis-py and redis-cli
        options["password"] = unquote(parts.password)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
        if parts.hostname:  # unix://tmp/redis.sock: 'tmp' would silently drop out of the path
            raise ValueError("a unix:// URL has no host: give the socket path after three slashes, "
                             "e.g. unix:///run/redis.sock")
        options["unix_socket_path"] = unquote(parts.path)
    elif scheme in ("redis", "rediss"):
        if not url.partition(":")[2].startswith("//"):  # redis:host, redis:/0: the text would be read as a db
            raise ValueError("malformed Redis URL (expected redis://[[user]:password@]host[:port][/db])")
        if parts.hostname:
            options["host"] = unquote(parts.hostname)
        if port is not None:
            options["port"] = port
        path = parts.path.strip("/")
        if path:
            options["db"] = _database_number(path)
        if scheme == "rediss":
            options["ssl"] = True
    else:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: use redis://, rediss:// or unix://")
    given = set()
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        convert = _URL_QUERY_OPTIONS.get(name)
        if convert is None:
            raise ValueError(f"unknown option {name!r} in Redis URL")
        if name in given:  # which one was meant? (redis-py takes the first)
            raise ValueError(f"option {name!r} given twice in Redis URL")
        given.add(name)
        try:
            options[name] = convert(value)
        except ValueError:
            raise ValueError(f"bad value for {name!r} in Redis URL: {value!r}") from None
    return options



def _split(url: str) -> "Tuple[str, List[str], str, str]":
    # scheme, ["host:port", …], path, "?query"; the hosts part holds commas,
    # which urllib would reject as a port.
    scheme, _, rest = url.partition("://")
    rest = rest.partition("#")[0]  # a fragment, as urlsplit drops it (none is in a password: see above)
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, _, hosts = netloc.rpartition("@")
    path, _, query = tail.partition("?")
    base = scheme.split("+")[0] + "://" + (userinfo + "@" if userinfo else "")
    return base, [h for h in hosts.split(",") if h], path, "?" + query if query else ""


def _with_port(host: str, default: int) -> str:
    # "host:port" as it is; a host without a port gets the default one. The
    # colons of an IPv6 address are inside its brackets: "[::1]" has no port.
    return host if ":" in host.rpartition("]")[2] else f"{host}:{default}"


# One server; several hosts (a cluster's seeds, or sentinels), with or without TLS.
_ONE_SERVER_SCHEMES = ("redis", "rediss", "unix")
_MANY_HOST_SCHEMES = tuple(f"{base}+{kind}" for kind in ("cluster", "sentinel") for base in ("redis", "rediss"))


def from_url(url: str, **overrides: "Any") -> "Union[Client, ClusterClient]":
    """Make the client a URL describes; keyword arguments override what it says.

    >>> from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")   # doctest: +SKIP
    <resp.ClusterClient seeds=127.0.0.1:7000,127.0.0.1:7001>

    :raises ValueError: the URL is malformed (the message never repeats the password).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    _check_no_at_after_host(url)
    scheme, has_scheme, _ = url.partition("://")
    scheme = scheme.lower()
    if has_scheme and scheme not in _ONE_SERVER_SCHEMES + _MANY_HOST_SCHEMES:
        shown = f" {scheme!r}" if scheme.replace("+", "").replace("-", "").replace(".", "").isalnum() else ""
        raise ValueError(f"unsupported URL scheme{shown}: use redis://, rediss://, unix://, "
                         "redis+cluster:// or redis+sentinel:// (rediss+cluster://, rediss+sentinel:// for TLS)")
    if scheme not in _MANY_HOST_SCHEMES:
        from .client import Client

        return Client.from_url(url, **overrides)
    base, hosts, path, query = _split(url)
    if not hosts:
        raise ValueError(f"a {scheme}:// URL needs at least one host:port")
    if scheme.endswith("cluster"):
        from .cluster import ClusterClient

        if path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0")
        options = parse_url(base + hosts[0] + query)
        if options.pop("db", 0):  # ?db=N, which would otherwise be dropped unsaid
            raise ValueError("a Redis Cluster has only database 0")
        for name in ("host", "port"):
            options.pop(name, None)
        return ClusterClient([_with_port(host, 6379) for host in hosts],
                             **{**options, **overrides})
    service, _, db = path.strip("/").partition("/")
    from urllib.parse import unquote

    service = unquote(service)  # percent-encoded, as the other parts of a URL
    if not service:
        raise ValueError("a redis+sentinel:// URL needs the service name: redis+sentinel://host:port/mymaster")
    options = parse_url(base + hosts[0] + "/" + db + query)
    for name in ("host", "port"):
        options.pop(name, None)
    sentinels = [_with_port(host, 26379) for host in hosts]
    from .sentinel import SentinelClient

    return SentinelClient(sentinels, service, **{**options, **overrides})
