"""Modality Gap Explorer core library: speech-LLM hidden states, alignment metrics, interventions.

Nothing in this package imports streamlit; every figure in the app is a function of this library.
"""

__version__ = "0.1.0"
