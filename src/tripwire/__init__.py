"""tripwire: real-time behavioral triggers over Segment-format events."""

__version__ = "0.1.0"
