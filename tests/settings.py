"""Settings for django_tq's test suite.

``TQ_TEST_DB`` picks the database: ``sqlite`` (default, a file so worker subprocesses share it),
``postgres`` or ``mysql`` (the local services). ``TQ_TEST_DB_NAME`` makes a worker subprocess use
the test database the pytest process created; ``TQ_TEST_PG_PORT`` points it at another PostgreSQL
(the fault tests' private cluster). ``other`` is a second alias of the same database.
``TQ_TEST_SQLITE_STOCK=1`` gives SQLite the ``DATABASES`` that ``django-admin startproject``
writes (no ``OPTIONS``: deferred transactions, a 5 s busy timeout, the journal mode the file has).
"""

import importlib.util
import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "django_tq-tests-not-secret"
SECRET_KEY_FALLBACKS = ["django_tq-tests-old-secret"]  # a rotated key (message signing tests)
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "rest_framework",
    "django_tq",
    "tests.testapp",
]

#: django.tasks: Django 6's own, or the backport on Django 5.2 (its app runs its checks)
HAS_DJANGO_TASKS = importlib.util.find_spec("django.tasks") is not None
if not HAS_DJANGO_TASKS and importlib.util.find_spec("django_tasks") is not None:
    HAS_DJANGO_TASKS = True
    INSTALLED_APPS.append("django_tasks")
if HAS_DJANGO_TASKS:
    INSTALLED_APPS.append("tests.djangotasks")
#: QUEUES empty: any queue name is valid (tests use a queue of their own)
TASKS = {"default": {"BACKEND": "django_tq.backends.TQTaskBackend", "QUEUES": []}}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
#: pytest-django's live_server serves static files under this prefix (it needs one to start)
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DB = os.environ.get("TQ_TEST_DB", "sqlite")
#: the pytest-xdist worker this process is (or was started by): ``gw0``, ``gw1``, … ("" without -n)
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
#: its index: each xdist worker gets Redis databases of its own (``REDIS_DB`` … ``REDIS_DB + 2``)
XDIST_INDEX = int(XDIST_WORKER[2:]) if XDIST_WORKER.startswith("gw") else 0
REDIS_DB = 5 + 3 * XDIST_INDEX
#: one id per pytest run, inherited by the worker subprocesses it starts (under xdist,
#: pytest-django adds ``_gw0``, ``_gw1``, … to the test database names)
RUN_ID = os.environ.setdefault("TQ_TEST_RUN_ID", str(os.getpid()))
TEST_DB_NAME = os.environ.get("TQ_TEST_DB_NAME")

if DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": TEST_DB_NAME or "django_tq",
            "USER": os.environ.get("TQ_PG_USER", "postgres"),
            #: another address only for tests/faults/network.py's hosts (network namespaces)
            "HOST": os.environ.get("TQ_TEST_PG_HOST", "127.0.0.1"),
            "PORT": int(os.environ.get("TQ_TEST_PG_PORT", "5432")),
            #: ``TQ_TEST_PG_OPTIONS``: JSON libpq options, e.g. ``sslmode``/``sslrootcert`` for a TLS-only
            #: server, ``connect_timeout``/``tcp_user_timeout`` for tests across hosts
            "OPTIONS": json.loads(os.environ.get("TQ_TEST_PG_OPTIONS", "{}")),
            "TEST": {"NAME": TEST_DB_NAME or f"test_django_tq_{RUN_ID}"},
        }
    }
elif DB == "mysql":
    import pymysql

    pymysql.version_info = (2, 2, 7, "final", 0)
    pymysql.install_as_MySQLdb()
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": TEST_DB_NAME or "django_tq",
            "USER": "root",
            "HOST": "127.0.0.1",
            "PORT": 3306,
            "OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed"},
            "TEST": {"NAME": TEST_DB_NAME or f"test_django_tq_{RUN_ID}", "CHARSET": "utf8mb4"},
        }
    }
else:
    db_file = TEST_DB_NAME or str(BASE_DIR / f"test-{RUN_ID}.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": db_file,
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": db_file},
        }
    }
    if os.environ.get("TQ_TEST_SQLITE_STOCK") == "1":
        del DATABASES["default"]["OPTIONS"]

#: a second alias of the same database (a connection of its own, so transactions of its own), for
#: what must hold on every alias (``using=``, ``django://?alias=other``), as a project with a
#: ``queue`` alias for the transport has. A test mirror: no second test database on any leg, and
#: migrations run on ``default`` only (tests.routers). On SQLite the two share the file's one
#: writer: inside ``atomic(using="other")`` a write on ``default`` waits for that transaction.
DATABASES["other"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
DATABASE_ROUTERS = ["tests.routers.MigrateDefaultOnly"]

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "results": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:6379/{REDIS_DB + 1}",
        "KEY_PREFIX": f"tq-tests-{RUN_ID}",
        #: counts the commands sent (``tests.redis_commands.counting()``)
        "OPTIONS": {"REDIS_CLIENT_CLASS": "tests.redis_commands.CountingRedis"},
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

#: remote control and events on a shared RabbitMQ/Redis: channels of this xdist worker's own
TQ = {
    "BROKER_URL": "django://",
    "CONTROL_EXCHANGE": f"tq-test-{RUN_ID}-{XDIST_INDEX}",
    **json.loads(os.environ.get("TQ_SETTINGS_JSON", "{}")),
}

#: the worker's log also goes to this file, one "@@record" line per record, for tests that read it
LOG_FILE = os.environ.get("TQ_TEST_LOG_FILE")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "record": {"format": "@@record %(levelname)s %(name)s %(process)d\n%(message)s"}
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler"},
        **(
            {"file": {"class": "logging.FileHandler", "filename": LOG_FILE, "formatter": "record"}}
            if LOG_FILE
            else {}
        ),
    },
    "loggers": {
        "django_tq": {
            "handlers": ["stderr", "file"] if LOG_FILE else ["stderr"],
            "level": os.environ.get("TQ_LOG_LEVEL", "WARNING"),
        }
    },
}
