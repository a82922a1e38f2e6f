"""CKA stability across configurations: each configuration's matrix against the slow reference, the
summary's numbers by hand, a set where the configurations agree and one where they do not, and the
streamed pipeline on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_metrics import (
    cosine,
    distance,
    ref_cross_layer_cka,
    ref_dtw_path,
    ref_linear_cka,
    ref_mean_pool,
    ref_path,
    ref_token_matrix,
)

from lsl_core.errors import MetricInputError
from lsl_core.metrics.stability import (
    CKAConfig,
    StabilityAccumulator,
    aligned_cka_matrices,
    band_agreement,
    band_location,
    default_configs,
    matrix_correlation,
    stability_summary,
)


def _sample(seed: int, n_layers: int = 3, ts: int = 9, tt: int = 5, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers, ts, d, generator=g), torch.randn(n_layers, tt, d, generator=g)


def _ref_aligned(hs, ht, c: CKAConfig) -> list[list[float]]:
    """The reference path of the config (reference token matrix on the same float32 numbers), then CKA."""
    from lsl_core.metrics.tokenwise import token_cosine_matrix, token_distance_matrix

    A = (token_cosine_matrix if c.metric == "cosine" else token_distance_matrix)(hs, ht).double().tolist()
    paths = ref_dtw_path(A, c.metric) if c.path == "dtw" else ref_path(A, c.metric)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    L = len(hs_l) - 1
    if c.path_layer == "own":
        return [ref_cross_layer_cka(hs_l, ht_l, paths[a])[a] for a in range(L + 1)]
    layer = L // 2 if c.path_layer == "middle" else min(c.path_layer, L)
    return ref_cross_layer_cka(hs_l, ht_l, paths[layer])


def test_every_aligned_config_matches_the_reference():
    hs, ht = _sample(1)
    configs = [c for c in default_configs(2) if c.variant == "aligned"] + [CKAConfig(path="dtw", path_layer=0)]
    got = aligned_cka_matrices(hs, ht, configs)
    assert set(got) == {c.label() for c in configs}
    for c in configs:
        np.testing.assert_allclose(got[c.label()].numpy(), _ref_aligned(hs, ht, c), rtol=1e-9, atol=1e-9)
    # the reference paths come from the fast float32 matrices; those equal the reference matrices
    for metric, f in (("cosine", cosine), ("distance", distance)):
        A = ref_token_matrix(hs.double().tolist(), ht.double().tolist(), f)
        from lsl_core.metrics.tokenwise import token_cosine_matrix, token_distance_matrix

        fast = (token_cosine_matrix if metric == "cosine" else token_distance_matrix)(hs, ht)
        np.testing.assert_allclose(fast.double().numpy(), A, rtol=1e-5, atol=1e-5)


def test_accumulator_means_aligned_and_pools_across_samples():
    samples = [_sample(10 + k, ts=7 + k, tt=4 + k % 3) for k in range(5)]
    configs = [CKAConfig(), CKAConfig(path="dtw", metric="distance"), CKAConfig(variant="pooled")]
    acc = StabilityAccumulator(configs)
    for k, (hs, ht) in enumerate(samples):
        acc.update(hs, ht, f"s{k}")
    got = acc.matrices()
    for c in configs[:2]:
        expected = np.mean([_ref_aligned(hs, ht, c) for hs, ht in samples], axis=0)
        np.testing.assert_allclose(got[c.label()], expected, rtol=1e-9, atol=1e-9)
    pooled_s = [ref_mean_pool(hs.double().tolist()) for hs, _ in samples]  # [N][L+1][d]
    pooled_t = [ref_mean_pool(ht.double().tolist()) for _, ht in samples]
    expected = [[ref_linear_cka([p[a] for p in pooled_s], [p[b] for p in pooled_t]) for b in range(3)]
                for a in range(3)]
    np.testing.assert_allclose(got["pooled (unaligned)"], expected, rtol=1e-7, atol=1e-9)
    assert acc.n_samples == 5 and not acc.notes


def test_short_questions_and_small_sets_are_reported_not_nan():
    acc = StabilityAccumulator([CKAConfig(), CKAConfig(variant="pooled")])
    acc.update(*_sample(1, tt=3), "three-tokens")
    acc.update(*_sample(2, tt=5), "five-tokens")
    got = acc.matrices()
    assert got["pooled (unaligned)"] is None
    np.testing.assert_allclose(got[CKAConfig().label()], _ref_aligned(*_sample(2, tt=5), CKAConfig()), atol=1e-9)
    assert any(n.startswith("three-tokens") and "4" in n for n in acc.notes)
    assert any("pooled CKA needs at least 4 samples" in n for n in acc.notes)


def test_summary_hand_case():
    M = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.1, 0.5, 0.6]])
    same_shape = 2 * M + 1  # r = 1, same band
    flipped = M[:, ::-1]  # band mirrored
    s = stability_summary({"ref": M, "affine": same_shape, "flipped": flipped, "undefined": None})
    assert s.labels == ("ref", "affine", "flipped") and s.missing == ("undefined",) and s.reference == "ref"
    assert s.correlation[0, 1] == pytest.approx(1.0)
    assert s.band.tolist() == [[0, 1, 2], [0, 1, 2], [2, 1, 0]]
    assert s.band_agreement.tolist() == [1.0, 1.0, pytest.approx(1 / 3)]  # |2-0|, |1-1|, |0-2| with tolerance 1
    assert s.band_shift.tolist() == [0.0, 0.0, pytest.approx(4 / 3)]
    x, y = M.ravel(), flipped.ravel()
    assert s.correlation[0, 2] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert stability_summary({"ref": M, "flipped": flipped}, tolerance=2).band_agreement.tolist() == [1.0, 1.0]
    table = s.table()
    assert table["configuration"].tolist() == ["ref", "affine", "flipped"]
    assert table["r_with_reference"].iloc[1] == pytest.approx(1.0)
    assert stability_summary({"a": M, "b": flipped}, reference="b").labels == ("b", "a")


def test_conventions_and_errors():
    assert matrix_correlation(np.ones((3, 3)), np.eye(3)) == 0.0  # constant: defined 0, not NaN
    assert band_location(np.array([[0.5, 0.5], [0.1, 0.2]])).tolist() == [0, 1]  # ties -> lowest layer
    # bands [0, 1, 2] vs [0, 2, 0]: same at 1 of 3 layers, within one layer at 2 of 3
    other = np.array([[0.9, 0.1, 0.0], [0.0, 0.1, 0.9], [0.9, 0.0, 0.1]])
    assert band_agreement(np.eye(3), other) == pytest.approx(1 / 3)
    assert band_agreement(np.eye(3), other, tolerance=1) == pytest.approx(2 / 3)
    with pytest.raises(MetricInputError, match="shape"):
        band_agreement(np.eye(3), np.eye(4))
    with pytest.raises(MetricInputError, match="shape"):
        matrix_correlation(np.eye(3), np.eye(4))
    with pytest.raises(MetricInputError, match="No configuration"):
        stability_summary({"a": None})
    with pytest.raises(MetricInputError, match="Reference"):
        stability_summary({"a": np.eye(2)}, reference="b")
    with pytest.raises(MetricInputError, match="repeat"):
        StabilityAccumulator([CKAConfig(), CKAConfig()])
    with pytest.raises(ValueError, match="CKAConfig.path_layer"):
        CKAConfig(path_layer=-1)
    with pytest.raises(ValueError, match="CKAConfig.variant"):
        CKAConfig(variant="mean")  # type: ignore[arg-type]
    assert default_configs(30)[0] == CKAConfig() and len({c.label() for c in default_configs(30)}) == 9


def _speech_from_text(ht: torch.Tensor, durations: list[int], g: torch.Generator, noise: float) -> torch.Tensor:
    """Each token j spoken for durations[j] frames, every frame a noisy copy of its token's state."""
    parts = [ht[:, j : j + 1].expand(-1, n, -1) for j, n in enumerate(durations)]
    hs = torch.cat(parts, dim=1)
    return hs + noise * torch.randn(hs.shape, generator=g)


