"""``python -m bgdownload``: the same as the ``bgdownload`` command."""

from bgdownload.cli import main

if __name__ == "__main__":
    main()
