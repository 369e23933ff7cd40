"""The public API is exactly what docs/api.md §10 lists, __all__ stays sorted and complete, and
importing the package (or its errors) stays cheap: the client loads on first use."""

import subprocess
import sys

import pytest

import bgdownload


def test_all_is_sorted_and_complete():
    assert bgdownload.__all__ == sorted(bgdownload.__all__)
    assert set(bgdownload.__all__) == {
        "AsyncClient", "BgdownloadError", "Client", "DownloadFailed", "Job", "__version__",
        "active", "attach", "download", "jobs",
    }
    for name in bgdownload.__all__:
        assert hasattr(bgdownload, name), name


def test_no_other_public_names_leak():
    public = {
        name for name, value in vars(bgdownload).items()
        if not name.startswith("_") and type(value).__name__ != "module"
    }
    assert public <= set(bgdownload.__all__)


def test_dir_lists_every_public_name():
    assert set(bgdownload.__all__) <= set(dir(bgdownload))


@pytest.mark.parametrize("module", ["bgdownload", "bgdownload.errors", "bgdownload.cli"])
def test_importing_the_package_loads_no_client(module):
    # a fresh interpreter: this one has long imported the client; the CLI imports
    # what a command needs when it runs, so `bgdownload --help` stays fast
    code = (
        f"import sys, {module}\n"
        "heavy = ('httpx', 'rich', 'ipywidgets', 'bgdownload.client', 'bgdownload.server')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == []
