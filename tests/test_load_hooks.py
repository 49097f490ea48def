"""weight and spectral norm's namings, and load hooks that rename keys, against real loads.

``torch.nn.utils.parametrizations.weight_norm`` stores ``parametrizations.weight.
original0/1`` and its load hook accepts the old ``weight_g``/``weight_v``: a file of old
names loads as is, and ckwidget must say so rather than plan to drop the weights. The
other way round (new names, old-style model) torch refuses, and the plan renames them.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ckwidget as ck
from ckwidget.loadhooks import HookRename, load_hooks_of, rename_like_hooks, renamed_names


def old_style(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wn = nn.utils.weight_norm
        return nn.Sequential(wn(nn.Conv1d(3, 4, 3)), nn.ReLU(), wn(nn.Conv1d(4, 4, 3)),
                             nn.Conv1d(4, 2, 1))


def new_style(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    wn = nn.utils.parametrizations.weight_norm
    return nn.Sequential(wn(nn.Conv1d(3, 4, 3)), nn.ReLU(), wn(nn.Conv1d(4, 4, 3)),
                         nn.Conv1d(4, 2, 1))


def torch_loads(model: nn.Module, sd: dict) -> int:
    """Model tensors a real non-strict load fills: what the headline counts."""
    result = model.load_state_dict(sd, strict=False)
    return len(model.state_dict()) - len(result.missing_keys)


def test_old_names_load_into_a_parametrized_model_as_is(tmp_path):
    sd = old_style().state_dict()
    torch.save(sd, tmp_path / "old.pt")
    model = new_style(1)
    report = ck.diagnose(tmp_path / "old.pt", model)
    assert report.loads_cleanly and len(report.plan) == 0
    assert report.headline == "All 8 model tensors load as is."
    assert report.loadable_count == torch_loads(new_style(1), dict(sd)) == 8
    (note,) = [f for f in report.findings if f.kind == "renamed"]
    assert note.severity == "info" and "load hook" in note.message
    assert sorted(note.keys) == ["0.weight_g", "0.weight_v", "2.weight_g", "2.weight_v"]
    rows = report.table.set_index("key")
    row = rows.loc["0.parametrizations.weight.original0"]
    assert (row.status, row.checkpoint_key) == ("match", "0.weight_g")
    # the (empty) plan applies: the model gets the file's values, its output the old one's
    report.plan.apply(model)
    x = torch.randn(1, 3, 9)
    assert torch.equal(model(x), old_style()(x))


def test_old_names_under_a_prefix_need_only_the_prefix_fix(tmp_path):
    torch.save({"module." + k: v for k, v in old_style().state_dict().items()},
               tmp_path / "dp.pt")
    model = new_style(1)
    report = ck.diagnose(tmp_path / "dp.pt", model)
    assert [f.kind for f in report.plan] == ["strip-prefix"]
    assert report.loadable_after_plan == 8 and report.loadable_count == 0
    note = next(f for f in report.findings if f.kind == "renamed")
    assert note.keys[0].startswith("module.")  # the names as the file has them
    report.plan.apply(model)
    x = torch.randn(1, 3, 9)
    assert torch.equal(model(x), old_style()(x))
    # the preview agrees: after the plan everything loads
    assert report.plan.preview(new_style(1)).headline == "All 8 model tensors load as is."


def test_new_names_into_an_old_style_model_are_renamed(tmp_path):
    sd = new_style().state_dict()
    torch.save(sd, tmp_path / "new.pt")
    model = old_style(1)
    report = ck.diagnose(tmp_path / "new.pt", model)
    assert report.loadable_count == torch_loads(old_style(1), dict(sd)) == 4
    (fix,) = report.plan
    assert fix.kind == "rename-keys" and report.loadable_after_plan == 8
    renamed = next(f for f in report.findings if f.kind == "renamed")
    assert renamed.severity == "error" and "parametrizations.weight_norm" in renamed.message
    assert not any(f.kind in ("missing-keys", "unexpected-keys") for f in report.findings)
    report.plan.apply(model)
    x = torch.randn(1, 3, 9)
    assert torch.equal(model(x), new_style()(x))


def test_half_a_pair_is_not_renamed_as_torch_does_not(tmp_path):
    sd = old_style().state_dict()
    del sd["2.weight_v"]  # the hook renames only a complete pair
    torch.save(sd, tmp_path / "half.pt")
    report = ck.diagnose(tmp_path / "half.pt", new_style(1))
    real = new_style(1).load_state_dict(dict(sd), strict=False)
    assert report.loadable_count == torch_loads(new_style(1), dict(sd))
    missing = next(f for f in report.findings if f.kind == "missing-keys")
    assert sorted(missing.keys) == sorted(real.missing_keys)
    unexpected = next(f for f in report.findings if f.kind == "unexpected-keys")
    assert unexpected.keys == real.unexpected_keys == ["2.weight_g"]


def test_an_unknown_load_hook_is_named_and_never_called(tmp_path):
    calls = []

    class Versioned(nn.Module):  # a buffer added in version 2; the hook fills it for v1
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.register_buffer("scale", torch.ones(2))
            self._register_load_state_dict_pre_hook(self.upgrade)

        def upgrade(self, sd, prefix, *args):
            calls.append(prefix)
            sd.setdefault(prefix + "scale", torch.ones(2))

    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "v1.pt")
    model = Versioned()
    report = ck.diagnose(tmp_path / "v1.pt", model)
    assert calls == []  # the model's code is not run by a diagnosis
    (missing,) = [f for f in report.findings if f.kind == "missing-keys"]
    assert missing.keys == ["scale"]
    assert "(upgrade on the model)" in missing.message and "hooks" in missing.message
    assert load_hooks_of(model).unknown == (("", "upgrade"),)
    # without the hook, no such note
    plain = nn.Module()
    plain.fc = nn.Linear(3, 2)
    plain.register_buffer("scale", torch.ones(2))
    (missing,) = [f for f in ck.diagnose(tmp_path / "v1.pt", plain).findings
                  if f.kind == "missing-keys"]
    assert "hooks" not in missing.message


def test_lazy_modules_hooks_are_neither_called_nor_reported(tmp_path):
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "lin.pt")
    lazy = nn.LazyLinear(2)
    assert load_hooks_of(lazy).unknown == ()
    report = ck.diagnose(tmp_path / "lin.pt", lazy)
    assert isinstance(lazy.weight, nn.parameter.UninitializedParameter)  # not materialised
    # a lazy parameter takes the file's shape: it loads as is, as torch loads it
    assert report.headline == "All 2 model tensors load as is."
    assert not any("hooks" in f.message for f in report.findings)
    report.plan.apply(lazy)
    assert lazy.weight.shape == (2, 3)


def test_renames_follow_the_hooks_rule():
    r = HookRename("m", ("m.w_g", "m.w_v"), ("m.parametrizations.w.original0",
                                              "m.parametrizations.w.original1"))
    assert renamed_names(["m.w_g", "m.w_v", "x"], [r]) == {
        "m.w_g": "m.parametrizations.w.original0", "m.w_v": "m.parametrizations.w.original1"}
    assert renamed_names(["m.w_g", "x"], [r]) == {}
    sd = {"m.w_g": 1, "m.w_v": 2, "x": 3}
    assert rename_like_hooks(sd, [r]) == {"x": 3, "m.parametrizations.w.original0": 1,
                                          "m.parametrizations.w.original1": 2}
    assert sd == {"m.w_g": 1, "m.w_v": 2, "x": 3}  # a new dict: the caller's is kept


@pytest.mark.parametrize("dim", [0, 1, None])
def test_found_for_every_weight_norm_dim(dim):
    model = nn.utils.parametrizations.weight_norm(nn.Linear(3, 4), dim=dim)
    (r,) = load_hooks_of(model).renames
    assert r.old == ("weight_g", "weight_v") and r.new == (
        "parametrizations.weight.original0", "parametrizations.weight.original1")


def plain(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.Conv1d(4, 2, 1))


@pytest.mark.parametrize("style", [old_style, new_style])
def test_pairs_fold_into_a_model_without_weight_norm(tmp_path, style):
    source = style()
    torch.save(source.state_dict(), tmp_path / "wn.pt")
    model = plain(1)
    report = ck.diagnose(tmp_path / "wn.pt", model)
    real = plain(1).load_state_dict(source.state_dict(), strict=False)
    assert report.loadable_count == 6 - len(real.missing_keys) == 4
    assert [f.kind for f in report.plan] == ["fold-weight-norm"]
    assert report.loadable_after_plan == 6
    finding = next(f for f in report.findings if f.fixes == list(report.plan))
    assert finding.kind == "renamed" and sorted(finding.keys) == ["0.weight", "2.weight"]
    # no half-measures: v alone is not renamed to the weight, g is not dropped
    assert not any(f.kind in ("missing-keys", "unexpected-keys") for f in report.findings)
    assert report.plan.preview(plain(1)).headline == "All 6 model tensors load as is."
    report.plan.apply(model)
    x = torch.randn(1, 3, 9)
    assert torch.allclose(model(x), source(x), atol=1e-6)
    assert not torch.equal(model[0].weight, plain(1)[0].weight)


def test_a_pair_that_is_not_a_magnitude_is_not_folded(tmp_path):
    sd = old_style().state_dict()
    sd["0.weight_g"] = torch.ones(4, 3, 1)  # two kept dimensions: no weight norm makes that
    torch.save(sd, tmp_path / "odd.pt")
    report = ck.diagnose(tmp_path / "odd.pt", plain(1))
    fold = [f for f in report.plan if f.kind == "fold-weight-norm"]
    assert fold and fold[0].folds == (("2.weight_g", "2.weight_v", "2.weight"),)


def spectral(api, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    sn = api.spectral_norm
    model = nn.Sequential(sn(nn.Conv2d(3, 4, 3)), nn.ReLU(), sn(nn.Linear(4, 2)))
    model.train()
    model[0](torch.randn(2, 3, 5, 5))  # a power iteration: u and v hold trained values
    return model.eval()


@pytest.mark.parametrize("saved, loaded", [(nn.utils, nn.utils.parametrizations),
                                           (nn.utils.parametrizations, nn.utils)])
def test_spectral_norm_namings_are_renamed_both_ways(tmp_path, saved, loaded):
    source = spectral(saved)
    torch.save(source.state_dict(), tmp_path / "sn.pt")
    model = spectral(loaded, 1)
    with pytest.raises(RuntimeError, match="Missing key"):
        spectral(loaded, 1).load_state_dict(source.state_dict())
    report = ck.diagnose(tmp_path / "sn.pt", model)
    assert [f.kind for f in report.plan] == ["rename-keys"]
    assert report.loadable_after_plan == 8
    renamed = next(f for f in report.findings if f.kind == "renamed")
    assert "spectral_norm" in renamed.message
    report.plan.apply(model)
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(model[0](x), source[0](x), atol=1e-6)


def test_a_lone_v_is_not_taken_for_either_norm(tmp_path):
    # weight_v alone (no g, no orig/u): neither naming's complete set, so no rename
    torch.save({"0.weight_v": torch.randn(4, 3, 3, 3), "0.bias": torch.zeros(4)},
               tmp_path / "v.pt")
    report = ck.diagnose(tmp_path / "v.pt", spectral(nn.utils.parametrizations))
    assert not any(f.kind == "rename-keys" for f in report.plan)


@pytest.mark.parametrize("style", [old_style, new_style])
def test_plain_weights_are_split_for_a_model_with_weight_norm(tmp_path, style):
    source = plain()
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    model = style(1)
    report = ck.diagnose(tmp_path / "plain.pt", model)
    assert [f.kind for f in report.plan] == ["unfold-weight-norm"]
    assert report.loadable_after_plan == 8
    assert not any(f.kind in ("missing-keys", "unexpected-keys") for f in report.findings)
    report.plan.apply(model)
    x = torch.randn(1, 3, 9)
    assert torch.allclose(model(x), source(x), atol=1e-6)
