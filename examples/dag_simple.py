"""A first streaming DAG: orders -> validate -> enrich -> route by size -> two sinks.

Runs with phasekit alone (no extra packages):

    python examples/dag_simple.py
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from phasekit.stream import Dag
from phasekit.stream import operators as ops
from phasekit.stream.connectors import collect

SYMBOLS = ("AAPL", "MSFT", "XOM", "JPM")


def orders(n: int = 5_000, seed: int = 7) -> Iterator[dict[str, Any]]:
    """A synthetic order feed; a few orders are malformed (negative quantity)."""
    rng = random.Random(seed)
    for i in range(n):
        qty = rng.choice([-1, *range(1, 500)])
        yield {"id": i, "symbol": rng.choice(SYMBOLS), "qty": qty, "price": rng.uniform(10, 500)}


def validate(order: dict[str, Any]) -> dict[str, Any]:
    if order["qty"] <= 0:
        raise ValueError(f"order {order['id']}: quantity must be positive, got {order['qty']}")
    return order


def enrich(order: dict[str, Any]) -> dict[str, Any]:
    return {**order, "notional": order["qty"] * order["price"]}


class Totals:
    """A sink with state: notional per symbol; close() returns the totals."""

    def open(self) -> None:
        self.totals: dict[str, float] = {}

    def process(self, order: dict[str, Any]) -> None:
        self.totals[order["symbol"]] = self.totals.get(order["symbol"], 0.0) + order["notional"]

    def close(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in sorted(self.totals.items())}


def build() -> Dag:
    dag = Dag("orders", capacity=256)
    dag.add_source("orders", orders)
    dag.add_node("validate", validate, on_error="dead_letter")
    dag.add_node("enrich", ops.map(enrich), parallelism=2, key="symbol")
    dag.add_node("route", ops.router({"large": lambda o: o["notional"] >= 50_000}, default="small"))
    dag.add_sink("large", collect())
    dag.add_sink("small", Totals)
    dag.add_sink("rejected", collect())
    dag.chain("orders", "validate", "enrich", "route")
    dag.connect("validate", "rejected", port="errors")
    dag.connect("route", "large", port="large")
    dag.connect("route", "small", port="small")
    return dag


def main() -> None:
    result = build().run()
    large, rejected = result.results["large"], result.results["rejected"]
    print(f"ran {result.dag!r} in {result.elapsed:.3f} s")
    for node, stats in result.nodes.items():
        print(
            f"  {node:<9} in={stats['items_in']:>5} out={stats['items_out']:>5} errors={stats['errors']}"
        )
    print(f"large orders: {len(large)} (first: #{large[0]['id']} {large[0]['symbol']})")
    print(f"small-order notional per symbol: {result.results['small']}")
    print(f"rejected: {len(rejected)}; first: {rejected[0].error}")
    assert len(large) + sum(1 for _ in rejected) <= 5_000


if __name__ == "__main__":
    main()
