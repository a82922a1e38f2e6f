"""Modality Gap Explorer: `streamlit run app.py`.

Declares the pages (st.navigation) and draws the shared sidebar (model, sample set, sample), so the
selection survives page switches. Pages live in pages/ and stay thin: they arrange widgets, call
lsl_core for results and lsl_core.viz for figures. Settings: ui/config.py (LSL_* environment variables).
"""

import streamlit as st

from ui import home, links, sidebar

st.set_page_config(page_title="Modality Gap Explorer", page_icon=":material/record_voice_over:", layout="wide")

PAGES = [
    st.Page(home.render, title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Sample_Explorer.py", title="Sample Explorer", icon=":material/grid_on:"),
    st.Page("pages/2_Interventions.py", title="Interventions", icon=":material/tune:"),
    st.Page("pages/3_Checkpoints.py", title="Checkpoints", icon=":material/show_chart:"),
    st.Page("pages/4_Cross_Layer_CKA.py", title="Cross-layer CKA", icon=":material/apps:"),
    st.Page("pages/5_Benchmark.py", title="Benchmark", icon=":material/leaderboard:"),
]

page = st.navigation(PAGES)
links.begin()
selection = sidebar.render()
link_box = st.sidebar.expander("Link to this view", icon=":material/link:")
try:
    page.run()
finally:
    sidebar.end_run()
    links.flush()
    links.render_box(link_box, selection)
