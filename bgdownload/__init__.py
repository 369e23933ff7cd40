"""bgdownload."""
