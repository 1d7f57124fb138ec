"""Bounded MPMC channel (being written)."""


class Channel:
    pass
