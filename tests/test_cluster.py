"""resp.ClusterClient and HotQueue on a real 3-primary Redis Cluster (one
replica each), started once for this module by ``cluster_fixtures``."""

import random
import threading
import time
import uuid
from typing import Iterator, List

import pytest
from cluster_fixtures import RedisCluster, run_example, scaling_out_examples, wait_for

import resp
from hotqueue import HotQueue


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
    ids = cluster.node_ids()
    for port in cluster.primary_ports():
        cluster.client(port).execute("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    wait_for(f"slot {slot} on {target}", lambda: cluster._agreed(primaries_only=True) and cluster.owner(slot) == target)


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


def test_ask_goes_to_the_target_once_without_changing_the_map(
    cluster: RedisCluster, cc: resp.ClusterClient
) -> None:
    key = unique("ask")
    slot = resp.key_slot(key)
    source = cluster.owner(slot)
    target = other_primary(cluster, source)
    ids = cluster.node_ids()
    assert cc.node_for(key).address.port == source
    cluster.client(target).execute("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    cluster.client(source).execute("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    try:
        assert cc.rpush(key, "a", "b") == 2  # absent on source: ASK, then ASKING + RPUSH on target
        assert cc.blpop(key, 1) == (key.encode(), b"a")
        assert cluster.client(target).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert cluster.client(source).execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert cc.node_for(key).address.port == source  # ASK changes nothing
    finally:
        for port in cluster.primary_ports():
            cluster.client(port).execute("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    assert cc.lpop(key) == b"b"


def test_tryagain_is_retried_within_a_bound(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    tag = unique("{try}")
    first, second = tag + "1", tag + "2"
    cc.rpush(first, "1")
    cc.rpush(second, "2")
    slot = resp.key_slot(first)
    source = cluster.owner(slot)
    target = other_primary(cluster, source)
    ids = cluster.node_ids()
    cluster.client(target).execute("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    cluster.client(source).execute("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", first)
    impatient = resp.ClusterClient([f"127.0.0.1:{source}"], max_redirects=3)
    started = time.monotonic()
    with pytest.raises(resp.ClusterError, match="gave up after 3 redirections; last: (TRYAGAIN|ASK)"):
        # One key here, one there: TRYAGAIN each time (Redis 7), or ASK to
        # the target and TRYAGAIN there in turn (6.2). Both wait, then retry.
        impatient.delete(first, second)
    assert 0.04 < time.monotonic() - started < 5
    assert cluster.client(source).execute("EXISTS", second) == 1  # not run
    cluster.client(source).execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", second)
    for port in cluster.primary_ports():
        cluster.client(port).execute("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
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


def test_the_readme_example_runs(cluster: RedisCluster) -> None:
    example = scaling_out_examples()[0]
    assert "ClusterClient" in example and "redis+cluster://" in example
    first, second = cluster.primary_ports()[:2]
    printed = run_example(example, {7000: first, 7001: second})
    assert printed[0] == str([f"jobs-{n}" for n in range(9)])


def test_bad_seeds_and_urls() -> None:
    with pytest.raises(ValueError, match="database 0"):
        resp.from_url("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(TypeError, match="db"):
        resp.ClusterClient(["127.0.0.1:7000"], db=1)
    port = resp.from_url("redis+cluster://127.0.0.1:1")
    with pytest.raises(resp.ConnectionError, match="no cluster node answered"):
        port.llen("x")


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


@pytest.mark.slow
def test_a_worker_rides_through_a_primary_failover(cluster: RedisCluster, cc: resp.ClusterClient) -> None:
    # Last in this module: it kills a primary, and its replica takes over.
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
