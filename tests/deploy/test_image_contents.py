"""The image holds every package of the production install: each package pyproject.toml ships (but
the benchmarks, an extra) is copied by the Dockerfile and let through by .dockerignore; a package
moved or added without both would build an image whose `lcp` fails on import."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_IN_IMAGE = {"bench"}  # the `bench` extra: not part of a production install


def shipped_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]}


def test_the_dockerfile_copies_every_production_package() -> None:
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), flags=re.M))
    assert copied == shipped_packages() - NOT_IN_IMAGE


def test_dockerignore_lets_every_copied_package_through() -> None:
    allowed = set(re.findall(r"^!(\w+)/$", (ROOT / ".dockerignore").read_text(), flags=re.M))
    assert allowed == shipped_packages() - NOT_IN_IMAGE


def test_every_top_level_package_is_shipped() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == shipped_packages()
