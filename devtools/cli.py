"""The `payments` command: `payments run` brings up the whole system on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench import TWO_PHASE, WORKLOADS
from devtools.local_kafka import PROJECT_ROOT, LocalKafka, LocalKafkaCluster, configured_broker_url
from payments_app.settings import min_insync_replicas

#: `payments run`'s first (or only) Kafka node listens here for clients and for its controller quorum; node n of
#: `--brokers 3` at RUN_BROKER_PORT + 2 (n - 1) and the port after it
RUN_BROKER_PORT = 19092
RUN_CONTROLLER_PORT = 19093
RUN_WEB_PORT = 6066
RUN_INTERNAL_PORT = 6067
#: the bench's decided-latency run on the HTTP path: enough clients to offer its rate while each waits for a decision
DECIDED_CLIENTS = 256
DECIDED_WAIT_S = 10.0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (from Kubernetes or kill) stops everything the same way Ctrl-C does."""
    raise KeyboardInterrupt


def local_kafka(data_dir: Path, brokers: int) -> LocalKafka | LocalKafkaCluster:
    """`payments run`'s own Kafka: one node at the fixed ports, or `brokers` nodes, the first at the same ports."""
    if brokers == 1:
        return LocalKafka(data_dir / "kafka", port=RUN_BROKER_PORT, controller_port=RUN_CONTROLLER_PORT)
    ports = [(RUN_BROKER_PORT + 2 * n, RUN_CONTROLLER_PORT + 2 * n) for n in range(brokers)]
    return LocalKafkaCluster(data_dir / f"kafka-{brokers}", size=brokers, ports=ports)


def replication_env(brokers: int) -> dict[str, str]:
    """What a worker on `brokers` local nodes creates its topics with (unless the environment says otherwise)."""
    replicas = min(brokers, 3)
    return {
        "PAYMENTS_REPLICATION_FACTOR": os.environ.get("PAYMENTS_REPLICATION_FACTOR") or str(replicas),
        "PAYMENTS_MIN_INSYNC_REPLICAS": os.environ.get("PAYMENTS_MIN_INSYNC_REPLICAS")
        or str(min_insync_replicas(replicas)),
    }


def run(args: argparse.Namespace) -> int:
    """Start the local Kafka (unless BROKER_URL is set), create topics, run one worker in the foreground."""
    from devtools.cluster import WorkerProcess, new_admin_token
    from payments_app.exits import EXIT_FOR_RESTART

    data_dir = Path(args.data_dir)
    kafka: LocalKafka | LocalKafkaCluster | None = None
    broker_url = configured_broker_url()
    extra_env: dict[str, str] = {}
    if broker_url is None:
        kafka = local_kafka(data_dir, args.brokers)
        print(f"starting the local Kafka ({args.brokers} node(s)) at {kafka.bootstrap} ...", flush=True)
        kafka.start()
        broker_url = kafka.url
        extra_env = replication_env(args.brokers)
    admin_token = os.environ.get("PAYMENTS_ADMIN_TOKEN") or new_admin_token()
    token_file = data_dir / "admin-token"
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file.write_text(admin_token + "\n")
    token_file.chmod(0o600)
    worker = WorkerProcess(
        broker_url, data_dir / f"worker-{args.web_port}", args.web_port, admin_token, args.partitions,
        extra_env=extra_env, internal_port=args.internal_port,
    )  # fmt: skip
    try:
        print(f"the admin token (also in {token_file}): {admin_token}", flush=True)
        print(f"starting a worker: {worker.url} (Ctrl-C stops everything)", flush=True)
        worker.start(log_to_terminal=True)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            assert worker.process is not None
            code = worker.process.wait()
            if code != EXIT_FOR_RESTART:
                return code
            print("the worker exited asking for a restart (its watchdog); starting it again", flush=True)
            worker.process = None
            worker.start(log_to_terminal=True)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        worker.stop()
        if kafka is not None:
            kafka.stop()


def bench(args: argparse.Namespace) -> int:
    """Run the benchmark matrix, then write bench/results/latest.{json,png} and the table for BENCHMARKS.md."""
    import asyncio

    from bench.common import machine
    from bench.matrix import run_matrix
    from bench.report import markdown_table, ratio_table, read_json, scale_out_table, write_json, write_plot

    results_dir = Path(args.results_dir)
    if args.from_json:
        results, host = read_json(Path(args.from_json))
    else:
        host = {**machine(), "command": " ".join(["payments", *sys.argv[1:]])}
        results = asyncio.run(run_matrix(bench_matrix(args), Path(args.scratch)))
        write_json(results, host, results_dir / "latest.json")
    write_plot(results, results_dir / "latest.png")
    table = (f"Command: `{host.get('command')}`\n\n{markdown_table(results)}\n\n{ratio_table(results)}\n\n"
             f"Scale-out on paper, from the catch-up runs:\n\n{scale_out_table(results)}")  # fmt: skip
    (results_dir / "latest.md").write_text(table + "\n")
    print(table)
    print(f"machine: {host}")
    return 0 if all(result.invariants_ok for result in results) else 1


