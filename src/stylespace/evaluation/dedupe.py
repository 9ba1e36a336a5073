"""The evaluation without leaked copies: query items that have a copy (the same image, pixel-identical or a
near copy, as found by ``stylespace audit``) on the reference side are left out.

A copy of a test item in the training or support set answers that query by itself: scenario 1 (main train
-> main test), the task-1 head, and retrieval are flattered by them. :class:`WithoutCopies` is a split
manifest seen without those items, read by the same evaluation code:

- scenarios 1-4, the open set and the coarser levels: query items whose copy group has a member in the
  scenario's support set are dropped (the support set is unchanged);
- the task-1 head: main test items with a copy in main train (what the head was trained on) are dropped;
- retrieval and the default pair set (each item against the others of one set): one item per copy group
  is kept in the set (the first in manifest order);
- a pair file: pairs of two copies of one image are dropped.
"""
from __future__ import annotations

from typing import Sequence

from stylespace.data.splits import SplitManifest
from stylespace.evaluation.plan import plan_for


def copy_groups_index(groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """id -> group number for every id of every group with 2+ members."""
    out: dict[str, int] = {}
    for number, members in enumerate(groups):
        if len(members) > 1:
            for item_id in members:
                out[str(item_id)] = number
    return out


def leaked(query_ids: Sequence[str], reference_ids: Sequence[str], group_of: dict[str, int]) -> set[str]:
    """The query ids whose copy group has a member among ``reference_ids`` (other than themselves)."""
    reference = {}
    for item_id in reference_ids:
        group = group_of.get(item_id)
        if group is not None:
            reference.setdefault(group, set()).add(item_id)
    return {q for q in query_ids if q in group_of and reference.get(group_of[q], set()) - {q}}


def scenario_leaks(manifest: SplitManifest, groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """"scenario N (support -> query)" -> how many of its query items have a copy in its support set."""
    group_of = copy_groups_index(groups)
    plan = plan_for(manifest)
    out = {}
    for scenario in plan.scenarios:
        support, query = plan.sets(manifest, scenario.number)
        out[f"scenario {scenario.number} ({scenario.description})"] = len(leaked(query.ids, support.ids, group_of))
    return out


class WithoutCopies:
    """``manifest`` as the evaluation reads it, without the query items that have a copy on the reference
    side (see the module docstring). It answers what :func:`stylespace.evaluation.evaluate` asks of a
    :class:`~stylespace.data.SplitManifest`; ``dropped`` counts what each part of the evaluation left out."""

    def __init__(self, manifest: SplitManifest, groups: Sequence[Sequence[str]]):
        self.manifest = manifest
        self.group_of = copy_groups_index(groups)
        self.dropped: dict[str, int] = {}

    # what is read as it is
    rows = property(lambda self: self.manifest.rows)
    config = property(lambda self: self.manifest.config)
    ids = property(lambda self: self.manifest.ids)
    labels = property(lambda self: self.manifest.labels)
    sha256 = property(lambda self: self.manifest.sha256)

    def __len__(self) -> int:
        return len(self.manifest)

    def column(self, name: str) -> list[str]:
        return self.manifest.column(name)

    def select(self, group: str | None = None, split: str | None = None) -> SplitManifest:
        return self.manifest.select(group, split)

    def hierarchy(self, level: str) -> dict[str, str]:
        return self.manifest.hierarchy(level)

    # what leaves copies out
    def scenario_split(self, number: int) -> tuple[SplitManifest, SplitManifest]:
        support, query = plan_for(self.manifest).sets(self.manifest, number)
        out = leaked(query.ids, support.ids, self.group_of)
        self.dropped[f"scenario {number} queries"] = len(out)
        return support, SplitManifest([r for r in query.rows if r["id"] not in out], query.config)

    def one_per_group(self, rows: SplitManifest, name: str) -> SplitManifest:
        """``rows`` with one item per copy group (the first); the number left out is ``dropped[name]``."""
        seen: set[int] = set()
        kept = []
        for r in rows.rows:
            group = self.group_of.get(r["id"])
            if group is not None:
                if group in seen:
                    continue
                seen.add(group)
            kept.append(r)
        self.dropped[name] = len(rows) - len(kept)
        return SplitManifest(kept, rows.config)

    scenario = scenario_split  # the name SplitManifest's own 004 scenarios have

    def head_keep(self, ids: Sequence[str]) -> list[bool]:
        """For the task-1 head's test ids: False where the item has a copy in the training rows."""
        group = plan_for(self.manifest).head_part[0]
        out = leaked(ids, self.manifest.select(group=group, split="train").ids, self.group_of)
        self.dropped["task 1 head"] = len(out)
        return [i not in out for i in ids]

    def pair_keep(self, ids_a: Sequence[str], ids_b: Sequence[str]) -> list[bool]:
        """For a pair file: False where the two items are copies of each other."""
        keep = [not (a in self.group_of and self.group_of.get(b) == self.group_of[a]) for a, b in zip(ids_a, ids_b)]
        self.dropped["pairs"] = keep.count(False)
        return keep
