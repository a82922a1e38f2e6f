"""Review of the trainer (lsl_core/experiments/train): evaluation hygiene enforced by the config and the corpus, not
only by convention (the unseen voice in any spelling, a dev question in any spacing), config values that would train
garbage (NaN / inf, a zero LoRA alpha) or a bad device refused with one error naming the field, `--set` typed by the
field, `--time-budget` refusing NaN / inf, and bf16 autocast only where the GPU computes bf16 natively."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.experiments.train import TrainConfig


def _base(**kw) -> TrainConfig:
    return TrainConfig(**{"name": "r", "strategy": "frozen", "objective": "repeat", "device": "cpu", **kw})


# ----------------------------------------------------------------------------- evaluation hygiene
@pytest.mark.parametrize("voices, heldout", [
    (("en-gb", "en-GB-scotland"), UNSEEN_VOICE),  # espeak-ng reads voice names case-insensitively: the same voice
    (("en-gb", "EN-GB-SCOTLAND+m3"), UNSEEN_VOICE),
    (("en-gb", UNSEEN_VOICE), ""),  # no held-out voice monitored: still never trained on
    (("en-gb", f"{UNSEEN_VOICE}+f2"), "en-us"),  # another voice monitored as unseen: still never trained on
], ids=["case", "case+variant", "no-heldout", "other-heldout"])
def test_the_unseen_voice_is_never_a_training_voice(voices, heldout):
    with pytest.raises(LSLError, match="'voices'|'heldout_voice'"):
        _base(voices=voices, heldout_voice=heldout)
    with pytest.raises(LSLError, match="'voices'|'heldout_voice'"):
        TrainConfig.from_dict({**_base().to_dict(), "voices": list(voices), "heldout_voice": heldout})


def test_the_held_out_voice_is_compared_to_the_training_voices_case_insensitively():
    with pytest.raises(LSLError, match="'heldout_voice'"):
        _base(voices=("en-gb", "en-us"), heldout_voice="EN-US")
    _base(voices=("en-gb", "en-us"), heldout_voice=UNSEEN_VOICE)  # the shipped arrangement stays valid


def test_a_test_question_that_is_a_dev_question_up_to_spacing_or_case_is_never_trained_on(monkeypatch):
    """The loader drops test questions whose stripped lower-cased text is a dev question's; a copy that differs
    only in inner spacing or punctuation spacing is spoken identically, so the corpus drops it too."""
    import lsl_core.data.sdqa as S
    from lsl_core.experiments.train.corpus import split_questions

    dev = [S.SDQAQuestion("d1", "What is the capital of France?", ("Paris",), "dev"),
           S.SDQAQuestion("d2", "Who wrote Hamlet?", ("Shakespeare",), "dev")]
    train = [S.SDQAQuestion(f"t{i}", f"Which planet is number {i}?", (), "test") for i in range(6)]
    train += [S.SDQAQuestion("t-dup1", "What is  the capital of   France?", (), "test"),
              S.SDQAQuestion("t-dup2", "who wrote hamlet ?", (), "test")]
    monkeypatch.setattr(S, "load_sdqa_dev", lambda: list(dev))
    monkeypatch.setattr(S, "load_sdqa_train_questions", lambda: list(train))
    for seed in range(4):
        trained, monitored = split_questions(_base(n_val_questions=1, seed=seed))
        ids = {q.example_id for q in trained}
        assert not ids & {"t-dup1", "t-dup2"}, seed
        assert len(trained) + len(monitored) >= 6


# ----------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("field, value", [
    ("grad_clip", math.nan), ("weight_decay", math.inf), ("ctc_norm_weight", math.nan), ("lr", math.inf),
    ("llm_lr", math.inf), ("distill_weight", math.inf), ("ctc_temperature", math.inf),
    ("align_temperature", math.inf), ("lora_alpha", 0), ("lora_alpha", -4),
])
def test_values_that_would_train_garbage_are_one_error_naming_the_field(field, value):
    with pytest.raises(LSLError, match=f"'{field}'"):
        TrainConfig(**{"strategy": "lora", "device": "cpu", field: value})


def test_nan_in_a_config_file_is_one_error_naming_the_field(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({**_base().to_dict(), "grad_clip": math.nan}))  # json writes NaN, and reads it back
    with pytest.raises(LSLError, match="'grad_clip'"):
        TrainConfig.from_json(p)


def test_a_device_torch_does_not_know_is_one_error_naming_the_field(monkeypatch):
    from lsl_core.experiments.train import resolve_device

    for spec in ("gpu", "cuda:x", ""):
        with pytest.raises(LSLError, match="device"):
            resolve_device(spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LSLError, match="device"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device("cpu") == torch.device("cpu")


# ----------------------------------------------------------------------------- the CLI
def test_set_overrides_are_typed_by_the_field(tmp_path, monkeypatch):
    """A string field takes the text as written ("--set name=2024", "--set family=true"); other fields read JSON."""
    import lsl_core.experiments.train as T
    from lsl_core.cli import main

    got = {}
    monkeypatch.setattr(T, "train", lambda cfg, **kw: got.setdefault("cfg", cfg))
    path = tmp_path / "stage.json"
    path.write_text(json.dumps(_base(init="some/checkpoint").to_dict()))
    assert main(["train", "--config", str(path), "--set", "name=2024", "--set", "family=true", "--set", "init=null",
                 "--set", "steps=3", "--set", "lr=1e-3", "--set", 'voices=["en-us"]', "--set", 'repeat_system="x"',
                 "--no-progress"]) == 0
    cfg = got["cfg"]
    assert (cfg.name, cfg.family, cfg.init, cfg.steps, cfg.lr, cfg.voices, cfg.repeat_system) == \
        ("2024", "true", None, 3, 1e-3, ("en-us",), "x")


@pytest.mark.parametrize("budget", [math.nan, math.inf, 0.0, -5.0])
def test_a_time_budget_must_be_a_finite_positive_number(budget, monkeypatch):
    """nan or inf would fit the step count to nothing (every comparison with them fails): the run would train only
    the measuring steps; refused before the model is built."""
    import lsl_core.experiments.train as T

    def built(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(T, "build_model", built)
    with pytest.raises(LSLError, match="--time-budget"):
        T.train(_base(), time_budget=budget, progress=False)


# ----------------------------------------------------------------------------- autocast
def test_bf16_autocast_is_native_only_on_gpus_that_compute_it_the_trainers_own(monkeypatch):
    """torch.cuda.is_bf16_supported() also says True where bf16 is only emulated (compute capability < 8: T4, V100),
    and it asks about the current device, not the trainer's."""
    from lsl_core.experiments.train.trainer import bf16_native

    caps = {0: (7, 5), 1: (9, 0)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    index = lambda device: device if isinstance(device, int) else torch.device(device).index or 0  # noqa: E731
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: caps[index(device)])
    monkeypatch.setattr(torch.version, "hip", None)
    assert bf16_native(torch.device("cuda:0")) is False  # emulated there
    assert bf16_native(torch.device("cuda:1")) is True