def layers(args: argparse.Namespace) -> int:
    """Each layer of one ledger agent alone (rules, codec, RocksDB, Kafka client), beside the full pipeline."""
    import asyncio

    from bench.layers import markdown_table, measure_layers, write_results
    from bench.report import read_json

    results_dir = Path(args.results_dir)
    results = asyncio.run(measure_layers(Path(args.scratch) / "layers", args.transfers, not args.no_kafka))
    latest = results_dir / "latest.json"
    runs = read_json(latest)[0] if latest.exists() else []
    pipeline = {
        f"full pipeline, {run.workers} worker(s)": run.applied_tps
        for run in runs
        if (run.model, run.workload, run.path, run.settings["rate_tps"]) == ("concurrent", "uniform", "kafka", 0)
    }
    write_results(results, results_dir, pipeline)
    table = markdown_table(results)
    (results_dir / "layers.md").write_text(f"Command: `payments {' '.join(sys.argv[1:])}`\n\n{table}\n")
    print(table)
    return 0


def soak(args: argparse.Namespace) -> int:
    """History, restarts, takeovers and faults under load on one Kafka node (bench/results/soak.{json,md}), then the
    faults only replication survives on three (bench/results/soak-replicated.{json,md}); see RELIABILITY.md."""
    from bench.soak import SoakSettings, run_soak
    from bench.soak_replicated import run_replicated_soak

    settings = SoakSettings(history=args.history, kills=args.kills, leave_join_cycles=args.leave_join_cycles,
                            offered_tps=args.rate, full_load_cycles=args.full_load_cycles)  # fmt: skip
    scratch, results = Path(args.scratch), Path(args.results_dir)
    failed = 0
    if "one-node" in args.phases:
        failed |= run_soak(settings, scratch / "soak", results)
    if "three-nodes" in args.phases:
        failed |= run_replicated_soak(settings, scratch / "soak-replicated", results)
    return failed


