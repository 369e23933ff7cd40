"""The public API is exactly what API.md §10 lists, and __all__ stays sorted and complete."""

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
