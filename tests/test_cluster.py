"""resp.ClusterClient and HotQueue on a real 3-primary Redis Cluster (one
replica each), started once for this module by ``cluster_fixtures``; a few
tests start a cluster of their own (one node, TLS, a scale-in)."""

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Sequence, Set, Tuple

import pytest
from cluster_fixtures import (
    RedisCluster,
    _port_with_free_bus,
    free_port,
    run_example,
    scaling_out_examples,
    wait_for,
)
from redis_server import RedisServer

import resp
from hotqueue import HotQueue
from hotqueue.reliable import Consumer


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    try:
        nodes = RedisCluster(primaries=3, replicas=1).start()
    except Exception as exc:
        pytest.fail(f"cannot start a Redis Cluster for the tests: {exc}", pytrace=False)
    yield nodes
    nodes.stop()


@pytest.fixture
def cc(cluster: RedisCluster) -> Iterator[resp.ClusterClient]:
    client = resp.from_url(cluster.url, socket_timeout=10)
    assert isinstance(client, resp.ClusterClient)
    with client:
        yield client


def unique(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def other_primary(cluster: RedisCluster, port: int) -> int:
    return next(p for p in cluster.primary_ports() if p != port)


def move_empty_slot(cluster: RedisCluster, slot: int, target: int) -> None:
    """Give ``slot`` (no keys left on its owner) to the primary on ``target``
    as a resharding ends: the target, importing it, is told first, which
    makes its config epoch the greatest once it has heard of the greatest so
    far. Otherwise a heartbeat the old owner sent just before letting go,
    with a greater epoch, could give the slot back to it in the target's
    view, and the nodes would disagree for good."""
    ids = cluster.node_ids()
    primaries = cluster.primary_ports()

    def current_epochs() -> Set[bytes]:
        infos = [cluster.client(port).execute("CLUSTER", "INFO") for port in primaries]
        return {line for info in infos for line in info.split() if line.startswith(b"cluster_current_epoch:")}

    wait_for("the primaries to agree on the greatest epoch", lambda: len(current_epochs()) == 1)
    cluster.client(target).execute("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[cluster.owner(slot)])
    for port in [target, *(port for port in primaries if port != target)]:
        cluster.client(port).execute("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    wait_for(f"slot {slot} on {target}", lambda: cluster._agreed(primaries_only=True) and cluster.owner(slot) == target)


@contextlib.contextmanager
def half_migrated(cluster: RedisCluster, slot: int) -> Iterator[Tuple[int, int]]:
    """``slot`` marked as migrating from its owner (source) to another primary
    (target) for the block, then given to the target; yields (source, target)."""
    source = cluster.owner(slot)
    target = other_primary(cluster, source)
    ids = cluster.node_ids()
    cluster.client(target).execute("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    cluster.client(source).execute("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    try:
        yield source, target
    finally:
        move_empty_slot(cluster, slot, target)


def lone_node(make_server: Callable[..., RedisServer], args: Sequence[str] = (), **options: Any) -> RedisServer:
    """A started cluster-enabled server that has met no other node yet."""
    # Its cluster bus is on port + 10000 (with TLS: tls-port + 10000).
    return make_server(args=["--cluster-enabled", "yes", *args], port=_port_with_free_bus(), **options)


def serve_every_slot(node: resp.Client) -> None:
    """Give a lone node every slot: a cluster of one, as in development."""
    node.execute("CLUSTER", "ADDSLOTS", *range(16384))
    wait_for("cluster_state:ok", lambda: b"cluster_state:ok" in node.execute("CLUSTER", "INFO"))


def test_key_slot_matches_the_server(cluster: RedisCluster) -> None:
    node = cluster.client(cluster.primary_ports()[0])
    rng = random.Random(7)
    keys: List[bytes] = [b"", b"123456789", b"{}", b"{}a", b"a{}b", b"{a}{b}", b"x{y}z", b"{{a}}",
                         b"}{a}", b"{a", b"a}", b"\xff\x00{\xfe}", "caf\u00e9{\u00e9}".encode()]
    keys += [bytes(rng.choice(b"ab{}\x00\xff") for _ in range(rng.randrange(8))) for _ in range(300)]
    for key in keys:
        assert resp.key_slot(key) == node.execute("CLUSTER", "KEYSLOT", key), key
    assert resp.key_slot("123456789") == 0x31C3
    assert resp.key_slot("{user}.a") == resp.key_slot(b"user") == resp.key_slot(bytearray(b"x{user}"))


def test_queues_spread_over_every_primary(cluster: RedisCluster) -> None:
    names = [unique("spread") for _ in range(30)]
    queues = [HotQueue(name, url=cluster.url) for name in names]
    for queue in queues:
        queue.put(queue.name)
    where = {}
    for queue in queues:
        # A plain client on the owner sees the key there: no redirection involved.
        owner = cluster.owner(resp.key_slot(queue.key))
        assert cluster.client(owner).execute("EXISTS", queue.key) == 1
        where.setdefault(owner, []).append(queue)
    assert sorted(where) == cluster.primary_ports() and len(where) == 3
    assert [queue.get() for queue in queues] == names
    assert all(len(queue) == 0 for queue in queues)


def test_hotqueue_api_through_client(cc: resp.ClusterClient) -> None:
    queue = HotQueue(unique("api"), client=cc)
    queue.put("a", {"b": 2}, 3)
    assert len(queue) == 3
    assert queue.get() == "a"
    assert queue.get(block=True, timeout=1) == {"b": 2}
    assert list(queue.consume(timeout=0.2)) == [3]
    assert queue.get(block=True, timeout=0.1) is None
    queue.put(1)
    queue.clear()
    assert len(queue) == 0


def test_cross_slot_refused_before_sending(cc: resp.ClusterClient) -> None:
    a, b = "cross-a", "cross-b"
    assert resp.key_slot(a) != resp.key_slot(b)
    cc.rpush(a, "1")
    with pytest.raises(resp.CrossSlotError, match="hash tag"):
        cc.delete(a, b)
    with pytest.raises(resp.CrossSlotError):
        cc.blpop([a, b], 1)
    with pytest.raises(resp.CrossSlotError):
        cc.execute("LMOVE", a, b, "LEFT", "RIGHT")
    pipe = cc.pipeline().command("LLEN", a)
    with pytest.raises(resp.CrossSlotError):
        pipe.command("LLEN", b)
    assert pipe.execute() == [1]
    assert cc.llen(a) == 1  # DEL never reached a server
    tag = unique("{tag}")
    assert cc.delete(a) == 1
    assert cc.rpush(tag + "a", "x") == 1 and cc.lmove(tag + "a", tag + "b") == b"x"
    replies = cc.pipeline().command("MULTI").command("RPUSH", tag + "a", "y").command(
        "LLEN", tag + "b").command("EXEC").execute()
    assert replies == ["OK", "QUEUED", "QUEUED", [1, 1]]
    assert cc.delete(tag + "a", tag + "b") == 2


def test_moved_refreshes_the_map_and_retries(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    key = unique("moved")
    slot = resp.key_slot(key)
    source = cluster.owner(slot)
    assert cc.node_for(key).address.port == source  # the map is learned
    target = other_primary(cluster, source)
    move_empty_slot(cluster, slot, target)
    assert cc.rpush(key, "v") == 1  # sent to source, MOVED, retried on target
    assert cc.node_for(key).address.port == target
    assert cluster.client(target).execute("LRANGE", key, 0, -1) == [b"v"]
    # A pipeline that met MOVED everywhere ran nowhere, so it is sent again.
    other = unique("{moved-pipe}")
    owner = cc.node_for(other).address.port
    move_empty_slot(cluster, resp.key_slot(other), other_primary(cluster, owner))
    assert cc.pipeline().command("RPUSH", other, "1").command("LLEN", other).execute() == [1, 1]
    # So is a transaction that MOVED aborted (MULTI, MOVED, EXECABORT).
    third = unique("{moved-multi}")
    owner = cc.node_for(third).address.port
    move_empty_slot(cluster, resp.key_slot(third), other_primary(cluster, owner))
    replies = cc.pipeline().command("MULTI").command("RPUSH", third, "2").command("EXEC").execute()
    assert replies == ["OK", "QUEUED", [1]]
    assert cc.node_for(third).address.port != owner
    assert cc.delete(key) == 1 and cc.delete(other) == 1 and cc.lpop(third) == b"2"
    # A pipeline that partly ran (a key-less PUBLISH) is not sent again, but
    # the map is learned anew.
    fourth = unique("{moved-partly}")
    owner = cc.node_for(fourth).address.port
    target = other_primary(cluster, owner)
    move_empty_slot(cluster, resp.key_slot(fourth), target)
    replies = cc.pipeline().command("PUBLISH", fourth, "3").command("RPUSH", fourth, "3").execute(
        raise_on_error=False)
    assert replies[0] == 0 and isinstance(replies[1], resp.MovedError)
    assert cc.node_for(fourth).address.port == target and cc.llen(fourth) == 0
    # PING and ECHO change nothing: beside them, the rest ran nowhere.
    fifth = unique("{moved-ping}")
    owner = cc.node_for(fifth).address.port
    move_empty_slot(cluster, resp.key_slot(fifth), other_primary(cluster, owner))
    replies = cc.pipeline().command("PING").command("RPUSH", fifth, "4").command("ECHO", "e").execute()
    assert replies == ["PONG", 1, b"e"] and cc.lpop(fifth) == b"4"


def test_ask_goes_to_the_target_once_without_changing_the_map(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    key = unique("ask")
    slot = resp.key_slot(key)
    assert cc.node_for(key).address.port == cluster.owner(slot)
    with half_migrated(cluster, slot) as (source, target):
        assert cc.rpush(key, "a", "b") == 2  # absent on source: ASK, then ASKING + RPUSH on target
        assert cc.blpop(key, 1) == (key.encode(), b"a")
        assert cluster.client(target).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert cluster.client(source).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert cc.node_for(key).address.port == source  # ASK changes nothing
    assert cc.lpop(key) == b"b"


def test_a_pipeline_answered_ask_everywhere_is_sent_to_the_target(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """A pipeline whose every command with a key is answered ``ASK`` (its key
    is already on the migration's target) ran nowhere: it is sent again to the
    target after ``ASKING``, a transaction too, and the map is left as it is."""
    key = unique("{ask-pipe}")
    slot = resp.key_slot(key)
    assert cc.node_for(key).address.port == cluster.owner(slot)
    with half_migrated(cluster, slot) as (source, target):
        assert cc.pipeline().command("RPUSH", key, "a").command("LLEN", key).execute() == [1, 1]
        # MULTI, then ASK: the transaction is aborted (EXECABORT) on the source.
        replies = cc.pipeline().command("MULTI").command("RPUSH", key, "b").command("EXEC").execute()
        assert replies == ["OK", "QUEUED", [2]]
        assert cluster.client(target).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert cluster.client(source).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert cc.node_for(key).address.port == source  # ASK changes nothing
    assert cc.execute("LRANGE", key, 0, -1) == [b"a", b"b"] and cc.delete(key) == 1


@pytest.mark.parametrize("endpoint_type, host", [("unknown-endpoint", ""), ("hostname", "?")])
def test_a_redirection_naming_no_host_is_followed(
    cluster: RedisCluster, cc: resp.ClusterClient, endpoint_type: str, host: str
) -> None:
    """Redis 7 may name no host in ``MOVED`` and ``ASK``: ``MOVED 866 :7002``
    with ``cluster-preferred-endpoint-type unknown-endpoint`` (the node that
    sent it), ``MOVED 866 ?:7002`` with ``hostname`` when the target announces
    none (the one node known on that port). A client that knows two names on
    every port (startup nodes by name, the map by ip) cannot tell: after a
    ``MOVED`` it goes by the map learned again, after an ``ASK`` to that port
    on the host of the node that sent it."""
    admins = [cluster.client(node.port) for node in cluster.nodes]
    before = [admin.execute("CONFIG", "GET", "cluster-preferred-endpoint-type")[1] for admin in admins]
    primaries = cluster.primary_ports()
    two_names = resp.ClusterClient([f"127.0.0.1:{primaries[0]}", *(f"localhost:{port}" for port in primaries)],
                                   socket_timeout=10)
    for admin in admins:
        admin.execute("CONFIG", "SET", "cluster-preferred-endpoint-type", endpoint_type)
    try:
        # Slots of their own each time: a slot moved back and forth faster than
        # the nodes gossip can end up owned by none in some nodes' view.
        for client in (cc, two_names):
            moved = unique("no-host-moved")
            source = client.node_for(moved).address.port
            target = other_primary(cluster, source)
            move_empty_slot(cluster, resp.key_slot(moved), target)
            with pytest.raises(resp.MovedError) as info:
                cluster.client(source).execute("LLEN", moved)
            assert info.value.node == f"{host}:{target}"
            assert client.rpush(moved, "v") == 1
            assert cluster.client(target).execute("LPOP", moved) == b"v"
            assert client.node_for(moved).address.port == target
            piped = "{%s}" % unique("no-host-pipe")
            owner = client.node_for(piped).address.port
            move_empty_slot(cluster, resp.key_slot(piped), other_primary(cluster, owner))
            assert client.pipeline().command("RPUSH", piped, "w").command("LPOP", piped).execute() == [1, b"w"]
            asked = "{%s}" % unique("no-host-ask")
            slot = resp.key_slot(asked)
            with half_migrated(cluster, slot) as (source, target):
                assert client.rpush(asked, "x") == 1  # ASK <slot> [?]:<target>
                assert client.pipeline().command("RPUSH", asked, "y").execute() == [2]
                assert cluster.client(target).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
            assert client.execute("LRANGE", asked, 0, -1) == [b"x", b"y"] and client.delete(asked) == 1
    finally:
        two_names.close()
        for admin, value in zip(admins, before):
            admin.execute("CONFIG", "SET", "cluster-preferred-endpoint-type", value)


def test_tryagain_is_retried_within_a_bound(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    tag = unique("{try}")
    first, second = tag + "1", tag + "2"
    cc.rpush(first, "1")
    cc.rpush(second, "2")
    slot = resp.key_slot(first)
    with half_migrated(cluster, slot) as (source, target):
        cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", first)
        impatient = resp.ClusterClient([f"127.0.0.1:{source}"], max_redirects=3)
        started = time.monotonic()
        with pytest.raises(resp.ClusterError, match="gave up after 3 redirections; last: (TRYAGAIN|ASK)"):
            # One key here, one there: TRYAGAIN each time (Redis 7), or ASK to
            # the target and TRYAGAIN there in turn (6.2). Both wait, then retry.
            impatient.delete(first, second)
        assert 0.04 < time.monotonic() - started < 5
        with pytest.raises(resp.ClusterError, match="gave up after 3 redirections"):
            impatient.pipeline().command("DEL", first, second).execute()  # nothing run: not an ASK's error
        assert cluster.client(source).execute("EXISTS", second) == 1  # not run
        cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", second)
    assert impatient.delete(first, second) == 2
    impatient.close()


def test_hotqueue_takes_cluster_and_plain_clients_only(cluster: RedisCluster) -> None:
    with pytest.raises(TypeError, match="ClusterClient"):
        HotQueue("q", client=object())
    queue = HotQueue("q", url=cluster.url.replace("redis+cluster", "REDIS+CLUSTER"))
    assert isinstance(queue.client, resp.ClusterClient)


def test_a_connection_lost_after_sending_raises(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    key = unique("lost")
    owner = cluster.client(cluster.owner(resp.key_slot(key)))
    outcome: List[object] = []

    def pop() -> None:
        try:
            outcome.append(cc.blpop(key, 5))
        except resp.ConnectionError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=pop)
    thread.start()
    wait_for("BLPOP to block", lambda: b"cmd=blpop" in owner.execute("CLIENT", "LIST"))
    killed = owner.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    thread.join(10)
    assert killed >= 1
    # Raised, not resent: a resent BLPOP would have waited 5 s and returned None.
    assert len(outcome) == 1 and isinstance(outcome[0], resp.ConnectionError)
    cc.rpush(key, "after")
    assert cc.blpop(key, 1) == (key.encode(), b"after")  # the map was refreshed


def test_a_blocking_pop_whose_slot_moves_keeps_its_timeout(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """A ``BLPOP`` unblocked by ``MOVED`` (its slot moved while it waited) is
    sent to the new owner with what is left of its timeout: ``get(timeout=4)``
    returns after about 4 s in all, not 2 + 4."""
    queue = HotQueue(unique("deadline"), client=cc)
    slot = resp.key_slot(queue.key)
    source = cc.node_for(queue.key).address.port
    target = other_primary(cluster, source)
    moved: List[float] = []

    def move() -> None:
        wait_for("BLPOP to block", lambda: b"cmd=blpop" in cluster.client(source).execute("CLIENT", "LIST"))
        time.sleep(2)
        move_empty_slot(cluster, slot, target)
        moved.append(time.monotonic())

    mover = threading.Thread(target=move)
    mover.start()
    started = time.monotonic()
    try:
        assert queue.get(block=True, timeout=4) is None
        elapsed = time.monotonic() - started
    finally:
        mover.join(30)
    assert cluster.owner(slot) == target and cc.node_for(queue.key).address.port == target
    # The slot moved while the BLPOP waited (else this tested nothing) ...
    assert moved and moved[0] < started + 3.5, "the move came too late to test the resent timeout"
    assert elapsed < 5.5  # ... and 4 s in all and a margin; a fresh 4 s after the move would be 6 or more


@pytest.mark.parametrize("timeout", [0.5, "0.5", b"0.5"])
def test_a_resent_blocking_timeout_never_falls_to_what_an_old_server_reads_as_forever(timeout: Any) -> None:
    """What is left of a blocking command's timeout, when it is resent after a
    redirection, is never under MIN_FRACTION: Redis 6.0-6.2 read 0.001 and
    less as 0, which means wait forever."""
    from resp.cluster import _with_time_left  # the rule itself: a server cannot show the 6.x reading here

    resent = _with_time_left(("BLPOP", "k", timeout), 2, time.monotonic() - 0.4995)
    assert resent is not None and float(resent[2]) >= resp.commands.MIN_FRACTION


def test_a_resent_timeout_too_large_for_a_float_is_left_to_the_server() -> None:
    """As a plain client does (test_client): the server refuses it, where
    cutting it to what is left raised an OverflowError."""
    from resp.cluster import _with_time_left

    command = ("BLPOP", "k", 10**400)
    assert _with_time_left(command, 2, time.monotonic() - 1) == command


def test_a_redirected_wait_past_its_time_is_resent_shortest_only_in_fractions_of_a_second() -> None:
    """After MOVED or ASK (at_least): a timeout in fractions of a second is
    resent as the shortest wait, so that the owner answers; whole seconds
    are not, as a second more would be waited past what was asked."""
    from resp.cluster import _with_time_left

    past = time.monotonic() - 2
    assert _with_time_left(("BLPOP", "k", 1.5), 2, past, True) == ("BLPOP", "k", resp.commands.MIN_FRACTION)
    assert _with_time_left(("BLPOP", "k", 1), 2, past, True) is None
    assert _with_time_left(("BLPOP", "k", 1.5), 2, past) is None


def test_a_check_redirected_once_its_wait_has_passed_is_answered_by_the_new_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """consume's check of a new connection (a BLMOVE of a hundredth of a
    second) that a MOVED sends on once its time has passed still waits for
    the new owner: here frozen (its kernel still accepts), so the check
    times out. It returned None, as for an empty queue, with only the old
    owner's MOVED heard: the waits after it counted as on a live link."""
    from hotqueue.queue import _probe

    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)  # a quicker test; the margin is not its subject
    try:
        small = RedisCluster(primaries=3, replicas=0, node_timeout_ms=60000).start()
    except Exception as exc:
        pytest.fail(f"cannot start a Redis Cluster for the test: {exc}", pytrace=False)
    client = None
    first, middle, last = small.owner(0), small.owner(8192), small.owner(16383)
    frozen = next(node for node in small.nodes if node.port == first)
    key = next(key for key in (unique("moved-check") for _ in range(1000)) if small.owner(resp.key_slot(key)) == last)
    slot, first_id = resp.key_slot(key), small.node_ids()[first]
    try:
        # The slot goes to the first primary, stopped first: it tells no other
        # node, and the middle one, asked for the map, still names the last.
        os.kill(frozen.process.pid, signal.SIGSTOP)
        small.client(last).execute("CLUSTER", "SETSLOT", slot, "NODE", first_id)
        served = [row for row in small.client(middle).execute("CLUSTER", "SLOTS") if row[0] <= slot <= row[1]]
        assert served[0][2][1] == last, "the middle primary learned the move: nothing to test"
        # The frozen node is asked for the map first: its socket_timeout passes
        # before the middle one answers, and with it the check's wait.
        client = resp.ClusterClient([f"127.0.0.1:{port}" for port in (first, middle, last)], socket_timeout=1)
        with pytest.raises(resp.TimeoutError):
            _probe(client, key)
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
        if client is not None:
            client.close()
        small.stop()


def test_a_script_with_a_bad_numkeys_is_refused_by_the_server(cc: resp.ClusterClient) -> None:
    """As a plain client does: the server's error, not a Python one from
    reading numkeys to route the command."""
    for numkeys in ("abc", b"1.5", "-1"):
        with pytest.raises(resp.ResponseError):
            cc.execute("EVAL", "return 1", numkeys)


def test_clusterdown_is_retried_within_a_bound(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    key = unique("down")
    spare = resp.key_slot(unique("spare"))
    assert spare != resp.key_slot(key)
    spare_owner = cluster.owner(spare)
    ids = cluster.node_ids()
    primaries = cluster.primary_ports()
    states = [cluster.client(port) for port in primaries]  # replicas never hear of DELSLOTS

    def state(client: resp.Client) -> bytes:
        return client.execute("CLUSTER", "INFO").split(b"\r\n")[0]

    # An unserved slot anywhere puts the whole cluster down (full coverage).
    for port in primaries:
        cluster.client(port).execute("CLUSTER", "DELSLOTS", spare)
    try:
        wait_for("the cluster to go down", lambda: all(state(c) == b"cluster_state:fail" for c in states))
        impatient = resp.ClusterClient([f"127.0.0.1:{primaries[0]}"], max_redirects=3)
        started = time.monotonic()
        with pytest.raises(resp.ClusterDownError):
            impatient.rpush(key, "x")  # CLUSTERDOWN, wait, retry; three times
        assert time.monotonic() - started >= 0.3  # 0.05 + 0.1 + 0.2 s of waiting
        impatient.close()
        # A patient client (16 tries, up to 1 s apart) rides it out: the
        # slot is served again while it waits.
        restore = threading.Timer(0.5, lambda: [
            cluster.client(port).execute("CLUSTER", "SETSLOT", spare, "NODE", ids[spare_owner])
            for port in primaries])
        restore.start()
        started = time.monotonic()
        assert cc.rpush(key, "x") == 1
        assert time.monotonic() - started >= 0.5
        restore.join()
    finally:
        for port in primaries:
            cluster.client(port).execute("CLUSTER", "SETSLOT", spare, "NODE", ids[spare_owner])
    wait_for("the cluster to be up again", lambda: all(state(c) == b"cluster_state:ok" for c in states))
    assert cc.lpop(key) == b"x"


def _unserve(cluster: RedisCluster, slot: int) -> Callable[[], None]:
    """Leave ``slot`` served by no node; return what serves it again, by its owner."""
    primaries, ids, owner = cluster.primary_ports(), cluster.node_ids(), cluster.owner(slot)
    for port in primaries:
        cluster.client(port).execute("CLUSTER", "DELSLOTS", slot)

    def serve() -> None:
        for port in primaries:
            cluster.client(port).execute("CLUSTER", "SETSLOT", slot, "NODE", ids[owner])

    return serve


def test_a_slot_unserved_when_the_map_was_learned_is_waited_for(cluster: RedisCluster) -> None:
    """A slot that no node served when the client learned the map is waited
    out like ``CLUSTERDOWN`` (``ClusterDownError``, which ``consume`` rides
    out), and the map is learned again: once served, it is found."""
    primaries = cluster.primary_ports()
    impatient = resp.ClusterClient([f"127.0.0.1:{primaries[0]}"], max_redirects=3, socket_timeout=10)
    queue = HotQueue(unique("unserved"), client=impatient, serializer=None)
    slot = resp.key_slot(queue.key)
    owner = cluster.owner(slot)
    states = [cluster.client(port) for port in primaries]
    cluster.client(owner).execute("RPUSH", queue.key, "m")
    serve = _unserve(cluster, slot)
    restore = threading.Timer(1.0, serve)
    restore.start()
    try:
        with pytest.raises(resp.ClusterDownError):
            impatient.llen(queue.key)  # the map is learned now, without the slot
        assert list(queue.consume(timeout=1)) == [b"m"]
    finally:
        restore.join()
        serve()
        impatient.close()
    wait_for("the cluster to be up again",
             lambda: all(b"cluster_state:ok" in c.execute("CLUSTER", "INFO") for c in states))


def test_a_pipeline_waits_out_a_slot_the_map_shows_unserved(cluster: RedisCluster) -> None:
    """As ``execute`` does (``CLUSTERDOWN``, retried after a short wait): a
    pipeline raised at once when the learned map had no owner for its slot."""
    primaries = cluster.primary_ports()
    client = resp.ClusterClient([f"127.0.0.1:{primaries[0]}"], socket_timeout=10)
    key = unique("unserved-pipeline")
    slot = resp.key_slot(key)
    owner = cluster.owner(slot)
    states = [cluster.client(port) for port in primaries]
    serve = _unserve(cluster, slot)
    restore = threading.Timer(0.6, serve)
    try:
        client.refresh()  # the map now has no owner for the slot
        restore.start()
        assert client.pipeline().command("RPUSH", key, "x").command("LLEN", key).execute() == [1, 1]
    finally:
        if restore.is_alive() or not restore.finished.is_set():
            restore.cancel()
        restore.join()
        serve()
        client.close()
    wait_for("the cluster to be up again",
             lambda: all(b"cluster_state:ok" in c.execute("CLUSTER", "INFO") for c in states))
    assert cluster.client(owner).execute("LPOP", key) == b"x"


def test_credentials_every_node_refuses_are_not_taken_for_an_outage(cluster: RedisCluster) -> None:
    """As with one server: ``AuthenticationError``, which ``consume`` does not
    ride out (it rode out a ``ConnectionError`` for ever)."""
    refused = resp.ClusterClient([f"127.0.0.1:{port}" for port in cluster.primary_ports()],
                                 username="nobody", password="wrong")
    try:
        with pytest.raises(resp.AuthenticationError):
            refused.llen("x")
        with pytest.raises(resp.AuthenticationError):
            next(HotQueue("q", client=refused).consume(timeout=1))
    finally:
        refused.close()


def test_the_readme_example_runs(cluster: RedisCluster) -> None:
    example = scaling_out_examples()[0]
    assert "ClusterClient" in example and "redis+cluster://" in example
    first, second = cluster.primary_ports()[:2]
    printed = run_example(example, {7000: first, 7001: second})
    assert printed[0] == str([f"jobs-{n}" for n in range(9)])


def test_bad_seeds_and_urls() -> None:
    with pytest.raises(ValueError, match="database 0"):
        resp.from_url("redis+cluster://127.0.0.1:7000/3")
    # db= is taken as the URL's /0 is: 0 only (it was an unknown option).
    for db in (1, True, "0", None):
        with pytest.raises(ValueError, match="database 0"):
            resp.ClusterClient(["127.0.0.1:7000"], db=db)
    with pytest.raises(ValueError, match="database 0"):
        resp.from_url("redis+cluster://127.0.0.1:7000", db=1)
    resp.ClusterClient(["127.0.0.1:7000"], db=0).close()
    HotQueue("q", url="redis+cluster://127.0.0.1:7000/0", db=0).client.close()
    with pytest.raises(ValueError, match="different password options") as caught:  # not the last one for all
        resp.ClusterClient(["redis://:s3cret@127.0.0.1:7000", "redis://:0ther@127.0.0.1:7001"])
    assert "s3cret" not in str(caught.value) and "0ther" not in str(caught.value)
    with pytest.raises(ValueError, match="different ssl options"):  # TLS for both, or for neither?
        resp.ClusterClient(["redis://127.0.0.1:7000", "rediss://127.0.0.1:7001"])
    agreeing = resp.ClusterClient(["redis://:s3cret@127.0.0.1:7000", "redis://:s3cret@127.0.0.1:7001"])
    assert agreeing._options == {"password": "s3cret"}
    overridden = resp.ClusterClient(["redis://:s3cret@127.0.0.1:7000", "redis://:0ther@127.0.0.1:7001"],
                                    password="th3-one")
    assert overridden._options == {"password": "th3-one"}
    port = resp.from_url("redis+cluster://127.0.0.1:1")
    with pytest.raises(resp.ConnectionError, match="no cluster node answered"):
        port.llen("x")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # what is tested
def test_a_fork_while_another_thread_meets_a_new_node_leaves_the_child_usable() -> None:
    # A thread busy adding nodes to the client when the process forks: the
    # child must not find anything of the client's held by that thread (a
    # lock would stay held there for good, and its next new node would hang).
    cluster = resp.ClusterClient(startup_nodes=[("127.0.0.1", 1)])
    stop = threading.Event()

    def meet_nodes() -> None:
        while not stop.is_set():
            for port in range(20000, 20200):
                cluster._node(f"127.0.0.1:{port}")
                cluster._nodes.pop(f"127.0.0.1:{port}", None)

    thread = threading.Thread(target=meet_nodes)
    thread.start()
    hung = 0
    try:
        for _ in range(20):
            time.sleep(0.005)
            pid = os.fork()
            if pid == 0:  # the child: a new node, then out
                cluster._node("127.0.0.1:2")
                os._exit(0)
            deadline = time.monotonic() + 5
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert hung == 0, f"{hung} of 20 forked children hung meeting a new node"


def test_blpop_takes_a_bytes_like_key_as_one_key(cc: resp.ClusterClient) -> None:
    # Not the keys b"k", b"e", b"y" … named by its bytes' numbers, which
    # raised CrossSlotError here (or, all in one slot, popped from them).
    key = unique("bytes")
    cc.rpush(key, "mine")
    assert cc.blpop(bytearray(key.encode()), 1) == (key.encode(), b"mine")
    cc.rpush(key, "again")
    assert cc.blpop(memoryview(key.encode()), 1) == (key.encode(), b"again")


@pytest.mark.parametrize("node", [
    "127.0.0.1", "127.0.0.1:7_000", "127.0.0.1: 7000", "127.0.0.1:\u0667\u0660\u0660\u0660", "127.0.0.1:abc",
    "127.0.0.1:0", ("127.0.0.1", "7000"), (None, 7000), ("h",), None, b"127.0.0.1:7000",
    "[::1:7000", "[::1", "::1]:7000", "[]:7000",  # an IPv6 bracket left open, or closed alone
])
def test_a_malformed_node_is_refused_clearly(node: Any) -> None:
    """A startup node or sentinel that is not 'host:port' or a (host, port)
    pair is refused, naming it: not read as another port ("7_000" as 7000,
    Arabic-Indic digits), nor a None host taken as the host 'None', nor
    "invalid literal for int()" or "cannot unpack" for a bare host or None."""
    for make in (lambda: resp.ClusterClient([node]), lambda: resp.SentinelClient([node], "mymaster")):
        with pytest.raises((TypeError, ValueError), match="a node is 'host:port' or a \\(host, port\\) pair, not "):
            make()


def test_a_startup_node_outside_the_cluster_is_passed_over(
    cluster: RedisCluster, make_server: Callable[..., RedisServer]
) -> None:
    """A startup node that is cluster-enabled but has joined no cluster (yet)
    knows no slot: the map is learned from the next startup node."""
    stranger = lone_node(make_server)
    seeds = [f"127.0.0.1:{stranger.port}"] + [f"127.0.0.1:{port}" for port in cluster.primary_ports()]
    key = unique("stranger")
    with resp.ClusterClient(seeds, socket_timeout=10) as client:
        assert client.rpush(key, "x") == 1
        assert client.node_for(key).address.port == cluster.owner(resp.key_slot(key))
        assert client.lpop(key) == b"x"


def test_a_one_node_cluster_is_reached_where_it_was_asked(make_server: Callable[..., RedisServer]) -> None:
    """A cluster of one node that has never met another, as in development:
    ``CLUSTER SHARDS`` gives it no address, so it is the node asked."""
    node = lone_node(make_server)
    with resp.Client("127.0.0.1", node.port) as admin:
        serve_every_slot(admin)
    queue = HotQueue(unique("lone"), url=f"redis+cluster://127.0.0.1:{node.port}")
    assert isinstance(queue.client, resp.ClusterClient)
    with queue.client as client:
        queue.put("hello")
        assert queue.get() == "hello"
        assert client.node_for(queue.key).address.port == node.port


def resp2(value: Any) -> bytes:
    """A reply in RESP2: lists as arrays, ints as integers, the rest as bulks."""
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(map(resp2, value))
    if isinstance(value, int):
        return b":%d\r\n" % value
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_a_failed_old_primary_listed_in_its_shard_is_not_taken_for_the_owner() -> None:
    """Redis 7.2+ can list, in CLUSTER SHARDS, a failed old primary beside
    the new one in the same shard, either first: the one online owns it."""
    from test_client import TinyServer

    def node(port: int, health: str) -> List[Any]:
        return ["id", "%040d" % port, "port", port, "ip", "127.0.0.1", "endpoint", "127.0.0.1",
                "role", "master", "replication-offset", 0, "health", health]

    for listed in (["online", "fail"], ["fail", "online"]):
        ports = {"online": 7101, "fail": 7102}
        shards = resp2([["slots", [0, 16383], "nodes", [node(ports[health], health) for health in listed]]])
        fake = TinyServer(lambda args, map_=shards: [map_ if args[:2] == [b"CLUSTER", b"SHARDS"] else b"-ERR no\r\n"])
        try:
            with resp.ClusterClient([f"127.0.0.1:{fake.port}"], socket_timeout=5) as client:
                client.refresh()
                assert client.node_for("any").address.port == ports["online"], listed
        finally:
            fake.close()


def test_a_tls_cluster_is_reached_on_its_tls_port(make_server: Callable[..., RedisServer]) -> None:
    """A node that takes TLS and plain text (``tls-port`` and ``port``, with
    ``tls-cluster yes``) lists both ports: a client with ``ssl`` uses the TLS
    one, a plain client the other."""
    plain = free_port()
    node = lone_node(make_server, tls=True, args=[
        "--port", str(plain), "--tls-cluster", "yes", "--cluster-announce-ip", "127.0.0.1"])
    ca = f"{node.tls_dir}/ca.crt"
    with resp.Client("127.0.0.1", plain) as admin:
        serve_every_slot(admin)
    key = unique("tls")
    with resp.ClusterClient([f"127.0.0.1:{node.port}"], ssl=True, ssl_ca_certs=ca, socket_timeout=5) as secure:
        assert secure.rpush(key, "x") == 1
        assert secure.node_for(key).address.port == node.port
    with resp.ClusterClient([f"127.0.0.1:{plain}"], socket_timeout=5) as clear:
        assert clear.lpop(key) == b"x"
        assert clear.node_for(key).address.port == plain
    # Without the CA: the refused certificate, not "no node answered", which
    # consume() would wait out for ever.
    with resp.ClusterClient([f"127.0.0.1:{node.port}"], ssl=True, socket_timeout=5) as untrusting:
        with pytest.raises(resp.CertificateError):
            untrusting.rpush(key, "x")


def test_a_primary_that_leaves_the_slot_map_is_let_go() -> None:
    """Scale-in: once every slot of a primary has moved away, the client
    closes its connections to it: an idle one at once (it stayed open until
    ``close()``), one busy in another thread's command when that command ends,
    and one opened afterwards by a thread that took the primary's ``Client``
    just before (it was kept, open, where ``close()`` never looks)."""
    try:
        small = RedisCluster(primaries=3, replicas=0).start()
    except Exception as exc:
        pytest.fail(f"cannot start a Redis Cluster for the test: {exc}", pytrace=False)
    try:
        key = unique("scale-in")
        leaving = small.owner(resp.key_slot(key))
        staying = [port for port in small.primary_ports() if port != leaving]
        # Emptied, it stays a primary (else it would follow its slots as a
        # replica, which ends every blocked command on it at once).
        small.client(leaving).execute("CONFIG", "SET", "cluster-allow-replica-migration", "no")
        client = resp.ClusterClient([f"127.0.0.1:{port}" for port in staying], client_name="scale-in",
                                    socket_timeout=10)

        def connections(command: str = "") -> List[str]:  # to the primary that leaves, as it sees them
            listed = small.client(leaving).execute("CLIENT", "LIST").decode().splitlines()
            return [line for line in listed if "name=scale-in " in line and f"cmd={command}" in line]

        with client:
            held = client.node_for(key)  # as a thread about to run a command on it holds it
            waited: List[object] = []
            # WAIT for a replica there is not: blocked until CLIENT UNBLOCK.
            waiter = threading.Thread(target=lambda: waited.append(held.execute("WAIT", 1, 0)))
            waiter.start()
            wait_for("WAIT to block", lambda: len(connections("wait")) == 1)
            assert client.llen(key) == 0  # another connection to `leaving`, kept in its pool
            assert len(connections()) == 2
            ids = small.node_ids()
            slots = [slot for start, end, primary, *_ in small.client(leaving).execute("CLUSTER", "SLOTS")
                     if primary[1] == leaving for slot in range(start, end + 1)]
            for port in [staying[0], leaving, staying[1]]:
                pipe = small.client(port).pipeline()
                for slot in slots:
                    pipe.command("CLUSTER", "SETSLOT", slot, "NODE", ids[staying[0]])
                pipe.execute()

            def moved() -> bool:
                views = [sorted((s[0], s[1], s[2][1]) for s in small.client(port).execute("CLUSTER", "SLOTS"))
                         for port in [leaving, *staying]]
                return all(view == views[0] for view in views) and all(s[2] != leaving for s in views[0])

            wait_for("every node to see the slots moved", moved)
            assert client.rpush(key, "x") == 1  # MOVED to staying[0]
            assert client.lpop(key) == b"x"  # the map again: without `leaving`
            wait_for("the idle connection to be closed", lambda: len(connections()) == 1, timeout=5)
            [blocked] = connections("wait")
            small.client(leaving).execute("CLIENT", "UNBLOCK", blocked.split()[0].split("=")[1])
            waiter.join(10)
            assert waited == [0]  # it ended cleanly, and its connection came back ...
            wait_for("the busy connection to be closed", lambda: not connections(), timeout=5)
            assert held.ping()  # ... as does this one, opened after the map let `leaving` go
            wait_for("the connection opened afterwards to be closed", lambda: not connections(), timeout=5)
    finally:
        small.stop()


def test_reshard_a_live_queue_delivers_every_message_once(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    queue = HotQueue(unique("reshard"), client=cc, serializer=None)
    slot = resp.key_slot(queue.key)
    source = cluster.owner(slot)
    target = other_primary(cluster, source)
    total = 600
    queue.put(*range(200))  # a full list to migrate while the worker drains it
    received: List[int] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for message in queue.consume(timeout=0.5):
                received.append(int(message))
                time.sleep(0.001)

    def produce() -> None:
        for start in range(200, total, 10):
            queue.put(*range(start, start + 10))
            time.sleep(0.01)

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for thread in threads:
        thread.start()
    try:
        cluster.migrate_slot(slot, target, pause=0.15, batch=1)
        threads[1].join(30)
        wait_for("every message", lambda: len(received) >= total, timeout=30)
        time.sleep(0.3)  # room for a duplicate to show up
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert sorted(received) == list(range(total))
    assert cluster.owner(slot) == target and cc.node_for(queue.key).address.port == target
    assert len(queue) == 0


def test_a_reliable_consumer_starts_while_its_slot_migrates(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """A reliable consumer can start while its queue's slot is migrating: its
    start-up transaction (every key new, so every command answered ``ASK``) is
    sent to the target; the message comes once the slot has moved."""
    queue = HotQueue(unique("reliable-ask"), client=cc, serializer=None)
    queue.put("m")
    slot = resp.key_slot(queue.key)
    target = other_primary(cluster, cluster.owner(slot))
    migrating = threading.Event()
    mover = threading.Thread(target=cluster.migrate_slot, args=(slot, target),
                             kwargs={"pause": 0.5, "on_step": lambda step: migrating.set()})
    mover.start()
    try:
        assert migrating.wait(10)
        with queue.reserve(timeout=10) as message:
            assert message == b"m"
    finally:
        mover.join(30)
    assert cluster.owner(slot) == target and len(queue) == 0
    assert queue.stats().consumers == []


def test_a_reliable_consumer_outlasts_a_migration_longer_than_its_redirections(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """While a reliable queue's slot migrates, ``BLMOVE`` from the queue into a
    processing list meets ``TRYAGAIN`` (one key moved, one not) until the slot
    has moved. A client that gives up first (``ClusterError``, nothing run)
    does not stop the consumer: it waits and tries again."""
    # Three redirections: ClusterError after 0.35 s of TRYAGAIN (the default 16: 12.5 s).
    impatient = resp.ClusterClient([f"127.0.0.1:{cluster.primary_ports()[0]}"], max_redirects=3,
                                   socket_timeout=10)
    queue = HotQueue(unique("reliable-tryagain"), client=impatient, serializer=None)
    slot = resp.key_slot(queue.key)
    target = other_primary(cluster, cluster.owner(slot))
    migrating = threading.Event()
    mover = threading.Thread(target=cluster.migrate_slot, args=(slot, target),
                             kwargs={"pause": 0.5, "on_step": lambda step: migrating.set()})
    with Consumer(queue) as consumer:
        queue.put("m")
        mover.start()
        try:
            assert migrating.wait(10)
            data, message = next(consumer.deliveries(timeout=15))  # for 1.5 s: TRYAGAIN
            assert message == b"m" and consumer.ack(data)
        finally:
            mover.join(30)
    assert cluster.owner(slot) == target and len(queue) == 0
    assert any("gave up after 3 redirections" in record.getMessage() for record in caplog.records)
    impatient.close()


def test_a_cluster_pipeline_sends_the_value_queued_not_the_buffer_later(cc: resp.ClusterClient) -> None:
    key = unique("buffer")
    buffer = bytearray(b"a" * 100_000)
    pipe = cc.pipeline().command("SET", key, buffer).command("GET", key)
    buffer[:] = b"b" * 100_000  # the caller reuses its buffer
    buffer.extend(b"more")  # and may resize it: no view of it is kept
    assert pipe.execute() == ["OK", b"a" * 100_000]
    assert cc.delete(key) == 1


def test_commands_that_would_change_a_pooled_connection_are_refused(cc: resp.ClusterClient) -> None:
    key = unique("refused")
    for args in (("MULTI",), ("SELECT", 0), ("CLIENT", "REPLY", "OFF")):
        with pytest.raises(ValueError, match="nothing was sent"):
            cc.execute(*args)
    with pytest.raises(ValueError, match="nothing was sent"):
        cc.pipeline().command("SELECT", 0)
    with pytest.raises(ValueError, match="closed by EXEC or DISCARD"):
        cc.pipeline().command("MULTI").command("RPUSH", key, "never").execute()
    assert cc.llen(key) == 0
    assert cc.pipeline().command("MULTI").command("RPUSH", key, "v").command("EXEC").execute() == ["OK", "QUEUED", [1]]
    assert cc.delete(key) == 1


def test_a_reliable_heartbeat_rides_a_slot_whose_keys_are_half_moved(cluster: RedisCluster,
                                                                       cc: resp.ClusterClient) -> None:
    """Resharding moves a slot's keys a batch at a time: the heartbeat key may
    be on the target (ASK) while the consumers set is still on the source. The
    heartbeat follows the ASK instead of raising AskError out of the worker;
    the take, whose keys are split between the nodes (TRYAGAIN), waits for
    the slot to have moved and then goes on, raising nothing."""
    queue = HotQueue(unique("half-moved"), client=cc, serializer=None)
    slot = resp.key_slot(queue.key)
    source = cluster.owner(slot)
    target = other_primary(cluster, source)
    ids = cluster.node_ids()
    outcome: List[object] = []

    def fetch() -> None:
        try:
            outcome.append(next(consumer.deliveries(timeout=1), None))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    def pttl_on_target() -> int:
        return cluster.client(target).pipeline().command("ASKING").command(  # type: ignore[no-any-return]
            "PTTL", consumer._heartbeat).execute()[1]

    with Consumer(queue, heartbeat_ttl=1.5) as consumer:
        cluster.client(target).execute("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        cluster.client(source).execute("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", consumer._heartbeat)
        fetching = threading.Thread(target=fetch)
        try:
            time.sleep(0.6)  # past heartbeat_ttl / 3: fetch beats first
            fetching.start()
            wait_for("a heartbeat on the target", lambda: pttl_on_target() > 1000)  # beaten there, after ASKING
            time.sleep(0.5)
            assert outcome == []  # the take waits while the slot is half moved
        finally:
            cluster.migrate_slot(slot, target)
            fetching.join(30)
    assert outcome == [None]  # the wait ended, nothing raised
    assert queue.stats().consumers == []


def test_keys_not_in_first_position_are_routed_and_checked(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    a, b = "cross-a", "cross-b"
    assert resp.key_slot(a) != resp.key_slot(b)
    for args in (("SUNION", a, b), ("PFCOUNT", a, b), ("LMPOP", 2, a, b, "LEFT"), ("SINTERCARD", 2, a, b),
                 ("ZUNIONSTORE", a, 1, b), ("XREAD", "STREAMS", a, b, 0, 0), ("BLMPOP", 1, 2, a, b, "LEFT"),
                 ("LCS", a, b), ("ZRANGESTORE", a, b, 0, -1), ("GEOSEARCHSTORE", a, b, "FROMLONLAT", 0, 0,
                                                                "BYRADIUS", 1, "km"),
                 ("SORT", a, "BY", "nosort", "GET", "STORE", "STORE", b), ("GEORADIUS", a, 0, 0, 1, "km", "STORE", b),
                 ("GEORADIUSBYMEMBER", a, "m", 1, "km", "COUNT", 1, "STOREDIST", b),
                 ("MIGRATE", "127.0.0.1", 1, "", 0, 100, "AUTH", "KEYS", "KEYS", a, b)):
        with pytest.raises(resp.CrossSlotError):
            cc.execute(*args)
    key = unique("{xread}")
    replies = cc.pipeline().command("XADD", key, "*", "f", "v").command("XREAD", "STREAMS", key, 0).execute()
    assert replies[1][0][0] == key.encode()
    assert cc.pipeline().command("RPUSH", key + "l", "x").command("LMPOP", 1, key + "l", "LEFT").execute() == [
        1, [(key + "l").encode(), [b"x"]]]
    # Sent where the key is: no MOVED, so the map is not learned again.
    stream = next(f"stream-{n}" for n in range(100)
                  if cc.node_for(f"stream-{n}").address.port != cc.node_for("COUNT").address.port)
    cc.execute("XADD", stream, "*", "f", "v")
    for _ in range(3):
        assert len(cc.execute("XREAD", "COUNT", 1, "STREAMS", stream, 0)) == 1
        assert not cc._stale
    # MIGRATE: routed by its key, not by the host before it (a key that does
    # not exist: the server answers NOKEY and connects nowhere).
    missing = next(f"gone-{n}" for n in range(100)
                   if cc.node_for(f"gone-{n}").address.port != cc.node_for("127.0.0.1").address.port)
    assert cc.execute("MIGRATE", "127.0.0.1", 1, missing, 0, 100) == "NOKEY"
    assert cc.execute("MIGRATE", "127.0.0.1", 1, "", 0, 100, "KEYS", missing) == "NOKEY"
    assert cc.execute("SORT", key + "l", "STORE", key + "sorted") == 0
    elsewhere_key = next(f"dest-{n}" for n in range(100) if resp.key_slot(f"dest-{n}") != resp.key_slot(key))
    # The last STORE is the one the server takes: the first is no key of the command.
    assert cc.execute("SORT", key + "l", "STORE", elsewhere_key, "STORE", key + "sorted") == 0
    assert not cc._stale
    # A key after a subcommand: routed by the key, not by the subcommand's name.
    elsewhere = next(f"stream-{n}" for n in range(100) if all(
        cc.node_for(f"stream-{n}").address.port != cc.node_for(word).address.port
        for word in ("STREAM", "ENCODING", "USAGE", "CREATE")))
    cc.execute("XADD", elsewhere, "*", "f", "v")
    for args in (("XINFO", "STREAM", elsewhere), ("OBJECT", "ENCODING", elsewhere), ("MEMORY", "USAGE", elsewhere),
                 ("XGROUP", "CREATE", elsewhere, "readers", 0)):
        cc.execute(*args)
        assert not cc._stale, args  # no MOVED: the map is not learned again
    assert cc.execute("XINFO", "HELP")  # no key: any node
    replies = cc.pipeline().command("XADD", elsewhere, "*", "f", "v").command("XINFO", "GROUPS", elsewhere).execute()
    assert replies[1][0][1] == "readers" or replies[1][0][1] == b"readers"
    assert cc.delete(elsewhere) == 1
    assert cc.delete(key) == 1 and cc.delete(stream) == 1


@pytest.mark.parametrize("value", [0, -1, "16", 2.5, True])
def test_max_redirects_is_checked(value: Any) -> None:
    with pytest.raises(ValueError, match="max_redirects"):
        resp.ClusterClient(["127.0.0.1:7000"], max_redirects=value)


@pytest.mark.slow
def test_a_blocking_pop_released_by_a_manual_failover_waits_on_the_new_primary() -> None:
    """``CLUSTER FAILOVER`` demotes the primary, which releases its blocked
    clients with ``UNBLOCKED … (master -> replica?)``: nothing was popped. The
    pop goes on, on the new primary, instead of raising out of ``consume``."""
    cluster = RedisCluster(primaries=3, replicas=1).start()
    try:
        cc = resp.from_url(cluster.url, socket_timeout=10)
        queue = HotQueue(unique("demoted"), client=cc, serializer=None)
        slot = resp.key_slot(queue.key)
        owner = cluster.owner(slot)
        replica = next(node.port for node in cluster.nodes if node.port != owner and (
            b"master_port:%d\r" % owner in cluster.client(node.port).execute("INFO", "replication")))
        outcome: List[object] = []

        def consume() -> None:
            try:
                for message in queue.consume(timeout=30):
                    outcome.append(message)
                    break
            except Exception as exc:
                outcome.append(exc)

        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        wait_for("the pop to block", lambda: b"blocked_clients:1" in cluster.client(owner).execute("INFO", "clients"))
        for _ in range(6):  # a young cluster may not give its votes at once
            cluster.client(replica).execute("CLUSTER", "FAILOVER")
            try:
                wait_for("the replica to take over", lambda: cluster.owner(slot) == replica, timeout=7)
                break
            except RuntimeError:
                pass
        assert cluster.owner(slot) == replica
        time.sleep(0.5)
        queue.put("after")
        wait_for("the message", lambda: outcome != [])
        assert outcome == [b"after"]
        cc.close()
    finally:
        cluster.stop()


def test_a_wait_that_passes_while_the_cluster_is_down_raises_and_consume_rides_it_out(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """A blocking pop whose timeout passes while every node answers
    ``CLUSTERDOWN`` waited for no message: it raises ``ClusterDownError``, as
    ``get()`` without ``block`` does, instead of returning None as for an empty
    queue. So ``consume(timeout=…)`` rides the outage out and delivers the
    message waiting in the queue, instead of ending as if it were idle."""
    queue = HotQueue(unique("outage"), client=cc, serializer=None)
    queue.put("m")
    spare = resp.key_slot(unique("spare"))
    assert spare != resp.key_slot(queue.key)
    spare_owner = cluster.owner(spare)
    ids = cluster.node_ids()
    primaries = cluster.primary_ports()
    states = [cluster.client(port) for port in primaries]

    def serve() -> None:
        for port in primaries:
            cluster.client(port).execute("CLUSTER", "SETSLOT", spare, "NODE", ids[spare_owner])

    for port in primaries:  # an unserved slot puts the whole cluster down
        cluster.client(port).execute("CLUSTER", "DELSLOTS", spare)
    restore = threading.Timer(4.0, serve)
    try:
        wait_for("the cluster to go down",
                 lambda: all(b"cluster_state:fail" in c.execute("CLUSTER", "INFO") for c in states))
        started = time.monotonic()
        with pytest.raises(resp.ClusterDownError):
            queue.get(block=True, timeout=1)
        assert time.monotonic() - started < 3  # the timeout is kept, with a margin
        restore.start()
        assert list(queue.consume(timeout=1)) == [b"m"]
    finally:
        restore.cancel()
        serve()
    wait_for("the cluster to be up again",
             lambda: all(b"cluster_state:ok" in c.execute("CLUSTER", "INFO") for c in states))
    assert len(queue) == 0


def test_a_startup_node_that_stopped_answering_is_passed_over(
    cluster: RedisCluster, make_server: Callable[..., RedisServer]
) -> None:
    """A startup node that accepts connections but never answers (a frozen
    process: its kernel still completes the handshake) does not keep the
    client from learning the slot map from the next one, even without a
    socket_timeout."""
    frozen = make_server()
    seeds = [f"127.0.0.1:{frozen.port}"] + [f"127.0.0.1:{port}" for port in cluster.primary_ports()]
    key = unique("frozen-seed")
    outcome: List[object] = []
    client = resp.ClusterClient(seeds)
    worker = threading.Thread(target=lambda: outcome.append(client.rpush(key, "x")), daemon=True)
    os.kill(frozen.process.pid, signal.SIGSTOP)
    try:
        worker.start()
        worker.join(15)
        assert outcome == [1]
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
        worker.join(10)
        client.close()
    assert cluster.client(cluster.owner(resp.key_slot(key))).execute("LPOP", key) == b"x"


def test_a_pipeline_half_answered_ask_sends_the_asked_commands_on(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """A pipeline (no MULTI) meets a slot half migrated: the command on a key
    still on the source runs there, the one on a key already on the target is
    answered ``ASK``. The first is not sent again (it ran); the second is sent
    on to the target after ``ASKING``, so the pipeline succeeds, each command
    having run once."""
    here, there = unique("{half-ask}"), unique("{half-ask}")
    slot = resp.key_slot(here)
    assert resp.key_slot(there) == slot
    cc.rpush(here, "old")
    with half_migrated(cluster, slot) as (source, target):
        try:
            replies = cc.pipeline().command("RPUSH", here, "a").command("RPUSH", there, "b") \
                .command("LLEN", here).command("LLEN", there).execute()
            assert replies == [2, 1, 2, 1]
            assert cluster.client(source).execute("LRANGE", here, 0, -1) == [b"old", b"a"]
            on_target = cluster.client(target).pipeline().command("ASKING").command("LRANGE", there, 0, -1) \
                .execute()
            assert on_target == ["OK", [b"b"]]
        finally:  # the source gives its key over; the slot then moves to the target
            cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", here)
    assert cc.execute("LRANGE", here, 0, -1) == [b"old", b"a"]
    assert cc.execute("LRANGE", there, 0, -1) == [b"b"]
    assert cc.delete(here, there) == 2


def test_a_script_that_answers_queued_is_not_taken_for_a_command_queued_in_a_transaction(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """A script that returns the status ``QUEUED`` has run all the same: with
    the rest of the pipeline answered ``ASK``, the pipeline is not sent again
    (it was, up to ``max_redirects`` times, the script running each time);
    the asked command alone is sent on."""
    here, there = unique("{queued-script}"), unique("{queued-script}")
    slot = resp.key_slot(here)
    cc.rpush(here, "old")
    script = "redis.call('RPUSH', KEYS[1], 'ran'); return {ok='QUEUED'}"
    with half_migrated(cluster, slot) as (source, target):
        try:
            replies = cc.pipeline().command("EVAL", script, 1, here).command("RPUSH", there, "b").execute()
            assert replies == ["QUEUED", 1]
            assert cluster.client(source).execute("LRANGE", here, 0, -1) == [b"old", b"ran"]
        finally:
            cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", here)
    assert cc.delete(here, there) == 2


def test_a_pipeline_with_a_watch_answered_ask_returns_the_replies_as_they_are(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    """The WATCH is answered ``ASK``, its UNWATCH ran on the source: sending
    the WATCH on alone would leave it open on the target (refused as "nothing
    was sent", when the RPUSH had run). The replies come back as they are."""
    here, there = unique("{half-watch}"), unique("{half-watch}")
    slot = resp.key_slot(here)
    cc.rpush(here, "old")
    with half_migrated(cluster, slot) as (source, target):
        try:
            replies = cc.pipeline().command("RPUSH", here, "a").command("WATCH", there) \
                .command("UNWATCH").execute(raise_on_error=False)
            assert replies[0] == 2 and isinstance(replies[1], resp.AskError) and replies[2] == "OK"
            assert cluster.client(source).execute("LRANGE", here, 0, -1) == [b"old", b"a"]
        finally:
            cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", here)
    assert cc.delete(here) == 1


def test_a_primary_that_gave_no_map_is_asked_last_in_the_next_refresh() -> None:
    """A frozen primary (its kernel still accepts) costs one refresh of the
    slot map its timeout, not every one: once it has given no map, the nodes
    that answered are asked before it. It owns slot 0, so the map's order
    alone would ask it first each time."""
    try:
        small = RedisCluster(primaries=3, replicas=0, node_timeout_ms=60000).start()
    except Exception as exc:
        pytest.fail(f"cannot start a Redis Cluster for the test: {exc}", pytrace=False)
    client = resp.ClusterClient([f"127.0.0.1:{port}" for port in small.primary_ports()], socket_timeout=2)
    try:
        client.refresh()
        frozen = next(node for node in small.nodes if node.port == small.owner(0))
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            took = []
            for _ in range(3):
                start = time.monotonic()
                client.refresh()
                took.append(time.monotonic() - start)
            assert took[0] >= 2  # it was asked first, and its socket_timeout ran out
            assert max(took[1:]) < 1, took
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
    finally:
        client.close()
        small.stop()


def test_a_frozen_startup_node_with_a_password_is_passed_over(make_server: Callable[..., RedisServer]) -> None:
    """With a password, the slot map's bound covers the new connection's
    AUTH too: a frozen node (its kernel still accepts) never answers it."""
    frozen = make_server(args=["--requirepass", "secret"])
    client = resp.ClusterClient([f"127.0.0.1:{frozen.port}"], password="secret")
    outcome: List[object] = []

    def push() -> None:
        try:
            client.rpush(unique("frozen-auth"), "x")
        except resp.ConnectionError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=push, daemon=True)
    os.kill(frozen.process.pid, signal.SIGSTOP)
    try:
        worker.start()
        worker.join(15)
        assert len(outcome) == 1, "the client waited on the frozen node's AUTH"
        assert "no cluster node answered" in str(outcome[0])
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
        worker.join(10)
        client.close()


def test_a_client_idle_while_every_node_it_knew_was_replaced_finds_the_cluster() -> None:
    """Every primary is failed over to its replica and then shut down, while
    the client, which knew only the old primaries, is idle. The map it
    learned named the replicas too. The first command finds its node gone
    and raises, as any command whose node went away does; the next asks the
    replicas for the map and goes on. (Only primaries and seeds were asked:
    every command failed with "no cluster node answered", for good.)"""
    cluster = RedisCluster(primaries=3, replicas=1).start()
    try:
        primaries = cluster.primary_ports()
        cc = resp.ClusterClient([f"127.0.0.1:{port}" for port in primaries], socket_timeout=5)
        key = unique("replaced")
        assert cc.rpush(key, "m1") == 1
        for old in primaries:
            replica = next(node.port for node in cluster.nodes if node.port not in primaries and (
                b"master_port:%d\r" % old in cluster.client(node.port).execute("INFO", "replication")))
            # TAKEOVER does not wait for the replica to catch up: wait here.
            wait_for(f"{replica} to have what {old} has", lambda old=old, replica=replica: (
                _replication(cluster, old)["master_repl_offset"]
                == _replication(cluster, replica).get("slave_repl_offset")))
            cluster.client(replica).execute("CLUSTER", "FAILOVER", "TAKEOVER")
            wait_for(f"{replica} to be a primary",
                     lambda replica=replica: cluster.client(replica).execute("ROLE")[0] == b"master")
        wait_for("the new primaries in every map", lambda: not set(primaries) & set(cluster.primary_ports()))
        for node in cluster.nodes:
            if node.port in primaries:
                node.stop()
        with pytest.raises(resp.ConnectionError):
            cc.llen(key)
        assert cc.llen(key) == 1
        cc.close()
    finally:
        cluster.stop()


def _replication(cluster: RedisCluster, port: int) -> Dict[str, str]:
    info = cluster.client(port).execute("INFO", "replication").decode()
    return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)


@pytest.mark.slow
def test_a_worker_rides_through_a_primary_failover(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    # Last in this module (keep it so): it kills a primary, and its replica
    # takes over; the tests after it would run with a shard left without a replica.
    queue = HotQueue(unique("failover"), client=cc, serializer=None)
    slot = resp.key_slot(queue.key)
    owner = cluster.owner(slot)
    received: List[int] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for message in queue.consume(timeout=0.5):
                received.append(int(message))

    worker = threading.Thread(target=consume)
    worker.start()
    try:
        queue.put(*range(100))
        wait_for("the first batch", lambda: len(received) == 100)
        assert cluster.client(owner).execute("WAIT", 1, 2000) == 1
        next(node for node in cluster.nodes if node.port == owner).kill()
        # The worker's BLPOP broke: it backs off, refreshes the map and waits
        # out CLUSTERDOWN until the replica is promoted (node timeout 3 s).
        wait_for("a new owner", lambda: cc.node_for(queue.key).address.port != owner, timeout=30)
        queue.put(*range(100, 200))
        wait_for("the second batch", lambda: len(received) >= 200, timeout=30)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(30)
    assert sorted(received) == list(range(200))
    assert cluster.owner(slot) != owner
