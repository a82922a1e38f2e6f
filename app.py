"""Modality Gap Explorer: `streamlit run app.py`.

Declares the pages (st.navigation) and draws the shared sidebar (model, sample set, sample), so the
selection survives page switches. Pages live in pages/ and stay thin: they arrange widgets, call
lsl_core for results and lsl_core.viz for figures. Settings: ui/config.py (LSL_* environment variables).
"""

import streamlit as st

from ui import home, links, nav, sidebar

st.set_page_config(page_title="Modality Gap Explorer", page_icon=":material/record_voice_over:", layout="wide")

PAGES = [
    st.Page(home.render, title="Home", icon=":material/home:", default=True),
    *(st.Page(p.path, title=p.title, icon=p.icon) for p in nav.PAGES),
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
