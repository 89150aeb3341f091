"""The systems the benchmark compares, and how each is configured, started and cleaned up.

A :class:`System` is one task queue (django_tq, a peer) or one raw ceiling on the brokers it
supports; a :class:`Scenario` is one system on one broker, optionally with results stored
(``results="db"``: in PostgreSQL through Django; ``"redis"``: in Redis) or, for an enqueue-only
row, with publisher confirms turned on where the system's default is off (``confirm=True``), or,
for django_tq, with the worker's Prometheus port on (``metrics=True``, ``--metrics``: what the
metrics cost a task).

Isolation from everything else on the machine, other benchmark runs included
(``benchmarks/namespace.py``): a run claims a Redis database of its own (the systems, one after
another, share it), and its RabbitMQ queues (``AMQP_QUEUES``) and PostgreSQL databases carry its
run id; all of them are emptied before every scenario, and deleted or released at the end. Redis is the one on port ``REDIS_PORT`` (6379, or
``BENCH_REDIS_PORT``: a private ``redis-server``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

from benchmarks import namespace
from benchmarks.namespace import HOST, PG_DB, PG_PROCRASTINATE_DB, PG_RAW_DB, REDIS_PORT

REPO = Path(__file__).resolve().parent.parent

AMQP_URL = f"amqp://guest:guest@{HOST}:5672//"
PIKA_URL = f"amqp://guest:guest@{HOST}:5672/%2F"  # the same vhost "/", spelled as pika parses it
CONCURRENCY = 2

BROKER_TITLES = {
    "redis": "Redis",
    "amqp": "RabbitMQ",
    "postgres": "PostgreSQL (django://)",
    "sqlite": "SQLite (django://)",
}
BROKER_NAMES = {"redis": "Redis", "amqp": "RabbitMQ", "postgres": "PostgreSQL", "sqlite": "SQLite"}
TQ_SCHEMES = {
    "redis": "redis://",
    "amqp": "amqp://",
    "postgres": "django:// PostgreSQL",
    "sqlite": "django:// SQLite",
}
RESULT_KINDS = ("", "db", "redis")


@dataclasses.dataclass(frozen=True, kw_only=True)
class System:
    """One benchmarked system: what it needs, where its messages live, which rows it has."""

    name: str
    role: str  # "ours", "peer" (counted in "best peer") or "ceiling" (a raw client loop)
    brokers: tuple[str, ...]
    module: str  # importable when the system is installed
    amqp_queues: tuple[str, ...] = ()  # base names (the run's are ``namespace.queue(name)``)
    results_db: tuple[str, ...] = ()  # brokers with a results-in-PostgreSQL row
    results_redis: bool = False  # has a results-in-Redis row (Redis broker)
    confirm_variant: bool = False  # an enqueue-only RabbitMQ row with publisher confirms on


SYSTEMS: dict[str, System] = {
    system.name: system
    for system in (
        System(
            name="tq",
            role="ours",
            brokers=("redis", "amqp", "postgres", "sqlite"),
            module="django_tq",
            amqp_queues=("tq_bench",),
            results_db=("redis", "amqp", "postgres"),
            results_redis=True,
        ),
        System(
            name="celery",
            role="peer",
            brokers=("redis", "amqp"),
            module="celery",
            amqp_queues=("celery_bench",),
            results_db=("redis", "amqp"),
            results_redis=True,
        ),
        System(
            name="huey",
            role="peer",
            brokers=("redis",),
            module="huey",
            results_redis=True,
        ),
        System(
            name="dramatiq",
            role="peer",
            brokers=("redis", "amqp"),
            module="dramatiq",
            amqp_queues=("dramatiq_bench",),  # and its delay and dead-letter queues (.DQ, .XQ)
            results_redis=True,
            confirm_variant=True,
        ),
        System(
            name="procrastinate",
            role="peer",
            brokers=("postgres",),
            module="procrastinate",
        ),
        System(
            name="raw-redis-py",
            role="ceiling",
            brokers=("redis",),
            module="redis",
        ),
        System(
            name="raw-kombu",
            role="ceiling",
            brokers=("redis", "amqp"),
            module="kombu",
            amqp_queues=("raw_bench",),
            confirm_variant=True,
        ),
        System(name="raw-pg", role="ceiling", brokers=("postgres",), module="psycopg"),
    )
}
RAW_SYSTEMS = tuple(name for name, system in SYSTEMS.items() if system.role == "ceiling")
AMQP_QUEUES = tuple(
    namespace.queue(q) + suffix
    for s in SYSTEMS.values()
    for q in s.amqp_queues
    for suffix in (("", ".DQ", ".XQ") if s.name == "dramatiq" else ("",))
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One system on one broker (one row of the report)."""

    broker: str
    system: str
    results: str = ""  # "" off, "db" in PostgreSQL through Django, "redis" in Redis
    confirm: bool = False  # publisher confirms turned on (an enqueue-only row)
    bulk: bool = False  # django_tq's reusable publisher (an enqueue-only row)
    #: django_tq on RabbitMQ with BROKER_CONFIRM="batch" (an enqueue-only row, one by one)
    batch: bool = False
    metrics: bool = False  # django_tq's worker with --metrics-port (a "variant" of its row)

    def __post_init__(self) -> None:
        if self.results not in RESULT_KINDS:
            raise ValueError(f"results must be one of {RESULT_KINDS}, got {self.results!r}")
        if self.metrics and self.system != "tq":
            raise ValueError("only django_tq has a metrics-port row")

    @property
    def role(self) -> str:
        """ "ours", "peer", "ceiling", or "variant" (django_tq's row again, metrics on)."""
        return "variant" if self.metrics else SYSTEMS[self.system].role

    @property
    def enqueue_only(self) -> bool:
        """The confirm and bulk variants differ from their base row only in how they publish."""
        return self.confirm or self.bulk or self.batch

    @property
    def needs_postgres(self) -> bool:
        return (
            self.broker == "postgres"
            or self.system == "tq"
            or (self.system == "celery" and self.results == "db")
        )

    @property
    def short(self) -> str:
        """The system's name in a ratio cell ("Huey", "Dramatiq + confirms")."""
        names = {
            "tq": "django_tq",
            "celery": "Celery",
            "huey": "Huey",
            "dramatiq": "Dramatiq",
            "procrastinate": "Procrastinate",
            "raw-redis-py": "raw redis-py",
            "raw-kombu": "raw kombu",
            "raw-pg": "raw SKIP LOCKED",
        }
        extra = " + confirms" if self.confirm else " + metrics port" if self.metrics else ""
        extra += " publisher" if self.bulk else ' CONFIRM="batch"' if self.batch else ""
        return names[self.system] + extra

    @property
    def label(self) -> str:
        broker = BROKER_NAMES[self.broker]
        results = {
            "tq": {"db": " + django-db results", "redis": " + django-cache results (django-redis)"},
            "celery": {"db": " + django-celery-results", "redis": " + Redis results"},
            "huey": {"redis": " + Redis results (store_none)"},
            "dramatiq": {"redis": " + Results (Redis)"},
        }.get(self.system, {})
        base = {
            "tq": f"django_tq {TQ_SCHEMES[self.broker]}",
            "celery": f"Celery + {broker}",
            "huey": "Huey + Redis",
            "dramatiq": f"Dramatiq + {broker}" + (" + confirm_delivery" if self.confirm else ""),
            "procrastinate": "Procrastinate (PostgreSQL)",
            "raw-redis-py": "ceiling: raw redis-py LMOVE+LREM",
            "raw-kombu": f"ceiling: raw kombu {broker}" + (" + confirms" if self.confirm else ""),
            "raw-pg": "ceiling: raw psycopg SKIP LOCKED",
        }[self.system]
        return (
            base
            + results.get(self.results, "")
            + (" (publisher, bulk)" if self.bulk else "")
            + (' (BROKER_CONFIRM="batch")' if self.batch else "")
            + (" + --metrics-port" if self.metrics else "")
        )

    @property
    def key(self) -> str:
        suffix = {"": "", "db": "/results", "redis": "/results-redis"}[self.results]
        variant = "/confirm" if self.confirm else "/metrics" if self.metrics else ""
        variant += "/bulk" if self.bulk else "/batch" if self.batch else ""
        return f"{self.broker}/{self.system}" + variant + suffix


