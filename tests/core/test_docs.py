"""The documentation describes what exists: no page says a built feature is missing."""

from __future__ import annotations

import re

import pytest

from django_tq import rate_limits
from django_tq.models import RateLimitBucket
from tests.conftest import ROOT

PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def section(page: str, title: str) -> str:
    """Return the text of the ``## title`` section of ``docs/page``."""
    text = (ROOT / "docs" / page).read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/{page} has no '## {title}' section"
    return match.group(1)


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_no_page_calls_a_feature_not_built_yet(page):
    assert "not built yet" not in page.read_text().lower()


def test_the_worker_page_describes_the_rate_limits_that_exist():
    text = section("worker.md", "Rate limits")
    assert RateLimitBucket.__name__ in text  # the global bucket
    assert f'rate_limit_scope="{rate_limits.WORKER}"' in text  # and the per-consumer one
    assert rate_limits.SCOPES == ("global", "worker")
