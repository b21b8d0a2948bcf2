"""``kolm demo``'s time plan: how much each stage does so that the whole demo ends within ``--minutes`` on this
machine, re-planned after every step from the time actually spent.

A recipe names what may be sized (:class:`Item`: the steps of each training stage, the documents each evaluation
scores), each with its reference count, the fewest that still do the job, and the kind of step that prices one
unit. :mod:`kolm.demo.calibrate` measures this machine's seconds per step of each kind (real training steps at the
demo's shape, under the precision the run uses); everything else (importing the model, building data, loading,
evaluating, merging) is a fixed cost, estimated until it has run and measured after. :func:`make_plan` takes one
scale for every item still to come (a count is ``ref x scale``, clamped to ``[min, max]``): the largest whose
expected end is within the target, the budget less a safety margin (:func:`margin_s`). A slow machine gets fewer
steps, a fast one more; where even the minimum does not fit, the plan says so and runs the minimum.

:class:`Planner` follows the run: the clock is :class:`kolm.demo.run.Steps` (a reused step counts the seconds it
took when it ran, so a second run plans what the first did and reuses its steps); before a sized stage it plans
again and fixes that stage's counts (:meth:`Planner.take`); estimates still to come are scaled by how far what
already ran missed its own (the drift: a loaded machine, an estimate off), training and the rest apart, so a stage
that overran shrinks the later ones. :meth:`Planner.table` is the closing table: planned and actual seconds and
steps per stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_SCALE = 1000.0
DRIFT_RANGE = (0.5, 4.0)


@dataclass(frozen=True)
class Item:
    """Something the plan sizes: ``ref`` units at scale 1, never fewer than ``min`` (nor more than ``max``). A unit
    costs ``unit_s[kind]`` seconds (or ``cost(units)`` seconds for all of them, where the cost is not linear), plus
    ``fixed_s`` whatever the count (loading, saving, merging). An item is a step of its own, or its units are paid
    by each step of ``paid_by`` (the documents every evaluation scores; a count two runs share). ``train``: it is
    training (its drift is training's)."""

    name: str
    kind: str
    ref: int
    min: int
    max: int | None = None
    fixed_s: float = 0.0
    paid_by: tuple[str, ...] = ()
    train: bool = True
    cost: Callable[[int], float] | None = None

    def units(self, scale: float) -> int:
        n = max(self.min, round(self.ref * scale))
        return n if self.max is None else max(self.min, min(n, self.max))

    def each_s(self, units: int, unit_s: dict[str, float]) -> float:
        """Seconds of ``units`` units for one payer (without ``fixed_s``)."""
        return self.cost(units) if self.cost is not None else units * unit_s[self.kind]

    def seconds(self, units: int, unit_s: dict[str, float]) -> float:
        return self.fixed_s + max(1, len(self.paid_by)) * self.each_s(units, unit_s)


@dataclass
class Plan:
    """Counts of the items still to come, and the expected seconds: each item's, the fixed costs still to come,
    and what was spent already."""

    units: dict[str, int]
    seconds: dict[str, float]
    fixed_s: float
    spent_s: float
    target_s: float
    scale: float

    @property
    def total_s(self) -> float:
        return self.spent_s + self.fixed_s + sum(self.seconds.values())

    @property
    def fits(self) -> bool:
        return self.total_s <= self.target_s + 1e-6


def make_plan(items: Iterable[Item], unit_s: dict[str, float], *, spent_s: float, fixed_s: float, target_s: float,
              drift: Callable[[Item], float] = lambda it: 1.0) -> Plan:
    """The largest scale whose expected end (``spent_s`` + ``fixed_s`` + the items, each times its ``drift``) is
    within ``target_s``; scale 0 (every item at its minimum, ``fits`` False) where even that is not."""
    items = list(items)

    def at(scale: float) -> Plan:
        units = {it.name: it.units(scale) for it in items}
        seconds = {it.name: it.seconds(units[it.name], unit_s) * drift(it) for it in items}
        return Plan(units, seconds, fixed_s, spent_s, target_s, scale)

    lo, hi = 0.0, 1.0
    if not at(lo).fits:
        return at(lo)
    while at(hi).fits and hi < MAX_SCALE:  # the total grows with the scale: bracket the largest that fits
        lo, hi = hi, hi * 2
    if at(hi).fits:
        return at(hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid).fits else (lo, mid)
    return at(lo)


def margin_s(budget_s: float) -> float:
    """What the plan keeps free of the budget for what its estimates miss: 10%, at least 15 s."""
    return max(15.0, 0.1 * budget_s)


@dataclass
class Row:
    """A line of the closing table."""

    name: str
    planned_s: float | None = None
    actual_s: float | None = None
    steps: str = ""  # e.g. "60", or "20+60" (a step that pays two items)
    reused: bool = False


@dataclass
class Planner:
    """The plan of one demo run. ``items`` are what is still to size, ``fixed`` the nominal seconds (this machine as
    calibrated) of every other step still to come, by step name; ``clock`` (:class:`kolm.demo.run.Steps`) says what
    was spent. Call :meth:`take` before a sized stage runs and :meth:`done` after every step (the clock does).
    ``row`` names a step's line in the closing table (steps that share a name share the line)."""

    budget_s: float
    unit_s: dict[str, float]
    items: list[Item]
    fixed: dict[str, float]
    clock: Any = None
    row: Callable[[str], str] = lambda step: step
    rows: dict[str, Row] = field(default_factory=dict)
    first: Plan | None = None
    train: set[str] = field(default_factory=set)  # the steps that are training
    _sums: dict[bool, list[float]] = field(default_factory=lambda: {True: [0.0, 0.0], False: [0.0, 0.0]})

    @property
    def target_s(self) -> float:
        return self.budget_s - margin_s(self.budget_s)

    def drift(self, train: bool) -> float:
        """Actual over estimated seconds of what already ran (training, or the rest), within :data:`DRIFT_RANGE`;
        1 before anything of its sort ran."""
        actual, est = self._sums[train]
        return min(DRIFT_RANGE[1], max(DRIFT_RANGE[0], actual / est)) if est > 0 else 1.0

    def expected(self, step: str) -> float | None:
        """What ``step`` is expected to take now (None: nothing was estimated)."""
        est = self.fixed.get(step)
        return None if est is None else est * self.drift(step in self.train)

    def plan(self) -> Plan:
        """The plan from now: the items still to size, after the fixed costs still to come."""
        fixed = sum(self.expected(step) or 0.0 for step in self.fixed)
        plan = make_plan(self.items, self.unit_s, spent_s=self.clock.spent, fixed_s=fixed, target_s=self.target_s,
                         drift=lambda it: self.drift(it.train))
        if self.first is None:
            self.first = plan
        return plan

    def take(self, *names: str) -> dict[str, int]:
        """Plan now and fix the counts of ``names`` (the next stage's items): they leave the items to size and
        become the expected seconds of the steps that pay them."""
        plan = self.plan()
        for name in names:
            item = next(it for it in self.items if it.name == name)
            self.items.remove(item)
            units = plan.units[name]
            payers = item.paid_by or (name,)
            for step in payers:
                self.fixed[step] = (self.fixed.get(step, 0.0) + item.fixed_s / len(payers)
                                    + item.each_s(units, self.unit_s))
                if item.train:
                    self.train.add(step)
                    row = self._row(self.row(step))
                    row.steps = f"{row.steps}+{units}" if row.steps else str(units)
        return {name: plan.units[name] for name in names}

    def done(self, step: str, seconds: float, reused: bool = False) -> None:
        """``step`` took ``seconds``: its estimate leaves the fixed costs and feeds the drift."""
        train = step in self.train
        planned = self.expected(step)
        est = self.fixed.pop(step, None)
        if est:
            self._sums[train][0] += seconds
            self._sums[train][1] += est
        row = self._row(self.row(step))
        row.actual_s = (row.actual_s or 0.0) + seconds
        if planned is not None:
            row.planned_s = (row.planned_s or 0.0) + planned
        row.reused = reused

    def _row(self, name: str) -> Row:
        return self.rows.setdefault(name, Row(name))

    def table(self) -> str:
        """Planned against actual seconds per stage, and the whole run's against the budget."""
        lines = [f"{'stage':<16} {'planned s':>9} {'actual s':>9} {'steps':>6}"]
        for r in self.rows.values():
            lines.append(f"{r.name:<16} {_num(r.planned_s, 9)} {_num(r.actual_s, 9)} {r.steps or '':>6}"
                         + ("  reused" if r.reused else ""))
        first = self.first.total_s if self.first else None
        lines.append(f"{'total':<16} {_num(first, 9)} {_num(self.clock.spent, 9)}         "
                     f"budget {self.budget_s:.0f} s")
        return "\n".join(lines)


def _num(x: float | None, width: int) -> str:
    return f"{x:>{width}.0f}" if x is not None else f"{'-':>{width}}"


def minutes_text(seconds: float) -> str:
    """``~6 min`` (``~45 s`` under a minute and a half)."""
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{math.ceil(seconds / 60 - 0.25):.0f} min"
