"""'Reproduce this view': the library calls (and the CLI command) that compute what a page shows, with the
page's current model, sample and settings filled in, ready to paste into a notebook.

The pages hold no math; every figure is an `lsl_core` function, so the code shown here is the page's own
computation. Paths inside the working directory are written relative to it (the README's commands run from
the repository root), others absolute. An uploaded clip has no path to name: the expander says how to
get one instead.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import streamlit as st

from lsl_core.results import GAP_X


def _path(p: str | Path) -> str:
    """A path as a notebook started in the current directory reaches it."""
    p = Path(p).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _set_spec(spec: str) -> str:
    """A sample-set spec with its folder written as _path writes paths (embedded names stay as they are)."""
    kind, sep, arg = spec.partition(":")
    return f"{kind}:{_path(arg)}" if sep and arg and kind in ("folder", "manifest", "voicebench") else spec


def _preamble(checkpoint: str | Path, set_spec: str, sample_id: str) -> list[str]:
    return [
        f"model = load_checkpoint({_path(checkpoint)!r})",
        f"samples = load_sample_set({_set_spec(set_spec)!r})",
        f"sample = samples[{sample_id!r}]",
    ]


def explorer_code(checkpoint: str | Path, set_spec: str, sample_id: str, *, path: str, layer: int, metric: str,
                  partners: int) -> str:
    """Python that rebuilds the Sample Explorer's analysis, metric cards, figures and controls."""
    return "\n".join([
        "from lsl_core import viz",
        "from lsl_core.analysis import AnalysisOptions, analyze_sample",
        "from lsl_core.analysis_controls import sample_controls",
        "from lsl_core.data.sets import load_sample_set",
        "from lsl_core.metrics.controls import ControlOptions",
        "from lsl_core.model.loading import load_checkpoint",
        "",
        *_preamble(checkpoint, set_spec, sample_id),
        f"a = analyze_sample(model, sample, AnalysisOptions(path={path!r}))  # every metric, all layers",
        "print(a.aps_cos, a.aps_dist, a.spearman_cos, a.consistency)  # the metric cards (per layer: [L+1])",
        f"fig = viz.token_heatmap(a, {int(layer)}, {metric!r})  # frames x tokens at layer {int(layer)}, with the path",
        "fig.show()",
        f"viz.layer_curves(a, current_layer={int(layer)}).show()",
        f"viz.tokenwise_curves(a, current_layer={int(layer)}).show()",
        f"sc = sample_controls(model, sample, samples.questions(), ControlOptions(partners={int(partners)}))",
        "sc.curve('aps_cos', 'specific')  # matched - mismatched, per layer",
    ]) + "\n"


