"""Packaging for the Python condure (a ZeroMQ/ZHTTP connection manager)."""

from __future__ import annotations

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    # The version lives in condure/__init__.py only; importing the package here
    # would need its dependencies installed before they are.
    with open(os.path.join(HERE, "condure", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", f.read(), re.M)
    if match is None:
        raise RuntimeError("__version__ not found in condure/__init__.py")
    return match.group(1)


def read_requirements(name: str) -> list[str]:
    # Pins stay in one place: requirements.txt feeds both pip -r and install_requires.
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith("-")]


setup(
    name="condure",
    version=read_version(),
    description="Connection manager speaking ZHTTP over ZeroMQ (Python re-implementation of Fanout's Condure)",
    packages=find_packages(exclude=["tests*", "loadtest*", "examples*"]),
    python_requires=">=3.11",
    install_requires=read_requirements("requirements.txt"),
    entry_points={"console_scripts": ["condure=condure.__main__:run"]},
)
