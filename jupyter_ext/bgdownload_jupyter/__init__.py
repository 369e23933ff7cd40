"""bgdownload Jupyter server extension."""
