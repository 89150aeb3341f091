"""scripts/check_imports.py: no import cycle in django_tq, no unexplained import inside a function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_imports.py"


def check(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def package(tmp_path: Path, files: dict[str, str]) -> Path:
    """Write a package ``pkg`` of ``files`` (name -> source) under ``tmp_path``."""
    root = tmp_path / "pkg"
    for name, source in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def test_django_tq_has_no_cycle_and_explains_each_import_inside_a_function() -> None:
    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no import cycle among" in done.stdout


def test_a_cycle_through_a_function_level_import_is_named(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            "low.py": "def f():\n    from pkg import high  # import-inside: app loading: test\n",
            "high.py": "from pkg import low\n",
        },
    )
    done = check(root)
    assert done.returncode == 1
    assert "import cycle among 2 modules: pkg.high, pkg.low" in done.stdout
    assert "pkg.low -> pkg.high  (pkg/low.py:2)" in done.stdout


def test_an_unmarked_or_unjustified_import_inside_a_function_fails(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            "a.py": "def f():\n    from pkg import b\n",
            "c.py": "def g():\n    import pkg.b  # import-inside: it was easier\n",
            "b.py": "",
        },
    )
    done = check(root)
    assert done.returncode == 1
    assert "pkg/a.py:2: pkg.a imports pkg.b inside a function without" in done.stdout
    assert "pkg/c.py:2: pkg.c imports pkg.b inside a function for 'it was easier'" in done.stdout


def test_a_justified_import_inside_a_function_and_type_checking_imports_pass(
    tmp_path: Path,
) -> None:
    root = package(
        tmp_path,
        {
            "a.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.b import B

                def f() -> B:
                    # import-inside: app loading: the models are not ready at import time
                    from pkg.b import B

                    return B()
            """,
            "b.py": "from pkg.a import f\n\nclass B: ...\n",
        },
    )
    done = check(root, "--list")
    assert done.returncode == 1  # a -> b inside f, b -> a at module level: still a cycle
    assert "import cycle among 2 modules: pkg.a, pkg.b" in done.stdout
    (root / "b.py").write_text("class B: ...\n")
    done = check(root, "--list")
    assert done.returncode == 0, done.stdout
    assert "allowed: pkg/a.py:8: pkg.b (app loading: the models are not ready" in done.stdout


def test_a_package_init_importing_modules_that_import_the_package_is_a_cycle(
    tmp_path: Path,
) -> None:
    root = package(
        tmp_path,
        {
            "sub/__init__.py": "from pkg.sub import one\n",
            "sub/one.py": "from pkg.sub import two\n",
            "sub/two.py": "",
        },
    )
    done = check(root)
    assert done.returncode == 1
    assert "import cycle among 2 modules: pkg.sub, pkg.sub.one" in done.stdout
    (root / "sub" / "one.py").write_text("import pkg.sub.two as two\n")
    assert check(root).returncode == 0


def test_importing_a_module_of_a_package_runs_the_package_first(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            "low.py": "from pkg.sub.leaf import x\n",
            "sub/__init__.py": "from pkg.sub.top import y\n",
            "sub/leaf.py": "x = 1\n",
            "sub/top.py": "from pkg.low import x\ny = x\n",
        },
    )
    done = check(root)
    assert done.returncode == 1
    assert "pkg.low -> pkg.sub " in done.stdout