# ----------------------------------------------------------------------------- averaging
@pytest.mark.parametrize("weights", [[math.nan, 1.0], [math.inf, 1.0], [1.0, -math.inf]])
def test_average_refuses_weights_that_are_not_finite(tmp_path, weights):
    """A NaN weight passes `sum <= 0` and `x < 0`; inf normalises to NaN: either writes a checkpoint of NaNs."""
    from safetensors.torch import save_file

    from lsl_core.experiments.train.average import average_checkpoints
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        save_file({"fc1.weight": torch.ones(2, 2)}, str(folder / "adaptor.safetensors"))
        write_manifest(CheckpointManifest(name=name, llm="some-llm", encoder="some-encoder", family="f",
                                          strategy="frozen", adaptor="adaptor.safetensors"), folder)
        folders.append(folder)
    with pytest.raises(LSLError, match="weight"):
        average_checkpoints(folders, tmp_path / "avg", weights=weights, extrapolate=True)
    assert not (tmp_path / "avg").exists()


# ----------------------------------------------------------------------------- resume
def test_a_fresh_run_leaves_no_stale_resume_state_behind(tiny_parts, tmp_path, monkeypatch):
    """A fresh run rewrites the trajectory's log; the resume state of an earlier run of the same config must not
    outlive it: after a hard kill (no Ctrl-C, no state saved) of the fresh run, --resume used to continue from the
    earlier run's last state, with the log of every step before it gone."""
    from test_train import _cfg, _trainer

    from lsl_core.experiments.train import Trainer

    cfg = _cfg(tiny_parts, tmp_path, "frozen", objective="repeat", steps=4, save_every=2)
    _trainer(cfg).run()  # an earlier, finished run: resume state at step 4
    step = Trainer.train_step

    def killed(self):
        if self.step == 1:
            raise RuntimeError("killed")  # as a SIGKILL / out-of-memory / a lease ending: nothing saved
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", killed)
    with pytest.raises(RuntimeError, match="killed"):
        _trainer(cfg).run()
    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(LSLError, match="No resume state"):
        _trainer(cfg).run(resume=True)


