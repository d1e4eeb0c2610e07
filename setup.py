"""Shim so that tooling without PEP 517 support can still install the package."""

from setuptools import setup

setup()
