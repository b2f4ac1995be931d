"""The portal reaches Cloudflare (or the sandbox) only over HTTP, through the configured URLs: no
product module imports the sandbox package. Only the demo (seeding for `make run`), the tests and the
benchmarks may."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"cloudflare_sandbox", "demo", "tests", "bench", ".venv", "var"}


def _product_modules() -> list[Path]:
    packages = [p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists() and p.name not in ALLOWED]
    return [f for package in packages for f in package.rglob("*.py") if "migrations" not in f.parts]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_product_module_imports_the_sandbox():
    modules = _product_modules()
    assert any(m.parts[-2] == "connections" for m in modules)  # the scan sees the product code
    offenders = sorted(
        str(m.relative_to(ROOT))
        for m in modules
        if any(name == "cloudflare_sandbox" or name.startswith("cloudflare_sandbox.") for name in _imports(m))
    )
    assert offenders == []
