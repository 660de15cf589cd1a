"""``python -m mura.cli``: the ``mura`` command."""

from mura.cli import main

if __name__ == "__main__":
    main()