@pytest.mark.parametrize("field, value", [("vocab_sentences", 100), ("written_questions", 50)])
def test_a_dose_stage_speaks_no_other_generated_text(field, value):
    """vocab_doses promises that every new word of a dose-d group is spoken in exactly d clips and the control words
    in none; word sequences draw from the same word tokens and written questions are free text, so either would
    speak control words (and dose words more often) without a word: one error naming the field."""
    with pytest.raises(LSLError, match=f"'{field}'"):
        _base(vocab_doses=(3, 10), **{field: value})
    _base(vocab_doses=(3, 10))  # alone, as the shipped dose configs


def test_a_negative_seed_is_one_error_naming_the_field():
    """The question split draws numpy's default_rng(seed), which refuses a negative seed with a bare ValueError
    once the model and data are being prepared."""
    with pytest.raises(LSLError, match="'seed'"):
        _base(seed=-1)


@pytest.mark.parametrize("left", ["tmp", "old"])
def test_resume_recovers_a_state_left_between_the_two_renames(tiny_parts, tmp_path, left):
    """save_resume renames the state to resume.old, then resume.tmp to resume: a kill between the two left no
    resume folder, and --resume said there was no state although a complete one was on disk."""
    import os

    from test_train import _cfg, _trainer

    cfg = _cfg(tiny_parts, tmp_path, "frozen", objective="repeat", steps=4, save_every=2)
    t = _trainer(cfg)
    t.run(until=2)
    d = t.resume_dir
    os.replace(d, d.with_name(d.name + "." + left))  # as if killed between the renames
    again = _trainer(cfg)
    again.run(resume=True)
    assert again.step == 4 and (d / "state.json").is_file()


def test_an_average_says_the_dtype_its_tensors_have(tmp_path):
    """mean_state returns the first checkpoint's dtypes; the manifest took weights_dtype from the last one."""
    from safetensors.torch import load_file, save_file

    from lsl_core.experiments.train.average import average_checkpoints
    from lsl_core.model.loading import CheckpointManifest, read_manifest, write_manifest

    folders = []
    for name, dtype, label in (("a", torch.float16, "float16"), ("b", torch.float32, "float32")):
        folder = tmp_path / name
        folder.mkdir()
        save_file({"fc1.weight": torch.ones(2, 2, dtype=dtype)}, str(folder / "adaptor.safetensors"))
        write_manifest(CheckpointManifest(name=name, llm="some-llm", encoder="some-encoder", family="f",
                                          strategy="frozen", adaptor="adaptor.safetensors",
                                          extra={"weights_dtype": label}), folder)
        folders.append(folder)
    average_checkpoints(folders, tmp_path / "avg", name="avg")
    m = read_manifest(tmp_path / "avg" / "avg")
    assert load_file(str(m.path(m.adaptor)))["fc1.weight"].dtype == torch.float16
    assert m.extra["weights_dtype"] == "float16"


def test_resume_without_a_state_and_two_exclusive_modes_are_refused_before_any_work(tiny_parts, tmp_path,
                                                                                    monkeypatch):
    """--resume with nothing saved was refused only after the data were synthesized and the model built (minutes
    on a CPU); --prepare-only with --monitor-only silently did the first."""
    import lsl_core.experiments.train as T
    from test_train import _cfg

    monkeypatch.setattr(T, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    cfg = _cfg(tiny_parts, tmp_path, "frozen", objective="repeat", steps=4, save_every=2)
    with pytest.raises(LSLError, match="No resume state"):
        T.train(cfg, resume=True, resume_dir=tmp_path / "nothing-here", progress=False)
    with pytest.raises(LSLError, match="prepare-only.*monitor-only"):
        T.train(cfg, prepare_only=True, monitor_only=True, progress=False)