def cka_code(checkpoint: str | Path, set_spec: str, sample_id: str, *, path_metric: str, path_layer: int,
             set_ids: list[str] | tuple[str, ...] | None) -> str:
    """Python that rebuilds the Cross-layer CKA page: this sample with the argmax and the DTW path, and the mean
    over the samples `set_ids` (None: no set part, e.g. for an uploaded clip's page)."""
    lines = [
        "from lsl_core import viz",
        "from lsl_core.analysis import AnalysisOptions, analyze_sample, analyze_set",
        "from lsl_core.data.sets import load_sample_set",
        "from lsl_core.metrics.stability import band_location, matrix_correlation",
        "from lsl_core.model.loading import load_checkpoint",
        "",
        *_preamble(checkpoint, set_spec, sample_id),
        "cka, null = {}, {}  # [L+1, L+1]: speech layer a x text layer b, tokens paired with frames by the path",
        "for method in ('argmax', 'dtw'):",
        f"    options = AnalysisOptions(cka=True, cka_path={path_metric!r}, cka_path_layer={int(path_layer)}, "
        "path=method)",
        "    a = analyze_sample(model, sample, options)",
        "    cka[method] = a.cka",
        "    null[f'{method} path: aligned CKA'] = (a.cka, None, None)",
        "    null[f'{method} path: shuffled pairing (null)'] = (a.cka_null_mean, a.cka_null_low, a.cka_null_high)",
        "    viz.cka_heatmap(cka[method], f'Aligned cross-layer CKA ({method} path)', band=band_location(cka[method]),",
        "                    null=(a.cka_null_mean, a.cka_null_high, a.cka_null_p)).show()  # hover: null, p",
        "print('argmax vs DTW, Pearson r:', matrix_correlation(cka['argmax'], cka['dtw']))",
        "viz.cka_spread(null, 'CKA of speech layer a with text layer a, and its shuffled-pairing null').show()",
    ]
    if set_ids:
        lines += [
            "",
            f"subset = samples.filter(ids={list(set_ids)!r})",
            f"res = analyze_set(model, subset, AnalysisOptions(cka=True, cka_path={path_metric!r}, "
            f"cka_path_layer={int(path_layer)}))",
            "if res.mean_cka is not None:  # None: no sample had enough aligned token pairs",
            "    viz.cka_heatmap(res.mean_cka, 'Aligned CKA, mean over the set', low=res.mean_cka_low, "
            "high=res.mean_cka_high).show()",
            "    viz.cka_spread({'aligned': (res.mean_cka, res.mean_cka_low, res.mean_cka_high), 'shuffled pairing "
            "(null)': (res.mean_cka_null, res.mean_cka_null_low, res.mean_cka_null_high)}, 'Diagonal vs its null')"
            ".show()",
            "if res.pooled_cka is not None:  # None: fewer samples than the pooled CKA needs",
            "    viz.cka_heatmap(res.pooled_cka, 'Mean-pooled CKA (unaligned)', low=res.pooled_cka_low, "
            "high=res.pooled_cka_high).show()",
        ]
    return "\n".join(lines) + "\n"


def interventions_code(checkpoint: str | Path, set_spec: str, sample_id: str, *, condition: str, max_new: int,
                       cascade: bool, nulls: tuple[str, ...] | list[str] = ()) -> str:
    """Python that regenerates the Interventions page's answers side by side (nulls: the intervention's nulls
    the page generated with it, 'Also its nulls')."""
    from lsl_core.interventions import needs_donor

    conds = [condition, *nulls]
    donor = needs_donor(conds)  # pairing "other": the next different question of the set, as the page picks it
    return "\n".join([
        "from lsl_core.data.sets import load_sample_set",
        *(["from lsl_core.experiments.table1 import donors_for"] if donor else []),
        "from lsl_core.interventions import generate_side_by_side",
        "from lsl_core.model.loading import load_checkpoint",
        "",
        *_preamble(checkpoint, set_spec, sample_id),
        *(["donor = donors_for(samples, [sample.id])[0]  # the next different question of the set"] if donor else []),
        f"result = generate_side_by_side(model, sample, {conds!r}, max_new_tokens={int(max_new)}, "
        f"cascade={bool(cascade)}{', donor_question=donor' if donor else ''})",
        "for row in result.rows():  # text, speech, cascade, then the intervened answer (and its nulls)",
        "    print(row['title'], '|', row['answer'], '| agreement with text:', row['agreement'])",
    ]) + "\n"


def checkpoints_code(results: str | Path, names: list[str], *, score: str, voice: str, by: tuple[str, ...],
                     live: tuple[list[str | Path], str, list[str]] | None = None) -> str:
    """Python that rebuilds the Checkpoints page's GAP-vs-alignment fits (R² per metric and group) from the
    results folder; live = (checkpoint folders, sample-set spec, sample ids) when the page computed the
    alignment rows live instead of reading them from the folder."""
    imports = ["from lsl_core import viz", "from lsl_core.metrics.gap import gap_fits",
               "from lsl_core.results import checkpoint_means, gap_table, load_results"]
    if live is not None:
        imports += ["from lsl_core.data.sets import load_sample_set",
                    "from lsl_core.experiments.analyze import analyze_checkpoints",
                    "from lsl_core.model.loading import read_manifest"]
    lines = sorted(imports)
    if live is not None:
        roots, spec, ids = live
        lines += [
            "",
            f"res = load_results({_path(results)!r})  # evaluation results: the GAP",
            f"manifests = [read_manifest(p) for p in {[_path(r) for r in roots]!r}]",
            f"samples = load_sample_set({_set_spec(spec)!r}).filter(ids={list(ids)!r})",
            "rows = analyze_checkpoints(manifests, samples).rows  # alignment (with the aligned CKA), live",
        ]
    else:
        lines += ["", f"res = load_results({_path(results)!r})  # evaluation results (GAP) and alignment rows",
                  "rows = res.alignment"]
    lines += [
        f"names = {list(names)!r}",
        "means = checkpoint_means(rows[rows['checkpoint'].isin(names)])  # one row per checkpoint",
        "summary = res.summary[res.summary['checkpoint'].isin(names)]",
        f"table = gap_table(means, summary, score={score!r}, voice={voice!r})  # GAP beside the alignment means",
        f"by = {tuple(by)!r}",
        f"fits = gap_fits(table, {GAP_X!r}, by=by)  # + null baselines and the training step's own fit",
        "print(fits)  # R² of GAP ≈ slope · x + intercept, per metric and group",
        "viz.gap_scatter(table, 'seq_cos_mean', fits[fits['metric'] == 'seq_cos_mean'], by=by, "
        f"gap_label='GAP ({score}, text − speech, points)').show()",
    ]
    return "\n".join(lines) + "\n"


