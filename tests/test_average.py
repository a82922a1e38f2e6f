"""Checkpoint averaging on tiny trained checkpoints: the averaged checkpoint loads through its manifest and its
adaptor parameters and its LLM weights with the LoRA merged in are the weighted means of the sources' (also for
LoRAs of other ranks and alphas, and with an adaptor-only checkpoint, whose LLM is the base); weights (1, 0) give
the first checkpoint; an adaptor a LoRA stage points at (init's file) is found; mismatches are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lsl_core.cli import main as cli_main
from lsl_core.errors import LSLError
from lsl_core.experiments.train.average import average_checkpoints, mean_lora
from lsl_core.model.loading import load_checkpoint, read_manifest
from test_train import _cfg, _trainer


def _params(folder, merge_lora: bool = False) -> dict[str, torch.Tensor]:
    """The adaptor's parameters of a checkpoint as loaded, and the LLM's: its LoRA factors (merge_lora False) or
    every weight with the LoRA merged in (True)."""
    m = load_checkpoint(folder, device="cpu", merge_lora=merge_lora)
    out = {f"adaptor.{k}": v for k, v in m.adaptor.state_dict().items()}
    out.update({f"llm.{k}": v for k, v in m.llm.state_dict().items() if merge_lora or "lora_" in k})
    return out


@pytest.fixture(scope="module")
def lora_run(tiny_parts, tmp_path_factory):
    cfg = _cfg(tiny_parts, tmp_path_factory.mktemp("avg"), "lora", steps=4, save_every=2)
    return _trainer(cfg).run()


def test_the_average_is_the_weighted_mean_of_the_loaded_weights(lora_run, tmp_path):
    """Adaptor: the mean of the parameters; LLM: the mean of the weights with each LoRA merged in (the LoRA's
    factors differ between the runs, so a mean of the factors would not give it)."""
    a, b = lora_run
    folder = average_checkpoints([a, b], tmp_path, weights=[1, 3])
    m = read_manifest(folder)
    assert folder.name == "lora-step0004-avg2" and m.strategy == "lora" and m.step == 4
    assert [(s["name"], s["weight"]) for s in m.extra["averaged_from"]] == [("lora-step0002", 0.25),
                                                                              ("lora-step0004", 0.75)]
    assert json.loads((folder / "lora" / "adapter_config.json").read_text())["r"] == 2 * 8
    factors = _params(a), _params(b)
    assert any(not torch.equal(factors[0][k], factors[1][k]) for k in factors[0] if "lora_A" in k)
    assert any(not torch.equal(factors[0][k], factors[1][k]) for k in factors[0] if "adaptor." in k)
    pa, pb, avg = _params(a, True), _params(b, True), _params(folder, True)
    assert sorted(avg) == sorted(pa) and not any("lora_" in k for k in avg)
    moved = [k for k in avg if k.startswith("llm.") and not torch.equal(pa[k], pb[k])]
    assert moved and all("_proj" in k for k in moved)  # the LoRA's target modules
    for k, v in avg.items():
        torch.testing.assert_close(v, 0.25 * pa[k] + 0.75 * pb[k], rtol=1e-5, atol=1e-6, msg=k)
    ids = load_checkpoint(folder, device="cpu").embed_text("what is the capital of france ?")
    assert ids.embeds.ndim == 2  # it runs


def test_weights_one_and_zero_give_the_first_checkpoint(lora_run, tmp_path):
    a, b = lora_run
    pa, first = _params(a, True), _params(average_checkpoints([a, b], tmp_path, name="first", weights=[1, 0]), True)
    assert all(torch.equal(first[k], pa[k]) for k in pa if k.startswith("adaptor."))
    for k in pa:
        torch.testing.assert_close(first[k], pa[k], rtol=1e-6, atol=1e-7, msg=k)


def test_an_adaptor_kept_from_init_is_found_through_the_manifest(tiny_parts, tmp_path):
    s1 = _cfg(tiny_parts, tmp_path, "frozen", name="align", objective="repeat", steps=2, save_every=2)
    init = _trainer(s1).run()[-1]
    s2 = _cfg(tiny_parts, tmp_path, "lora", name="qa", steps=4, save_every=2, init=str(init), train_adaptor=False)
    a, b = _trainer(s2).run()
    assert read_manifest(a).adaptor != "adaptor.safetensors"  # a path to init's file
    avg = _params(average_checkpoints([a, b], tmp_path / "out"))
    pinit = _params(init)
    assert all(torch.equal(avg[k], pinit[k]) for k in pinit)  # the same adaptor twice: itself


def test_mismatches_and_bad_weights_are_refused(lora_run, tiny_parts, tmp_path, capsys):
    a, b = lora_run
    with pytest.raises(LSLError, match="at least two"):
        average_checkpoints([a], tmp_path)
    for bad in ([1], [1, -1], [0, 0]):
        with pytest.raises(LSLError, match="one weight per checkpoint, >= 0"):
            average_checkpoints([a, b], tmp_path, weights=bad)
    frozen = _trainer(_cfg(tiny_parts, tmp_path, "frozen", steps=2, save_every=2, downsample=2)).run()[-1]
    with pytest.raises(LSLError, match=r"differ in \['downsample'\]"):
        average_checkpoints([frozen, b], tmp_path)
    scoped = tmp_path / "scoped"  # a LoRA acting on the speech positions only
    shutil.copytree(b, scoped)
    m = json.loads((scoped / "manifest.json").read_text())
    (scoped / "manifest.json").write_text(json.dumps({**m, "lora_scope": "speech"}))
    with pytest.raises(LSLError, match="other positions"):
        average_checkpoints([a, scoped], tmp_path)
    other = tmp_path / "other"  # the same LoRA config, its target modules in another order (as peft may write it)
    shutil.copytree(b, other)
    path = other / "lora" / "adapter_config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "target_modules": sorted(cfg["target_modules"], reverse=True)}))
    average_checkpoints([a, other], tmp_path / "reordered")
    assert cli_main(["average", "--checkpoint", str(b), "--checkpoint", str(other), "--out", str(tmp_path / "p")]) == 0
    assert f"{other.resolve()} × 0.5" in capsys.readouterr().out  # one name twice: the paths tell them apart
    path.write_text(json.dumps({**cfg, "target_modules": ["q_proj"], "lora_dropout": 0.3}))
    with pytest.raises(LSLError, match=r"LoRA configs differ in \['target_modules'\]"):  # dropout may differ
        average_checkpoints([a, other], tmp_path / "r")
    assert not (tmp_path / "r").exists()
    full = _trainer(_cfg(tiny_parts, tmp_path, "full", steps=2, save_every=2)).run()[-1]
    with pytest.raises(LSLError, match="only the adaptor and LoRA"):
        average_checkpoints([full, full], tmp_path)
    assert cli_main(["average", "--checkpoint", str(a), "--checkpoint", str(b), "--weights", "1,x",
                     "--out", str(tmp_path)]) == 2
    assert "--weights must be comma-separated numbers" in capsys.readouterr().err
    assert cli_main(["average", "--checkpoint", str(a), "--checkpoint", str(b), "--out", str(tmp_path / "c")]) == 0
    assert "lora-step0002 × 0.5, lora-step0004 × 0.5" in capsys.readouterr().out
    assert not list((tmp_path / "c").glob(".*"))  # no temp folder left
    average_checkpoints([a, b], tmp_path / "c", weights=[0, 1])  # an earlier average is replaced ...
    assert read_manifest(tmp_path / "c" / "lora-step0004-avg2").extra["averaged_from"][0]["weight"] == 0
    with pytest.raises(LSLError, match="exists and is not an average"):  # ... a trained checkpoint never
        average_checkpoints([a, b], b.parent, name=b.name)
    assert "averaged_from" not in read_manifest(b).extra


@pytest.mark.parametrize("rslora", [False, True])
def test_the_stacked_lora_update_is_the_weighted_mean_of_the_updates(rslora):
    """By hand: peft scales B·A by alpha / r (alpha / sqrt(r) with rslora); LoRAs of ranks 2, 3 and 1 with their
    own alphas and an adaptor-only source (no LoRA: a zero update), stacked into one LoRA of rank 6 scaled for its
    rank, give Σ w_i scale_i B_i·A_i; anything but lora_A / lora_B tensors is refused."""
    g = torch.Generator().manual_seed(0)
    ranks, alphas, w = [2, 3, None, 1], [4.0, 16.0, None, 2.0], [0.2, 0.3, 0.1, 0.4]
    key = "base_model.model.layers.0.q_proj.lora_{}.weight"
    states = [None if r is None else {key.format("A"): torch.randn(r, 5, generator=g),
                                      key.format("B"): torch.randn(7, r, generator=g)} for r in ranks]
    configs = [None if r is None else {"r": r, "lora_alpha": a, "use_rslora": rslora} for r, a in zip(ranks, alphas)]
    scale = (lambda a, n: a / n ** 0.5) if rslora else (lambda a, n: a / n)
    out, cfg = mean_lora(states, w, configs)
    assert cfg == {**configs[-1], "r": 6}
    assert out[key.format("A")].shape == (6, 5) and out[key.format("B")].shape == (7, 6)
    want = sum(wi * scale(a, r) * s[key.format("B")] @ s[key.format("A")]
               for wi, s, r, a in zip(w, states, ranks, alphas) if s is not None)
    torch.testing.assert_close(scale(cfg["lora_alpha"], 6) * out[key.format("B")] @ out[key.format("A")], want)
    have = [s for s in states if s is not None]
    with pytest.raises(LSLError, match="neither a lora_A nor a lora_B"):
        mean_lora([{**s, "x.lora_magnitude_vector": torch.ones(7)} for s in have], w[:3], configs[:2] + configs[3:])
    with pytest.raises(LSLError, match="DoRA"):
        mean_lora(have, w[:3], [{"r": 2, "use_dora": True}] * 3)
    with pytest.raises(LSLError, match="other tensors"):  # another input size is not a rank
        mean_lora([have[0], {key.format("A"): torch.randn(2, 6), key.format("B"): torch.randn(7, 2)}], [0.5, 0.5],
                  configs[:2])
    with pytest.raises(LSLError, match="no LoRA"):
        mean_lora([None, None], [0.5, 0.5], [None, None])


def test_loras_of_other_ranks_and_an_adaptor_only_checkpoint_average_to_the_mean_weights(lora_run, tiny_parts,
                                                                                          tmp_path):
    """A rank-4 LoRA with its own alpha averages with the rank-8 run; the adaptor-only checkpoint a LoRA stage
    started from averages with it (WiSE-FT): its LLM is the base, so the average's merged weights are the base
    plus the weighted LoRA update, and its adaptor the mean of the two; with negative weights (extrapolation) the
