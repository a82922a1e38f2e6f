"""Case report: one sample under one intervention as a single self-contained HTML file.

    html = case_report_html(sample, analysis, answers, condition="angle:bottom3", model_name=..., ...)
    report_case(model, sample, "angle:bottom3") -> html   (analysis + side-by-side generation, then the above)
    python -m lsl_core report-case --sample 0 --intervention angle:bottom3 --out case.html

The file opens offline with no server: the audio is embedded (base64 16-bit WAV), Plotly's JavaScript
is inlined once, every figure is a `lsl_core.viz` figure. Sections (each an element with this id):
  audio     the clip, its length and voice
  question  typed question, reference answers, ASR transcript
  answers   text / speech / cascade / intervened answers side by side, scored
  heatmap   frames x tokens matrix at the edited layer with the alignment path and the edited frames
  curves    sequence cosine/distance, Spearman/consistency, token norms / standardized distance
  metrics   APS, mean Spearman, consistency, sizes; per-layer table
Nothing here computes a metric: it lays out a SampleAnalysis and the answers.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lsl_core.cli import add_device_args

SECTIONS = ("audio", "question", "answers", "heatmap", "curves", "metrics")
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;
color:#111;line-height:1.45}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:1.6em}
.meta{color:#444;font-size:.9em}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:12px}
.card{border:1px solid #bbb;border-radius:6px;padding:10px 12px;background:#fafafa}
.card h3{margin:0 0 6px 0;font-size:1em}.answer{white-space:pre-wrap;margin:6px 0}
.ok{color:#0a5d0a;font-weight:600}.bad{color:#8b0000;font-weight:600}.none{color:#555}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}code{background:#f1f1f1;padding:1px 4px;border-radius:3px}
footer{margin-top:2em;color:#555;font-size:.85em}
"""


