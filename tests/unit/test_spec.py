import pytest
import torch

from sobert_api import SpecError, build_spec, load_spec_file
from sobert_api.presets import preset_names


def spec_doc(**overrides):
    doc = {"preset": "tiny", "name": "t", "data": {"posts": ["Posts.xml"]}, "storage": {"uri": "/tmp/x"}}
    for key, value in overrides.items():
        doc[key] = value
    return doc


def test_presets_validate():
    for preset in preset_names():
        spec = build_spec(spec_doc(preset=preset))
        assert spec.preset == preset


def test_paper_batch_is_half_a_million_tokens():
    for preset in ("base", "large"):
        spec = build_spec(spec_doc(preset=preset))
        assert spec.train.global_batch_size * spec.model.seq_length == 524_288
        assert spec.model.padded_vocab_size() == 50_048
        assert spec.train_iters == 51_499  # ceil(27e9 / 524,288)


@pytest.mark.parametrize(("preset", "low", "high"), [("base", 109e6, 126e6), ("large", 740e6, 770e6)])
def test_parameter_count_matches_huggingface_megatron_bert(preset, low, high):
    from transformers import MegatronBertConfig, MegatronBertForMaskedLM

    spec = build_spec(spec_doc(preset=preset))
    m = spec.model
    config = MegatronBertConfig(
        vocab_size=m.padded_vocab_size(),
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_attention_heads,
        intermediate_size=m.ffn_hidden_size,
        max_position_embeddings=m.max_position_embeddings,
        type_vocab_size=m.num_tokentypes,
    )
    with torch.device("meta"):
        hf = MegatronBertForMaskedLM(config)
    hf_count = sum(p.numel() for p in hf.parameters())  # tied decoder weight counted once
    assert spec.model.parameter_count() == hf_count
    assert low <= hf_count <= high


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"num_attention_heads": 5}}, "model.num_attention_heads (5) must divide model.hidden_size (64)"),
        ({"model": {"seq_length": 256}}, "exceeds model.max_position_embeddings"),
        ({"parallel": {"procs_per_node": 3, "tensor_parallel": 2}}, "must divide the world size"),
        ({"parallel": {"procs_per_node": 8, "tensor_parallel": 8}}, "must divide model.num_attention_heads (4)"),
        ({"parallel": {"nodes": 2, "procs_per_node": 1, "tensor_parallel": 2}}, "must fit inside one node"),
        ({"parallel": {"procs_per_node": 3}}, "train.global_batch_size (16) must be divisible"),
        ({"train": {"min_lr": 1.0}}, "exceeds train.lr"),
        ({"storage": {"uri": "gs://bucket/x"}}, "expected a local path or s3://"),
        ({"storage": {"uri": "s3://Bad_Bucket/x"}}, "not a valid S3 bucket name"),
        ({"name": "Not_A_Label"}, "DNS-1123"),
        ({"model": {"hidden_sise": 64}}, "model.hidden_sise: Extra inputs are not permitted"),
        ({"preset": "huge"}, "unknown preset 'huge'"),
    ],
)
def test_invalid_specs_name_the_field(change, message):
    from sobert_api.presets import deep_merge

    with pytest.raises(SpecError) as error:
        build_spec(deep_merge(spec_doc(), change))
    assert message in str(error.value)


def test_spec_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("preset: tiny\nname: ok\ndata: {posts: [a]}\nstorage: {uri: /x}\ntrain: {micro_batch_size: 0}\n")
    with pytest.raises(SpecError) as error:
        load_spec_file(bad)
    assert str(bad) in str(error.value) and "train.micro_batch_size" in str(error.value)
    bad.write_text("- not a mapping\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec_file(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")


def test_gradient_accumulation_is_derived():
    spec = build_spec(spec_doc(parallel={"procs_per_node": 2}))
    assert spec.parallel.data_parallel == 2
    assert spec.gradient_accumulation_steps == 16 // (4 * 2)
