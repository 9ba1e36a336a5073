"""Which support set answers which queries, for any split manifest: the scenarios a split can be scored on.

Three layouts of ``stylespace split`` manifests are understood (read from the rows, not the config, so a
hand-made manifest works too):

| layout | its parts | scenarios |
| --- | --- | --- |
| 004's protocol | main train / support / test, new support / test | 1 main train -> main test, 2 main support -> main test, 3 new support -> new test, 4 main + new support -> main + new test |
| held-out classes | main train / val / test, new support / test | 1 known classes: main train -> main test, 3 new classes: new support -> new test, 4 mixed: main train + new support -> main + new test |
| stratified | all train / val / test | 1 train -> test |

Scenario numbers keep 004's meaning (1: the classes the model trained on, from their training items; 3: classes
it never saw, from a few labelled items; 4: everything together), so figures read the same across layouts. A
``val`` part is never scored: it is kept for choices (which model, which threshold). The open-set check (are
the new classes refused?) needs new classes; the coarser-label check runs on scenario 2 in 004's protocol and
on scenario 1 elsewhere. When nothing can be scored, :func:`plan_for` says what the manifest lacks.
"""
from __future__ import annotations

import collections
import dataclasses

from stylespace.data.splits import SCENARIOS, SplitManifest
from stylespace.utils import StylespaceError

Parts = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One support set -> query set pairing: ``support`` and ``query`` are (group, split) parts."""

    number: int
    description: str
    support: Parts
    query: Parts


@dataclasses.dataclass(frozen=True)
class EvaluationPlan:
    """The scenarios a manifest can be scored on and the parts the other checks read."""

    layout: str  # "protocol", "held-out classes" or "stratified"
    scenarios: tuple[Scenario, ...]
    open_set_support: Parts  # known classes' support of the open-set check; () when the split has no new classes
    hierarchy_scenario: int  # the scenario whose sets the coarser-label check reads
    head_part: tuple[str, str]  # where a classifier head trained on this split's training rows is scored

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(s.number for s in self.scenarios)

    @property
    def broadest(self) -> Scenario:
        """The scenario with every test item as a query (4, or the only one): retrieval, pairs, calibration."""
        return max(self.scenarios, key=lambda s: (len(s.query), s.number))

    def scenario(self, number: int) -> Scenario:
        for scenario in self.scenarios:
            if scenario.number == number:
                return scenario
        raise StylespaceError(f"scenario {number} is not one of this {self.layout} split's scenarios "
                              f"({', '.join(map(str, self.numbers))}); {_why_not(self.layout, number)}")

    def sets(self, manifest, number: int) -> tuple[SplitManifest, SplitManifest]:
        """(support rows, query rows) of scenario ``number`` of ``manifest``."""
        scenario = self.scenario(number)
        return _rows(manifest, scenario.support), _rows(manifest, scenario.query)

    def test_rows(self, manifest) -> SplitManifest:
        """Every scored query item: the broadest scenario's queries."""
        return _rows(manifest, self.broadest.query)


def _rows(manifest, parts: Parts) -> SplitManifest:
    wanted = set(parts)
    return SplitManifest([r for r in manifest.rows if (r["group"], r["split"]) in wanted], manifest.config)


def _why_not(layout: str, number: int) -> str:
    if number == 2:
        return "scenario 2 needs a main support part, as 004's protocol split (`stylespace split`) has"
    if number in (3, 4):
        return "scenarios 3 and 4 need held-out classes (group new, parts support and test)"
    return "it needs training and test items of the same classes"


PROTOCOL = tuple(Scenario(n, spec[0], tuple(spec[1]), tuple(spec[2])) for n, spec in SCENARIOS.items())
HELD_OUT = (
    Scenario(1, "known classes: main train -> main test", (("main", "train"),), (("main", "test"),)),
    Scenario(3, "new classes: new support -> new test", (("new", "support"),), (("new", "test"),)),
    Scenario(4, "mixed: main train + new support -> main + new test", (("main", "train"), ("new", "support")),
             (("main", "test"), ("new", "test"))),
)
STRATIFIED = (Scenario(1, "train -> test", (("all", "train"),), (("all", "test"),)),)


def plan_for(manifest, source: str = "the split manifest") -> EvaluationPlan:
    """The :class:`EvaluationPlan` of ``manifest`` (a ``SplitManifest``, or a view of one with ``rows``).

    Raises a ``StylespaceError`` naming what the manifest lacks when no scenario has both a support set and
    queries.
    """
    parts = collections.Counter((r["group"], r["split"]) for r in manifest.rows)
    if parts[("main", "support")]:
        layout, candidates, open_support, hierarchy = "protocol", PROTOCOL, (("main", "support"),), 2
    elif parts[("main", "train")] or parts[("new", "support")]:
        layout, candidates, open_support, hierarchy = "held-out classes", HELD_OUT, (("main", "train"),), 1
    else:
        layout, candidates, open_support, hierarchy = "stratified", STRATIFIED, (), 1
    scenarios = tuple(s for s in candidates if any(parts[p] for p in s.support) and any(parts[p] for p in s.query))
    if not scenarios:
        raise StylespaceError(_nothing_to_score(source, parts))
    if not (parts[("new", "test")] and any(parts[p] for p in open_support)):
        open_support = ()
    numbers = {s.number for s in scenarios}
    hierarchy = hierarchy if hierarchy in numbers else min(numbers)
    head_group = "all" if layout == "stratified" else "main"
    return EvaluationPlan(layout, scenarios, open_support, hierarchy, (head_group, "test"))


def _nothing_to_score(source: str, parts: collections.Counter) -> str:
    have = ", ".join(f"{g}/{s} {n:,}" for (g, s), n in sorted(parts.items())) or "no rows at all"
    tests = sum(n for (_, s), n in parts.items() if s == "test")
    supports = sum(n for (_, s), n in parts.items() if s in ("train", "support"))
    if not tests:
        lack = "a test part (the queries)"
    elif not supports:
        lack = "a train or support part (the labelled items that answer the queries)"
    else:
        lack = "a support part and a test part in the same group (main, new or all)"
    return (f"{source}: nothing to score: it lacks {lack}; its parts: {have}. Make a split with one, e.g. "
            "`stylespace split CATALOG --stratified train=0.7,val=0.1,test=0.2 -o split.csv` (support = train, "
            "queries = test), or 004's protocol with `stylespace split CATALOG -o split.csv`")


def scenario_split(manifest, number: int) -> tuple[SplitManifest, SplitManifest]:
    """(support rows, query rows) of scenario ``number`` of any manifest layout (see :func:`plan_for`); a view
    with its own ``scenario_split`` (the evaluation without copies) answers for itself."""
    own = getattr(manifest, "scenario_split", None)
    if own is not None:
        return own(number)
    return plan_for(manifest).sets(manifest, number)


def known_class_sets(manifest) -> tuple[SplitManifest, SplitManifest]:
    """(support, queries) of the known classes: 004's scenario 2, else scenario 1 (empty when nothing scores)."""
    try:
        plan = plan_for(manifest)
    except StylespaceError:
        return SplitManifest([], manifest.config), SplitManifest([], manifest.config)
    return plan.sets(manifest, plan.hierarchy_scenario)


def all_class_sets(manifest) -> tuple[SplitManifest, SplitManifest]:
    """(support, queries) with every test item as a query: scenario 4, else the broadest the split has."""
    try:
        plan = plan_for(manifest)
    except StylespaceError:
        return SplitManifest([], manifest.config), SplitManifest([], manifest.config)
    return plan.sets(manifest, plan.broadest.number)
