"""ckwidget's linear-time load gives exactly what torch's ``load_state_dict`` gives.

Every case builds the same model twice (same seed), loads the same state dict with
torch's ``model.load_state_dict`` and with ``fastload.load_state_dict``, and compares:
the returned missing/unexpected lists (order included), the exception type and text,
warnings, what hooks saw, and every parameter and buffer afterwards (type, dtype,
device, shape, requires_grad, bytes).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import pytest
import torch
from torch import nn

from ckwidget.fixes import fastload
from ckwidget.fixes.fastload import load_state_dict as fast_load


def _tensor_state(t: Any) -> Any:
    if t is None:
        return None
    if nn.parameter.is_lazy(t):
        return ("lazy", type(t).__name__, t.requires_grad)
    head = (type(t).__name__, t.dtype, t.device.type, tuple(t.shape), t.requires_grad)
    if t.is_meta:
        return (*head, "meta")
    if t.is_quantized:
        return (*head, t.int_repr().numpy().tobytes(), t.q_scale(), t.q_zero_point())
    return (*head, t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def state(model: nn.Module) -> dict[str, Any]:
    """Every parameter and buffer (persistent or not) of every module, as comparable data."""
    out: dict[str, Any] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for table in ("_parameters", "_buffers"):
            for name, t in getattr(module, table).items():
                out[f"{table}:{prefix}.{name}"] = _tensor_state(t)
    return out


def outcome(load, model: nn.Module, sd: Any, **kw: Any) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = load(model, sd, **kw)
            got: Any = ("ok", type(result).__name__, list(result.missing_keys),
                        list(result.unexpected_keys), repr(result))
        except Exception as exc:
            got = ("raised", type(exc).__name__, str(exc))
    return {
        "result": got,
        "warnings": [str(w.message) for w in caught],
        "state": state(model),
    }


def torch_load(model: nn.Module, sd: Any, **kw: Any) -> Any:
    return model.load_state_dict(sd, **kw)


def same(make, sd_of, **kw: Any) -> dict[str, Any]:
    """Load with both, from the same fresh model and state dict; assert equal outcomes."""
    torch.manual_seed(0)
    a = make()
    torch.manual_seed(0)
    b = make()
    assert state(a) == state(b)
    expected = outcome(torch_load, a, sd_of(), **kw)
    got = outcome(fast_load, b, sd_of(), **kw)
    assert got["result"] == expected["result"]
    assert got["warnings"] == expected["warnings"]
    assert got["state"] == expected["state"]
    return expected


def source(make, seed: int = 1):
    """A state dict from another model of the same kind (different values), fresh per call."""

    def sd_of() -> OrderedDict:
        torch.manual_seed(seed)
        sd = make().state_dict()
        out = OrderedDict((k, v.clone() if isinstance(v, torch.Tensor) else v)
                          for k, v in sd.items())
        out._metadata = sd._metadata  # type: ignore[attr-defined]
        return out

    return sd_of


def edited(sd_of, drop=(), add=None, replace=None, keep_metadata=True):
    def fn() -> Any:
        sd = sd_of()
        for k in drop:
            del sd[k]
        for k, v in (replace or {}).items():
            sd[k] = v
        for k, v in (add or {}).items():
            sd[k] = v
        if not keep_metadata:
            return dict(sd)
        return sd

    return fn


def test_fast_path_is_taken_on_this_torch():
    assert fastload.supported()
    model = nn.ModuleList([nn.Linear(2, 2)])
    assert fastload.fast_path(model, model.state_dict())


# -- a flat ModuleList --------------------------------------------------------------------


def flat() -> nn.Module:
    return nn.ModuleList([nn.Linear(3, 2) for _ in range(2000)])


def test_flat_modulelist_full_match():
    out = same(flat, source(flat))
    assert out["result"][0] == "ok" and out["result"][2:4] == ([], [])


def test_flat_modulelist_missing_and_unexpected_non_strict():
    sd_of = edited(
        source(flat),
        drop=["5.weight", "1999.bias", "700.weight"],
        add={"2000.weight": torch.zeros(2, 3), "17.extra": torch.zeros(1),
             "17.sub.x": torch.zeros(1), "top": torch.zeros(1), "3.weight.x": torch.ones(1)},
    )
    out = same(flat, sd_of, strict=False)
    assert out["result"][2] == ["5.weight", "700.weight", "1999.bias"]
    assert out["result"][3] == ["2000.weight", "top", "3.weight.x", "17.extra", "17.sub.x"]


def test_flat_modulelist_strict_missing_and_unexpected_raise_the_same_text():
    sd_of = edited(source(flat), drop=["5.weight"], add={"2000.weight": torch.zeros(2, 3)})
    out = same(flat, sd_of, strict=True)
    assert out["result"][0] == "raised"
    assert 'Missing key(s) in state_dict: "5.weight"' in out["result"][2]


def test_strict_size_mismatch_same_message_and_same_partial_copy():
    sd_of = edited(source(flat), replace={"1500.weight": torch.zeros(4, 3),
                                          "10.bias": torch.zeros(3)})
    out = same(flat, sd_of, strict=True)
    assert out["result"][0] == "raised"
    assert "size mismatch for 10.bias" in out["result"][2]
    assert "size mismatch for 1500.weight" in out["result"][2]


def test_non_tensor_value_and_scalar_backward_compat():
    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.tensor(2.0))
            self.layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])

    sd_of = edited(source(Scalar), replace={"s": torch.tensor([5.0]), "layers.1.bias": "x"})
    out = same(Scalar, sd_of, strict=True)
    assert "expected torch.Tensor" in out["result"][2]
    same(Scalar, edited(source(Scalar), replace={"s": torch.tensor([5.0])}))


# -- nesting ------------------------------------------------------------------------------


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Sequential(nn.Linear(2, 2)))
        self.blocks = nn.ModuleDict({
            "a": nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2)),
            "b": nn.ModuleList([nn.Linear(2, 2) for _ in range(4)]),
            "a0": nn.Linear(1, 1),
        })
        self.head = nn.Linear(2, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(2))
        self.register_buffer("gone", None)
        self.empty = None


def test_nested_full_match_with_and_without_metadata():
    same(Nested, source(Nested))
    same(Nested, edited(source(Nested), keep_metadata=False))


@pytest.mark.parametrize("strict", [True, False])
def test_nested_unexpected_keys_at_every_depth(strict):
    z = torch.zeros(1)
    sd_of = edited(
        source(Nested),
        drop=["blocks.b.2.bias", "stem.0.weight"],
        add={"blocks.a.0.extra": z, "blocks.zzz.weight": z, "blocks.a.weight": z,
             "blocks.a0.weight.more": z, "stem.2.0.bias.x": z, "stem.1.weight": z,
             "gone": z, "empty.weight": z, "empty.deeper.x": z, "head.bias": z,
             "_extra_state": z, "blocks._extra_state": z, "": z, ".": z, "scale.": z,
             "blocks..x": z, "stem.2..": z},
    )
    same(Nested, sd_of, strict=strict)


def test_shared_module_under_two_names():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            lin = nn.Linear(2, 2)
            self.a = lin
            self.b = nn.Sequential(lin)

    sd_of = edited(source(Shared), replace={"b.0.weight": torch.full((2, 2), 7.0)})
    same(Shared, sd_of)


def test_child_names_a_split_cannot_stand_for():
    def make() -> nn.Module:
        model = nn.Sequential(nn.Linear(2, 2))
        model._modules["a.b"] = nn.Linear(2, 2)  # bypasses add_module's checks
        model._modules["a"] = nn.Linear(2, 2)
        model._modules[""] = nn.Linear(2, 2)
        return model

    z = torch.zeros(2, 2)
    sd_of = edited(source(make), add={"a.b.weight": z + 3, "a.x": z, ".weight": z + 4})
    same(make, sd_of, strict=False)
    same(make, sd_of, strict=True)


def test_non_string_keys_fall_back_to_torch():
    def sd_of() -> dict:
        sd: dict[Any, Any] = dict(source(flat)())
        sd[3] = torch.zeros(1)
        return sd

    model = nn.Linear(2, 2)
    assert not fastload.fast_path(model, {1: 2})
    out = same(flat, sd_of, strict=False)
    assert out["result"][0] == "raised" and out["result"][1] == "AttributeError"


def test_not_a_mapping_raises_the_same():
    out = same(flat, lambda: [("0.weight", torch.zeros(2, 3))])
    assert out["result"][1] == "TypeError"


# -- buffers, norms -----------------------------------------------------------------------


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bns = nn.ModuleList([nn.BatchNorm1d(3) for _ in range(5)])
        self.bn2 = nn.BatchNorm2d(2)
        self.inorm = nn.InstanceNorm1d(3, affine=True)
        self.inorm_stats = nn.InstanceNorm1d(3, track_running_stats=True)
        self.ln = nn.LayerNorm(3)
        self.register_buffer("private", torch.arange(3.0), persistent=False)
        self.register_buffer("public", torch.arange(3.0) + 10)


def _trained_norms() -> nn.Module:
    model = Norms()
    with torch.no_grad():
        for bn in [*model.bns, model.bn2, model.inorm_stats]:
            bn.running_mean.uniform_()
            bn.running_var.uniform_(1, 2)
            bn.num_batches_tracked.fill_(9)
        model.private.fill_(-1)
    return model


def test_batchnorm_running_stats_and_num_batches_tracked():
    same(Norms, source(_trained_norms))


def test_batchnorm_missing_num_batches_tracked_old_checkpoint():
    drop = ["bns.1.num_batches_tracked", "bn2.num_batches_tracked"]
    same(Norms, edited(source(_trained_norms), drop=drop, keep_metadata=False))
    same(Norms, edited(source(_trained_norms), drop=drop), strict=True)


def test_instancenorm_old_running_stats_error():
    z = torch.zeros(3)
    sd_of = edited(source(_trained_norms),
                   add={"inorm.running_mean": z, "inorm.running_var": z}, keep_metadata=False)
    out = same(Norms, sd_of, strict=False)
    assert "Unexpected running stats buffer(s)" in out["result"][2]


def test_non_persistent_buffers_are_unexpected_and_untouched():
    sd_of = edited(source(_trained_norms), add={"private": torch.full((3,), 5.0)})
    out = same(Norms, sd_of, strict=False)
    assert out["result"][3] == ["private"]
    out = same(Norms, sd_of, strict=True)
    assert 'Unexpected key(s) in state_dict: "private"' in out["result"][2]


# -- hooks and overrides -----------------------------------------------------------------


def hooked() -> nn.Module:
    log: list[Any] = []
    model = nn.Sequential(OrderedDict(
        body=nn.ModuleList([nn.Linear(2, 2) for _ in range(50)]),
        head=nn.Linear(2, 1),
    ))
    model.log = log  # type: ignore[attr-defined]

    def old_pre(state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        log.append(("old-pre", prefix, list(state_dict), dict(local_metadata)))
        # rename an old name into a child's namespace: the children must see it
        for k in list(state_dict):
            if k.endswith(".w_old"):
                state_dict[k[: -len(".w_old")] + ".weight"] = state_dict.pop(k)

    def new_pre(module, state_dict, prefix, local_metadata, strict, missing, unexpected,
                errors):
        log.append(("new-pre", type(module).__name__, prefix, len(state_dict)))

    def post(module, incompatible):
        log.append(("post", type(module).__name__, list(incompatible.missing_keys),
                    list(incompatible.unexpected_keys)))
        if "head.bias" in incompatible.missing_keys:
            incompatible.missing_keys.remove("head.bias")  # the hook may edit in place

    model.body._register_load_state_dict_pre_hook(old_pre)
    model._register_load_state_dict_pre_hook(old_pre)
    model.body[7].register_load_state_dict_pre_hook(new_pre)
    model.register_load_state_dict_pre_hook(new_pre)
    model.body.register_load_state_dict_post_hook(post)
    model.register_load_state_dict_post_hook(post)
    model.body[3].register_load_state_dict_post_hook(post)
    return model


def test_pre_and_post_hooks_see_and_do_the_same():
    sd_of = edited(source(hooked), drop=["head.bias", "body.4.weight"],
                   add={"body.4.w_old": torch.ones(2, 2), "body.9.junk": torch.ones(1)})
    torch.manual_seed(0)
    a = hooked()
    torch.manual_seed(0)
    b = hooked()
    ra = outcome(torch_load, a, sd_of(), strict=False)
    rb = outcome(fast_load, b, sd_of(), strict=False)
    assert ra == rb
    assert a.log == b.log and len(a.log) > 5
    same(hooked, sd_of, strict=True)


def test_post_hook_returning_a_value_raises_the_same():
    def make() -> nn.Module:
        model = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
        model[1].register_load_state_dict_post_hook(lambda module, keys: "oops")
        return model

    out = same(make, source(make))
    assert out["result"][1] == "AssertionError"


class Renaming(nn.Linear):
    """Overrides _load_from_state_dict to accept an old name (and peeks at its dict)."""

    seen: list[Any] = []

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        Renaming.seen.append((prefix, list(state_dict)))
        if prefix + "w" in state_dict:
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "w")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Grouping(nn.Module):
    """A container that overrides _load_from_state_dict and has many children."""

    def __init__(self) -> None:
        super().__init__()
        self.items = nn.ModuleList([Renaming(2, 2) for _ in range(30)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for k in list(state_dict):  # moves keys of one child into another's namespace
            if k.startswith(prefix + "items.29."):
                state_dict[k.replace("items.29.", "items.28.x.")] = state_dict[k]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def test_custom_load_from_state_dict_overrides():
    sd_of = edited(source(Grouping), drop=["items.3.weight"],
                   add={"items.3.w": torch.full((2, 2), 3.0)})
    Renaming.seen = []
    same(Grouping, sd_of, strict=False)
    half = len(Renaming.seen) // 2
    assert Renaming.seen[:half] == Renaming.seen[half:]
    same(Grouping, sd_of, strict=True)


def test_instance_patched_load_from_state_dict():
    def make() -> nn.Module:
        model = nn.ModuleList([nn.Linear(2, 2) for _ in range(4)])
        original = model._load_from_state_dict

        def patched(state_dict, prefix, *args):
            state_dict["2.weight"] = torch.full((2, 2), 4.0)
            original(state_dict, prefix, *args)

        model._load_from_state_dict = patched
        return model

    same(make, edited(source(make), drop=["2.weight"]))


def test_model_overriding_load_state_dict_is_called():
    calls: list[int] = []

    class Own(nn.Linear):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            calls.append(1)
            return super().load_state_dict(state_dict, strict, assign)

    model = Own(2, 2)
    fast_load(model, Own(2, 2).state_dict())
    assert calls == [1]


def test_extra_state():
    class Extra(nn.Linear):
        def get_extra_state(self):
            return {"n": 1}

        def set_extra_state(self, extra):
            self.got = extra

    def make() -> nn.Module:
        return nn.Sequential(Extra(2, 2), nn.ModuleList([Extra(2, 2) for _ in range(3)]))

    same(make, source(make))
    same(make, edited(source(make), drop=["1.2._extra_state"]), strict=False)


# -- weight norm, parametrizations, lazy, quantized ---------------------------------------


def old_weight_norm() -> nn.Module:
    return nn.ModuleList(
        [nn.utils.weight_norm(nn.Linear(3, 2)) for _ in range(20)])


def new_weight_norm() -> nn.Module:
    return nn.ModuleList(
        [nn.utils.parametrizations.weight_norm(nn.Linear(3, 2)) for _ in range(20)])


def test_old_weight_norm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        same(old_weight_norm, source(old_weight_norm))
        same(old_weight_norm, edited(source(old_weight_norm), drop=["3.weight_g"]),
             strict=False)


def test_parametrizations_weight_norm_and_its_compat_hook():
    same(new_weight_norm, source(new_weight_norm))

    def old_names():  # a checkpoint saved with the old weight_norm: the hook renames it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return source(old_weight_norm)()

    out = same(new_weight_norm, old_names, strict=False)
    assert out["result"][0] == "ok" and out["result"][3] == []


def test_spectral_norm():
    def make() -> nn.Module:
        return nn.ModuleList([nn.utils.spectral_norm(nn.Linear(3, 3)) for _ in range(5)])

    same(make, source(make))


def lazy() -> nn.Module:
    return nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))


def test_lazy_module_before_initialisation():
    def initialised() -> nn.Module:
        model = lazy()
        model(torch.zeros(1, 5))
        return model

    out = same(lazy, source(initialised))
    assert out["state"]["_parameters:0.weight"][3] == (3, 5)
    same(lazy, edited(source(initialised), drop=["0.bias"]), strict=False)
    same(lazy, edited(source(initialised), replace={"2.0.weight": torch.zeros(5, 5)}))


def test_quantized_linear():
    ao = pytest.importorskip("torch.ao.nn.quantized")
    if not torch.backends.quantized.supported_engines:
        pytest.skip("no quantized engine")

    def make() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = nn.Sequential(ao.Linear(4, 4), nn.ModuleList([ao.Linear(4, 2)]))
        for layer in (model[0], model[1][0]):  # its weights start as uninitialised memory
            w = layer.weight()
            layer.set_weight_bias(torch.quantize_per_tensor(
                torch.zeros(w.shape), 1.0, 0, torch.qint8), None)
        return model

    def quantized_state(model: nn.Module) -> str:
        return repr(model.state_dict())

    def sd_of() -> Any:
        torch.manual_seed(1)
        model = make()
        for layer, out_features in ((model[0], 4), (model[1][0], 2)):
            w = torch.quantize_per_tensor(torch.randn(out_features, 4), 0.1, 0, torch.qint8)
            layer.set_weight_bias(w, torch.randn(out_features))
        return model.state_dict()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        a = make()
        torch.manual_seed(0)
        b = make()
        ra = outcome(torch_load, a, sd_of())
        rb = outcome(fast_load, b, sd_of())
    assert ra["result"] == rb["result"]
    assert quantized_state(a) == quantized_state(b)


# -- assign and meta ----------------------------------------------------------------------


def meta_model() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(
            nn.ModuleList([nn.Linear(3, 2) for _ in range(30)]), nn.BatchNorm1d(2))


def test_assign_on_a_meta_model():
    def sd_of() -> Any:
        torch.manual_seed(1)
        model = nn.Sequential(
            nn.ModuleList([nn.Linear(3, 2) for _ in range(30)]), nn.BatchNorm1d(2))
        model[0][4].weight.requires_grad_(False)
        return model.state_dict()

    out = same(meta_model, sd_of, assign=True)
    assert out["state"]["_parameters:0.4.weight"][2] == "cpu"

    # the loaded parameters hold the state dict's own storage, as torch's do
    sd = sd_of()
    model = meta_model()
    fast_load(model, sd, assign=True)
    assert model[0][4].weight.data_ptr() == sd["0.4.weight"].data_ptr()
    assert isinstance(model[0][4].weight, nn.Parameter)
    assert model[0][4].weight.requires_grad

    # the metadata is marked the same way
    sd_a, sd_b = sd_of(), sd_of()
    meta_model().load_state_dict(sd_a, assign=True)
    fast_load(meta_model(), sd_b, assign=True)
    assert sd_a._metadata == sd_b._metadata


def test_meta_model_without_assign_warns_the_same():
    def on_cpu() -> nn.Module:
        return nn.Sequential(
            nn.ModuleList([nn.Linear(3, 2) for _ in range(30)]), nn.BatchNorm1d(2))

    out = same(meta_model, source(on_cpu))
    assert any("meta parameter" in w for w in out["warnings"])


# -- scale ---------------------------------------------------------------------------------


def test_a_flat_list_of_40000_keys_loads_every_key():
    """40,000 keys in a flat ModuleList (torch's own walk takes about a minute here; the
    time is benchmarks/apply_scale.py's to measure, not a test's)."""
    model = nn.ModuleList([nn.Linear(1, 1) for _ in range(20_000)])
    sd = {k: v + 1 for k, v in model.state_dict().items()}
    result = fast_load(model, sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(model[19_999].weight, sd["19999.weight"])
    assert torch.equal(model[0].bias, sd["0.bias"])


def test_unknown_torch_code_is_not_mirrored():
    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None

    assert not fastload._mirrors(load_state_dict)
    assert fastload._mirrors(nn.Module.load_state_dict)


def test_a_hook_holding_the_parents_dict_while_children_load():
    """Why modules with pre-hooks keep torch's per-child scan: a hook may keep the dict,
    and something run by an earlier child may change it before a later child's turn."""

    def make() -> nn.Module:
        model = nn.ModuleList([nn.Linear(2, 2) for _ in range(4)])
        held: list[dict] = []
        model._register_load_state_dict_pre_hook(lambda sd, *args: held.append(sd))

        def post(module, keys):
            held[-1]["2.weight"] = torch.full((2, 2), 8.0)

        model[0].register_load_state_dict_post_hook(post)
        return model

    out = same(make, source(make))
    assert out["state"]["_parameters:2.weight"][-1] == _tensor_state(torch.full((2, 2), 8.0))[-1]


