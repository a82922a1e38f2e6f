"""The dose-response experiment of hearing (lsl_core.experiments.train.dose): new words spoken in exactly their
dose of clips, a control never spoken, held-out test sentences holding every group, the backbone's judgement of
complete words, and a dose stage's lineage counting each word at its dose (tiny models, espeak-ng)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from lsl_core.errors import LSLError
from lsl_core.experiments.train import TrainConfig
from lsl_core.experiments.train.config import LATER_FIELDS
from lsl_core.experiments.train.dose import (TEST_WORDS, complete_words, config_groups, dictionary_words,
                                             dose_groups, dose_sentences, held_out_sentences, new_words)

GROUPS = {3: [f"alpha{c}" for c in "abcdefghij"], 10: [f"beta{c}" for c in "abcdefghij"],
          1: [f"gamma{c}" for c in "abcdefghij"], 0: [f"delta{c}" for c in "abcdefghij"]}


def _words(text: str) -> list[str]:
    return text.rstrip(".").lower().split()


def test_dose_sentences_speak_every_word_exactly_its_dose_and_never_the_control():
    sents = dose_sentences(GROUPS, seed=5)
    assert sents == dose_sentences(GROUPS, seed=5) != dose_sentences(GROUPS, seed=6)  # seeded
    count = Counter(w for _, t in sents for w in _words(t))
    for d, ws in GROUPS.items():
        assert all(count[w] == d for w in ws), d  # the control (d = 0) never
    for sid, t in sents:
        ws = _words(t)
        assert len(ws) == len(set(ws)) and 1 <= len(ws) <= 10 and t[0].isupper() and t.endswith(".")
    assert sum(len(_words(t)) >= 4 for _, t in sents) >= len(sents) - 3  # short ones only where the words ran out
    assert len({sid for sid, _ in sents}) == len(sents) and all(sid.startswith("dose5-") for sid, _ in sents)


def dose_sentences_by_rebuilt_lists(groups, seed, cased=False):
    """The slow reference (the shipped algorithm until 2026-12-04, quadratic in the words spoken): each sentence
    scans the whole queue and rebuilds it from the words it did not take. benchmarks/bench_dose_sentences.py
    times it against dose_sentences."""
    import numpy as np

    from lsl_core.experiments.train.dose import DOSE_SEED
    from lsl_core.experiments.train.vocab import as_sentence

    rng = np.random.default_rng(seed + DOSE_SEED + 1)
    tokens = [w for d, ws in groups.items() if d > 0 for w in ws for _ in range(d)]
    queue = [tokens[i] for i in rng.permutation(len(tokens))]
    out = []
    while queue:
        k = int(rng.integers(4, 11))
        cur, rest = [], []
        for w in queue:
            (cur if len(cur) < k and w not in cur else rest).append(w)
        out.append((f"dose{seed}-{len(out):05d}", as_sentence(cur, cased)))
        queue = rest
    return out


@pytest.mark.parametrize("groups", [
    GROUPS,
    {30: [f"w{i}" for i in range(300)], 0: ["c"]},  # an open-vocabulary stage: many words at one high dose
    {50: ["a", "b"], 1: ["c"], 0: ["d"]},  # fewer distinct words than a sentence wants: short sentences at the end
    {2: ["solo"], 0: ["d"]},  # one word: one-word sentences
    {1: [], 0: ["d"]},  # nothing to speak
])
@pytest.mark.parametrize("seed", [0, 7])
def test_dose_sentences_are_exactly_those_of_the_slow_reference(groups, seed):
    assert dose_sentences(groups, seed) == dose_sentences_by_rebuilt_lists(groups, seed)
    assert dose_sentences(groups, seed, cased=True) == dose_sentences_by_rebuilt_lists(groups, seed, cased=True)


def test_held_out_sentences_hold_one_word_of_every_group_and_are_no_training_sentence():
    test = held_out_sentences(GROUPS, 40, seed=5)
    train_texts = {t for _, t in dose_sentences(GROUPS, seed=5)}
    group_of = {w: d for d, ws in GROUPS.items() for w in ws}
    used = Counter()
    for sid, t in test:
        ws = _words(t)
        assert len(ws) == len(set(ws)) == TEST_WORDS and t not in train_texts and sid.startswith("dosetest5-")
        assert {group_of[w] for w in ws} == set(GROUPS)  # every group, the control included
        used.update(ws)
    for d, ws in GROUPS.items():  # each group's words are used in turn: every word tested, evenly
        n = [used[w] for w in ws]
        assert min(n) >= 1 and max(n) - min(n) <= 3, (d, n)
    with pytest.raises(LSLError, match="positive number"):
        held_out_sentences(GROUPS, 0, seed=5)


def test_dose_groups_are_disjoint_chunks_and_name_the_shortfall():
    words = [f"w{i}" for i in range(12)]
    g = dose_groups(words, (30, 3), 4)
    assert g == {30: words[0:4], 3: words[4:8], 0: words[8:12]}
    with pytest.raises(LSLError, match="need 16 new words.*raise vocab_words"):
        dose_groups(words, (30, 3, 10), 4)
    with pytest.raises(LSLError, match="distinct positive"):
        dose_groups(words, (3, 3), 2)


def test_dose_groups_with_a_control_of_its_own_size_or_every_word():
    words = [f"w{i}" for i in range(12)]
    assert dose_groups(words, (30, 3), 4, control=2) == {30: words[0:4], 3: words[4:8], 0: words[8:10]}
    # per_group 0: every word left after the control, split evenly; the odd one out is never used
    assert dose_groups(words, (30, 3), 0, control=1) == {30: words[0:5], 3: words[5:10], 0: words[10:11]}
    assert dose_groups(words, (30,), 0, control=2) == {30: words[0:10], 0: words[10:12]}
    with pytest.raises(LSLError, match="control of 12"):
        dose_groups(words, (30,), 0, control=12)
    with pytest.raises(LSLError, match="need 14 new words"):
        dose_groups(words, (30,), 4, control=10)


def test_dictionary_words_keep_real_words_and_drop_bpe_fragments():
    words = ["leather", "comp", "lavender", "diff", "Output", "acc", "freely"]
    assert dictionary_words(words) == ["leather", "lavender", "Output", "freely"]
    assert dictionary_words([]) == []


def test_config_groups_open_vocabulary_gives_every_complete_dictionary_word_a_dose(monkeypatch):
    """vocab_dose_words 0 + vocab_control_words: the control has its own size and the dose group every other new
    word the backbone ends (the fake backbone calls "comp" and "leath" fragments) that the dictionary lists."""
    import lsl_core.experiments.train.dose as D
    from lsl_core.data import sdqa

    vocab = ["the", "leather", "comp", "lavender", "diff", "freely", "garden", "leath", "kingdom", "output", "wooden"]
    monkeypatch.setattr(D, "vocabulary_words", lambda tok, n, cased: vocab[:n])
    monkeypatch.setattr(sdqa, "load_sdqa_train_questions",
                        lambda: [type("Q", (), {"question": "Where is the garden?"})()])
    monkeypatch.setattr(D, "complete_words",
                        lambda model, cands, need: [w for w in cands if w not in {"comp", "leath"}][:need])
    model = type("M", (), {"tokenizer": None})()
    spoken = set(vocab) - {"the", "garden", "comp", "leath", "diff"}  # trained, fragments, not in the dictionary
    for dictionary, expect in ((True, spoken), (False, spoken | {"diff"})):
        cfg = TrainConfig(objective="repeat", vocab_words=len(vocab), vocab_doses=(30,), vocab_dose_words=0,
                          vocab_control_words=2, vocab_dictionary=dictionary, seed=3)
        g = config_groups(cfg, model)
        assert len(g[0]) == 2 and set(g[30]) | set(g[0]) == expect and not set(g[30]) & set(g[0])
        assert g == config_groups(cfg, model)  # seeded


class _Tok:
    """A byte-level BPE-like vocabulary: ids 0-3 continue a word (letters, no space), 4-6 do not."""

    vocab = {"ation": 0, "ing": 1, "ed": 2, "s": 3, "Ġthe": 4, ".": 5, "Ċ": 6}

    def __len__(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab)

    def __call__(self, texts, return_tensors, padding, padding_side):
        self.seen = list(texts)
        return {"input_ids": torch.arange(len(texts))[:, None]}


class _LLM(torch.nn.Module):
    """Next-token logits per prompt: the words in `fragments` put 90% of their mass on continuations."""

    def __init__(self, tok, fragments):
        super().__init__()
        self.tok, self.fragments, self.w = tok, fragments, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        rows = []
        for text in self.tok.seen:
            w = text.removeprefix("Dictionary entry: ")
            p = torch.tensor([0.9, 0, 0, 0, 0.1, 0, 0]) if w in self.fragments else torch.tensor([0.05, 0, 0, 0, 0.95, 0, 0])
            rows.append((p + 1e-9).log())
        return type("Out", (), {"logits": torch.stack(rows)[:, None, :]})()


def test_complete_words_keeps_what_the_backbone_ends_in_order_up_to_need(tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    tok = _Tok()
    model = type("M", (), {"tokenizer": tok, "llm": _LLM(tok, {"oblig", "acqu"})})()
    cands = ["output", "oblig", "leather", "acqu", "freely", "dug"]
    assert complete_words(model, cands, 10, batch_size=4) == ["output", "leather", "freely", "dug"]
    assert complete_words(model, cands, 2, batch_size=2) == ["output", "leather"]  # stops once it has enough
    # ... after the batch that filled it: the third batch (freely, dug) was never read
    assert tok.seen == ["Dictionary entry: leather", "Dictionary entry: acqu"]


def test_complete_words_are_cached_per_backbone_candidates_and_settings(tmp_path, monkeypatch):
    """The same question again is answered from the cache without a forward; other candidates, another need or
    another backbone's weights ask the backbone again."""
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    tok = _Tok()
    llm = _LLM(tok, {"oblig", "acqu"})
    model = type("M", (), {"tokenizer": tok, "llm": llm})()
    cands = ["output", "oblig", "leather", "acqu"]
    assert complete_words(model, cands, 10) == ["output", "leather"]
    tok.seen = None
    assert complete_words(model, cands, 10) == ["output", "leather"] and tok.seen is None  # no forward
    assert complete_words(model, cands[:3], 10) == ["output", "leather"] and tok.seen is not None
    tok.seen = None
    assert complete_words(model, cands, 1) == ["output"] and tok.seen is not None
    other = _LLM(tok, {"oblig", "acqu", "output"})
    with torch.no_grad():
        other.w.fill_(1.0)  # other weights: another digest
    tok.seen = None
    assert complete_words(type("M", (), {"tokenizer": tok, "llm": other})(), cands, 10) == ["leather"]