def checkpoint_scores_code(results: str | Path, names: list[str], *, score: str, voice: str) -> str:
    """Python that rebuilds the Checkpoints page's scores across training (GAP, speech score, agreement with its
    answer-style baseline), 95% intervals included."""
    return "\n".join([
        "from lsl_core import viz",
        "from lsl_core.results import load_results, score_trends, with_intervals",
        "",
        f"res = load_results({_path(results)!r})  # evaluate's tables",
        f"rows = score_trends(res.summary, {list(names)!r}, {voice!r})  # one row per checkpoint, its trajectory",
        "rows = with_intervals(rows, res.samples)  # + <score>_lo / _hi: 95% bootstrap over each row's samples",
        f"viz.trend_curves(rows, 'gap_{score}').show()",
        f"viz.trend_curves(rows, 'speech_{score}').show()",
        "if 'cascade_agreement' in rows:  # end-to-end vs the cascade: agreement with its answer-style baseline",
        "    style = 'agreement_other_q' if 'agreement_other_q' in rows else None",
        "    viz.trend_curves(rows, 'agreement', baseline=style,",
        "                     baseline_label='answer style (other questions)').show()",
    ]) + "\n"


def benchmark_code(results: str | Path, checkpoint: str, metric: str) -> str:
    """Python that rebuilds the Benchmark page's text-vs-speech scores per voice, with their 95% intervals."""
    return "\n".join([
        "from lsl_core import viz",
        "from lsl_core.results import load_results, with_intervals",
        "",
        f"res = load_results({_path(results)!r})  # evaluate's tables",
        f"rows = res.summary[res.summary['checkpoint'] == {checkpoint!r}]  # one row per voice group",
        "rows = with_intervals(rows, res.samples)  # + <score>_lo / _hi: 95% bootstrap over each row's samples",
        "print(rows)",
        f"viz.scores_by_voice(rows, {metric!r}).show()",
    ]) + "\n"


