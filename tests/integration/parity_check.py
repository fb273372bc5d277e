"""Run in a child process: max |logits| difference between a megatron-core checkpoint and its HF conversion."""

import json
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main(checkpoint_dir: str, hf_dir: str, spec_json: str, saved_tp: int) -> None:
    import torch
    from transformers import AutoTokenizer, MegatronBertForMaskedLM

    from sobert_api import build_spec
    from sobert_trainer.convert.megatron_to_hf import load_megatron_model

    spec = build_spec(json.loads(Path(spec_json).read_text()))
    megatron = load_megatron_model(Path(checkpoint_dir), spec.model, saved_tp)
    hf = MegatronBertForMaskedLM.from_pretrained(hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    batch = tokenizer(
        ["How do I convert a decimal to a double in C#?", "git rebase --onto main feature [CODE] x = 1 [/CODE]"],
        padding=True,
        return_tensors="pt",
    )
    types = torch.zeros_like(batch["input_ids"])
    with torch.no_grad():
        reference = megatron(batch["input_ids"], batch["attention_mask"], tokentype_ids=types)[0]
        converted = hf(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=types
        ).logits
    real = batch["attention_mask"].bool()
    diff = (reference - converted).abs()[real].max().item()
    print(json.dumps({"max_abs_diff": diff, "shape": list(converted.shape)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