def build_scenarios(
    brokers: list[str],
    systems: set[str],
    workloads: set[str],
    results_brokers: list[str],
    *,
    metrics: bool = False,
) -> list[Scenario]:
    """Return the scenarios of a run, broker by broker, in report order (with ``metrics``,
    django_tq's row is followed by the same row with the worker's metrics port on)."""
    out: list[Scenario] = []
    for broker in brokers if workloads & {"enqueue", "drain", "latency", "memory"} else []:
        for name, system in SYSTEMS.items():
            if name not in systems or broker not in system.brokers:
                continue
            out.append(Scenario(broker, name))
            if metrics and name == "tq" and workloads & {"drain", "latency", "memory"}:
                out.append(Scenario(broker, name, metrics=True))
            if broker == "amqp" and system.confirm_variant and "enqueue" in workloads:
                out.append(Scenario(broker, name, confirm=True))
            if name == "tq" and "enqueue" in workloads:
                out.append(Scenario(broker, name, bulk=True))
                if broker == "amqp":
                    out.append(Scenario(broker, name, batch=True))
    if "results" in workloads:
        for broker in results_brokers:
            for name, system in SYSTEMS.items():
                if name in systems and broker in brokers and broker in system.results_db:
                    out.append(Scenario(broker, name, results="db"))
    if "results-redis" in workloads and "redis" in brokers:
        for name, system in SYSTEMS.items():
            if name in systems and system.results_redis:
                out.append(Scenario("redis", name, results="redis"))
    return out