def bench_matrix(args: argparse.Namespace) -> list[Any]:
    """Every model x workload x workers on the Kafka path; the HTTP path for `--http-workloads`; the
    PostgreSQL peer per workload, first and last (its client count is `--senders`, workers do not apply)."""
    from bench.common import CATCH_UP, RunSettings
    from bench.report import half_load_rate, read_json

    full_speed = read_json(Path(args.half_of))[0] if args.half_of else []

    def settings(model: str, workload: str, workers: int, path: str, http_batch: int = 1, **more: Any) -> RunSettings:
        senders = args.http_clients if path == "http" else args.senders
        rate = half_load_rate(full_speed, model, workload, workers) if full_speed and path == "kafka" else args.rate
        common = {"accounts": args.accounts, "duration_s": args.duration, "partitions": args.partitions,
                  "batch_size": args.batch_size, "in_flight_batches": senders, "http_batch": http_batch,
                  "rate_tps": rate, "catch_up_transfers": args.catch_up_transfers}  # fmt: skip
        return RunSettings(model=model, workload=workload, workers=workers, path=path, **{**common, **more})

    clusters: dict[tuple[str, int], list[RunSettings]] = {}
    for model in args.model:
        if model == "postgres":
            continue
        for workers in args.workers:
            runs = clusters[model, workers] = []
            runs.extend(
                settings(model, workload, workers, "kafka") for workload in args.workload if "kafka" in args.path
            )
            if CATCH_UP in args.path:
                runs.extend(settings(model, workload, workers, CATCH_UP) for workload in args.catch_up_workloads)
            if "http" in args.path:
                runs.extend(settings(model, workload, workers, "http", size)
                            for workload in args.http_workloads for size in args.http_batch)  # fmt: skip
                if args.http_decided_rate > 0:
                    runs.extend(settings(model, workload, workers, "http", rate_tps=args.http_decided_rate,
                                         http_wait_s=DECIDED_WAIT_S, in_flight_batches=DECIDED_CLIENTS)
                                for workload in args.http_workloads)  # fmt: skip
    # The models take turns (each worker count: one model's cluster, then the other's), so that the machine's
    # drift over the matrix's hour favours neither; the PostgreSQL peer, unchanged code, runs first and last.
    matrix = [runs for workers in args.workers for (_, n), runs in clusters.items() if n == workers]
    if "postgres" in args.model:
        peer = [settings("postgres", workload, 1, "sql") for workload in args.workload if workload != TWO_PHASE]
        if matrix:
            first = [dataclasses.replace(run, control="first") for run in peer]
            last = [dataclasses.replace(run, control="last") for run in peer]
            matrix = [first, *matrix, last]
        else:
            matrix = [peer]
    return [run for runs in matrix for run in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run broker and one worker on this machine")
    run_parser.add_argument("--web-port", type=int, default=RUN_WEB_PORT, help="the client API")
    run_parser.add_argument("--internal-port", type=int, default=RUN_INTERNAL_PORT, help="worker routes, /metrics")
    run_parser.add_argument("--partitions", type=int, default=int(os.environ.get("PAYMENTS_PARTITIONS", "8")))
    run_parser.add_argument("--data-dir", default=str(PROJECT_ROOT / ".data"))
    run_parser.add_argument("--brokers", type=int, default=1, choices=[1, 3],
                            help="local Kafka nodes (without BROKER_URL): 3 keep every topic on all three")  # fmt: skip
    run_parser.set_defaults(handler=run)
    bench_parser = commands.add_parser("bench", help="measure throughput and latency, check the invariants")
    bench_parser.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    bench_parser.add_argument(
        "--model",
        nargs="+",
        default=["concurrent", "baseline", "postgres"],
        choices=["concurrent", "baseline", "postgres"],
    )
    bench_parser.add_argument("--path", nargs="+", default=["kafka", "catch-up", "http"],
                              choices=["kafka", "catch-up", "http"],
                              help="kafka: a live generator beside the workers; catch-up: the workers drain a "
                              "backlog written before they start (generator off the cores); http: the API")  # fmt: skip
    bench_parser.add_argument(
        "--catch-up-workloads",
        nargs="+",
        default=["uniform", "hot-payer"],
        choices=list(WORKLOADS),
        help="workloads also measured on the catch-up path",
    )
    bench_parser.add_argument("--catch-up-transfers", type=int, default=1_000_000,
                              help="the backlog of a catch-up run")  # fmt: skip
    bench_parser.add_argument(
        "--http-workloads",
        nargs="+",
        default=["uniform"],
        choices=[workload for workload in WORKLOADS if workload != TWO_PHASE],
        help="workloads also driven through the HTTP API",
    )
    bench_parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    bench_parser.add_argument("--accounts", type=int, default=100_000)
    bench_parser.add_argument("--senders", type=int, default=16, help="Kafka records in flight (or SQL clients)")
    bench_parser.add_argument("--http-clients", type=int, default=64, help="concurrent HTTP clients")
    bench_parser.add_argument("--http-batch", type=int, nargs="+", default=[1, 50],
                              help="transfers per HTTP request: 1 sends single objects, more sends arrays")  # fmt: skip
    bench_parser.add_argument("--http-decided-rate", type=float, default=2_000.0,
                              help="also single transfers offered at this rate, each answered at its decision "
                              f"(?wait=, {DECIDED_CLIENTS} clients): latency to the decision; 0 skips it")  # fmt: skip
    offered = bench_parser.add_mutually_exclusive_group()
    offered.add_argument("--rate", type=float, default=0.0, help="offered transfers/s (0: as fast as taken)")
    offered.add_argument("--half-of", metavar="RESULTS_JSON",
                         help="offer each Kafka-path run half the TPS its model, workload and workers applied at full "
                         "speed in this results file (half load, as measured on this machine)")  # fmt: skip
    bench_parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    bench_parser.add_argument("--partitions", type=int, default=8)
    bench_parser.add_argument("--batch-size", type=int, default=500, help="transfers per Kafka record")
    bench_parser.add_argument("--scratch", default=str(PROJECT_ROOT / "bench" / "scratch"))
    bench_parser.add_argument("--results-dir", default=str(PROJECT_ROOT / "bench" / "results"),
                              help="where latest.json, latest.png and latest.md go")  # fmt: skip
    bench_parser.add_argument("--from-json", help="run nothing: redraw the table and plot of a results JSON")
    bench_parser.set_defaults(handler=bench)
    layers_parser = commands.add_parser("layers", help="the ceiling of each layer of a ledger agent, alone")
    layers_parser.add_argument("--transfers", type=int, default=200_000)
    layers_parser.add_argument("--no-kafka", action="store_true", help="only the in-process layers")
    layers_parser.add_argument("--scratch", default=str(PROJECT_ROOT / "bench" / "scratch"))
    layers_parser.add_argument("--results-dir", default=str(PROJECT_ROOT / "bench" / "results"))
    layers_parser.set_defaults(handler=layers)
    soak_parser = commands.add_parser("soak", help="long history, restarts, takeovers, faults under load")
    soak_parser.add_argument("--history", type=int, default=1_000_000, help="transfers applied before the faults")
    soak_parser.add_argument("--kills", type=int, default=20, help="worker SIGKILLs under load")
    soak_parser.add_argument("--leave-join-cycles", type=int, default=20)
    soak_parser.add_argument("--rate", type=float, default=3_000.0, help="offered transfers/s during the faults")
    soak_parser.add_argument("--full-load-cycles", type=int, default=5, help="leave/join cycles at full load")
    soak_parser.add_argument("--phases", nargs="+", choices=["one-node", "three-nodes"],
                             default=["one-node", "three-nodes"], help="the Kafka clusters to soak")  # fmt: skip
    soak_parser.add_argument("--scratch", default=str(PROJECT_ROOT / "bench" / "scratch"))
    soak_parser.add_argument("--results-dir", default=str(PROJECT_ROOT / "bench" / "results"))
    soak_parser.set_defaults(handler=soak)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
