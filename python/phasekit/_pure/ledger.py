"""Spill ledger (being written)."""


class SpillLedger:
    pass
