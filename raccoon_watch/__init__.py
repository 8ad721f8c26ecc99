"""raccoon_watch: a real-time doorbell-camera raccoon detector."""

__version__ = "0.1.0"
