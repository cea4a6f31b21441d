"""What a Redis Cluster costs a HotQueue, per single-key operation.

    python3 benchmarks/cluster.py [--rounds 7] [--ops 20000] [--queues 30] [--unpinned]

Starts a private redis-server and a private 3-primary cluster (no replicas,
so no replication traffic), pins every server and this process to one CPU
(``os.sched_setaffinity``: a loopback round trip then costs the same in both
setups), and times the same HotQueue loop — ``put`` then ``get``, one message
each — against each, in interleaved rounds. Prints the median cost of one
operation on each and their ratio, then how ``--queues`` queue names spread
over the three primaries. Standard library only; servers from ``tests/``.
"""

import argparse
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"),
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")]

from cluster_fixtures import RedisCluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402

import resp  # noqa: E402
from hotqueue import HotQueue  # noqa: E402


def pin(pid: int, cpu: int) -> None:
    os.sched_setaffinity(pid, {cpu})


def per_op(queue: HotQueue, ops: int) -> Tuple[float, float]:
    """Wall-clock and this process's CPU seconds per operation, for ``ops``
    operations (half puts, half gets). The CPU time is the client's own cost,
    which the load of other programs on the machine does not inflate."""
    put, get = queue.put, queue.get
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(ops // 2):
        put(i)
        get()
    count = ops // 2 * 2
    return (time.perf_counter() - started) / count, (time.process_time() - cpu) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--queues", type=int, default=30)
    parser.add_argument("--unpinned", action="store_true", help="let the scheduler place everything")
    options = parser.parse_args()

    single = RedisServer()
    cluster = RedisCluster(primaries=3, replicas=0)
    try:
        single.start()
        cluster.start()
        if not options.unpinned:
            for server in [single, *cluster.nodes]:
                assert server.process is not None
                pin(server.process.pid, 0)
            pin(0, 0)
        targets: Dict[str, Any] = {
            "single": resp.Client("127.0.0.1", single.port),
            "cluster": resp.from_url(cluster.url),
        }
        # The owner of the queue's key through a plain Client: what the
        # cluster-enabled server itself costs, without the routing.
        owner = cluster.owner(resp.key_slot("hotqueue:bench"))
        targets["node"] = resp.Client("127.0.0.1", owner)
        queues = {name: HotQueue("bench", client=client) for name, client in targets.items()}
        for queue in queues.values():
            per_op(queue, 2000)  # warm up: connections, slot map
        costs: Dict[str, List[float]] = {name: [] for name in queues}
        cpu: Dict[str, List[float]] = {name: [] for name in queues}
        for _ in range(options.rounds):
            for name, queue in queues.items():
                wall, client_cpu = per_op(queue, options.ops)
                costs[name].append(wall)
                cpu[name].append(client_cpu)
        single_cost = statistics.median(costs["single"])
        cluster_cost = statistics.median(costs["cluster"])
        where = "one CPU for all" if not options.unpinned else "unpinned"
        print(f"HotQueue put/get, {options.rounds} interleaved rounds of {options.ops} ops, {where}:")
        for name, values in costs.items():
            print(f"  {name:8} median {statistics.median(values) * 1e6:6.2f} us/op"
                  f"  (rounds: {', '.join(f'{v * 1e6:.1f}' for v in values)})")
        node_cost = statistics.median(costs["node"])
        paired = statistics.median(c / s for c, s in zip(costs["cluster"], costs["single"]))
        print(f"  median of the per-round ratios cluster / single = {paired:.3f}")
        print(f"  cluster / single = {cluster_cost / single_cost:.3f}"
              f"  ({(cluster_cost / single_cost - 1) * 100:+.1f}% per single-key operation)")
        print(f"  of which the cluster-enabled server: node / single = {node_cost / single_cost:.3f};"
              f" the routing: cluster / node = {cluster_cost / node_cost:.3f}")
        cpu_single, cpu_cluster = statistics.median(cpu["single"]), statistics.median(cpu["cluster"])
        print(f"  client CPU per op: single {cpu_single * 1e6:.2f} us, cluster {cpu_cluster * 1e6:.2f} us"
              f" (routing adds {(cpu_cluster - cpu_single) * 1e6:.2f} us)")

        client = targets["cluster"]
        spread: Dict[int, int] = {port: 0 for port in cluster.primary_ports()}
        for i in range(options.queues):
            queue = HotQueue(f"spread-{i}", client=client)
            queue.put(i)
            owner = cluster.owner(resp.key_slot(queue.key))
            assert cluster.client(owner).execute("EXISTS", queue.key) == 1
            spread[owner] += 1
            queue.clear()
        print(f"{options.queues} queues over {len(spread)} primaries: "
              + ", ".join(f"port {port}: {count}" for port, count in spread.items()))
    finally:
        cluster.stop()
        single.cleanup()


if __name__ == "__main__":
    main()
