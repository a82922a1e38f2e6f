"""The app's pages: the one list that app.py (st.navigation), the landing page and the tests read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str  # page file, relative to the repository root
    title: str  # navigation label
    icon: str  # Material icon
    what: str  # one line for the landing page


PAGES: tuple[PageInfo, ...] = (
    PageInfo("pages/1_Sample_Explorer.py", "Sample Explorer", ":material/grid_on:",
             "audio, transcript and the frames × tokens similarity of every layer, with the alignment path; "
             "sequence-level curves; APS, Spearman, consistency"),
    PageInfo("pages/2_Interventions.py", "Interventions", ":material/tune:",
             "move the least aligned speech frames towards their text tokens (angle / length / calibration) and "
             "regenerate: text, speech, cascade and intervened answers"),
    PageInfo("pages/3_Checkpoints.py", "Checkpoints", ":material/show_chart:",
             "metrics across training checkpoints; GAP vs alignment with R²"),
    PageInfo("pages/4_Cross_Layer_CKA.py", "Cross-layer CKA", ":material/apps:",
             "which speech layer matches which text layer"),
    PageInfo("pages/5_Benchmark.py", "Benchmark", ":material/leaderboard:",
             "text vs speech scores per voice, GAP, cases, intervention table"),
)
EXPLORER = PAGES[0].path  # where the app starts and where the Benchmark page sends a case
