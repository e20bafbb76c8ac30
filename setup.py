"""Package discovery; every other setting lives in pyproject.toml.

The built-in adapters sit in the folder ``adapters/`` but install as ``attn_adapters`` (the import name
``adapters`` belongs to AdapterHub), which ``packages.find`` cannot express; so the package list is found
here, with no hand-written list to keep up to date.
"""

from setuptools import find_namespace_packages, find_packages, setup

# Namespace discovery also finds the data folders (views/vendor, views/templates) as packages of their own.
core = find_namespace_packages(include=["attn_plugins", "attn_plugins.*"], exclude=["*.__pycache__"])
adapters = ["attn_adapters" + name[len("adapters") :] for name in find_packages(include=["adapters", "adapters.*"])]

setup(packages=core + adapters, package_dir={"attn_adapters": "adapters"})
