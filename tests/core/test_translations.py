"""Translations: the shipped Simplified Chinese catalogue is complete, compiled, and used."""

from __future__ import annotations

import ast
import gettext
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import translation

import django_tq
from django_tq.crontab_words import describe_crontab
from django_tq.models import TaskResult
from django_tq.schedules import Crontab, Every

pytestmark = pytest.mark.django_version

LOCALE = Path(django_tq.__file__).parent / "locale"
PO = LOCALE / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
CONTEXT_SEPARATOR = "\x04"  # how gettext joins msgctxt and msgid in a compiled catalogue


def read_po(path: Path) -> dict[Any, Any]:
    """Return the catalogue of a .po file as GNUTranslations keys it (no gettext tools needed)."""
    catalogue: dict[Any, Any] = {}
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        flags: list[str] = []
        current = ""
        for line in block.splitlines():
            if line.startswith("#,"):
                flags.extend(flag.strip() for flag in line[2:].split(","))
            elif line.startswith("#") or not line.strip():
                continue
            elif line.startswith('"'):
                fields[current] += ast.literal_eval(line)
            else:
                current, _, text = line.partition(" ")
                fields[current] = ast.literal_eval(text)
        if "msgid" not in fields:
            continue
        assert "fuzzy" not in flags, f"fuzzy entry: {fields['msgid']!r}"
        msgid = fields["msgid"]
        if "msgctxt" in fields:
            msgid = f"{fields['msgctxt']}{CONTEXT_SEPARATOR}{msgid}"
        if "msgid_plural" in fields:
            forms = sorted(key for key in fields if key.startswith("msgstr["))
            for index, key in enumerate(forms):
                catalogue[(msgid, index)] = fields[key]
        else:
            catalogue[msgid] = fields["msgstr"]
    return catalogue


def test_every_message_is_translated():
    catalogue = read_po(PO)
    untranslated = [key for key, text in catalogue.items() if key and not text]
    assert not untranslated
    assert len(catalogue) > 200


def test_placeholders_survive_translation():
    for key, text in read_po(PO).items():
        msgid = key[0] if isinstance(key, tuple) else key
        placeholders = set(re.findall(r"%\(\w+\)[sdr]|%[sd]", msgid.split(CONTEXT_SEPARATOR)[-1]))
        if isinstance(key, tuple):  # plural: the one Chinese form carries the plural's fields
            placeholders = set()
        assert placeholders <= set(re.findall(r"%\(\w+\)[sdr]|%[sd]", text)), msgid


def test_the_compiled_catalogue_matches_the_po_file():
    """The committed .mo is django.po compiled (run compilemessages after editing the .po)."""
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    expected = read_po(PO)
    actual = dict(compiled._catalog)  # type: ignore[attr-defined]
    header = expected.pop("")
    assert "Plural-Forms: nplurals=1; plural=0;" in header
    actual.pop("")
    assert actual == expected


@pytest.mark.django_db
def test_the_admin_speaks_chinese(admin_client):
    with translation.override("zh-hans"):
        dashboard = admin_client.get(reverse("admin:django_tq_dashboard_changelist"))
        results = admin_client.get(reverse("admin:django_tq_taskresult_changelist"))
        assert str(TaskResult._meta.verbose_name_plural) == "任务结果"
    assert "任务队列仪表盘" in dashboard.content.decode()
    assert "吞吐量" in dashboard.content.decode()
    assert "按完整任务 ID 或任务名称搜索。" in results.content.decode()


@pytest.mark.django_db
def test_api_errors_speak_chinese(admin_client):
    with translation.override("zh-hans"):
        response = admin_client.get("/api/tq/results/", {"bogus": "1"})
    assert response.status_code == 400
    assert response.json()["bogus"] == ["未知的查询参数。"]


def test_crontab_words_and_interval_plurals_are_both_translated():

    with translation.override("zh-hans"):
        assert describe_crontab(Crontab(minute="*")).startswith("每分钟")
        assert "每天" in describe_crontab(Crontab(minute="0", hour="3"))
        assert Every(every=timedelta(minutes=5)).describe() == "每 5 分钟"
        assert Every(every=timedelta(days=1)).describe() == "每 1 天"
