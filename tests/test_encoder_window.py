"""The encoder's two window conventions: "padded" (Whisper's 30 s window) is exactly transformers'
WhisperEncoder; "clip" reads the real audio + CLIP_PAD_S of the same features; the two never share
cached states."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tone
from lsl_core.errors import AudioError, ManifestError
from lsl_core.model import batch as B
from lsl_core.model.encoder import CLIP_PAD_S, SpeechEncoder


@pytest.fixture(scope="module")
def encoders(tiny_parts):
    load = lambda w: SpeechEncoder.from_pretrained(tiny_parts["encoder"], dtype=torch.float32, device="cpu", window=w)  # noqa: E731
    return load("padded"), load("clip")


def test_padded_window_is_exactly_the_transformers_encoder(encoders):
    padded, _ = encoders
    feats = padded.features(tone(2.0))  # [1, 80, 3000]
    with torch.no_grad():
        ref = padded.encoder(feats).last_hidden_state  # transformers' own forward
        got = padded.forward(feats)
    assert torch.equal(got, ref)


def test_clip_window_reads_the_real_audio_plus_the_pad(encoders):
    padded, clip = encoders
    audio = tone(1.3)  # 20800 samples -> 65 frames of 20 ms
    n = math.ceil(audio.size / 320)
    assert clip.input_frames(audio.size) == 2 * (n + round(CLIP_PAD_S / 0.02)) and padded.input_frames(audio.size) == 3000
    a, b = padded.encode(audio), clip.encode(audio)
    assert a.shape == b.shape == (n, padded.output_dim)
    assert not torch.allclose(a, b)  # attention over 30 s vs over the clip: a different convention
    feats = clip.features(audio)[..., : clip.input_frames(audio.size)]
    with torch.no_grad():  # by hand: the same layers with the first M/2 positional embeddings
        enc = clip.encoder
        x = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(feats)))).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, None)
        want = enc.layer_norm(x)[0, :n]
    torch.testing.assert_close(b, want, rtol=0, atol=0)
    # a 30 s clip has no room for padding: both windows read the whole window
    assert clip.input_frames(16_000 * 30) == 3000


def test_odd_or_oversized_inputs_are_refused(encoders):
    padded, _ = encoders
    with pytest.raises(AudioError, match="even M"):
        padded.forward(torch.zeros(1, 80, 301))
    with pytest.raises(AudioError, match="even M"):
        padded.forward(torch.zeros(1, 80, 3002))


def test_cached_states_are_keyed_by_window(encoders, tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path))
    padded, clip = encoders
    audio = tone(1.0)
    a = B.cached_encoder_states(padded, "g", "c1", lambda: audio)
    b = B.cached_encoder_states(clip, "g", "c1", lambda: audio)
    assert torch.equal(a, padded.encode(audio).half()) and torch.equal(b, clip.encode(audio).half())


def test_manifest_names_the_window(tiny_parts):
    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    m = CheckpointManifest(name="t", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]), strategy="none",
                           encoder_window="clip")
    assert load_checkpoint(m, device="cpu").encoder.window == "clip"
    assert CheckpointManifest(name="t", llm="x", encoder="y", strategy="none").encoder_window == "padded"
    with pytest.raises(ManifestError, match="'encoder_window'"):
        CheckpointManifest(name="t", llm="x", encoder="y", strategy="none", encoder_window="30s")


@pytest.mark.parametrize("seconds", [0.0001, 0.01, 0.14, 1.3, 3.0011, 12.0, 28.9, 29.6, 30.0])
def test_clip_features_cut_before_the_stft_equal_the_30s_features(encoders, seconds):
    """features(a, M) skips the STFT of the padding past the M frames the "clip" window reads: its frames must be
    those of the 30 s window, bit for bit, for a tone, noise, a clip of zeros, and lengths up to the full window."""
    import numpy as np

    _, clip = encoders
    n = max(1, round(seconds * 16_000))
    rng = np.random.default_rng(n)
    for audio in (tone(seconds)[:n] if seconds >= 0.01 else np.ones(n, np.float32) * 0.1,
                  (rng.standard_normal(n) * 0.05).astype(np.float32), np.zeros(n, np.float32)):
        m = clip.input_frames(audio.size)
        cut = clip.features(audio, m)
        assert cut.shape == (1, 80, m)
        assert torch.equal(cut, clip.features(audio)[..., :m])
    assert clip.features(audio, 3000).shape == (1, 80, 3000)


@pytest.mark.parametrize("window", ["clip", "padded"])
def test_clips_of_one_length_encoded_together_equal_one_by_one(encoders, window):
    """encode_inputs_batch: clips of one window and one input length go through the encoder together (at most
    `batch` at a time), others alone; every clip's states equal encode_inputs of it alone to float32 rounding (a
    batch of rows may take other matmul blocking: 1 ulp apart on this CPU, for the tiny encoder)."""
    import numpy as np

    enc = encoders[1] if window == "clip" else encoders[0]
    rng = np.random.default_rng(0)
    lengths = [8000, 12000, 8000, 8000, 31 * 16_000, 12000, 8000, 4000]  # three lengths repeat; one spans 2 windows
    clips = [(rng.standard_normal(n) * 0.05).astype(np.float32) for n in lengths]
    inputs = [enc.inputs(a) for a in clips]
    calls = []
    forward = enc.forward

    def spy(features):
        calls.append(features.shape[0])
        return forward(features)

    enc.forward = spy
    try:
        together = enc.encode_inputs_batch(inputs, batch=3)
    finally:
        del enc.forward
    alone = [enc.encode_inputs(x) for x in inputs]
    for a, b in zip(together, alone):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [t.shape[0] for t in together] == [enc.n_valid_frames(n) if n <= 480_000 else t.shape[0]
                                              for n, t in zip(lengths, together)]
    if window == "clip":  # 4 clips of 8000 samples in batches of 3: 3 + 1; 2 of 12000; 1 of 4000; the long one: 2
        assert sorted(calls) == [1, 1, 1, 1, 2, 3]
    else:  # every 30 s window has the same length: the 7 short clips together in batches of 3, the long one alone
        assert sorted(calls) == [1, 1, 1, 3, 3]


@pytest.mark.parametrize("window", ["clip", "padded"])
def test_the_encoders_cpu_half_gives_its_inputs_after_a_pickle(encoders, window):
    """SpeechEncoder.cpu_half: no weights, survives pickling (a worker process gets it so), and its inputs - a clip
    of one window, of two, and of a few samples - equal the encoder's own, bit for bit, window by window."""
    import pickle

    import numpy as np

    enc = encoders[1] if window == "clip" else encoders[0]
    raw = pickle.dumps(enc.cpu_half())
    assert len(raw) < 16_000  # under a pipe's buffer: spawned workers start at once (EncoderInputs.__getstate__)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(pickle.loads(raw)).values())
    half = pickle.loads(raw)
    rng = np.random.default_rng(1)
    for n in (40, 3 * 16_000, 31 * 16_000):
        audio = (rng.standard_normal(n) * 0.05).astype(np.float32)
        mine, theirs = half.inputs(audio), enc.inputs(audio)
        assert len(mine) == len(theirs) == (2 if n > 480_000 else 1)
        for (f, k), (g, j) in zip(mine, theirs):
            assert f.device.type == "cpu" and f.dtype == torch.float32 and k == j and torch.equal(f, g)