def test_new_words_leave_out_every_trained_word_and_count_each_word_once():
    class BPE:
        def get_vocab(self):
            toks = ["!", "Ġthe", "Ġcat", "Ġgarden", "ing", "ĠGarden", "Ġsat", "Ġab"]
            return {t: i for i, t in enumerate(toks)}

    assert new_words(BPE(), 10, False, {"the", "sat"}) == ["cat", "garden"]
    assert new_words(BPE(), 10, True, {"the", "sat"}) == ["cat", "garden"]  # "Garden" normalises to a seen word


def test_dose_config_fields_are_checked_and_leave_older_digests_as_they_were():
    with pytest.raises(LSLError, match="vocab_doses"):
        TrainConfig(objective="qa", vocab_doses=(3,))
    with pytest.raises(LSLError, match="vocab_doses"):
        TrainConfig(objective="repeat", vocab_doses=(3, 3))
    with pytest.raises(LSLError, match="vocab_dose_words.*only with vocab_control_words"):
        TrainConfig(objective="repeat", vocab_doses=(3,), vocab_dose_words=0)
    with pytest.raises(LSLError, match="vocab_dose_words"):
        TrainConfig(objective="repeat", vocab_doses=(3,), vocab_dose_words=-1)
    with pytest.raises(LSLError, match="vocab_control_words"):
        TrainConfig(objective="repeat", vocab_doses=(3,), vocab_control_words=0)
    TrainConfig(objective="repeat", vocab_doses=(3,), vocab_dose_words=0, vocab_control_words=5)  # every word
    assert {"vocab_doses", "vocab_dose_words", "vocab_control_words", "vocab_dictionary"} <= set(LATER_FIELDS)
    base = TrainConfig(objective="repeat")
    assert base.digest() == TrainConfig(objective="repeat", vocab_doses=(), vocab_dose_words=100,
                                        vocab_control_words=None, vocab_dictionary=False).digest()
    assert base.digest() != TrainConfig(objective="repeat", vocab_doses=(3,)).digest()
    assert base.digest() != TrainConfig(objective="repeat", vocab_dictionary=True).digest()


