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
from tests.faults.conftest import PostgresCluster, RedisServer
from tests.faults.network import Host, Network
from tests.faults.pg_client import DATABASE, Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    try:
        for name in ("test", "db", "broker", "w1", "w2"):
            net.add_host(name, namespace=name != "test")
        yield net
    finally:
        net.destroy()


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


def test_a_partitioned_worker_s_task_runs_elsewhere_and_its_late_outcome_is_refused(
    network, cluster, workers, tmp_path, queue_name
):
    client = Client(cluster, queue_name)
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


#: what docs/deployment.md tells users of a database across a network to set: a connection
#: attempt gives up after 4 s, an open connection whose data is not acknowledged for 2 s fails
#: (the kernel notices at its next retransmission, so up to about twice that)
PG_TIMEOUTS = {"connect_timeout": 4, "tcp_user_timeout": 2000}
#: BROKER_CONNECTION_TIMEOUT (4 s), plus the time the rest of ``.delay()`` may take on a busy machine
REFUSED_WITHIN = 4 + 1.5


@pytest.fixture(params=["django", "redis"])
def servers(request, network, cluster, tmp_path, queue_name) -> Iterator[tuple[Client, Host]]:
    """A client of the servers, and the host whose link carries the queue (db or broker)."""
    if request.param == "django":
        yield Client(cluster, queue_name, pg_options=PG_TIMEOUTS), network.hosts["db"]
        return
    broker = network.hosts["broker"]
    directory = Path(tempfile.mkdtemp(prefix="tq-net-redis-"))
    redis = RedisServer(directory, host=broker.address, prefix=broker.prefix())
    try:
        redis.start()
        yield Client(cluster, queue_name, broker_url=redis.url, pg_options=PG_TIMEOUTS), broker
    finally:
        redis.kill()
        shutil.rmtree(directory, ignore_errors=True)


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
