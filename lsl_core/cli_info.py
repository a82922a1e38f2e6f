"""`python -m lsl_core info`: what this machine has — device, cache, shipped checkpoints and sample sets."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="device, cache dir, model zoo, sample sets")
    p.add_argument("--zoo", default=None, help="extra folder of manifests to list")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from lsl_core.cache import cache_dir
    from lsl_core.data.paths import assets_dir
    from lsl_core.data.sets import EMBEDDED_SETS, SPEC_FORMS, load_sample_set
    from lsl_core.errors import LSLError
    from lsl_core.model.loading import default_checkpoint, default_device, default_dtype, list_zoo

    dev = default_device()
    print(f"device: {dev} (dtype {default_dtype(dev)}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"cache:  {cache_dir()}")
    print(f"assets: {assets_dir()}")
    print(f"default checkpoint: {default_checkpoint()}")
    print("sample sets:")
    for name in EMBEDDED_SETS:  # a broken install is what `info` is run for: say what is wrong, go on
        try:
            s = load_sample_set(name)
            print(f"  {name:<28} {len(s)} clips, {len(set(s.questions()))} questions x {len(s.voices())} voices "
                  f"({assets_dir() / name})")
        except LSLError as exc:
            print(f"  {name:<28} unusable: {exc}")
    print(f"  also: {SPEC_FORMS.split(', ', 1)[1]} (pass as --samples)")
    for folder in [assets_dir() / "checkpoints", *([args.zoo] if args.zoo else [])]:
        print(f"zoo {folder}:")
        for m in list_zoo(folder):
            scope = " (LoRA on speech positions only)" if m.lora_scope == "speech" else ""
            print(f"  {m.name:<28} {m.family:<30} {m.strategy:<7} step {m.step}{scope}")
    return 0
