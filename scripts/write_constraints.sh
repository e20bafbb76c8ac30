#!/usr/bin/env bash
# Regenerate .ci/constraints.txt: the versions CI installs (`pip install -c`). Run it when moving to newer
# versions on purpose, then run `bash .ci/run` and commit the file with what had to change.
# It resolves every extra in a fresh virtual environment (CPU torch first), exactly as CI installs, and
# freezes the result; the project and the example plugin themselves are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/attn-constraints.XXXXXX)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q --no-compile torch==2.13.0
"$work/venv/bin/python" -m pip install -q --no-compile ".[test,demo,st,ray,bench,docs,profile]" ./examples/third_party_plugin
{
    echo "# The versions CI installs (pip install -c .ci/constraints.txt), last tested together."
    echo "# Written by scripts/write_constraints.sh on $(date -u +%Y-%m-%d) with $("$work/venv/bin/python" -V);"
    echo "# pyproject.toml keeps ranges for users. .ci/latest shows what a fresh resolve would change."
    # torch's local label (+cpu) names the wheel on this disk; the constraint is the version.
    "$work/venv/bin/python" -m pip freeze --all --exclude-editable \
        | grep -v -i -E '^(attn-plugins|attn-example-plugin|pip|setuptools|wheel)[ =@]' \
        | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/' | LC_ALL=C sort -f
} >.ci/constraints.txt.new
mv .ci/constraints.txt.new .ci/constraints.txt
echo "wrote .ci/constraints.txt ($(grep -c '==' .ci/constraints.txt) pins)"
