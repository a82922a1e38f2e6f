"""Families whose model class ships with the checkpoint (remote code): MiniCPM-o 2.6, LLaMA-Omni.

transformers has no native class for them; their hub repositories carry Python files that
`from_pretrained(..., trust_remote_code=True)` imports and runs. This tool never does that on its own:

  1. the family must be registered by the user (nothing here is registered by default), and
  2. the manifest must say `"trust_remote_code": true` - otherwise loading stops with a ManifestError
     naming that field.

To add one, subclass RemoteCodeFamily in your own module, fill in the four model-specific pieces
(read them off the repository's modeling file), register it, then load a manifest with its name:

    from lsl_core.model.families import register_family
    from lsl_core.model.families.remote import RemoteCodeFamily

    class MiniCPMO(RemoteCodeFamily):
        name = "minicpm-o"                     # the manifest's "family"
        hf_class = "MiniCPMO"                  # the class named in the repo's config.json auto_map
        model_types = ("minicpmo",)            # config.json model_type
        hub_ids = ("openbmb/MiniCPM-o-2_6",)
        frame_seconds = ...                    # audio per placeholder after its projector
        audio_token = "<unk>"                  # the placeholder its processor repeats

        def speech_prompt_ids(self, tok, system, instruction=""): ...   # ids around the placeholder run
        def text_prompt_ids(self, tok, system): ...                     # ids around the typed question
        def num_audio_tokens(self, model, n_samples): ...               # Ts for a clip
        def audio_embeddings(self, model, feature_extractor, wav16k): ...   # [Ts, d] its projector output
        def language_model(self, model): return model.llm.model         # the module owning `.layers`

    register_family(MiniCPMO())

    # manifest.json
    {"name": "minicpm-o-2.6", "family": "minicpm-o", "model": "openbmb/MiniCPM-o-2_6",
     "strategy": "pretrained", "trust_remote_code": true}

Everything else (hidden states of both spans, prefill hooks, side-by-side answers, the app) comes from
FamilyLSLM unchanged. Check the subclass the way tests/test_families.py checks the native ones: the
speech span must equal the placeholder positions of the model's own processor, and the hidden states
of `build_prompt` must equal those of the model's own forward on (input_ids, audio features).
LLaMA-Omni (ICTNLP/Llama-3.1-8B-Omni) is a Whisper-large-v3 encoder + 5-frame stacking adaptor +
Llama-3.1-8B-Instruct and loads from its own package; its parts can also be described as a built-in
manifest (encoder + adaptor + LLM) once the adaptor weights are converted to safetensors.
"""

from __future__ import annotations

from lsl_core.model.families.base import Family


class RemoteCodeFamily(Family):
    """A family whose class comes from the checkpoint's own code (opened with trust_remote_code=True,
    only when both the registered family and the manifest allow it)."""

    trust_remote_code = True

    def load_model(self, ref, config, dtype, device, *, local_only, device_map):
        from transformers import AutoModel

        kwargs = dict(dtype=dtype, local_files_only=local_only, use_safetensors=True, trust_remote_code=True)
        if device_map:
            return AutoModel.from_pretrained(ref, device_map=device_map, **kwargs).eval()
        return AutoModel.from_pretrained(ref, **kwargs).to(device).eval()

    def load_processor(self, ref, *, local_only):
        from transformers import AutoFeatureExtractor, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ref, local_files_only=local_only, trust_remote_code=True)
        fe = AutoFeatureExtractor.from_pretrained(ref, local_files_only=local_only, trust_remote_code=True)
        return tok, fe