def table1_code(*, results: str | Path | None = None, run: tuple[str | None, str | None] | None = None,
                live: tuple[str | Path, str, list[str], list[str], int] | None = None,
                null_bars: bool = True, layers: str | None = None) -> str:
    """Python that rebuilds the Benchmark page's intervention table (seed paper Table 1 with 95% intervals) and
    its nulls table (table1_nulls):
    from stored results (results folder, run = (results file prefix, checkpoint) the page picked) or live
    (checkpoint folder, sample-set spec, sample ids, conditions, max new tokens). null_bars=False: the bar
    chart leaves the nulls out (table1.without_nulls), as the page does unless asked. layers: the intervention
    the page draws across layers (layer_profile), None when it draws none."""
    if live is not None:
        from lsl_core.interventions import needs_donor

        checkpoint, spec, ids, conds, max_new = live
        donor = needs_donor(conds)  # the pairing-"other" nulls edit with the next different question of the set
        call = f"rows = evaluate_interventions(model, samples, {list(conds)!r}, max_new_tokens={int(max_new)}"
        lines = [
            "from lsl_core import viz",
            "from lsl_core.data.sets import load_sample_set",
            f"from lsl_core.experiments.table1 import {'donors_for, ' if donor else ''}evaluate_interventions, "
            f"table1_nulls, table1_with_intervals{'' if null_bars else ', without_nulls'}",
            "from lsl_core.model.loading import load_checkpoint",
            "",
            f"model = load_checkpoint({_path(checkpoint)!r})",
            f"samples = load_sample_set({_set_spec(spec)!r}).filter(ids={list(ids)!r})",
            *([f"donors = donors_for(load_sample_set({_set_spec(spec)!r}), samples.ids())  # for the :other nulls"]
              if donor else []),
            call + (", donors=donors)" if donor else ")") + "  # one row per sample x condition",
        ]
    else:
        prefix, checkpoint = run or (None, None)
        picks = [f"(iv['results'] == {prefix!r})" if prefix is not None else "",
                 f"(iv['checkpoint'] == {checkpoint!r})" if checkpoint is not None else ""]
        picks = [x for x in picks if x]
        lines = [
            "from lsl_core import viz",
            f"from lsl_core.experiments.table1 import table1_nulls, table1_with_intervals"
            f"{'' if null_bars else ', without_nulls'}",
            "from lsl_core.results import load_results",
            "",
            f"iv = load_results({_path(results or '.')!r}).interventions  # stored per-sample answers",
            *([f"rows = iv[{' & '.join(picks)}]  # the run the page shows"] if picks else ["rows = iv"]),
        ]
    lines += [
        "t = table1_with_intervals(rows)  # percent; <name>_lo / _hi: 95% bootstrap, each Δ paired on samples",
        "print(t)",
        ("viz.intervention_bars(t, 'F1').show()" if null_bars else
         "viz.intervention_bars(without_nulls(t, rows), 'F1').show()  # the nulls: against their interventions below"),
        "nulls = table1_nulls(rows)  # each intervention vs its nulls: paired Δ with 95% CIs (empty: no null run)",
        "print(nulls)",
        "if len(nulls):",
        "    viz.intervention_nulls(nulls, 'agreement').show()",
    ]
    if layers is not None:
        at = next(i for i, line in enumerate(lines) if line.startswith("from lsl_core.experiments.table1"))
        lines.insert(at, "from lsl_core.experiments.layer_profile import layer_profile")
        lines += [
            "profile = layer_profile(rows)  # the interventions run at two or more layers, against their nulls",
            f"viz.intervention_layers(profile, 'agreement', intervention={layers!r}).show()",
        ]
    return "\n".join(lines) + "\n"


def nulls_across_code(results: str | Path, steps: dict, layer: int | None = None) -> str:
    """Python that rebuilds the Benchmark page's interventions against their nulls across training (at one edit
    layer when the page picked one)."""
    return "\n".join([
        "from lsl_core import viz",
        "from lsl_core.experiments.table1 import nulls_across",
        "from lsl_core.results import load_results",
        "",
        f"iv = load_results({_path(results)!r}).interventions  # every stored intervention run",
        f"steps = {dict(sorted(steps.items(), key=lambda kv: (kv[1], kv[0])))!r}  # checkpoint -> step (the zoo)",
        f"across = nulls_across(iv, steps, min_checkpoints=2{'' if layer is None else f', layer={int(layer)}'})"
        "  # paired Δ per checkpoint, in training order",
        "print(across[['checkpoint', 'condition', 'null', 'Δ agreement', 'Δ agreement_lo', 'Δ agreement_hi']])",
        "viz.intervention_nulls_across(across, 'agreement').show()",
    ]) + "\n"


def report_command(checkpoint: str | Path, set_spec: str, sample_id: str, *, condition: str, max_new: int,
                   cascade: bool, path: str = "argmax") -> str:
    """The `report-case` command that writes the Interventions page's case as one HTML file."""
    args = ["python", "-m", "lsl_core", "report-case", "--checkpoint", _path(checkpoint), "--samples",
            _set_spec(set_spec), "--sample", sample_id, "--intervention", condition, "--tokens", str(int(max_new))]
    if not cascade:
        args.append("--no-cascade")
    if path != "argmax":
        args += ["--path", path]
    return shlex.join(args)


