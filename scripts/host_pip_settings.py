"""The host's pip settings, for a container build that must reach the same index.

``python3 scripts/host_pip_settings.py OUT.conf`` writes what ``pip config list``
reports (files and PIP_* variables) as one pip.conf, minus ``cert`` (the build gets
the CA bundle as its own secret), and prints the local paths that the settings name
(find-links folders, file:// indexes, constraint files), one per line, so the build
can mount them read-only at the same place. The file goes to the build as a secret:
an index URL with credentials in it never lands in an image layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote, urlparse

# Keys whose values are local paths or URLs that may point at the local disk.
PATH_KEYS = {"find-links", "index-url", "extra-index-url", "constraint", "requirement"}
SKIPPED = {"cert", "client-cert"}


def pip_config(python: str) -> dict[str, dict[str, str]]:
    """section -> key -> value, as ``pip config list`` reports it (env under global)."""
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    sections: dict[str, dict[str, str]] = defaultdict(dict)
    for line in out.splitlines():
        name, sep, raw = line.partition("=")
        if not sep or "." not in name:
            continue
        section, key = name.rsplit(".", 1)
        section = "global" if section in (":env:", "") else section
        value = ast.literal_eval(raw) if raw[:1] in "'\"" else raw
        sections[section][key] = str(value)
    return sections


def local_paths(value: str) -> list[Path]:
    """The existing local files or folders a setting names (URL or path, space-separated)."""
    paths = []
    for item in value.split():
        url = urlparse(item)
        if url.scheme in ("http", "https"):
            continue
        path = Path(unquote(url.path) if url.scheme == "file" else item)
        # A PEP 503 index's pages link to files beside the simple/ folder.
        if path.name == "simple":
            path = path.parent
        if path.is_absolute() and path.exists():
            paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(f"usage: {argv[0]} OUT.conf [PYTHON]", file=sys.stderr)
        return 2
    sections = pip_config(argv[2] if len(argv) == 3 else sys.executable)
    lines, mounts = [], []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key in SKIPPED:
                continue
            lines.append(f"{key} = {value}")
            if key in PATH_KEYS:
                mounts += local_paths(value)
    Path(argv[1]).write_text("\n".join(lines) + "\n")
    for path in dict.fromkeys(mounts):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
