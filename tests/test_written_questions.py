"""Questions the backbone writes (training text): the keep rules on hand-made cases, seeded sampling on a
tiny model, the filter/cache loop against a scripted sampler, and their place in the training corpus
(spoken once, by the training voices in turn; nothing near a dev or monitoring question)."""

from __future__ import annotations

import re

import pytest
import torch

from lsl_core.experiments.train import written as W

POOL = ["Who wrote Hamlet?", "How tall is Mount Everest?", "When did the Berlin Wall fall?",
        "What is the largest planet?", "Who painted the Mona Lisa?", "How many legs does a spider have?"]
DEV = ["What's the capital city of Finland?", "Who discovered penicillin?"]


def test_keep_rules_on_hand_made_cases():
    known = {W.normalised(q) for q in POOL}
    banned = [W.words(q) for q in DEV]

    def v(text):
        return W.verdict(text, known, banned)

    assert v("Which river flows through Cairo?") == "kept"
    assert v("Which river flows through Cairo") == "malformed"  # not a question
    assert v("Why?") == "malformed"  # under 3 words
    assert v(" ".join(["word"] * 26) + "?") == "malformed"  # over 25 words
    assert v("Who founded São Paulo?") == "malformed"  # not ASCII
    assert v("who wrote  HAMLET?") == "repeat"  # a training question, after normalisation
    # near a dev question: {what, is, the, capital, of, finland} vs {what's, the, capital, city, of, finland} -> 4/8
    assert W.jaccard(W.words("What is the capital of Finland?"), W.words(DEV[0])) == pytest.approx(0.5)
    assert v("What is the capital of Finland?") == "near"
    assert v("What is the capital of Peru?") == "kept"  # 3/9 with the dev question
    assert v("Who discovered penicillin first?") == "near"


def test_prompt_lists_the_examples_then_opens_the_next_line():
    p = W.few_shot_prompt(POOL[:2])
    assert p == "Trivia questions:\n1. Who wrote Hamlet?\n2. How tall is Mount Everest?\n3."


def test_sampling_is_seeded_per_batch_and_gives_single_lines(tiny_model):
    prompts = W._batch_prompts(POOL, seed=0, index=0, size=3)
    assert prompts == W._batch_prompts(POOL, seed=0, index=0, size=3) != W._batch_prompts(POOL, seed=0, index=1, size=3)
    for p in prompts:  # five distinct pool questions each
        shown = re.findall(r"^\d\. (.*)$", p, flags=re.M)
        assert len(shown) == W.N_SHOT == len(set(shown)) and set(shown) <= set(POOL)
    state = torch.random.get_rng_state()
    a = W._sample_batch(tiny_model, prompts, seed=0, index=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left as it was
    assert a == W._sample_batch(tiny_model, prompts, seed=0, index=0)
    assert a != W._sample_batch(tiny_model, prompts, seed=0, index=1)
    assert len(a) == 3 and all("\n" not in s for s in a)


def _scripted(calls: list[int]):
    """A sampler whose batch i returns fixed lines: good ones, a near-dev copy, a pool copy, a repeat."""

    def sample(model, prompts, seed, index):
        calls.append(index)
        return [f"Which city hosted event number {index}?", "What is the capital of Finland?", "Who wrote Hamlet?",
                "Which city hosted event number 0?", f"Broken line {index}"][: len(prompts)]

    return sample


def test_written_questions_filter_and_reuse_their_cache(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[int] = []
    monkeypatch.setattr(W, "_sample_batch", _scripted(calls))
    got = W.written_questions(tiny_model, POOL, DEV, n=3, seed=0, batch_size=5, progress=False)
    assert got == [("written0-00000", "Which city hosted event number 0?"),
                   ("written0-00001", "Which city hosted event number 1?"),
                   ("written0-00002", "Which city hosted event number 2?")]
    assert calls == [0, 1, 2]
    more = W.written_questions(tiny_model, POOL, DEV, n=4, seed=0, batch_size=5, progress=False)
    assert more[:3] == got and calls == [0, 1, 2, 3]  # batches 0-2 come from the cache
    assert W.written_questions(tiny_model, POOL, DEV, n=2, seed=0, batch_size=5, progress=False) == got[:2]
    assert calls == [0, 1, 2, 3]
    few = W.written_questions(tiny_model, POOL, DEV, n=10, seed=0, batch_size=5, max_batches=4, progress=False)
    assert len(few) == 4  # stops after max_batches with what it has
    assert W.written_questions(tiny_model, POOL, DEV, n=0, seed=0) == []


def test_written_questions_join_the_corpus_spoken_once_and_never_near_evaluation(tiny_parts, tmp_path, monkeypatch):
    from lsl_core.data.sdqa import SDQAQuestion, load_sdqa_dev
    from lsl_core.experiments.train import TrainConfig, build_model
    from lsl_core.experiments.train import corpus as C

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    train = [SDQAQuestion(f"t{i}", q, (), "test") for i, q in enumerate(POOL[:5])]
    val = [SDQAQuestion("v0", "How many moons does Mars have?", (), "test")]
    monkeypatch.setattr(C, "split_questions", lambda cfg: (train, val))
    seen: dict = {}

    def fake_written(model, pool, banned, n, seed, progress=True):
        seen.update(pool=pool, banned=banned, n=n)
        return [(f"written{seed}-{i:05d}", f"Which city hosted event number {i}?") for i in range(n)]

    monkeypatch.setattr(W, "written_questions", fake_written)
    cfg = TrainConfig(objective="repeat", strategy="frozen", llm=str(tiny_parts["llm"]),
                      encoder=str(tiny_parts["encoder"]), family="tiny", voices=("en-gb", "en-us"),
                      written_questions=3, out=str(tmp_path / "out"), device="cpu")
    data = C.prepare_data(cfg, build_model(cfg, __import__("torch").device("cpu")), progress=False)
    assert seen["pool"] == POOL[:5] and seen["n"] == 3
    assert set(seen["banned"]) == {q.question for q in load_sdqa_dev()} | {"How many moons does Mars have?"}
    keys = [e.key for e in data.train]
    assert keys[:10] == [f"t{i}__{v}" for i in range(5) for v in ("en-gb", "en-us")]
    assert keys[10:] == ["written0-00000__en-gb", "written0-00001__en-us", "written0-00002__en-gb"]
    assert data.train[10].text == "Which city hosted event number 0?"
    assert [r["question"] for r in data.targets[5:]] == [f"Which city hosted event number {i}?" for i in range(3)]


def test_config_refuses_a_negative_count():
    from lsl_core.errors import LSLError
    from lsl_core.experiments.train import TrainConfig

    with pytest.raises(LSLError, match="written_questions"):
        TrainConfig(written_questions=-1)


def test_written_questions_report_what_they_dropped(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_sample_batch", _scripted([]))
    W.written_questions(tiny_model, POOL, DEV, n=3, seed=0, batch_size=5, progress=True)
    # batches 0 and 1 fully (5 lines each), batch 2 up to its first line, which is the third kept question
    assert ("kept 3 of 11 sampled; dropped 2 near a dev/monitoring question, 2 malformed, 4 repeats"
            in capsys.readouterr().out)