def test_a_dose_stage_speaks_each_word_at_its_dose_in_its_lineage(tiny_parts, tmp_path, monkeypatch):
    """End to end on tiny models with espeak-ng: the stage's train_targets give hearing's lineage an exposure of
    exactly d clips for every word of dose d, and 0 for the control."""
    from lsl_core.data.sdqa import SDQAQuestion
    from lsl_core.experiments.hearing import lineage
    from lsl_core.experiments.train import corpus as C
    from lsl_core.experiments.train import dose as D
    from lsl_core.experiments.train import train

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    qs = [SDQAQuestion("t0", "Who wrote Hamlet?", (), "test"), SDQAQuestion("t1", "Where is Nepal?", (), "test")]
    monkeypatch.setattr(C, "split_questions", lambda cfg: (qs, [SDQAQuestion("v0", "Who painted it?", (), "test")]))
    groups = {2: ["lantern", "meadow"], 1: ["harbor"], 0: ["violin"]}  # the tiny tokenizer has no 'Ġword' tokens
    monkeypatch.setattr(D, "config_groups", lambda cfg, model: groups)
    cfg = TrainConfig(name="dose", objective="repeat", strategy="frozen", out=str(tmp_path / "dose"),
                      llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]), family="tiny",
                      voices=("en-gb", "en-us"), n_questions=2, n_val_questions=1, steps=1, batch_size=2,
                      save_steps=(), eval_every=0, eval_max_new_tokens=4, gen_batch_size=4, device="cpu",
                      save_dtype="float32", vocab_doses=(2, 1), vocab_dose_words=2)
    (saved,) = train(cfg, progress=False)
    rows = [json.loads(line) for line in (Path(cfg.out) / "train_targets.jsonl").read_text().splitlines()]
    assert sum(r["example_id"].startswith("dose") for r in rows) == len(dose_sentences(groups, cfg.seed))
    lin = lineage(saved, sdqa_ids={"t0", "t1"})
    assert {w: lin.exposure(w) for w in ("lantern", "meadow", "harbor", "violin", "hamlet")} == {
        "lantern": 2, "meadow": 2, "harbor": 1, "violin": 0, "hamlet": 2}  # a question: once per voice
    assert lin.group("violin") == "never" and lin.group("lantern") == "other"


