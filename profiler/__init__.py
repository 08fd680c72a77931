"""sparsebench profiler: config → matrix → measured result rows; meters; tasks; CLI."""
__version__ = "0.1.0"