same linear combination."""
    a, b = lora_run
    c = _trainer(_cfg(tiny_parts, tmp_path, "lora", name="r4", steps=2, save_every=2, lora_r=4, lora_alpha=8)).run()[-1]
    pb, pc = _params(b, True), _params(c, True)
    mixed = average_checkpoints([b, c], tmp_path / "mixed", weights=[2, 1])
    assert json.loads((mixed / "lora" / "adapter_config.json").read_text())["r"] == 12
    for k, v in _params(mixed, True).items():
        torch.testing.assert_close(v, (2 * pb[k] + pc[k]) / 3, rtol=1e-5, atol=1e-6, msg=k)

    s1 = _cfg(tiny_parts, tmp_path, "frozen", name="align", objective="repeat", steps=2, save_every=2)
    init = _trainer(s1).run()[-1]
    qa = _trainer(_cfg(tiny_parts, tmp_path, "lora", name="qa", steps=2, save_every=2, init=str(init))).run()[-1]
    wise = average_checkpoints([init, qa], tmp_path / "wise", weights=[3, 1])
    m = read_manifest(wise)
    assert (m.strategy, m.lora, m.step) == ("lora", "lora", qa_step := read_manifest(qa).step) and qa_step > 0
    pi, pq, pw = _params(init, True), _params(qa, True), _params(wise, True)
    assert sorted(pw) == sorted(pq) and any(not torch.equal(pi[k], pq[k]) for k in pi if k.startswith("adaptor."))
    for k, v in pw.items():
        torch.testing.assert_close(v, 0.75 * pi[k] + 0.25 * pq[k], rtol=1e-5, atol=1e-6, msg=k)
    base = _params(average_checkpoints([qa, init], tmp_path / "base", weights=[0, 1]), True)
    assert all(torch.equal(base[k], pi[k]) for k in pi if k.startswith("llm."))  # a zero update: the base
    past = _params(average_checkpoints([init, qa], tmp_path / "past", weights=[-0.5, 1.5], extrapolate=True), True)
    for k, v in past.items():  # half again past the stage's end
        torch.testing.assert_close(v, 1.5 * pq[k] - 0.5 * pi[k], rtol=1e-5, atol=1e-6, msg=k)
    with pytest.raises(LSLError, match="negative ones need --extrapolate"):
        average_checkpoints([init, qa], tmp_path / "no", weights=[-0.5, 1.5])
    assert cli_main(["average", "--checkpoint", str(init), "--checkpoint", str(qa), "--weights=-0.5,1.5",
                     "--extrapolate", "--out", str(tmp_path / "cli"), "--name", "past"]) == 0
    assert all(torch.equal(v, past[k]) for k, v in _params(tmp_path / "cli" / "past", True).items())
    with pytest.raises(LSLError, match="summing to more than 0"):
        average_checkpoints([init, qa], tmp_path / "no", weights=[-1, 1], extrapolate=True)
