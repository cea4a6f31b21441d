"""``from_url``: one function for every URL form ``resp`` understands.

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

from typing import TYPE_CHECKING, Any, List, Tuple, Union

from .client import Client, _check_no_at_after_host, parse_url

if TYPE_CHECKING:
    from .cluster import ClusterClient

__all__ = ["from_url"]


def _split(url: str) -> Tuple[str, List[str], str, str]:
    # scheme, ["host:port", …], path, "?query"; the hosts part holds commas,
    # which urllib would reject as a port.
    scheme, _, rest = url.partition("://")
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


def from_url(url: str, **overrides: Any) -> Union[Client, "ClusterClient"]:
    """Make the client a URL describes; keyword arguments override what it says.

    >>> from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")   # doctest: +SKIP
    <resp.ClusterClient seeds=127.0.0.1:7000,127.0.0.1:7001>

    :raises ValueError: the URL is malformed (the message never repeats the password).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower()
    if scheme not in ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"):
        return Client.from_url(url, **overrides)
    _check_no_at_after_host(url)
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
    if not service:
        raise ValueError("a redis+sentinel:// URL needs the service name: redis+sentinel://host:port/mymaster")
    options = parse_url(base + hosts[0] + "/" + db + query)
    for name in ("host", "port"):
        options.pop(name, None)
    sentinels = [_with_port(host, 26379) for host in hosts]
    from .sentinel import SentinelClient

    return SentinelClient(sentinels, service, **{**options, **overrides})
