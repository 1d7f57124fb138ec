"""size_of (being written)."""


def size_of(value: object) -> int:
    raise NotImplementedError
