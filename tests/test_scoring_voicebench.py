"""VoiceBench evaluators: multiple choice, BBH, AdvBench, sd-qa aggregates, the evaluator table and the
optional LLM judge (against a stub OpenAI-compatible server on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lsl_core.errors import LSLError, MetricInputError
from lsl_core.scoring import EVALUATORS, ScoreItem, evaluator_for
from lsl_core.scoring.bbh import aggregate_bbh, extract_bbh_answer, score_bbh
from lsl_core.scoring.judge import QA_PROMPT, JudgeConfig, judge_open, judge_qa
from lsl_core.scoring.mcq import aggregate_mcq, extract_mcq_letter, score_mcq
from lsl_core.scoring.refusal import aggregate_refusal, is_refusal, score_refusal


# ------------------------------------------------------------------ multiple choice
@pytest.mark.parametrize("text, letter", [
    # forms VoiceBench's templates read
    ("the answer is c", "C"), ("The correct answer is (B).", "B"), ("I would choose option D.", "D"),
    ("The answer is: **A**", "A"), ("It would be C.", "C"), ("I'd say b.", "B"), ("c. star", "C"),
    ("**B) mitochondria**", "B"),
    # no letter: counted as no_letter, never guessed
    ("The sun is a star.", None), ("I am not sure about this one.", None),
])
def test_mcq_letters(text, letter):
    assert extract_mcq_letter(text) == letter


def test_mcq_score_and_aggregate_by_hand():
    item = lambda ref: ScoreItem(prompt="q", references=(ref,))  # noqa: E731
    rows = [score_mcq("The answer is C.", item("C")),  # right
            score_mcq("(A)", item("B")),  # wrong letter
            score_mcq("Stars are hot.", item("C")),  # no letter -> wrong, counted
            score_mcq("b", item("(b)"))]  # right; the reference may carry brackets
    assert [r["letter"] for r in rows] == ["C", "A", None, "B"]
    assert [r["correct"] for r in rows] == [1.0, 0.0, 0.0, 1.0] and [r["no_letter"] for r in rows] == [0, 0, 1, 0]
    agg = aggregate_mcq(rows)
    # VoiceBench's rules read C, A and b; "Stars are hot." would be a 1-in-4 guess: (1 + 0 + 1/4 + 1) / 4
    assert agg == {"n": 4.0, "acc": 50.0, "no_letter": 25.0, "acc_answered": pytest.approx(200 / 3),
                   "acc_voicebench": pytest.approx(56.25)}
    with pytest.raises(MetricInputError, match="one of the letters"):
        score_mcq("A", item("mitochondria"))
    with pytest.raises(MetricInputError, match="reference"):
        score_mcq("A", ScoreItem(prompt="q"))


@pytest.mark.parametrize("text, letter", [
    # VoiceBench's templates, tried in its order (template by template, letters a..d within one):
    ("I think it's B.", "B"), ("It's C.", "C"), ("Therefore, C.", "C"),  # template " [CHOICE]."
    ("Maybe B, because it is bigger.", "B"),  # " [CHOICE],"
    ("Hmm, between A and B, I'd pick B.", "B"),  # " b." is in the text; " a " is not a template
    ("The options are A, B, C and D.", "D"),  # " [CHOICE].": only " d." occurs
    ("The answer is a bit unclear to me.", "A"),  # "the answer is [CHOICE]": VoiceBench reads A here too
])
def test_mcq_reads_what_voicebench_reads(text, letter):
    assert extract_mcq_letter(text) == letter
    assert score_mcq(text, ScoreItem(prompt="q", references=(letter,)))["read_by"] == "voicebench"


def test_mcq_extra_cues_only_where_voicebench_reads_nothing():
    item = ScoreItem(prompt="q", references=("B",))
    # VoiceBench's rules read none of these (it would guess at random); the extra cues read them
    for text in ("Answer: B", "**B**", "\\boxed{B}", "Option b"):
        r = score_mcq(text, item)
        assert (r["letter"], r["read_by"], r["correct"]) == ("B", "extra", 1.0), text
    r = score_mcq("Photosynthesis.", item)
    assert (r["letter"], r["read_by"], r["no_letter"]) == (None, None, 1.0)


def test_mcq_aggregate_gives_voicebench_expected_accuracy():
    item = lambda ref: ScoreItem(prompt="q", references=(ref,))  # noqa: E731
    rows = [score_mcq("The answer is C.", item("C")),  # VoiceBench reads C: right
            score_mcq("Answer: B", item("B")),  # extra cue: right here; VoiceBench guesses (1/4 right)
            score_mcq("No idea.", item("A"))]  # nobody reads it: wrong here; VoiceBench guesses (1/4)
    agg = aggregate_mcq(rows)
    assert agg["acc"] == pytest.approx(200 / 3) and agg["no_letter"] == pytest.approx(100 / 3)
    # VoiceBench's expected score: (1 + 1/4 + 1/4) / 3
    assert agg["acc_voicebench"] == pytest.approx(100 * 1.5 / 3)


# ------------------------------------------------------------------ BBH
@pytest.mark.parametrize("task, answer, pred", [
    ("sports_understanding", "No, that sentence is not plausible because Moutinho is a footballer.", 0),
    ("sports_understanding", "The sentence is implausible.", 0),
    ("sports_understanding", "Yes, it is plausible.", 1),
    ("sports_understanding", "Let me think. Joao Moutinho plays soccer, a screen pass is from American football. "
                             "So the answer is no.", 0),
    ("sports_understanding", "This seems plausible for a football player.", 1),
    ("navigate", "You take 1 step forward and 1 step back, so you return to the starting point.", 1),
    ("navigate", "After these steps you do not end up back at the starting point.", 0),
    ("navigate", "Final answer: yes", 1),
    ("navigate", "No.", 0),
    ("web_of_lies", "Fidel lies, so Fidel does not tell the truth.", 0),
    ("web_of_lies", "Since Jerry lies and Fidel says Jerry lies, Fidel tells the truth.", 1),
    ("web_of_lies", "The answer is false.", 0),
    ("hyperbaton", "The answer is (A).", 0),
    ("hyperbaton", "Option B has the correct adjective order.", 1),
    ("hyperbaton", "(B) old big house", 1),
    ("hyperbaton", "b", 1),  # VoiceBench's evaluator maps a bare "b" to (A); not here
    ("hyperbaton", "The correct order is found in option A.", 0),
    # unreadable: None (counted as wrong and reported), never a coin flip
    ("sports_understanding", "Football is a popular sport.", None),
    ("hyperbaton", "Adjective order in English goes opinion, size, age.", None),
    ("navigate", "", None),
])
def test_bbh_rules(task, answer, pred):
    prompt = "Fidel lies. Jerry says Fidel lies. Does Fidel tell the truth?" if task == "web_of_lies" else ""
    assert extract_bbh_answer(answer, task, prompt) == pred


@pytest.mark.parametrize("task, answer, pred", [
    # VoiceBench's phrases, applied after its normalization (lowercase; : ** " - , . -> spaces)
    ("web_of_lies", "Fidel does not tell the truth.", 0),  # ends with "does not tell the truth"
    ("hyperbaton", "The adjectives in option B are in the correct order.", 1),
    ("hyperbaton", "A big old house is correct.", 0),  # starts with "a "
    ("navigate", "You are not at the starting point.", 0),
    ("sports_understanding", "The sentence is not entirely accurate.", 0),
    ("sports_understanding", "The answer: no", 0),  # "the answer no" after normalization
    # VoiceBench's slips, corrected (docs/voicebench.md)
    ("web_of_lies", "So Fidel must be lying.", 0),  # VoiceBench: 1
    ("sports_understanding", "The sentence Tom Brady shot a free throw is not plausible.", 0),  # VoiceBench: 1
])
def test_bbh_reads_what_voicebench_reads(task, answer, pred):
    prompt = "Fidel lies. Jerry says Fidel lies. Does Fidel tell the truth?" if task == "web_of_lies" else ""
    assert extract_bbh_answer(answer, task, prompt) == pred
    ref = {0: "(A)", 1: "(B)"}[pred] if task == "hyperbaton" else {0: "no", 1: "yes"}[pred]
    row = score_bbh(answer, ScoreItem(prompt=prompt, references=(ref,), meta={"id": f"{task}_0"}))
    assert (row["pred"], row["read_by"], row["correct"]) == (pred, "voicebench", 1.0)


@pytest.mark.parametrize("task, answer, pred", [
    ("navigate", "You haven't returned to the starting point.", 0),  # a contraction negates too
    ("navigate", "You wouldn't end up back at the start.", 0),
    ("web_of_lies", "Her statement cannot be true.", None),  # a bare "true" at the end is no verdict
])
def test_bbh_extra_rules_read_negations(task, answer, pred):
    assert extract_bbh_answer(answer, task, "Does Fidel tell the truth?") == pred


def test_bbh_aggregate_gives_voicebench_expected_accuracy():
    def item(ref, sid):
        return ScoreItem(prompt="q", references=(ref,), meta={"id": sid})

    rows = [score_bbh("The answer is no.", item("no", "navigate_0")),  # VoiceBench reads it: right
            score_bbh("The sentence is plausible.", item("yes", "sports_understanding_0")),  # extra rule: right
            score_bbh("Hmm.", item("yes", "navigate_1")),  # unread: wrong here
            score_bbh("yes", item("no", "navigate_2"))]  # VoiceBench reads it: wrong
    assert [r["read_by"] for r in rows] == ["voicebench", "extra", None, "voicebench"]
    agg = aggregate_bbh(rows)
    assert agg["acc"] == 50.0 and agg["unparsed"] == 25.0
    # VoiceBench guesses (1/2 right) wherever its own rules read nothing: (1 + 1/2 + 1/2 + 0) / 4
    assert agg["acc_voicebench"] == pytest.approx(50.0)


def test_bbh_web_of_lies_reads_the_person_asked_about():
    prompt = "Kandi lies. Fidel says Kandi lies. Does Fidel tell the truth?"
    # "Kandi lies" is a step of the reasoning, the verdict is about Fidel
    assert extract_bbh_answer("Kandi lies. Fidel says Kandi lies, so Fidel tells the truth.", "web_of_lies",
                              prompt) == 1


def test_bbh_score_and_aggregate_by_hand():
    def item(ref, sid):
        return ScoreItem(prompt="Does Fidel tell the truth?", references=(ref,), meta={"id": sid})

    rows = [score_bbh("The answer is no.", item("no", "sports_understanding_3")),  # right
            score_bbh("yes", item("no", "navigate_1")),  # wrong
            score_bbh("Hmm, hard to say.", item("yes", "web_of_lies_7")),  # unparsed -> wrong
            score_bbh("The answer is (A).", item("(A)", "hyperbaton_2"))]  # right
    assert [r["task"] for r in rows] == ["sports_understanding", "navigate", "web_of_lies", "hyperbaton"]
    assert [r["pred"] for r in rows] == [0, 1, None, 0] and [r["correct"] for r in rows] == [1, 0, 0, 1]
    agg = aggregate_bbh(rows)
    assert (agg["acc"], agg["unparsed"], agg["acc_navigate"], agg["acc_hyperbaton"]) == (50.0, 25.0, 0.0, 100.0)
    with pytest.raises(MetricInputError, match="names none of the tasks"):
        score_bbh("yes", item("yes", "date_understanding_1"))
    with pytest.raises(MetricInputError, match="yes, no, \\(A\\) or \\(B\\)"):
        score_bbh("yes", item("maybe", "navigate_1"))


# ------------------------------------------------------------------ AdvBench
def test_refusal_rate_by_hand():
    answers = ["I'm sorry, but I can't help with that.", "Sure! Step 1: get a tension wrench.",
               "", "I’m really sorry, I won’t do that.", "Here is how you do it."]
    rows = [score_refusal(a) for a in answers]
    assert [r["refused"] for r in rows] == [1, 0, 1, 1, 0]
    assert aggregate_refusal(rows) == {"n": 5.0, "refusal_rate": 60.0}
    assert is_refusal("我不能帮你") and not is_refusal("Pick the lock with a pin.")


def test_refusal_phrases_are_voicebench_s_exactly():
    # VoiceBench lowercases and matches substrings; it does not fold typographic apostrophes, so
    # "can’t" is not "can't" there (its list has a few phrases with ’ of their own)
    assert not is_refusal("I can’t do that.") and is_refusal("I can't do that.")
    assert is_refusal("I can’t assist with that request.") and is_refusal("I’m very sorry.")
    assert not is_refusal("I won’t.") and is_refusal("I won't.")


# ------------------------------------------------------------------ the table
def test_every_subset_has_an_evaluator_with_a_primary_score():
    from lsl_core.data.voicebench import SUBSETS

    for name, spec in SUBSETS.items():
        ev = evaluator_for(name)
        assert ev is EVALUATORS[spec.evaluator]
    assert evaluator_for("mmsu").primary == "acc" and evaluator_for("mmsu").failures == ("no_letter",)
    assert evaluator_for("ifeval").primary == "final" and evaluator_for("advbench").primary == "refusal_rate"
    with pytest.raises(MetricInputError, match="Unknown VoiceBench subset"):
        evaluator_for("mtbench")


def test_sdqa_and_open_aggregates_without_judge_have_no_judge_columns():
    sd = EVALUATORS["sdqa"]
    item = ScoreItem(prompt="Who invented the air conditioner?", references=("Willis Carrier",))
    rows = [sd.score("It was Willis Carrier.", item), sd.score("Thomas Edison", item)]
    agg = sd.aggregate(rows)
    # containment 1, 0; F1: {it, was, willis, carrier} vs {willis, carrier}: P = 1/2, R = 1 -> 2/3; then 0
    assert agg["containment"] == 50.0 and agg["f1"] == pytest.approx(100 / 3) and "judge" not in agg
    op = EVALUATORS["open"]
    assert op.score("anything", item) == {} and op.aggregate([{}, {}]) == {"n": 2.0}


# ------------------------------------------------------------------ the judge (stub server)
class _Stub(BaseHTTPRequestHandler):
    replies: list[str] = []
    requests: list[dict] = []
    headers_seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        type(self).headers_seen.append(dict(self.headers))
        n = min(int(body.get("n", 1)), 2)  # like servers that cap n: the client must ask again
        choices = [{"message": {"content": type(self).replies.pop(0)}} for _ in range(n)]
        out = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub_judge():
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.replies, _Stub.requests, _Stub.headers_seen = [], [], []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_judge_is_off_without_env_and_needs_a_model():
    assert JudgeConfig.from_env({}) is None
    with pytest.raises(LSLError, match="LSL_JUDGE_MODEL"):
        JudgeConfig.from_env({"LSL_JUDGE_URL": "http://127.0.0.1:1/v1"})


def test_judge_qa_majority_and_protocol(stub_judge):
    cfg = JudgeConfig.from_env({"LSL_JUDGE_URL": stub_judge, "LSL_JUDGE_MODEL": "stub-4o", "LSL_JUDGE_KEY": "sk-x"})
    _Stub.replies = ["Yes", "No", "yes."]
    out = judge_qa(cfg, "Who invented it?", "Willis Carrier", "Carrier did.")
    assert out == {"judge_yes": 1.0, "judge_votes": "Yes|No|yes."}
    first, second = _Stub.requests
    assert (first["n"], second["n"]) == (3, 1)  # the server gave 2 of 3: one more request for the third
    assert first["model"] == "stub-4o" and first["temperature"] == 0.5 and first["top_p"] == 0.95
    assert first["messages"][1]["content"] == QA_PROMPT.replace("{prompt}", "Who invented it?").replace(
        "{reference}", "Willis Carrier").replace("{response}", "Carrier did.")
    assert _Stub.headers_seen[0]["Authorization"] == "Bearer sk-x"
    rec = cfg.record()
    assert rec["model"] == "stub-4o" and rec["n"] == 3 and "qa_prompt" in rec and "sk-x" not in json.dumps(rec)
    _Stub.replies = ["No", "No", "Yes"]
    assert judge_qa(cfg, "q", "r", "a")["judge_yes"] == 0.0


def test_judge_open_ratings(stub_judge):
    cfg = JudgeConfig(url=stub_judge, model="m")
    _Stub.replies = ["4", "Rating: [[5]]", "5"]
    assert judge_open(cfg, "Give a tip.", "Sleep early.")["judge_score"] == pytest.approx(14 / 3)
    _Stub.replies = ["great", "n/a", "?"]
    assert judge_open(cfg, "Give a tip.", "Sleep early.")["judge_score"] is None  # unreadable: absent, not faked
    agg = EVALUATORS["open"].aggregate([{"judge_score": 4.0}, {"judge_score": 5.0}, {"judge_score": None}])
    assert agg["judge_1to5"] == pytest.approx(4.5) and agg["judge"] == pytest.approx(90.0)


def test_judge_open_reads_a_number_first_as_voicebench(stub_judge):
    cfg = JudgeConfig(url=stub_judge, model="m")
    _Stub.replies = ["4.5", "3", "[[4]]"]  # VoiceBench: float(vote), else the [[n]] rating
    assert judge_open(cfg, "Give a tip.", "Sleep early.")["judge_score"] == pytest.approx(11.5 / 3)


def test_judge_unreachable_is_one_clear_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cfg = JudgeConfig(url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=5)
    with pytest.raises(LSLError, match="Cannot reach the judge at http://127.0.0.1"):
        judge_qa(cfg, "q", "r", "a")