# -- through Plan.apply --------------------------------------------------------------------


def _bytes(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            for k, v in model.state_dict(keep_vars=True).items()}


def test_plan_apply_loads_a_wide_model_through_the_fast_walk(monkeypatch):
    import ckwidget.fixes as F
    from ckwidget.checkpoint import Checkpoint

    calls: list[int] = []
    original = fastload.load_state_dict
    monkeypatch.setattr("ckwidget.fixes.apply.load_state_dict",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.manual_seed(0)
    model = nn.ModuleList([nn.Linear(3, 2) for _ in range(2000)])
    sd = source(flat)()
    result = F.Plan([], Checkpoint.from_state_dict(dict(sd))).apply(model)
    assert calls == [1] and len(result.loaded) == 4000
    assert _bytes(model) == {k: t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                             for k, t in sd.items()}


class _Fails(nn.Linear):
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict[prefix + "weight"] = torch.zeros(9, 9)  # a mismatch only torch sees
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def test_plan_apply_rolls_back_a_wide_model_when_torch_fails_late():
    import ckwidget.fixes as F
    from ckwidget.checkpoint import Checkpoint
    from ckwidget.errors import FixError

    def make() -> nn.Module:
        return nn.ModuleList([*[nn.Linear(3, 2) for _ in range(1999)], _Fails(3, 2)])

    torch.manual_seed(0)
    model = make()
    before = _bytes(model)
    with pytest.raises(FixError, match=r"left exactly as it was.*size mismatch for 1999.weight"):
        F.Plan([], Checkpoint.from_state_dict(dict(source(make)()))).apply(model)
    assert _bytes(model) == before


@pytest.mark.slow
def test_apply_scale_benchmark_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "apply_scale.py"
    out = subprocess.run(
        [sys.executable, str(script), "--keys", "200", "600", "--torch-max", "200",
         "--keep", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "     600 ckwidget" in out.stdout and "     600 torch.load" in out.stdout
    assert "x torch's peak" in out.stdout and "host:" in out.stdout
