"""A Plan: an ordered list of fixes for one checkpoint, with preview, apply, code and save.

Fixes are kept in a canonical order whatever order they were given in: load-time fixes,
then key-mapping fixes, then per-key fixes (drop, transpose, resize, cast), so the keys
per-key fixes name are always the model's. ``validate`` lists, in sentences, why a
plan would fail for a checkpoint and model; ``apply`` raises :class:`FixError` with the
same sentences before touching the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint, TensorInfo
from ..errors import CheckpointError, FixError
from ..kinds import UNREPAIRABLE_KINDS
from ..loadhooks import HookRename, load_hooks_of, rename_like_hooks
from .kinds import (
    AllowGlobals,
    DropKeys,
    ExtractWeights,
    Fix,
    MapLocation,
    ResizeCopy,
    SelectEntry,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from ..diagnosis.report import Report
    from .apply import LoadResult

# A cast comes last so that it applies to every value, resized ones included (a resize
# builds the model's tensor, in the model's dtype, around the overlapping slice).
# Folds, fusions and splits name their keys as the renames leave them, and per-key fixes
# name the tensors they make.
def _rank(fix: Fix) -> float:
    return type(fix).rank


def _ordered(fixes: Iterable[Fix]) -> list[Fix]:
    unique = list(dict.fromkeys(fixes))
    for fix in unique:
        if not isinstance(fix, Fix):
            raise FixError(f"{fix!r} is not a fix (expected a value such as StripPrefix(...)).")
    for kind in (SelectEntry, MapLocation, ExtractWeights):
        found = [f for f in unique if isinstance(f, kind)]
        if len(found) > 1:
            raise FixError(
                f"A plan can hold only one {kind.kind} fix; it has {len(found)}: "
                + "; ".join(f.describe() for f in found)
            )
    return sorted(_resize_over_drop(unique), key=_rank)


def _resize_over_drop(fixes: list[Fix]) -> list[Fix]:
    """A key both resized and dropped is resized: adding resize-copy for a changed head
    (the alternative a finding offers) overrides the drop-keys that skipped it."""
    resized = {k for f in fixes if isinstance(f, ResizeCopy) for k in f.keys}
    if not resized:
        return fixes
    out: list[Fix] = []
    for fix in fixes:
        if isinstance(fix, DropKeys) and resized & set(fix.keys):
            fix = DropKeys(tuple(k for k in fix.keys if k not in resized), fix.reason)
            if fix in out:
                continue
        out.append(fix)
    return out


class Plan:
    """Ordered fixes for the checkpoint at ``source`` (a path or an opened Checkpoint).

    Args:
        fixes: fix values (StripPrefix("module."), Transpose((...)), ...), in any order:
            the plan sorts them by each kind's ``rank``; at most one select-entry,
            map-location and extract-weights.
        source: the checkpoint the plan reads (a path, or an opened Checkpoint).
        assign: load with ``assign=True`` (diagnose sets it for a meta-device model).
    """

    def __init__(
        self,
        fixes: Sequence[Fix] | Iterable[Fix] = (),
        source: str | os.PathLike[str] | Checkpoint | None = None,
        *,
        assign: bool = False,
    ) -> None:
        self.fixes: list[Fix] = _ordered(fixes)
        if isinstance(source, (str, os.PathLike)):
            source = Path(source)
        self.source: Path | Checkpoint | None = source
        # load with assign=True: the model the plan was made for is on the meta device
        # (apply also does so for any meta model; the snippet needs to be told)
        self.assign = bool(assign)

    # -- the value ------------------------------------------------------------------
    def _find(self, kind: type[Fix]) -> Any:
        return next((f for f in self.fixes if isinstance(f, kind)), None)

    @property
    def entry(self) -> str | None:
        """The selected container ("" is the top level), or None without a select-entry."""
        fix = self._find(SelectEntry)
        return fix.entry if fix is not None else None

    @property
    def map_location(self) -> str:
        fix = self._find(MapLocation)
        return fix.device if fix is not None else "cpu"

    @property
    def extracts(self) -> bool:
        return self._find(ExtractWeights) is not None

    @property
    def allowed_globals(self) -> tuple[str, ...]:
        names: list[str] = []
        for fix in self.fixes:
            if isinstance(fix, AllowGlobals):
                names += [n for n in fix.names if n not in names]
        return tuple(names)

    @property
    def partial(self) -> bool:
        """Whether the plan opts in to partial loading (a drop-keys fix: strict=False)."""
        return self._find(DropKeys) is not None

    @property
    def strict(self) -> bool:
        return not self.partial

    @property
    def path(self) -> Path | None:
        if isinstance(self.source, Checkpoint):
            return self.source.path
        return self.source

    def with_fixes(self, fixes: Iterable[Fix]) -> Plan:
        """A new plan with ``fixes`` added (same source)."""
        return Plan([*self.fixes, *fixes], self.source, assign=self.assign)

    def without(self, kind_or_fix: str | Fix | type[Fix]) -> Plan:
        """A new plan without one fix value, or without every fix of one kind."""
        if isinstance(kind_or_fix, Fix):
            kept = [f for f in self.fixes if f != kind_or_fix]
        elif isinstance(kind_or_fix, type):
            kept = [f for f in self.fixes if not isinstance(f, kind_or_fix)]
        else:
            kept = [f for f in self.fixes if f.kind != kind_or_fix]
        return Plan(kept, self.source, assign=self.assign)

    def __len__(self) -> int:
        return len(self.fixes)

    def __iter__(self) -> Iterator[Fix]:
        return iter(self.fixes)

    def __bool__(self) -> bool:
        return bool(self.fixes)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return any(f.kind == item for f in self.fixes)
        return item in self.fixes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.fixes == other.fixes and (
            self.source == other.source) and self.assign == other.assign

    def __hash__(self) -> int:
        return hash(tuple(self.fixes))

    def describe(self) -> list[str]:
        return [f.describe() for f in self.fixes]

    def __repr__(self) -> str:
        if not self.fixes:
            return "<Plan: load with assign=True>" if self.assign else "<Plan: nothing to fix>"
        body = "\n".join(f"  {i}. {f.describe()}" for i, f in enumerate(self.fixes, 1))
        return f"<Plan of {len(self.fixes)} fixes:\n{body}>"

    # -- reading --------------------------------------------------------------------
    def open(self) -> tuple[Checkpoint, bool]:
        """The source as a Checkpoint, and whether this call opened it (owns it)."""
        if isinstance(self.source, Checkpoint):
            return self.source, False
        if self.source is None:
            raise FixError(
                "This plan has no checkpoint: build it with Plan(fixes, source=path) "
                "or use report.plan."
            )
        from ..readers import open_checkpoint

        return open_checkpoint(self.source), True

    def entry_infos(self, ckpt: Checkpoint) -> dict[str, TensorInfo]:
        """The selected container's tensors as the plan reads them, before any fix."""
        return self._entries_infos(ckpt)

    def _entries_infos(self, ckpt: Checkpoint) -> dict[str, TensorInfo]:
        if self.extracts:
            from .helpers import module_tree_members

            members = module_tree_members(ckpt, self.entry)
            return {k: ckpt.tensors[full] for k, full in members.items()}
        entry = self.entry if self.entry is not None else ""
        return ckpt.entry(entry)

    def read(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """The selected container as tensors, read safely, before any transform."""
        if self.extracts:
            from .helpers import extract_weights

            return extract_weights(ckpt, map_location=self.map_location, entry=self.entry)
        entry = self.entry if self.entry is not None else ""
        if entry and entry not in ckpt.candidates and not ckpt.entry(entry):
            raise FixError(
                f"The checkpoint has no container {entry!r} holding tensors "
                f"(it has: {', '.join(repr(c) for c in ckpt.candidates[:5]) or 'none'})."
            )
        return ckpt.state_dict(entry, map_location=self.map_location)

    def _run(self, entries: dict[str, Any], model: Mapping[str, TensorInfo]) -> dict[str, Any]:
        for fix in self.fixes:
            if not fix.load_time:
                entries = fix.transform(entries, model)
        return entries

    # -- preview --------------------------------------------------------------------
    def simulate(
        self,
        ckpt: Checkpoint,
        model_infos: Mapping[str, TensorInfo],
        entries: Mapping[str, TensorInfo] | None = None,
        *,
        keys_mapped: bool = False,
        renames: tuple[HookRename, ...] = (),
    ) -> dict[str, TensorInfo]:
        """What the model would receive, as metadata only (no tensor bytes are read).

        ``entries``: the selected container's infos when the caller has them already;
        with ``keys_mapped`` they are keyed as the plan's key-mapping fixes would key
        them (diagnosis passes its alignment, which built those fixes), so only the
        per-key fixes run: renaming 100,000 keys a second time is skipped. ``renames``:
        what the model's own load hooks rename (``ckwidget.loadhooks``), done last as
        ``load_state_dict`` does.
        """
        start = self._entries_infos(ckpt) if entries is None else dict(entries)
        for fix in self.fixes:
            if not fix.load_time and not (keys_mapped and fix.maps_keys):
                start = fix.transform(start, model_infos)
        return rename_like_hooks(start, renames) if renames else start

    def validate(
        self,
        ckpt: Checkpoint | None = None,
        model: nn.Module | Mapping[str, TensorInfo] | None = None,
        strict: bool | None = None,
    ) -> list[str]:
        """Sentences saying why this plan would fail for ``ckpt`` and ``model`` (empty: fine).

        Covers fixes that no longer apply (a prefix no key has, a key that is gone) and
        the load itself (shapes, and under strict loading missing or unexpected keys).
        """
        if ckpt is None:
            ckpt, _ = self.open()
        return self._problems(ckpt, _as_infos(model), strict, load_hooks_of(model).renames)

    def _problems(self, ckpt: Checkpoint, infos: Mapping[str, TensorInfo],
                  strict: bool | None, renames: tuple[HookRename, ...]) -> list[str]:
        """``validate`` for model infos and the renames of the model's load hooks."""
        broken = file_problems(ckpt)
        if broken:
            return broken  # the cause, not its symptoms (no tensors, missing keys)
        problems: list[str] = []
        try:
            entries = self._entries_infos(ckpt)
        except CheckpointError as exc:
            return [str(exc)]
        if not entries:
            where = f"under {self.entry!r}" if self.entry else "at the checkpoint's top level"
            problems.append(f"There are no tensors {where}; select another entry.")
        for fix in self.fixes:
            if fix.load_time:
                continue
            problems += fix.problems(entries, infos)
            try:
                entries = fix.transform(entries, infos)
            except CheckpointError as exc:
                problems.append(str(exc))
                return problems
        if infos:
            from .apply import check_load

            strict = self.strict if strict is None else strict
            if renames:
                entries = rename_like_hooks(entries, renames)
            _, load_problems = check_load(entries, infos, strict)
            problems += load_problems
        return problems

    def preview(self, model: nn.Module) -> Report:
        """The diagnosis as it would read after this plan (nothing is loaded)."""
        from ..diagnosis import diagnose

        ckpt, _ = self.open()
        return diagnose(ckpt, model, plan=self)

    # -- doing ----------------------------------------------------------------------
    def apply(
        self,
        model: nn.Module,
        strict: bool | None = None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> LoadResult:
        """Load the repaired checkpoint into ``model``; on any failure it is left untouched.

        Args:
            model: the module to load into; on any failure (an interrupt included) it is
                left bit for bit as it was.
            strict: None lets the plan decide (strict unless it has a drop-keys fix).
            progress: called as ``progress(done, total)`` while the tensors are read and
                loaded, each time about 1% more of the work is done (counted in keys:
                the reading is the first half of ``total``, the loading the second),
                with ``done`` growing and, after a successful load, a last call with
                ``done == total``. It runs on the calling thread, inside the load.

        Models whose tensors are on the meta device (or a plan made for one) load with
        ``assign=True``. Returns what was loaded and what stayed missing or unused.
        """
        from .apply import (
            LiveInfos,
            Progress,
            check_load,
            live_tensors,
            load_atomically,
        )

        strict = self.strict if strict is None else bool(strict)
        ckpt, owned = self.open()
        # The model's tensors as a plain dict, described only where a fix asks (the
        # load checks read shapes off the tensors): full infos cost about 0.6 KB a key
        # and a second's describing at 100,000 keys, and would sit beside the tensors.
        live = live_tensors(model)
        infos = LiveInfos(live)
        # the model's own load hooks rename some keys (weight_norm's old names): renamed
        # here as they would be, the checks see what torch will match
        renames = load_hooks_of(model).renames
        problems = self._problems(ckpt, infos, strict, renames)
        if problems:
            raise FixError(_sentences(problems))
        assign = self.assign or any(v.is_meta for v in live.values())
        transforms = bool(renames) or any(not f.load_time for f in self.fixes)
        counter = None
        if progress is not None:
            n = self._read_count(ckpt)
            counter = Progress(progress, 2 * n)
        sd = self._read_for_apply(ckpt, counter)
        del ckpt  # an index this call opened goes before the load (the tensors stay)
        fresh: set[int] = set()
        if transforms:
            source_ids = {id(v) for v in sd.values()}
            sd = self._run(sd, infos)
            if renames:
                sd = rename_like_hooks(sd, renames)
            fresh = {id(v) for v in sd.values() if id(v) not in source_ids}
            del source_ids
        result, load_problems = check_load(sd, live, strict)
        if load_problems:
            raise FixError(_sentences(load_problems))
        del live, infos
        result.assign = assign
        load_atomically(
            model, sd, strict=strict, assign=assign, fresh=fresh, release_pages=owned,
            progress=None if counter is None else counter.part(len(sd), counter.total // 2),
        )
        if counter is not None:
            counter.finish()
        return result

    def _read_count(self, ckpt: Checkpoint) -> int:
        """How many tensors :meth:`_read_for_apply` reads (for progress)."""
        if self.extracts:
            return len(self._entries_infos(ckpt))
        entry = self.entry if self.entry is not None else ""
        return len(ckpt.tensors) if ckpt.keys_are_full(entry) else len(ckpt.members(entry))

    def _read_for_apply(self, ckpt: Checkpoint, counter: Any = None) -> dict[str, torch.Tensor]:
        """``read(ckpt)``, for a local torch zip archive tensor by tensor through each
        tensor's own source (its bytes memory-mapped) where every tensor has one.

        The archive's bulk loader (torch.load of the whole file, where torch accepts it)
        builds its own dicts of all the tensors first: at 100,000 keys that costs more
        than half again the memory and three times the time of mapping each tensor's
        bytes (the reader's own fallback, the same bytes). Other checkpoints, and a
        tensor without a source, read with ``read`` as before (a remote checkpoint's
        loader fetches every range in one wave; sources would fetch one by one).
        """
        from ..checkpoint import place

        entry = self.entry if self.entry is not None else ""
        tensors = ckpt.tensors
        plain = (
            type(ckpt) is Checkpoint and ckpt.format == "torch-zip" and not self.extracts
            and (not entry or entry in ckpt.candidates)
        )
        members = None if not plain or ckpt.keys_are_full(entry) else ckpt.members(entry)

        def pairs() -> Iterable[tuple[str, str]]:
            """(key in the state dict, key in the file); the members are built once."""
            return ((k, k) for k in tensors) if members is None else members.items()

        if plain:
            plain = all(
                full in tensors and tensors[full].source is not None for _, full in pairs()
            )
        if not plain:
            sd = self.read(ckpt)
            if counter is not None:
                counter.add(len(sd))
            return sd
        location = self.map_location
        out: dict[str, torch.Tensor] = {}
        for key, full in pairs():
            info = tensors[full]
            out[key] = place(info.source.load(), location, info.device)  # type: ignore[union-attr]
            if counter is not None:
                counter.add(1)
        return out

    def to_code(
        self,
        model_name: str = "model",
        path: str | os.PathLike[str] | None = None,
        *,
        model: nn.Module | None = None,
    ) -> str:
        """A runnable plain-torch snippet doing what ``apply`` does (see codegen).

        Args:
            model_name: the variable the snippet loads into.
            path: the checkpoint path written into the snippet (default: the plan's).
            model: the model, when the snippet should decide things from it (a meta
                model's ``assign=True``); a plan made by diagnose already knows.
        """
        from .codegen import generate

        return generate(self, model_name=model_name, path=path, model=model)

    def save(
        self,
        path: str | os.PathLike[str],
        format: str | None = None,
        *,
        model: nn.Module | None = None,
    ) -> Path:
        """Write the repaired state dict to a new file atomically; never over the source.

        Args:
            path: the new file (refused if it is the source checkpoint).
            format: "safetensors" or "torch"; None chooses by the suffix (.pt, .pth,
                .bin, .ckpt: torch; otherwise safetensors). A format that contradicts
                the suffix is refused.
            model: the model, needed only when the plan resizes tensors into its own.
        """
        from .save import save_plan

        return save_plan(self, path, format=format, model=model)




def file_problems(ckpt: Checkpoint) -> list[str]:
    """The file's own errors that stop any plan, each in the finding's own words."""
    out = []
    for f in ckpt.findings:
        if f.severity == "error" and f.kind in UNREPAIRABLE_KINDS and not f.details.get("crc"):
            text = f.message.rstrip()
            out.append(f"{f.kind}: {text}" if text.endswith(".") else f"{f.kind}: {text}.")
    return out


def _as_infos(model: Any) -> dict[str, TensorInfo]:
    if model is None:
        return {}
    if isinstance(model, Mapping):
        return dict(model)
    from .apply import model_infos

    return model_infos(model)


def _sentences(problems: list[str]) -> str:
    head = "The plan cannot be applied; the model was not changed. "
    return head + " ".join(p if p.endswith(".") else p + "." for p in problems[:8]) + (
        f" ({len(problems) - 8} more problems.)" if len(problems) > 8 else ""
    )
