"""Workers on separate hosts with faults between them (network namespaces; tests/faults/network.py).

A broker host runs the servers (a PostgreSQL cluster for the results and ``django://``, a
``redis-server``, a RabbitMQ node), two worker hosts run one worker each, and the test process is
a host too. Faults are made on the links between them while tasks run; the tasks' own rows
(``testapp_execution``, written to the broker host's database) count what really ran.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, stop_all, wait_for, worker_env
from tests.faults.conftest import PostgresCluster
from tests.faults.network import Host, Network
from tests.faults.pg_client import DATABASE, Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    try:
        net.add_host("test", namespace=False)
        net.add_host("w1")
        net.add_host("w2")
        yield net
    finally:
        net.destroy()


@pytest.fixture
def cluster(network: Network) -> Iterator[PostgresCluster]:
    """The broker host's PostgreSQL (the results; the queue on ``django://``)."""
    directory = Path(tempfile.mkdtemp(prefix="tq-net-pg-"))
    pg = PostgresCluster(
        directory, host=network.broker_address, prefix=["ip", "netns", "exec", network.broker]
    )
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


@pytest.mark.xfail(strict=True, reason="the late result write is not fenced yet (acks are)")
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
