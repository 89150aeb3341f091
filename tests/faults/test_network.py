"""Workers on separate hosts with faults between them (network namespaces; tests/faults/network.py).

A database host runs a PostgreSQL cluster (the results; the queue on ``django://``), a broker host
a ``redis-server`` or a RabbitMQ node, two worker hosts one worker each, and the test process is
a host too (it migrates, produces and counts). Faults are made on the links between them while
tasks run; the tasks' own rows (``testapp_execution``, in the database host) count what ran.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerProcess, stop_all, wait_for, worker_env
from tests.faults.conftest import PostgresCluster, RabbitNode, RedisServer, skip_without
from tests.faults.network import Host, Network, Relay
from tests.faults.pg_client import DATABASE, Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def lan() -> Iterator[Network]:
    """The hosts, once per module (the broker host's RabbitMQ node boots for 20-60 s)."""
    net = Network()
    try:
        for name in ("test", "db", "broker", "w1", "w2"):
            net.add_host(name, namespace=name != "test")
        yield net
    finally:
        net.destroy()


@pytest.fixture
def network(lan: Network) -> Iterator[Network]:
    """The module's hosts; every fault a test made is undone after it, also when it failed."""
    yield lan
    for host in lan.hosts.values():
        lan.heal(host)
        if host.namespace is not None:
            lan.lose(host, 0)


@pytest.fixture(scope="module")
def rabbit_boot(lan: Network) -> Iterator[RabbitNode | None]:
    """The broker host's RabbitMQ node, booting from the first test of the module that asks."""
    if not Path(RabbitNode.server).exists():
        yield None
        return
    broker = lan.hosts["broker"]
    directory = Path(tempfile.mkdtemp(prefix="tq-net-rabbitmq-"))
    node = RabbitNode(directory, host=broker.address, prefix=broker.prefix())
    node.start(wait=False)
    try:
        yield node
    finally:
        node.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rabbit(rabbit_boot: RabbitNode | None) -> RabbitNode:
    """The broker host's RabbitMQ node, once it answers."""
    if rabbit_boot is None:
        skip_without(RabbitNode.server)
    assert rabbit_boot is not None
    rabbit_boot.wait_ready()
    return rabbit_boot


@pytest.fixture
def cluster(network: Network) -> Iterator[PostgresCluster]:
    """The database host's PostgreSQL (the results; the queue on ``django://``)."""
    directory = Path(tempfile.mkdtemp(prefix="tq-net-pg-"))
    db = network.hosts["db"]
    pg = PostgresCluster(directory, host=db.address, prefix=db.prefix())
    try:
        pg.start()
        pg.sql(f"CREATE DATABASE {DATABASE}")
        yield pg
    finally:
        pg.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis(network: Network) -> Iterator[RedisServer]:
    """The broker host's ``redis-server``."""
    broker = network.hosts["broker"]
    directory = Path(tempfile.mkdtemp(prefix="tq-net-redis-"))
    server = RedisServer(directory, host=broker.address, prefix=broker.prefix())
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    stop_all(started)
    for worker in started:
        print(f"--- {worker.log_path.name} ---\n{worker.output()[-4000:]}")


def start_on(
    host: Host, client: Client, workers: list[WorkerProcess], tmp_path: Path, *args: str
) -> WorkerProcess:
    """Start a ``tqworker`` on ``host`` against the broker host's servers."""
    worker = WorkerProcess(
        [*args, "-n", f"{host.name}@net"],
        {**worker_env(), **client.env},
        tmp_path / f"worker-{host.name}-{len(workers)}.log",
        prefix=host.prefix(),
    )
    workers.append(worker)
    return worker.wait_ready(60)


#: the AMQP heartbeat of the workers on RabbitMQ: the broker drops a partitioned one after ~4 s
AMQP_SETTINGS = {"BROKER_HEARTBEAT": 4}


@pytest.mark.parametrize("queue", ["django", "redis", "amqp"])
def test_a_partitioned_worker_s_task_runs_elsewhere_and_its_late_outcome_is_refused(
    request, queue, network, cluster, workers, tmp_path, queue_name
):
    if queue == "django":
        client = Client(cluster, queue_name)
    elif queue == "redis":  # w1's lease runs out on Redis' clock; its late ack is fenced (Lua)
        redis = request.getfixturevalue("redis")
        client = Client(cluster, queue_name, broker_url=redis.url)
    else:  # RabbitMQ redelivers the message once its heartbeat drops w1's connection
        rabbit = request.getfixturevalue("rabbit")
        client = Client(cluster, queue_name, broker_url=rabbit.url, settings=AMQP_SETTINGS)
    client.run("-m", "django", "migrate", "--run-syncdb", "--no-input", "-v", "0")
    solo = ("-P", "solo", "--prefetch-multiplier", "1")
    start_on(network.hosts["w1"], client, workers, tmp_path, *solo)
    (task_id,) = client.produce(1, 8)
    starts = f"SELECT count(*) FROM testapp_execution WHERE task_id = '{task_id}' AND label LIKE 'start:%%'"
    wait_for(lambda: client.sql(starts)[0][0] == 1, 30, what="w1 to start the task")
    network.partition(network.hosts["w1"])
    start_on(network.hosts["w2"], client, workers, tmp_path, *solo)
    outcome = f"SELECT state, worker, delivery_count FROM django_tq_taskresult WHERE task_id = '{task_id}'"
    wait_for(lambda: client.sql(outcome)[0][:2] == ("SUCCESS", "w2@net"), 60, what="w2's run")
    network.heal(network.hosts["w1"])
    ends = f"SELECT count(*) FROM testapp_execution WHERE task_id = '{task_id}' AND label LIKE 'end:%%'"
    wait_for(lambda: client.sql(ends)[0][0] == 2, 90, what="w1's late end row")
    time.sleep(5)  # w1 records its outcome and acks after its end row
    assert client.sql(outcome)[0][:2] == ("SUCCESS", "w2@net")
    assert client.sql(starts)[0][0] == 2  # and never a third run
    assert client.sql("SELECT count(*) FROM django_tq_queuemessage")[0][0] == 0
    if queue == "amqp":  # w1's late ack found its connection closed: nothing came back
        time.sleep(5)
        assert client.sql(starts)[0][0] == 2


#: what docs/deployment.md tells users of a database across a network to set: a connection
#: attempt gives up after 4 s, an open connection whose data is not acknowledged for 2 s fails
#: (the kernel notices at its next retransmission, so up to about twice that)
PG_TIMEOUTS = {"connect_timeout": 4, "tcp_user_timeout": 2000}
#: BROKER_CONNECTION_TIMEOUT (4 s), plus the time the rest of ``.delay()`` may take on a busy
#: machine (5.7 s was seen on RabbitMQ with three other legs running side by side)
REFUSED_WITHIN = 4 + 2.5


@pytest.fixture(params=["django", "redis", "amqp"])
def servers(request, network, cluster, tmp_path, queue_name) -> Iterator[tuple[Client, Host]]:
    """A client of the servers, and the host whose link carries the queue (db or broker)."""
    if request.param == "django":
        yield Client(cluster, queue_name, pg_options=PG_TIMEOUTS), network.hosts["db"]
        return
    broker = network.hosts["broker"]
    if request.param == "amqp":
        rabbit = request.getfixturevalue("rabbit")
        yield (
            Client(
                cluster,
                queue_name,
                broker_url=rabbit.url,
                pg_options=PG_TIMEOUTS,
                settings=AMQP_SETTINGS,
            ),
            broker,
        )
        return
    redis = request.getfixturevalue("redis")
    yield Client(cluster, queue_name, broker_url=redis.url, pg_options=PG_TIMEOUTS), broker


def _refused_seconds(line: str) -> float:
    """How long the ``.delay()`` of a producer's ``refused after 4.0s: …`` line took."""
    assert line.startswith("refused after "), line
    return float(line.removeprefix("refused after ").partition("s:")[0])


def test_a_flapping_link_to_the_queue_loses_nothing_and_workers_come_back_by_themselves(
    network, servers, workers, tmp_path
):
    client, queue_host = servers
    client.run("-m", "django", "migrate", "--run-syncdb", "--no-input", "-v", "0")
    solo = ("-P", "solo", "--prefetch-multiplier", "1")
    for name in ("w1", "w2"):
        start_on(network.hosts[name], client, workers, tmp_path, *solo)
    producer = subprocess.Popen(  # a web process sending all along, its connections open
        [sys.executable, "-m", "tests.faults.produce", "300", "0.05", "0.1"],
        cwd=ROOT,
        env={**worker_env(), **client.env},
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: client.finished() >= 20, 60, what="20 tasks done")
    flaps = 3
    for flap in range(flaps):
        network.partition(queue_host)
        if flap == 0:  # a new process (a new connection) sending while the link is down
            (line,) = client.run("-m", "tests.faults.produce", "1")
            assert _refused_seconds(line) <= REFUSED_WITHIN, line
        else:
            time.sleep(3)
        network.heal(queue_host)
        time.sleep(3)
    healed_at = client.sql("SELECT now()")[0][0]
    out, _ = producer.communicate(timeout=300)
    accepted = [line for line in out.splitlines() if not line.startswith("refused")]
    refused = [line for line in out.splitlines() if line.startswith("refused")]
    # the web process's open connections: a .delay() fails loudly in bounded time, or succeeds
    assert all(_refused_seconds(line) <= REFUSED_WITHIN for line in refused), refused
    runs = client.wait_until_finished(accepted, 240)
    assert runs.lost(accepted) == set()
    # a task runs twice only when its worker's lease ran out during a partition: at most the
    # one running and the one prefetched, per worker and partition
    assert len(runs.duplicated()) <= flaps * 2 * 2
    # both workers came back by themselves: alive, and each ran tasks after the last heal
    after = client.produce(40)
    client.wait_until_finished(after, 120)
    pids = {
        pid
        for (pid,) in client.sql(
            f"SELECT DISTINCT pid FROM testapp_execution WHERE created_at > '{healed_at.isoformat()}'"
        )
    }
    assert all(worker.process.poll() is None for worker in workers)
    assert {worker.pid for worker in workers} <= pids


#: the latency relays' delay each way: 100 ms more per round trip
LATENCY = 0.05
#: the share of packets each namespaced host drops, in percent
LOSS = 5
#: how long the burst runs through the slow, lossy links
FAULT_SECONDS = 120


def _query(client: Client, statement: str) -> dict[str, int]:
    return dict(client.sql(statement))


def test_b_latency_and_loss_for_two_minutes_lose_nothing_on_every_transport(
    network, cluster, rabbit, workers, tmp_path, queue_name
):
    """django:// (PostgreSQL), Redis and RabbitMQ side by side, over the same two minutes."""
    db, broker = network.hosts["db"], network.hosts["broker"]
    redis = RedisServer(tmp_path / "redis", host=broker.address, prefix=broker.prefix())
    started: list[RedisServer | Relay] = [redis]
    (tmp_path / "redis").mkdir()
    try:
        redis.start()
        pg_relay = Relay(tmp_path, cluster, delay=LATENCY, host=db)
        redis_relay = Relay(tmp_path, redis, delay=LATENCY, host=broker)
        rabbit_relay = Relay(tmp_path, rabbit, delay=LATENCY, host=broker)
        for relay in (pg_relay, redis_relay, rabbit_relay):
            started.append(relay)
            relay.start()
        urls = {
            "django": "django://",
            "redis": f"redis://{broker.address}:{redis_relay.port}/0",
            "amqp": f"amqp://guest:guest@{broker.address}:{rabbit_relay.port}//",
        }
        clients: dict[str, Client] = {}
        for name, url in urls.items():
            database = f"tq_faults_{name}"
            cluster.sql(f"CREATE DATABASE {database}")
            Client(cluster, queue_name, database).run(
                "-m", "django", "migrate", "--run-syncdb", "--no-input", "-v", "0"
            )
            clients[name] = Client(
                cluster, queue_name, database, broker_url=url, pg_options=PG_TIMEOUTS, via=pg_relay
            )
        solo = ("-P", "solo", "--prefetch-multiplier", "1")
        for client in clients.values():
            for name in ("w1", "w2"):
                start_on(network.hosts[name], client, workers, tmp_path, *solo)
        lossy = [network.hosts[name] for name in ("db", "broker", "w1", "w2")]
        for host in lossy:
            network.lose(host, LOSS)
        producers = {  # one web process per transport, sending all along
            name: subprocess.Popen(
                [sys.executable, "-m", "tests.faults.produce", "100000", "0.1", "0.1"],
                cwd=ROOT,
                env={**worker_env(), **client.env},
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, client in clients.items()
        }
        time.sleep(FAULT_SECONDS)
        for producer in producers.values():
            producer.terminate()
        outputs = {
            name: producer.communicate(timeout=60)[0] for name, producer in producers.items()
        }
        for host in lossy:
            network.lose(host, 0)
        for name, client in clients.items():
            lines = outputs[name].splitlines()
            accepted = [line for line in lines if not line.startswith("refused")]
            refused = [line for line in lines if line.startswith("refused")]
            assert len(accepted) >= 20, (name, len(accepted), refused[:3])
            runs = client.wait_until_finished(accepted, 300)
            assert runs.lost(accepted) == set(), name
            # a task ran twice only where the queue delivered it again (its lease ran out, or
            # RabbitMQ redelivered it after a dropped connection): never more runs than deliveries
            deliveries = _query(client, "SELECT task_id, delivery_count FROM django_tq_taskresult")
            over = {t: n for t, n in runs.starts.items() if n > max(deliveries.get(t, 1), 1)}
            assert over == {}, name
            print(
                f"{name}: {len(accepted)} accepted, {len(refused)} refused, "
                f"{len(runs.duplicated())} ran twice, "
                f"{sum(1 for n in deliveries.values() if n > 1)} delivered again"
            )
        assert all(worker.process.poll() is None for worker in workers)
    finally:
        for service in started:
            service.kill()