# -- availability ---------------------------------------------------------------------------------
def has_module(name: str) -> bool:
    if name in sys.modules:  # kombu replaces its module object (no __spec__): find_spec would fail
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def skip_reason(sc: Scenario) -> str | None:
    """Return why ``sc`` cannot run in this environment, or None."""
    system = SYSTEMS[sc.system]
    if not has_module(system.module):
        return f"{system.module} is not installed"
    if sc.system == "tq" and sc.broker == "redis" and not has_module("django_tq.transport.redis"):
        return "django_tq.transport.redis is not importable yet"
    if sc.system == "celery" and sc.results == "db" and not has_module("django_celery_results"):
        return "django-celery-results is not installed"
    if sc.system == "tq" and sc.results == "redis" and not has_module("django_redis"):
        return "django-redis is not installed"
    if sc.system == "dramatiq" and sc.broker == "amqp" and not has_module("pika"):
        return "pika is not installed (dramatiq[rabbitmq])"
    return None


# -- configuration ----------------------------------------------------------------------------------
def redis_url() -> str:
    """Return the URL of this run's Redis database (every system's, one after another)."""
    return f"redis://{HOST}:{REDIS_PORT}/{namespace.REDIS_DB}"


def pg_url(database: str) -> str:
    return f"postgresql://postgres@{HOST}:5432/{database}"


def broker_url(sc: Scenario) -> str:
    """Return the URL ``sc``'s system talks to its broker on."""
    if sc.broker == "redis":
        return redis_url()
    if sc.broker == "amqp":
        return PIKA_URL if sc.system == "dramatiq" else AMQP_URL
    if sc.system == "procrastinate":
        return pg_url(PG_PROCRASTINATE_DB)
    if sc.system == "raw-pg":
        return pg_url(PG_RAW_DB)
    return "django://"