def test_configurations_agree_when_speech_is_the_text_and_disagree_when_it_is_noise():
    g = torch.Generator().manual_seed(7)
    n_layers, d = 5, 16
    mix = torch.randn(n_layers, d, d, generator=g) / d**0.5  # layers differ: each a linear image of a base
    structured, random = StabilityAccumulator(default_configs(n_layers - 1)), StabilityAccumulator(
        default_configs(n_layers - 1))
    for k in range(6):
        base = torch.randn(1, 6 + k % 2, d, generator=g)
        ht = torch.einsum("ltd,lde->lte", base.expand(n_layers, -1, -1), mix + torch.eye(d))  # [L+1, Tt, d]
        durations = [2 + (j + k) % 3 for j in range(ht.shape[1])]
        structured.update(_speech_from_text(ht, durations, g, 0.01), ht)
        random.update(torch.randn(n_layers, sum(durations), d, generator=g), ht)
    s = stability_summary({k: v for k, v in structured.matrices().items() if "pooled" not in k})
    assert s.correlation.min() > 0.999 and (s.band_agreement == 1.0).all()
    r = stability_summary({k: v for k, v in random.matrices().items() if "pooled" not in k})
    assert r.correlation.min() < 0.9  # paths through noise pick different frames per configuration


def test_analyze_stability_on_the_tiny_model(tiny_model):
    from conftest import tone

    from lsl_core.analysis import analyze_stability
    from lsl_core.data.samples import Sample

    qs = ["what is the capital of france ?", "who wrote hamlet ?", "when did world war two end ?",
          "how many legs does a spider have ?", "where is mount everest ?"]
    samples = [Sample(id=f"s{i}", audio=tone(0.7 + 0.2 * i, freq=180 + 40 * i), sr=16_000, question=q)
               for i, q in enumerate(qs)]
    bad = Sample(id="bad", audio=np.zeros(0, np.float32), sr=16_000, question="who wrote hamlet ?")
    seen = []
    res = analyze_stability(tiny_model, [bad, *samples], progress=lambda i, t, sid: seen.append(sid))
    L = tiny_model.num_layers
    assert res.n == 5 and seen == [s.id for s in samples] and any(e.startswith("bad:") for e in res.errors)
    assert [c.label() for c in res.configs] == [c.label() for c in default_configs(L)]
    acc = StabilityAccumulator(res.configs)
    for s in samples:
        st = tiny_model.hidden_states(s)
        acc.update(st.speech, st.text)
    for label, m in acc.matrices().items():
        np.testing.assert_allclose(res.matrices[label], m, atol=1e-12)
    assert res.summary.labels[0] == CKAConfig().label()
    assert res.summary.band.shape == (len(res.configs), L + 1)