def _nameable(sel) -> bool:
    """Whether the selected sample can be named in code (an uploaded clip has no path)."""
    return sel.upload is None and bool(sel.set_spec) and sel.set_spec != "upload"


def explorer(sel, handle, sample, a, *, layer: int, metric: str, partners: int) -> None:
    """The Sample Explorer's expander: its analysis, figures and controls as Python."""
    _show(explorer_code(handle.path, sel.set_spec, sample.id, path=a.path_method, layer=layer, metric=metric,
                        partners=partners) if _nameable(sel) else None)


def cka(sel, handle, sample, *, path_metric: str, path_layer: int, set_ids: tuple[str, ...] | None) -> None:
    """The Cross-layer CKA page's expander: the sample's two CKA matrices and the set's mean as Python."""
    _show(cka_code(handle.path, sel.set_spec, sample.id, path_metric=path_metric, path_layer=path_layer,
                   set_ids=set_ids) if _nameable(sel) else None)


def checkpoints(results: str | Path, names: list[str], *, score: str, voice: str, by: tuple[str, ...],
                request: dict | None, set_spec: str | None) -> None:
    """The Checkpoints page's expander: its GAP-vs-alignment fits as Python (request: the live sweep's
    {'roots', 'ids'}, None for stored alignment rows)."""
    live = (list(request["roots"]), set_spec, list(request["ids"])) if request and set_spec else None
    _show(checkpoints_code(results, names, score=score, voice=voice, by=by, live=live),
          caption="The page's own library calls for the GAP-vs-alignment fits, with its checkpoints and settings "
                  "(run from the directory the app was started in).")


def checkpoint_scores(results: str | Path, names: list[str], *, score: str, voice: str) -> None:
    """The Checkpoints page's expander under its scores across training."""
    _show(checkpoint_scores_code(results, names, score=score, voice=voice),
          caption="The page's own library calls for the scores across training and their intervals (run from the "
                  "directory the app was started in).")


def benchmark(results: str | Path, checkpoint: str, metric: str) -> None:
    """The Benchmark page's expander under its per-voice scores."""
    _show(benchmark_code(results, checkpoint, metric),
          caption="The page's own library calls for the scores per voice and their intervals (run from the "
                  "directory the app was started in).")


def nulls_across(results: str | Path, steps: dict, layer: int | None = None) -> None:
    """The Benchmark page's expander under its interventions-against-nulls across training."""
    _show(nulls_across_code(results, steps, layer),
          caption="The page's own library calls for the nulls across training (run from the directory the app was "
                  "started in).")


def table1(**kwargs) -> None:
    """The Benchmark page's expander under its intervention table (table1_code's arguments)."""
    _show(table1_code(**kwargs),
          caption="The page's own library calls for the intervention table (run from the directory the app was "
                  "started in).")


def interventions(sel, handle, sample, a, *, condition: str, max_new: int, cascade: bool,
                  nulls: tuple[str, ...] = ()) -> None:
    """The Interventions page's expander: its generation as Python (with the nulls the page generated), the case
    report as a command."""
    if not _nameable(sel):
        _show(None)
        return
    _show(interventions_code(handle.path, sel.set_spec, sample.id, condition=condition, max_new=max_new,
                             cascade=cascade, nulls=tuple(nulls)),
          report_command(handle.path, sel.set_spec, sample.id, condition=condition, max_new=max_new,
                         cascade=cascade, path=a.path_method))


def _show(code: str | None, command: str | None = None, *, caption: str | None = None) -> None:
    """An expander with the Python (and the CLI command, when there is one); code None = an uploaded clip."""
    with st.expander("Reproduce this view in Python", icon=":material/code:"):
        if code is None:
            st.caption("An uploaded clip has no path to name here. Put it in a folder with a questions.csv "
                       "(columns file,question) and open it with load_sample_set('folder:DIR'); the link box in "
                       "the sidebar downloads the clip and its question.")
            return
        st.caption(caption or "The page's own library calls with its current model, sample and settings (run from "
                   "the directory the app was started in).")
        st.code(code, language="python")
        if command:
            st.caption("The same case from the command line, as one HTML report:")
            st.code(command, language="bash")