def test_dose_test_command_writes_held_out_sentences_as_a_manifest_set(tmp_path, monkeypatch, capsys):
    from lsl_core.cli import main
    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.train import dose as D

    monkeypatch.setattr(D, "backbone", lambda cfg: None)  # the groups below need no backbone
    monkeypatch.setattr(D, "config_groups", lambda cfg, model: GROUPS)
    cfg = tmp_path / "dose.json"
    cfg.write_text(json.dumps({"objective": "repeat", "vocab_doses": [3, 10, 1], "vocab_dose_words": 10}))
    out = tmp_path / "dose-test"
    assert main(["dose-test", "--config", str(cfg), "--out", str(out), "--n-sentences", "3"]) == 0
    assert "wrote 6 clips of 3 held-out sentences" in capsys.readouterr().out
    samples = load_sample_set(f"manifest:{out}")
    assert len(samples) == 6 and {s.accent for s in samples} == {"espeak:en-gb", "espeak:en-gb-scotland"}
    assert [s.question for s in samples][::2] == [t for _, t in held_out_sentences(GROUPS, 3, seed=0)]
    cfg.write_text(json.dumps({"objective": "repeat"}))
    assert main(["dose-test", "--config", str(cfg), "--out", str(out)]) == 2
    assert "sets no vocab_doses" in capsys.readouterr().err
