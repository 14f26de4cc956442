"""Packaging for the Python condure (a ZeroMQ/ZHTTP connection manager).

`install_requires` gives compatible ranges: from the minor release the project
is tested with (requirements.txt pins it, for the Dockerfile, `make` and CI)
up to the next major (the next minor for 0.x releases, which may break).
"""

from __future__ import annotations

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def read_version() -> str:
    # The version lives in condure/__init__.py only; importing the package here
    # would need its dependencies installed before they are.
    match = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", read("condure/__init__.py"), re.M)
    if match is None:
        raise RuntimeError("__version__ not found in condure/__init__.py")
    return match.group(1)


setup(
    name="condure",
    version=read_version(),
    description="Connection manager speaking ZHTTP over ZeroMQ: a Python drop-in for Fanout's Condure",
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    url="https://github.com/fanout/condure",
    project_urls={
        "Original (Rust) condure": "https://github.com/fanout/condure",
        "Pushpin": "https://pushpin.org/",
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: No Input/Output (Daemon)",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
        "Topic :: System :: Networking",
    ],
    packages=find_packages(exclude=["tests*", "loadtest*", "examples*"]),
    python_requires=">=3.11",
    install_requires=[
        "gevent>=26.9,<27",
        "greenlet>=3.5,<4",
        "h11>=0.16,<0.17",
        "h2>=4.4,<5",
        "httptools>=0.9,<0.10",
        "pyzmq>=27.3,<28",
        "tnetstring3>=0.4,<0.5",
        "wsproto>=1.3,<2",
    ],
    # condure-pushpin: Pushpin's condure_bin for condure in both roles (condure/pushpin.py)
    entry_points={"console_scripts": ["condure=condure.__main__:run",
                                      "condure-pushpin=condure.pushpin:run",
                                      "pushpin-connmgr=condure.connmgr:run"]},
)