def scenario_env(sc: Scenario, record_dir: Path, sqlite_path: Path) -> dict[str, str]:
    """Return the environment of every process of ``sc`` (driver and workers)."""
    keep = ("BENCH_TQ_TRANSPORT_OPTIONS",)  # what-if experiments pass through
    env = {
        k: v
        for k, v in os.environ.items()
        if k in keep or not k.startswith(("BENCH_", "DJANGO_SETTINGS_MODULE", "TQ_"))
    }
    env.update(
        PYTHONPATH=str(REPO),
        BENCH_RECORD_DIR=str(record_dir),
        BENCH_RESULTS={"": "0", "db": "1", "redis": "redis"}[sc.results],
        BENCH_CONFIRM="1" if sc.confirm else "0",
        BENCH_PG_NAME=PG_DB,
        BENCH_DB="sqlite" if sc.broker == "sqlite" else "postgres",
        BENCH_SQLITE_PATH=str(sqlite_path),
        **namespace.env(),
    )
    url = broker_url(sc)
    if sc.system == "tq":
        env.update(DJANGO_SETTINGS_MODULE="benchmarks.settings", BENCH_TQ_BROKER=url)
        if sc.batch:
            env["BENCH_TQ_CONFIRM"] = "batch"
        if sc.results == "redis":
            env["BENCH_TQ_CACHE_URL"] = redis_url()
    elif sc.system == "celery":
        env["BENCH_CELERY_BROKER"] = url
        if sc.results == "db":
            env["BENCH_CELERY_RESULTS"] = "1"
    elif sc.system == "huey":
        env["BENCH_HUEY_URL"] = url
    elif sc.system == "dramatiq":
        env["BENCH_DRAMATIQ_URL"] = url
    elif sc.system == "procrastinate":
        env["BENCH_PROCRASTINATE_DSN"] = url
    else:
        env["BENCH_RAW_URL"] = url
    return env


def worker_commands(sc: Scenario) -> list[list[str]]:
    """Return the command line(s) of ``sc``'s worker: 2 processes that run tasks, each system's way."""
    py = sys.executable
    c = str(CONCURRENCY)
    if sc.system == "tq":
        # port 0: any free port; nothing scrapes it, so the row measures what a task pays
        metrics = ["--metrics-port", "0", "--metrics-address", HOST] if sc.metrics else []
        return [[py, "-m", "django", "tqworker", "-P", "prefork", "-c", c, "-Q", namespace.queue("tq_bench"), "-l", "warning", *metrics]]  # fmt: skip
    if sc.system == "celery":
        return [[
            py, "-m", "celery", "-A", "benchmarks.celery_app", "worker", "-P", "prefork", "-c", c,
            # a node name of the run's own: its remote-control queue (``<name>.celery.pidbox``) is
            # exclusive, and another run's Celery worker on the same RabbitMQ holds the default's
            "-n", f"bench-{namespace.RUN_ID}@%h",
            "-Q", namespace.queue("celery_bench"), "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]]  # fmt: skip
    if sc.system == "huey":
        # -q: warnings only (Huey logs two INFO lines per task otherwise; the others run at WARNING)
        return [[py, "-m", "huey.bin.huey_consumer", "benchmarks.huey_app.huey", "-k", "process", "-w", c, "-q"]]  # fmt: skip
    if sc.system == "dramatiq":
        return [[py, "-m", "dramatiq", "benchmarks.dramatiq_app", "--processes", c, "--queues", namespace.queue("dramatiq_bench")]]  # fmt: skip
    if sc.system == "procrastinate":
        # Procrastinate's worker is one asyncio process: run two of them for two processes.
        return [
            [
                py,
                "-m",
                "procrastinate",
                "--app=benchmarks.procrastinate_app.app",
                "worker",
                "-q",
                "procrastinate_bench",
                "-c",
                "1",
            ]
            for _ in range(CONCURRENCY)
        ]
    kind = sc.system.removeprefix("raw-")
    return [[py, "-m", "benchmarks.raw", kind] for _ in range(CONCURRENCY)]


# -- cleaning -------------------------------------------------------------------------------------
def clean_broker(broker: str) -> None:
    """Empty this run's queues on ``broker`` (all systems: no backlog disturbs the next row)."""
    if broker == "redis":
        namespace.empty_redis_db()
    elif broker == "amqp":
        from kombu import Connection

        with Connection(AMQP_URL, connect_timeout=3) as conn:
            channel = conn.channel()
            for queue in AMQP_QUEUES:
                channel.queue_delete(queue)