def test_stability_command_writes_matrices_and_summary(tiny_parts, tmp_path, capsys):
    import json

    import soundfile as sf
    from conftest import tone

    from lsl_core.cli import main
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    folder = tmp_path / "clips"
    folder.mkdir()
    qs = ["what is the capital of france ?", "who wrote hamlet ?", "when did world war two end ?",
          "how many legs does a spider have ?"]
    rows = ["file,question"]
    for i, q in enumerate(qs):
        sf.write(folder / f"q{i}.wav", tone(0.8 + 0.2 * i, freq=200 + 30 * i), 16_000)
        rows.append(f"q{i}.wav,{q}")
    (folder / "questions.csv").write_text("\n".join(rows) + "\n")
    write_manifest(CheckpointManifest(name="tiny-cli", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", downsample=5, seed=1), tmp_path / "ckpt")
    out = tmp_path / "stability.json"
    assert main(["stability", "--checkpoint", str(tmp_path / "ckpt"), "--samples", f"folder:{folder}",
                 "--device", "cpu", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["n"] == 4 and data["configs"][0] == CKAConfig().label()
    assert np.asarray(data["summary"]["correlation"]).shape == (len(data["summary"]["labels"]),) * 2
    assert "r_with_reference" in capsys.readouterr().out


def test_a_path_layer_the_states_lack_is_refused_not_clamped():
    """CKAConfig(path_layer=9) on a 2-layer model was taken as layer 2 while its label said path@9."""
    assert CKAConfig(path_layer="middle").layer_index(5) == 2 and CKAConfig(path_layer=4).layer_index(5) == 4
    with pytest.raises(MetricInputError, match="layers 0..2"):
        CKAConfig(path_layer=9).layer_index(3)
