"""`python -m raylite script.py [args]` / `python -m raylite -m pkg.mod [args]`: run an
unmodified Ray program on raylite (ray_alias.run). `python -m raylite.cli` is the
command line."""

from __future__ import annotations

import sys

from .ray_alias import run


def main(argv: list[str]) -> int:
    usage = "usage: python -m raylite SCRIPT [ARGS...] | python -m raylite -m MODULE [ARGS...]"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    if argv[0] == "-m":
        if len(argv) < 2:
            print(usage, file=sys.stderr)
            return 2
        run(argv[1], argv[2:], module=True)
    else:
        run(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
