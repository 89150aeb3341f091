import pytest

from django_tq import AsyncResult, states
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record

pytestmark = pytest.mark.db


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_delay_runs_in_a_real_worker(start_worker, pool):
    worker = start_worker("-P", pool, "-c", "2")
    result = add.delay(2, 3)
    assert result.get(timeout=20) == 5
    assert AsyncResult(result.id).state == states.SUCCESS
    results = [record.delay(f"x{i}") for i in range(20)]
    for r in results:
        r.get(timeout=20)
    assert Execution.objects.filter(label__startswith="x").count() == 20
    assert worker.stop() == 0, worker.output()
