"""Side-by-side benchmarks: this project against HotQueue 0.2.8 on redis-py.

    python3 benchmarks/run.py [--rounds N] [--quick] [--no-split] [--no-write]

One command does everything: it creates three virtualenvs under
``~/.cache/hotqueue-bench`` (``bare``: nothing installed; ``redispy``:
``redis`` and ``hotqueue==0.2.8``; ``hiredis``: the same plus ``hiredis``),
starts one private ``redis-server`` (never on 6379), and runs every side in its
own worker process, interleaved (A B C, B C A, …), first with server and client
pinned to CPU 0 (the client-cost figures), then split (server on CPU 0, client
on CPU 1). A fourth side, the socket floor, runs every workload over raw
sockets with hand-written RESP; each mode ends with a table of the release's
targets against it. It also runs ``redis-benchmark -c 1 -P 1``, measures import time,
module count and peak RSS, and runs ``parser.py``. The table is printed and
written to ``benchmarks/results.md``.

Only public tools: the standard library, ``pip``, ``redis-benchmark`` and
``taskset``.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from redis_server import RedisServer, server_version  # noqa: E402

CACHE = os.environ.get("HOTQUEUE_BENCH_CACHE", os.path.expanduser("~/.cache/hotqueue-bench"))
VENVS = {
    "bare": [],
    "redispy": ["redis", "hotqueue==0.2.8"],
    "hiredis": ["redis", "hiredis", "hotqueue==0.2.8"],
}
SIDES = {  # side name -> (virtualenv, workloads.py implementation)
    "this": ("bare", "this"),
    "redis-py": ("redispy", "redispy"),
    "redis-py+hiredis": ("hiredis", "redispy"),
    "socket floor": ("bare", "floor"),
}
# (workload, operations per measurement, label)
WORKLOADS = [
    ("put_raw", 5000, "put(100 B raw)"),
    ("put_pickle", 5000, "put(pickled dict)"),
    ("put_batch100", 200, "put(*100)"),
    ("put_batch1000", 30, "put(*1000)"),
    ("get_drain", 5000, "get() x5000"),
    ("get_block", 5000, "get(block, timeout=1)"),
    ("consume", 5000, "consume()"),
    ("big_roundtrip", 20, "1 MiB put+get"),
    ("threads", 5000, "producer+consumer threads"),
]
# The release's targets: (workload, side, how many times faster than that side).
TARGETS = [
    ("put_raw", "redis-py", 3), ("put_raw", "redis-py+hiredis", 2.5),
    ("put_pickle", "redis-py", 3), ("put_pickle", "redis-py+hiredis", 2.5),
    ("get_drain", "redis-py", 3), ("get_drain", "redis-py+hiredis", 2.5),
    ("get_block", "redis-py", 3), ("get_block", "redis-py+hiredis", 2.2),
    ("consume", "redis-py", 3), ("consume", "redis-py+hiredis", 2.2),
    ("put_batch1000", "redis-py+hiredis", 1),
    ("big_roundtrip", "redis-py", 2),
    ("threads", "redis-py", 3),
    ("put_raw", "socket floor", 0.75), ("put_pickle", "socket floor", 0.75), ("get_drain", "socket floor", 0.75),
]
BENCHMARK_TESTS = {"put_raw": "RPUSH", "get_drain": "LPOP"}


def python_of(name):
    return os.path.join(CACHE, name, "bin", "python")


def ensure_venvs():
    """Create the virtualenvs once; a marker file records what each holds."""
    for name, packages in VENVS.items():
        path = os.path.join(CACHE, name)
        marker = os.path.join(path, ".installed")
        wanted = " ".join(packages) + " " + platform.python_version()
        if os.path.exists(marker) and open(marker).read() == wanted:
            continue
        print(f"creating virtualenv {path} ({' '.join(packages) or 'nothing installed'})", flush=True)
        venv.EnvBuilder(clear=True, with_pip=bool(packages)).create(path)
        if packages:
            subprocess.run([python_of(name), "-m", "pip", "install", "-q", *packages], check=True)
        with open(marker, "w") as file:
            file.write(wanted)


def empty_dir():
    """A working directory with nothing importable in it: ``-c`` puts the
    current directory first on ``sys.path``, and the project's root (its
    ``hotqueue/``) or the cache (its ``hiredis/`` virtualenv) would shadow
    the packages under test."""
    path = os.path.join(CACHE, "empty")
    os.makedirs(path, exist_ok=True)
    return path


def side_env(venv_name):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if venv_name == "bare":
        env["PYTHONPATH"] = ROOT  # this project, straight from the tree
    return env


class Worker:
    """One side's worker process, pinned to ``cpu``."""

    def __init__(self, side, port, cpu):
        venv_name, impl = SIDES[side]
        self.side = side
        self.process = subprocess.Popen(
            ["taskset", "-c", str(cpu), python_of(venv_name), os.path.join(HERE, "workloads.py"), impl, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=side_env(venv_name), cwd=HERE,
        )
        self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.side} died")
        return json.loads(line)

    def measure(self, workload, n):
        self.process.stdin.write(json.dumps({"workload": workload, "n": n}) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        return reply["seconds"] / reply["ops"]

    def close(self):
        self.process.stdin.close()
        self.process.wait(30)


def redis_benchmark(port, cpu, n):
    """Seconds per request of ``redis-benchmark -c 1 -P 1`` for RPUSH and LPOP."""
    out = subprocess.run(
        ["taskset", "-c", str(cpu), "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-P", "1",
         "-n", str(n), "-d", "100", "-t", "rpush,lpop", "--csv"],
        capture_output=True, text=True, check=True,
    ).stdout
    result = {}
    for line in out.splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if cells[0] in ("RPUSH", "LPOP"):
            result[cells[0]] = 1.0 / float(cells[1])
    return result


def run_mode(server, client_cpu, rounds, scale):
    """Interleaved rounds; returns {workload: {side: [seconds per op, …]}}."""
    samples = {name: {} for name, _, _ in WORKLOADS}
    workers = {side: Worker(side, server.port, client_cpu) for side in SIDES}
    try:
        sides = list(workers)
        for round_number in range(rounds):
            # Each round starts with another side: the first to run a workload
            # also pays for the server's change of pace (e.g. its allocator
            # moving from many small values to 1 MiB ones), and that must not
            # always be the same side.
            shift = round_number % len(sides)
            order = sides[shift:] + sides[:shift]
            for name, n, _ in WORKLOADS:
                n = max(1, int(n * scale))
                for side in order:
                    samples[name].setdefault(side, []).append(workers[side].measure(name, n))
            bench = redis_benchmark(server.port, client_cpu, max(1000, int(50000 * scale)))
            for name, test in BENCHMARK_TESTS.items():
                samples[name].setdefault("redis-benchmark", []).append(bench[test])
            print(f"  round {round_number + 1}/{rounds} done", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return samples


def compile_tree():
    """Byte-compile this project, as an installation would: the other sides'
    packages were compiled by pip. Without it a module changed since the last
    compile (PYTHONDONTWRITEBYTECODE may be set here) is compiled on import,
    which the import time and the peak RSS would count."""
    compile_env = side_env("bare")
    compile_env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([python_of("bare"), "-m", "compileall", "-q", "resp", "hotqueue"], cwd=ROOT, env=compile_env,
                   check=True)


def import_figures(repeat):
    """Import time and modules loaded, in bare interpreters: of ``import
    hotqueue`` alone, and with the first queue made (this project imports its
    default serializer, pickle, there; HotQueue 0.2.8 in its import)."""
    results = {}
    probe_modules = "import sys; before = set(sys.modules); import hotqueue; print(len(set(sys.modules) - before))"
    probe_queue = ("import sys, time; before = set(sys.modules); start = time.perf_counter(); import hotqueue;"
                   " hotqueue.HotQueue('bench-import'); seconds = time.perf_counter() - start;"
                   " print(seconds, len(set(sys.modules) - before))")
    for side, venv_name in (("this", "bare"), ("redis-py", "redispy"), ("redis-py+hiredis", "hiredis")):
        python, env = python_of(venv_name), side_env(venv_name)
        times = []
        for _ in range(repeat):
            # Pinned to one CPU: unpinned, the same import varies by half here.
            err = subprocess.run(["taskset", "-c", "1", python, "-X", "importtime", "-c", "import hotqueue"],
                                 env=env, cwd=empty_dir(), capture_output=True, text=True, check=True).stderr
            line = [ln for ln in err.splitlines() if ln.rstrip().endswith("| hotqueue")][-1]
            times.append(int(line.split("|")[1]) / 1e6)
        modules = int(subprocess.run([python, "-c", probe_modules], env=env, cwd=empty_dir(), capture_output=True,
                                     text=True, check=True).stdout)
        queue_times = []
        for _ in range(repeat):
            seconds, queue_modules = subprocess.run(["taskset", "-c", "1", python, "-c", probe_queue], env=env,
                                                    cwd=empty_dir(), capture_output=True, text=True,
                                                    check=True).stdout.split()
            queue_times.append(float(seconds))
        results[side] = {"import": times, "modules": modules, "queue": queue_times, "queue_modules": int(queue_modules)}
    return results


def rss_figures(port, repeat):
    """Peak RSS (KiB) of the bare interpreter and of import + one put/get
    with the default (pickle) serializer. Read from VmHWM in /proc: a child's
    ru_maxrss starts at its parent's peak (kept across fork and exec), which
    would give every side this script's own size."""
    peak = ("import resource\ntry:\n    print(next(line.split()[1] for line in open('/proc/self/status')"
            " if line.startswith('VmHWM:')))\nexcept OSError:\n"
            "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    bare_probe = peak
    probe = (
        "import sys, hotqueue; q = hotqueue.HotQueue('bench-rss', host='127.0.0.1', port=int(sys.argv[1]));"
        " q.put('x' * 100); q.get()\n" + peak
    )
    result = {}
    for side, venv_name in (("bare interpreter", "bare"), ("this", "bare"), ("redis-py", "redispy"),
                            ("redis-py+hiredis", "hiredis")):
        code = bare_probe if side == "bare interpreter" else probe
        values = [
            int(subprocess.run([python_of(venv_name), "-c", code, str(port)], env=side_env(venv_name), cwd=empty_dir(),
                               capture_output=True, text=True, check=True).stdout)
            for _ in range(repeat)
        ]
        result[side] = values
    return result


def fmt_time(seconds):
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def paired_ratio(sides, other):
    """How many times faster "this" is than ``other``: the median over the
    rounds of other's time / this's time in the same round. Both sides of a
    ratio then ran within seconds of each other, so a slow spell of the
    machine (common on these shared vCPUs) moves both, not one."""
    return statistics.median(theirs / ours for theirs, ours in zip(sides[other], sides["this"]))


def mode_table(samples):
    """Markdown rows: medians, min–max and ratios (how many times faster this is)."""
    sides = ["this", "redis-py", "redis-py+hiredis", "socket floor", "redis-benchmark"]
    lines = [
        "| workload (time per call) | " + " | ".join(sides) + " | × redis-py | × hiredis | of floor |",
        "|---" * (len(sides) + 4) + "|",
    ]
    for name, _, label in WORKLOADS:
        row = [label]
        medians = {}
        for side in sides:
            values = samples[name].get(side)
            if not values:
                row.append("")
                continue
            medians[side] = statistics.median(values)
            row.append(f"{fmt_time(medians[side])} ({fmt_time(min(values))}–{fmt_time(max(values))})")
        row.append(f"**{paired_ratio(samples[name], 'redis-py'):.2f}×**")
        row.append(f"**{paired_ratio(samples[name], 'redis-py+hiredis'):.2f}×**")
        row.append(f"{paired_ratio(samples[name], 'socket floor'):.2f}" if "socket floor" in medians else "")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def target_table(samples):
    """Markdown rows: each target, the ratio reached (``paired_ratio``), and
    whether the target is within reach at all: the time it asks of this
    project against the socket floor's fastest round (a floor is a best case;
    a disturbed round must not make a target look impossible)."""
    labels = {name: label for name, _, label in WORKLOADS}
    lines = [
        "| workload | target | reached | time the target needs | this | socket floor (fastest) | within reach? |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, side, factor in TARGETS:
        medians = {key: statistics.median(values) for key, values in samples[name].items()}
        needed, this, floor = medians[side] / factor, medians["this"], min(samples[name]["socket floor"])
        reached = paired_ratio(samples[name], side)
        met = "**met**" if reached >= factor else "not met"
        if needed < floor:
            reach = f"**no**: needs {needed / floor:.0%} of the floor's time"
        else:
            reach = "yes"
        lines.append(f"| {labels[name]} | {factor:g}× {side} | {reached:.2f}×, {met} | {fmt_time(needed)} |"
                     f" {fmt_time(this)} | {fmt_time(floor)} | {reach} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per mode (default 7)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the operations, 3 rounds")
    parser.add_argument("--no-split", action="store_true", help="skip the split-CPU mode")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results.md")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    scale = 0.1 if args.quick else 1.0
    ensure_venvs()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open("/proc/loadavg") as file:
        load_before = file.read().split()[:3]
    out = [
        "# Benchmark results",
        "",
        f"Run {started}; `python3 benchmarks/run.py{' --quick' if args.quick else ''}`, {rounds} interleaved rounds.",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()};"
        f" Redis {server_version()}; load average before: {' '.join(load_before)}.",
        "Times are medians per call (min–max over the rounds); ratios are how many times faster this project",
        "is: the median over the rounds of (the other side's time / this project's time) in the same round;",
        "\"of floor\" is the same with the socket floor's time.",
        "The socket floor runs each workload over raw sockets with hand-written RESP and minimal Python",
        "(`Floor` in `benchmarks/workloads.py`): no client in this interpreter can be faster.",
        "",
    ]
    server = RedisServer()
    server.start()
    try:
        modes = [("pinned: server and client on CPU 0", 0)]
        if not args.no_split:
            modes.append(("split: server on CPU 0, client on CPU 1", 1))
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(server.process.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        for title, cpu in modes:
            print(f"{title} …", flush=True)
            samples = run_mode(server, cpu, rounds, scale)
            out += [f"## {title}", ""] + mode_table(samples) + [""]
            out += [f"Targets, {title.split(':')[0]}: the ratio reached; the time each target needs (the other"
                    " side's median / the factor) against the socket floor's fastest round.", ""]
            out += target_table(samples) + [""]
        compile_tree()
        rss = rss_figures(server.port, 3)
    finally:
        server.cleanup()
    imports = import_figures(15 if not args.quick else 3)
    out += ["## Import and memory (bare virtualenv)", "",
            "| side | `import hotqueue` (-X importtime, median) | modules loaded |"
            " import + `HotQueue('q')` (perf_counter, median) | modules loaded |"
            " peak RSS of import + put/get (median) | over bare interpreter |",
            "|---|---|---|---|---|---|---|"]
    bare_rss = statistics.median(rss["bare interpreter"])
    for side in ("this", "redis-py", "redis-py+hiredis"):
        peak = statistics.median(rss[side])
        figures = imports[side]
        out.append(f"| {side} | {fmt_time(statistics.median(figures['import']))} | {figures['modules']} |"
                   f" {fmt_time(statistics.median(figures['queue']))} | {figures['queue_modules']} |"
                   f" {peak / 1024:.1f} MiB | +{(peak - bare_rss) / 1024:.1f} MiB |")
    out.append(f"| bare interpreter | | | | | {bare_rss / 1024:.1f} MiB | |")
    out += ["", "This project imports its default serializer, pickle, when the first queue that uses it is made;"
            " HotQueue 0.2.8 imports it with `import hotqueue`. The second pair of columns counts it on every side.",
            ""]
    print("parser benchmark …", flush=True)
    parser_out = subprocess.run(
        ["taskset", "-c", "1", python_of("hiredis"), os.path.join(HERE, "parser.py")]
        + (["--quick"] if args.quick else []),
        env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, check=True,
    ).stdout
    out += parser_out.splitlines()
    text = "\n".join(out) + "\n"
    print(text)
    if not args.no_write:
        with open(os.path.join(HERE, "results.md"), "w") as file:
            file.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
