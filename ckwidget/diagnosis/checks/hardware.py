"""Hardware: storages on devices this machine lacks, meta-device models, device moves."""

from __future__ import annotations

from operator import attrgetter

from ...checkpoint import Finding
from ...fixes.kinds import MapLocation
from ..context import Context


def available(device: str) -> bool:
    import torch

    kind, _, index = device.partition(":")
    if kind in ("cpu", "meta"):
        return True
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        return not index or int(index) < torch.cuda.device_count()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    backend = getattr(torch, kind, None)
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    tensors = ctx.ckpt.tensors
    devices = set(map(attrgetter("device"), tensors.values()))
    lacking = sorted(d for d in devices if not available(d))
    by_device: dict[str, list[str]] = {d: [] for d in devices}
    if lacking:
        for key, info in tensors.items():
            by_device[info.device].append(key)
    model_devices = sorted(d for d in ctx.model.devices if d != "meta")
    target = model_devices[0] if len(model_devices) == 1 else "cpu"
    if lacking:
        keys = [k for d in lacking for k in by_device[d]]
        where = ", ".join(f"{d} ({len(by_device[d])} tensors)" for d in lacking)
        if ctx.map_location is not None:
            out.append(Finding(
                "device", "info",
                f"The file's tensors were saved on {where}, which this machine lacks; "
                f"map_location={ctx.map_location!r} moves them.", keys=keys))
        else:
            ctx.blockers.append("device")
            out.append(Finding(
                "device", "error",
                f"The file's tensors were saved on {where}, which this machine lacks: "
                "torch.load raises 'Attempting to deserialize object on a CUDA device'. "
                f"Load with map_location={target!r}.",
                keys=keys, fixes=[MapLocation(target)],
                details={"devices": lacking, "target": target}))
    if ctx.model.is_meta:
        out.append(Finding(
            "meta-model", "error",
            "The model is on the meta device (built without memory, e.g. under "
            "torch.device('meta') or init_empty_weights): load_state_dict copies into it "
            "and nothing happens. Load with model.load_state_dict(sd, assign=True) so the "
            "checkpoint's tensors become the model's (the plan does this).",
            details={"assign": True}))
    ckpt_devices = sorted({d for d in by_device if d != "meta"})
    if (model_devices and ckpt_devices and not lacking and set(model_devices) != set(ckpt_devices)
            and not ctx.model.is_meta):
        out.append(Finding(
            "device", "info",
            f"The model is on {', '.join(model_devices)} and the file's tensors on "
            f"{', '.join(ckpt_devices)}; load_state_dict copies them across, so the checkpoint "
            "is briefly in memory on both.", details={"model": model_devices,
                                                       "checkpoint": ckpt_devices}))
    return out
