"""Streamlit-side helpers of the app (the only package besides pages/ that imports streamlit).

config    where models, samples and results come from (environment variables, shipped defaults)
loaders   st.cache_resource (models, sample sets) and st.cache_data (analyses, answers, tables)
sidebar   the shared sidebar (model, sample set, sample picker, upload) -> Selection
context   what a page needs from the selection: the model, the sample, its analysis, with messages
links     query parameters: a link that reopens the same model + sample + layer + intervention
upload    an uploaded audio file + question -> Sample, or one clear error
export    figures with the Plotly download toolbar, tables with CSV/JSON download buttons
tables    SampleAnalysis / results -> display tables (rearranging only, no metric computed here)
home      the landing page
"""
