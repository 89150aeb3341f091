"""The benchmark's metrics-port rows (``python -m benchmarks --metrics``): built, run, reported."""

from __future__ import annotations

from benchmarks.report import report
from benchmarks.systems import Scenario, build_scenarios, worker_commands


def test_each_django_tq_drain_gets_a_row_with_the_metrics_port_on() -> None:
    scenarios = build_scenarios(["redis", "sqlite"], {"tq", "huey"}, {"drain"}, [], metrics=True)
    assert [sc.key for sc in scenarios] == [
        "redis/tq",
        "redis/tq/metrics",
        "redis/huey",
        "sqlite/tq",
        "sqlite/tq/metrics",
    ]
    on = scenarios[1]
    assert on.role == "variant" and on.label == "django_tq redis:// + --metrics-port"
    command = worker_commands(on)[0]
    assert command[command.index("--metrics-port") + 1] == "0"
    assert "--metrics-port" not in worker_commands(scenarios[0])[0]
    assert not any(sc.metrics for sc in build_scenarios(["redis"], {"tq"}, {"drain"}, []))


def test_the_report_compares_metrics_on_with_off() -> None:
    def row(sc: Scenario, rate: float, cpu: float) -> dict[str, object]:
        return {
            "key": sc.key, "label": sc.label, "short": sc.short, "role": sc.role,
            "broker": sc.broker, "system": sc.system, "results": "", "confirm": False,
            "n": 100, "drain_rate": rate, "worker_cpu_us": cpu,
        }  # fmt: skip

    off, on = Scenario("redis", "tq"), Scenario("redis", "tq", metrics=True)
    text = report([row(off, 1000.0, 400.0), row(on, 960.0, 440.0)], [])
    ratio_row = next(line for line in text.splitlines() if "metrics port on / off" in line)
    assert "0.96×" in ratio_row and "1.10×" in ratio_row  # noqa: RUF001
    target = next(line for line in text.splitlines() if "metrics port on, Redis" in line)
    assert "0.96×" in target and target.endswith("| met |")  # noqa: RUF001
