"""Optional LLM judge through any OpenAI-compatible chat endpoint (off unless configured).

Configured only by environment variables (nothing is contacted otherwise):
    LSL_JUDGE_URL    base URL of the API, e.g. http://127.0.0.1:8000/v1 (POST <url>/chat/completions)
    LSL_JUDGE_MODEL  model name sent in the request
    LSL_JUDGE_KEY    bearer token (optional; never written to results)
Protocol (VoiceBench's api_judge.py): system prompt "You are a helpful assistant ...", temperature
0.5, top_p 0.95, 3 samples (n=3, or 3 calls where a server returns fewer), max_tokens 1024;
    sd-qa:       "Is the candidate answer correct ...? Yes/No"  -> judge_yes = majority vote (0/1)
    open-ended:  1-5 rating of the response                      -> judge_score = mean rating (1..5)
The prompt templates, model, URL and sampling parameters are returned by `JudgeConfig.record()`
so results can store them. Without a judge those columns are absent - never filled in.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from lsl_core.errors import LSLError

ENV_URL, ENV_MODEL, ENV_KEY = "LSL_JUDGE_URL", "LSL_JUDGE_MODEL", "LSL_JUDGE_KEY"
SYSTEM_PROMPT = "You are a helpful assistant who tries to help answer the user's question."
QA_PROMPT = """### Question
{prompt}

### Reference answer
{reference}

### Candidate answer
{response}

Is the candidate answer correct based on the question and reference answer? 
Please only output a single "Yes" or "No". Do not output anything else."""
OPEN_PROMPT = """
I need your help to evaluate the performance of several models in the speech interaction scenario. The models will receive a speech input from the user, which they need to understand and respond to with a speech output.
Your task is to rate the model’s responses based on the provided user input transcription [Instruction] and the model’s output transcription [Response].

Please evaluate the response on a scale of 1 to 5:
1 point: The response is largely irrelevant, incorrect, or fails to address the user’s query. It may be off-topic or provide incorrect information.
2 points: The response is somewhat relevant but lacks accuracy or completeness. It may only partially answer the user’s question or include extraneous information.
3 points: The response is relevant and mostly accurate, but it may lack conciseness or include unnecessary details that don’t contribute to the main point.
4 points: The response is relevant, accurate, and concise, providing a clear answer to the user’s question without unnecessary elaboration.
5 points: The response is exceptionally relevant, accurate, and to the point. It directly addresses the user’s query in a highly effective and efficient manner, providing exactly the information needed.

Below are the transcription of user’s instruction and models’ response:
### [Instruction]: {prompt}
### [Response]: {response}

After evaluating, please output the score only without anything else.
You don’t need to provide any explanations.
"""


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge. Build with `from_env()`; sampling defaults are VoiceBench's."""

    url: str  # API base; requests go to <url>/chat/completions
    model: str  # model name for the endpoint
    key: str | None = field(default=None, repr=False)  # bearer token; never recorded
    temperature: float = 0.5  # VoiceBench's judge sampling
    top_p: float = 0.95
    n: int = 3  # votes per answer (majority for yes/no, mean for ratings)
    max_tokens: int = 1024
    timeout_s: float = 120.0  # per HTTP request

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise LSLError(f"JudgeConfig.url must start with http:// or https://, got {self.url!r} (set {ENV_URL}).")
        if not self.model:
            raise LSLError(f"JudgeConfig.model is empty; set {ENV_MODEL} to the judge's model name.")
        if self.n < 1:
            raise LSLError(f"JudgeConfig.n must be at least 1, got {self.n}.")

    @classmethod
    def from_env(cls, environ: dict | None = None) -> JudgeConfig | None:
        """The judge set by LSL_JUDGE_URL / LSL_JUDGE_MODEL / LSL_JUDGE_KEY, or None when URL is unset."""
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL, "").strip()
        if not url:
            return None
        model = env.get(ENV_MODEL, "").strip()
        if not model:
            raise LSLError(f"{ENV_URL} is set but {ENV_MODEL} is not; set the judge's model name too "
                           f"(or unset {ENV_URL} to run without a judge).")
        return cls(url=url.rstrip("/"), model=model, key=env.get(ENV_KEY) or None)

    def record(self) -> dict:
        """What results store about the judge: endpoint, model, sampling and prompts (no key)."""
        return {"url": self.url, "model": self.model, "temperature": self.temperature, "top_p": self.top_p,
                "n": self.n, "max_tokens": self.max_tokens, "system_prompt": SYSTEM_PROMPT,
                "qa_prompt": QA_PROMPT, "open_prompt": OPEN_PROMPT}