# =============================================================================== pieces
def wav_data_uri(audio: np.ndarray, sr: int) -> str:
    """A mono clip [n] as a data: URI of a 16-bit PCM WAV (plays in every browser, offline)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _mark(score: float | None) -> str:
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return '<span class="none">– no reference answer</span>'
    return '<span class="ok">✓ correct</span>' if score >= 1 else '<span class="bad">✗ wrong</span>'


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.0f} %"


def _figure(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True,
                               "toImageButtonOptions": {"format": "png", "filename": div_id, "scale": 2}})


def _table(header: Sequence[str], rows: Sequence[Sequence], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if k < left else ""}">{_e(h)}</th>' for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if k < left else ""}">{_e(v)}</td>' for k, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def rows_from_side_by_side(sbs) -> dict:
    """A SideBySide (interventions.generate_side_by_side) as the plain dict the report and the app use:
    {"rows": [{condition, title, answer, containment, f1, agreement, frames, frame_times, tokens,
    token_text}], "transcript": str | None}."""
    rows = []
    for a in sbs.answers():
        rows.append({
            "condition": a.condition, "title": a.title, "answer": a.answer, "containment": a.containment,
            "f1": a.f1, "em": a.em, "agreement": a.agreement, "frames": list(a.frames),
            "frame_times": [sbs.frame_times[f] for f in a.frames] if sbs.frame_times else [],
            "tokens": list(a.tokens), "token_text": a.token_text,
        })
    return {"rows": rows, "transcript": sbs.transcript}


# =============================================================================== the report
def case_report_html(sample, analysis, answers: Mapping, *, condition: str, layer: int, metric: str = "cosine",
                     model_name: str = "", digest: str = "", command: str | None = None,
                     title: str | None = None) -> str:
    """The whole report as one HTML string (see the module docstring for its sections).

    sample: lsl_core Sample (audio, question, answers, accent). analysis: its SampleAnalysis.
    answers: {"rows": [...], "transcript": ...} (rows_from_side_by_side, or the app's cached dict);
    the row whose condition == `condition` gives the edited frames/tokens drawn on the heatmap.
    layer/metric: the layer and path metric of the intervention (the heatmap shown).
    """
    from plotly.offline import get_plotlyjs

    from lsl_core import viz

    rows = list(answers.get("rows", []))
    edited = next((r for r in rows if r.get("condition") == condition), None)
    L = analysis.num_layers
    if not 0 <= layer <= L:
        from lsl_core.errors import LSLError

        raise LSLError(f"The report's layer must be in 0..{L}, got {layer}.")
    heading = title or f"Case report — {sample.question}"
    voice = sample.accent or "—"
    synthetic = " (synthetic speech)" if str(sample.accent).startswith("espeak:") else ""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    # ---- answers side by side
    cards = []
    for r in rows:
        edits = ""
        if r.get("frames"):
            toks = ", ".join(repr(t) for t in r.get("token_text", []))
            times = ", ".join(f"{float(t):.2f} s" for t in r.get("frame_times", []))
            edits = (f'<p class="meta">edited tokens: {_e(toks) or "—"}<br>frames at {_e(times)}</p>')
        cards.append(
            f'<div class="card" data-condition="{_e(r.get("condition", ""))}"><h3>{_e(r.get("title", ""))}</h3>'
            f'{_mark(r.get("containment"))}<p class="answer">{_e(r.get("answer") or "∅ (empty answer)")}</p>'
            f'<p class="meta">F1 vs references {_pct(r.get("f1"))} · agreement with the text answer '
            f'{_pct(r.get("agreement"))}</p>{edits}</div>')
    transcript = answers.get("transcript")

    # ---- figures
    # the interventions target the argmax path of the unedited states (interventions.plan); with another analysis
    # path the heatmap boxes an edited token's path cell only where its frame was edited (viz.token_heatmap)
    other_path = edited is not None and analysis.path_method != "argmax"
    path_note = (f'<p class="meta">The intervention edited the frames that the <b>argmax path</b> of the unedited '
                 f"states picks for its tokens (<code>interventions.plan</code>); the heatmap draws the "
                 f"{_e(analysis.path_method)} path, so an edited token's cell on it is boxed only where its frame "
                 f"was edited (edited tokens: "
                 f"{_e(', '.join(repr(t) for t in edited.get('token_text', [])) or '—')}).</p>" if other_path else "")
    fig_heat = viz.token_heatmap(
        analysis, layer, metric, edited=edited,
        title=(f"Layer ℓ = {layer} ({metric}, {analysis.path_method} path)"
               + (f": boxed frames/tokens were edited by {condition}" if edited else "")))
    figs = [("fig-sequence", viz.layer_curves(analysis, current_layer=layer)),
            ("fig-tokenwise", viz.tokenwise_curves(analysis, current_layer=layer))]
    if getattr(analysis, "std_dist", None) is not None:
        figs.append(("fig-norms", viz.norm_curves(analysis, current_layer=layer)))

    # ---- metrics
    scalars = analysis.scalars()
    summary_rows = [
        ("APS (cosine), layers 1..L", f"{analysis.aps_cos:.6f}"),
        ("APS (distance), layers 1..L", f"{analysis.aps_dist:.6f}"),
        ("mean Spearman ρ, cosine path", f"{scalars['spearman_cos_mean']:.6f}"),
        ("mean Spearman ρ, distance path", f"{scalars['spearman_dist_mean']:.6f}"),
        ("mean consistency", f"{scalars['consistency_mean']:.6f}"),
        ("layer-averaged sequence cosine", f"{scalars['seq_cos_mean']:.6f}"),
        ("alignment path", analysis.path_method),
        ("frames × tokens (Ts × Tt)", f"{analysis.cos.shape[1]} × {analysis.cos.shape[2]} "
                                      f"({analysis.frame_seconds * 1000:.0f} ms per frame)"),
        ("layers", f"0..{L} (0 = LLM input, {L} = after the final norm)"),
    ]
    per_layer = [(l, f"{analysis.seq_cos[l]:.6f}", f"{analysis.seq_dist[l]:.6f}", f"{analysis.spearman_cos[l]:.4f}",
                  f"{analysis.spearman_dist[l]:.4f}", f"{analysis.consistency[l]:.4f}")
                 for l in range(L + 1)]
    path = (analysis.path_cos if metric == "cosine" else analysis.path_dist)[layer]
    scores = (analysis.scores_cos if metric == "cosine" else analysis.scores_dist)[layer]
    path_rows = [(j, repr(t), int(path[j]), f"{float(analysis.frame_times[path[j]]):.2f}", f"{float(scores[j]):.6f}")
                 for j, t in enumerate(analysis.tokens)]

    refs = " | ".join(sample.answers) if sample.answers else "— (no reference answers)"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(heading)}</title>", f"<style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>",
        f'<header><h1>{_e(heading)}</h1><p class="meta">model <b>{_e(model_name or analysis.model)}</b>'
        f' (digest <code>{_e((digest or analysis.digest)[:16])}</code>) · sample <code>{_e(sample.id)}</code>'
        f' · intervention <code>{_e(condition)}</code> · written {when} by lsl_core.case_report</p></header>',
        f'<section id="audio"><h2>Audio</h2><audio controls preload="auto" src="{wav_data_uri(sample.audio, sample.sr)}">'
        f'</audio><p class="meta">{sample.duration:.2f} s at {sample.sr} Hz · voice/accent: {_e(voice)}{synthetic}'
        "</p></section>",
        f'<section id="question"><h2>Question</h2><p><b>Typed question (text input):</b> {_e(sample.question)}</p>'
        f"<p><b>Reference answers:</b> {_e(refs)}</p>"
        + (f"<p><b>ASR transcript</b> (the encoder's Whisper decoder): {_e(transcript or '∅')}</p>"
           if transcript is not None else "<p class=\"meta\">ASR transcript: not computed.</p>") + "</section>",
        f'<section id="answers"><h2>Answers side by side</h2><div class="grid">{"".join(cards)}</div></section>',
        f'<section id="heatmap"><h2>Frames × tokens at the edited layer, with the alignment path</h2>'
        f'{_figure(fig_heat, "fig-heatmap")}{path_note}'
        f"<h3>Alignment path at layer {layer} ({metric}, {_e(analysis.path_method)})</h3>"
        + _table(["token j", "token", "frame i*_j", "frame start (s)", metric], path_rows, left=2) + "</section>",
        '<section id="curves"><h2>Curves across layers</h2>'
        + "".join(_figure(f, i) for i, f in figs) + "</section>",
        '<section id="metrics"><h2>Metrics</h2>' + _table(["metric", "value"], summary_rows)
        + _table(["layer", "seq cosine", "seq distance", "Spearman (cos)", "Spearman (dist)", "consistency"],
                 per_layer, left=0) + "</section>",
        f'<footer>Regenerate: <code>{_e(command or "python -m lsl_core report-case ...")}</code>. '
        "Opens offline: the audio and Plotly are embedded in this file.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts)


def report_case(model, sample, condition: str = "angle:bottom3", *, options=None, max_new_tokens: int = 24,
                cascade: bool = True, command: str | None = None, donor_question: str | None = None) -> str:
    """Analyze one sample, generate the side-by-side answers for `condition`, return the report HTML.
    donor_question: the other question a pairing-"other" condition edits with."""
    from lsl_core.analysis import AnalysisOptions, analyze_sample
    from lsl_core.interventions import condition_label, generate_side_by_side, parse_condition

    ivs = parse_condition(condition)
    label = condition_label(ivs)
    a = analyze_sample(model, sample, options or AnalysisOptions())
    with model.lock:
        sbs = generate_side_by_side(model, sample, [label], max_new_tokens=max_new_tokens,
                                    cascade=cascade and model.has_asr, donor_question=donor_question)
    return case_report_html(sample, a, rows_from_side_by_side(sbs), condition=label, layer=ivs[0].layer,
                            metric=ivs[0].metric, model_name=model.name, digest=model.digest, command=command)


# =============================================================================== CLI
def register(sub) -> None:
    p = sub.add_parser("report-case", help="one sample under one intervention as a self-contained HTML file",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="manifest.json or its folder (default: the app's default model)")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set spec: sd-qa-mini | voicebench:DIR | folder:DIR")
    p.add_argument("--sample", default="0", help="sample id, or its index in the set (default 0)")
    p.add_argument("--intervention", default="angle:bottom3",
                   help="condition, e.g. angle:bottom3, length:all@4:distance, angle:bottom3+length:all, or a null: "
                        "angle:random3, angle:all:shuffled, angle:all:other (edits with the next different question "
                        "of the sample set)")
    p.add_argument("--path", choices=("argmax", "dtw"), default="argmax", help="alignment path of the analysis")
    p.add_argument("--tokens", type=int, default=24, help="max new tokens per answer")
    p.add_argument("--no-cascade", action="store_true", help="skip the ASR -> LLM baseline")
    add_device_args(p)
    p.add_argument("--out", default="case_report.html", help="output HTML file")
    p.set_defaults(func=run)


def run(args) -> int:
    import shlex
    import sys

    from lsl_core.analysis import AnalysisOptions
    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    sset = load_sample_set(args.samples)
    key = args.sample
    if key.lstrip("-").isdigit() and key not in sset:
        if int(key) < 0:  # Python would count from the end: the error text says 0..n-1
            from lsl_core.errors import LSLError

            raise LSLError(f"--sample {key}: give a sample id or an index 0 to {len(sset) - 1}.")
        sample = sset[int(key)]
    else:
        sample = sset[key]
    from lsl_core.interventions import parse_condition

    parse_condition(args.intervention)  # a typo is refused before the model loads
    model = load_checkpoint(args.checkpoint or default_checkpoint(), device=args.device)
    command = "python -m lsl_core " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    from lsl_core.experiments.table1 import donors_for
    from lsl_core.interventions import needs_donor

    donor = donors_for(sset, [sample.id])[0] if needs_donor([args.intervention]) else None
    page = report_case(model, sample, args.intervention, options=AnalysisOptions(path=args.path),
                       max_new_tokens=args.tokens, cascade=not args.no_cascade, command=command,
                       donor_question=donor)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB): open it in a browser, no server needed")
    return 0


__all__ = ["SECTIONS", "case_report_html", "report_case", "rows_from_side_by_side", "wav_data_uri", "register"]
