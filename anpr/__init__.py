"""Real-time licence-plate recognition for road border-crossing lanes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("anpr")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