def chat(cfg: JudgeConfig, user_prompt: str) -> list[str]:
    """cfg.n completions of one user prompt (one request with n; more requests if the server returns fewer)."""
    out: list[str] = []
    for _ in range(cfg.n):  # at most n requests
        body = {"model": cfg.model, "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                                 {"role": "user", "content": user_prompt}],
                "temperature": cfg.temperature, "top_p": cfg.top_p, "n": cfg.n - len(out),
                "max_tokens": cfg.max_tokens, "frequency_penalty": 0, "presence_penalty": 0}
        req = urllib.request.Request(f"{cfg.url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {cfg.key}"} if cfg.key else {})})
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise LSLError(f"The judge at {cfg.url} answered HTTP {exc.code} ({exc.reason}); check "
                           f"{ENV_URL}, {ENV_MODEL} and {ENV_KEY}.") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise LSLError(f"Cannot reach the judge at {cfg.url} ({exc}); check {ENV_URL} or unset it.") from None
        except json.JSONDecodeError as exc:
            raise LSLError(f"The judge at {cfg.url} did not return JSON ({exc}).") from None
        try:
            out += [str(c["message"]["content"]).strip() for c in data["choices"]]
        except (KeyError, TypeError) as exc:
            raise LSLError(f"The judge at {cfg.url} returned no choices[].message.content ({exc!r}); is it an "
                           "OpenAI-compatible chat endpoint?") from None
        if len(out) >= cfg.n:
            return out[: cfg.n]
    return out


def _yes_no(vote: str) -> str | None:
    m = re.match(r"\W*(yes|no)\b", vote.strip().lower())
    return m.group(1) if m else None


def judge_qa(cfg: JudgeConfig, prompt: str, reference: str, response: str) -> dict:
    """sd-qa judge: {judge_yes: 1 if most votes say Yes else 0, judge_votes: "Yes|No|Yes"}."""
    votes = chat(cfg, QA_PROMPT.replace("{prompt}", prompt).replace("{reference}", reference)
                 .replace("{response}", response))
    said = [_yes_no(v) for v in votes]
    return {"judge_yes": float(said.count("yes") > len(said) / 2), "judge_votes": "|".join(votes)}


def _rating(vote: str) -> float | None:
    """A 1-5 rating: the vote as a number (VoiceBench's float(vote), so "4.5" is 4.5), else its
    "[[n]]", else the first digit 1-5 it starts with; None when unreadable or outside 1..5."""
    try:
        x = float(vote.strip())
    except ValueError:
        m = re.search(r"\[\[(\d+)\]\]", vote) or re.match(r"\D*?([1-5])(?:\.0)?\b", vote.strip())
        x = float(m.group(1)) if m else float("nan")
    return x if 1.0 <= x <= 5.0 else None


def judge_open(cfg: JudgeConfig, prompt: str, response: str) -> dict:
    """Open-ended judge: {judge_score: mean 1..5 rating over readable votes (None if none), judge_votes}."""
    votes = chat(cfg, OPEN_PROMPT.replace("{prompt}", prompt).replace("{response}", response))
    ratings = [r for r in map(_rating, votes) if r is not None]
    return {"judge_score": sum(ratings) / len(ratings) if ratings else None, "judge_votes": "|".join(votes)}


__all__ = ["JudgeConfig", "chat", "judge_qa", "judge_open", "QA_PROMPT", "OPEN_PROMPT", "SYSTEM_PROMPT",
           "ENV_URL", "ENV_MODEL", "ENV_KEY"]
