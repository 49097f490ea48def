"""The optimizer check reads the saved param groups wherever the optimizer state sits."""

from __future__ import annotations

import torch
from torch import nn

import ckwidget as ck


def lightning_file(tmp_path, net: nn.Module, opt: torch.optim.Optimizer):
    net(torch.randn(1, 2)).sum().backward()
    opt.step()
    path = tmp_path / "pl.ckpt"
    torch.save({"state_dict": net.state_dict(), "optimizer_states": [opt.state_dict()],
                "epoch": 2, "pytorch-lightning_version": "2.4.0"}, path)
    return path


def test_lightning_optimizer_groups_are_found(tmp_path):
    net = nn.Linear(2, 2)
    path = lightning_file(tmp_path, net, torch.optim.Adam(net.parameters()))
    fresh = nn.Linear(2, 2)
    report = ck.diagnose(path, fresh, optimizer=torch.optim.Adam(fresh.parameters()))
    finding = report.finding("optimizer")
    assert finding.severity == "info" and "groups [2]" in finding.message
    assert "?" not in finding.message


def test_lightning_optimizer_with_other_groups_is_refused(tmp_path):
    net = nn.Linear(2, 2)
    path = lightning_file(tmp_path, net, torch.optim.Adam(net.parameters()))
    fresh = nn.Linear(2, 2)
    split = torch.optim.Adam([{"params": [fresh.weight]}, {"params": [fresh.bias]}])
    report = ck.diagnose(path, fresh, optimizer=split)
    finding = report.finding("optimizer")
    assert finding.severity == "error"
    assert "[2]" in finding.message and "[1, 1]" in finding.message
    saved = torch.load(path, weights_only=True)["optimizer_states"][0]
    try:  # the finding's claim, checked against torch itself
        split.load_state_dict(saved)
    except ValueError:
        pass
    else:
        raise AssertionError("torch accepted the groups the finding says it refuses")


def test_training_heads_found_in_joined_keys_match_a_split_per_key():
    import random

    from ckwidget.diagnosis.checks.training import TRAINING_ENTRIES, _training_heads
    from ckwidget.keytemplates import join_lines

    words = ["optimizer", "optimizer_states", "epoch", "best_model", "model", "step", "steps",
             "amp", "x", "best_", "scheduler", "lr_schedulers", "callbacks", "a\nepoch"]
    rng = random.Random(2)
    for _ in range(3000):
        keys = [".".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
                for _ in range(rng.randint(0, 6))]
        heads = dict.fromkeys(k.partition(".")[0] for k in keys)
        want = [h for h in heads if TRAINING_ENTRIES.match(h)]
        assert _training_heads(keys, join_lines(keys)) == want, keys


def test_saved_state_with_joined_keys_matches_the_key_by_key_search():
    from ckwidget.diagnosis.checks.training import saved_state
    from ckwidget.keytemplates import join_lines

    cases = [["optimizer.state.0.exp_avg", "optimizer.state.0.step", "model.w"],
             ["model.w", "model.state.weight"], ["a.state.0.x\n", "optimizer.state.1.v"],
             ["w"], []]
    for keys in cases:
        infos = dict.fromkeys(keys)
        assert saved_state(infos, join_lines(keys)) == saved_state(infos), keys
