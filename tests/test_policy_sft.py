"""Stage-1 SFT on a tiny random Llama with the real SmolLM2 tokenizer."""

import json

import pytest
import torch
from safetensors.torch import load_file

from paretohqd.config import PolicyConfig, TrainConfig
from paretohqd.policy.sft import IGNORE, build_model, collate, completion_loss, encode, finetune, micro_batches, step_plan

CFG = TrainConfig(lora_r=4, lora_alpha=8, lr=5e-3, warmup_steps=1, save_every=2, mixed_precision="no",
                  micro_batch_tokens=256, batch_size=4)


def _samples(tokenizer, hh_samples, n=12):
    return [encode(tokenizer, m, r, 256) for m, r in hh_samples[:n]]


def test_encode_masks_prompt_and_keeps_response(smol_tokenizer):
    msgs = [{"role": "user", "content": "Tell me a fact."}]
    ids, n_prompt = encode(smol_tokenizer, msgs, "Water boils at 100 C.", 512)
    prompt = smol_tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert ids[:n_prompt] == list(prompt)
    answer = smol_tokenizer.decode(ids[n_prompt:])
    assert answer.startswith("Water boils at 100 C.") and "<|im_end|>" in answer
    # too long: the prompt loses its oldest tokens, the answer stays whole
    ids2, n2 = encode(smol_tokenizer, [{"role": "user", "content": "word " * 300}], "Short answer here.", 64)
    assert len(ids2) == 64 and smol_tokenizer.decode(ids2[n2:]).startswith("Short answer here.")


def test_every_target_ends_with_eos_in_both_formats(smol_tokenizer, hh_samples):
    """RiC#9: a model trained without EOS never learns to stop. Chat: the template's end-of-turn is
    the last target token (its trailing newline dropped); hh: the raw transcript, then " answer" + EOS.
    Also when the answer is cut to fit max_length."""
    eos = smol_tokenizer.eos_token_id
    for fmt in ("chat", "hh"):
        for messages, response in hh_samples:
            for max_length in (512, 24):
                ids, n_prompt = encode(smol_tokenizer, messages, response, max_length, fmt)
                assert ids[-1] == eos and eos not in ids[n_prompt:-1] and len(ids) <= max_length
    messages, response = hh_samples[0]
    ids, n_prompt = encode(smol_tokenizer, messages, response, 512, "hh")
    text = smol_tokenizer.decode(ids[:n_prompt])
    assert text.startswith("\n\nHuman: ") and text.endswith("\n\nAssistant:") and "<|im_start|>" not in text
    assert smol_tokenizer.decode(ids[n_prompt:-1]) == " " + response


def test_training_in_the_hh_format(tmp_path, tiny_policy, smol_tokenizer, hh_samples):
    """A tiny model trains on hh-format samples (each ending with EOS) and its loss goes down."""
    samples = [encode(smol_tokenizer, m, r, 128, "hh") for m, r in hh_samples[:8]]
    assert all(ids[-1] == smol_tokenizer.eos_token_id for ids, _ in samples)
    cfg = CFG.model_copy(update={"lr": 1e-2, "warmup_steps": 0})
    stats = finetune(samples, tmp_path / "hh", policy=PolicyConfig(model=tiny_policy), cfg=cfg, steps=6, seed=0,
                     pad_id=smol_tokenizer.pad_token_id)
    assert stats["loss_last"] < stats["loss_first"]


def test_collate_left_pads_and_labels_only_answers():
    batch = collate([([5, 6, 7, 8], 2), ([1, 2, 3, 4, 5, 6], 5)], pad_id=0)
    assert batch["input_ids"].tolist() == [[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]]
    assert batch["labels"].tolist() == [[IGNORE] * 4 + [7, 8], [IGNORE] * 5 + [6]]
    assert batch["position_ids"].tolist() == [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]
    assert batch["keep"] == 3  # longest answer (2) + 1


def test_completion_loss_equals_full_logits_reference(tiny_policy, smol_tokenizer, hh_samples):
    """logits_to_keep + left padding must give exactly the plain masked cross-entropy."""
    model = build_model(PolicyConfig(model=tiny_policy), CFG).eval()
    samples = _samples(smol_tokenizer, hh_samples, 4)
    batch = collate(samples, smol_tokenizer.pad_token_id)
    with torch.no_grad():
        ours = completion_loss(model, batch)
        ref = 0.0
        for ids, n_prompt in samples:  # one unpadded sequence at a time, full logits
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            ref += torch.nn.functional.cross_entropy(logits[n_prompt - 1:-1], torch.tensor(ids[n_prompt:]),
                                                     reduction="sum")
    assert torch.allclose(ours, ref, rtol=1e-4)


def test_step_plan_and_micro_batches_cover_every_sample():
    plan = step_plan([10, 50, 20, 40, 30], steps=4, batch_size=3, seed=1)
    flat = [i for step in plan for i in step]
    assert len(flat) == 12 and set(flat[:5]) == set(range(5))  # first epoch sees every sample
    assert all(s == sorted(s, key=[10, 50, 20, 40, 30].__getitem__) for s in plan)
    lengths = [10, 50, 20, 40, 30]
    chunks = micro_batches([0, 2, 4, 3, 1], lengths, 60)
    assert chunks == [[0, 2], [4], [3], [1]]  # 2 x 20 fits 60; 2 x 30 = 60 would need [4, 3]: 2 x 40 > 60
    assert all(len(c) * max(lengths[i] for i in c) <= 60 for c in chunks)


def test_stage1_trains_lora_and_saves(tmp_path, tiny_policy, smol_tokenizer, hh_samples):
    out = tmp_path / "pref-00"
    policy = PolicyConfig(model=tiny_policy)
    before = {k: v.clone() for k, v in build_model(policy, CFG).state_dict().items() if "lora_B" in k}
    stats = finetune(_samples(smol_tokenizer, hh_samples), out, policy=policy, cfg=CFG, steps=4, seed=0,
                  pad_id=smol_tokenizer.pad_token_id)
    assert stats["steps"] == 4 and torch.isfinite(torch.tensor(stats["loss_last"]))
    assert (out / "adapter_config.json").exists() and json.loads((out / "train.json").read_text())["steps"] == 4
    after = load_file(out / "adapter_model.safetensors")
    changed = [k for k in after if "lora_B" in k and after[k].abs().sum() > 0]
    assert changed and len(before) >= len(changed)  # LoRA B starts at zero, so any non-zero means it learned
    assert not (tmp_path / "pref-00.ckpt").exists()


def test_resume_after_kill_matches_uninterrupted(tmp_path, tiny_policy, smol_tokenizer, hh_samples):
    policy, samples, pad = PolicyConfig(model=tiny_policy), _samples(smol_tokenizer, hh_samples), smol_tokenizer.pad_token_id
    ref = finetune(samples, tmp_path / "ref", policy=policy, cfg=CFG, steps=5, seed=3, pad_id=pad)

    def die(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(samples, tmp_path / "run", policy=policy, cfg=CFG, steps=5, seed=3, pad_id=pad, on_step=die)
    assert (tmp_path / "run.ckpt" / "state.json").exists() and not (tmp_path / "run").exists()
    seen = []
    stats = finetune(samples, tmp_path / "run", policy=policy, cfg=CFG, steps=5, seed=3, pad_id=pad,
                  on_step=lambda s, l: seen.append(s))
    assert stats["resumed_at"] == 2 and seen == [3, 4, 5]
    a, b = load_file(tmp_path / "ref" / "adapter_model.safetensors"), load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert abs(stats["loss_last"] - ref["loss_last"]) < 1e-4
    # finished: a rerun does nothing
    assert finetune(samples, tmp_path / "run", policy=policy, cfg=CFG, steps=5, seed=3, pad_id=pad) == stats


def test_full_finetune_and_continue_from_adapter(tmp_path, tiny_policy, smol_tokenizer, hh_samples):
    policy, samples, pad = PolicyConfig(model=tiny_policy), _samples(smol_tokenizer, hh_samples, 6), smol_tokenizer.pad_token_id
    full = CFG.model_copy(update={"lora": False, "lr": 1e-3})
    finetune(samples, tmp_path / "full", policy=policy, cfg=full, steps=2, seed=0, pad_id=pad)
    assert (tmp_path / "full" / "model.safetensors").exists()
    finetune(samples, tmp_path / "s1", policy=policy, cfg=CFG, steps=2, seed=0, pad_id=pad)
    s1 = load_file(tmp_path / "s1" / "adapter_model.safetensors")
    finetune(samples, tmp_path / "s2", policy=policy, cfg=CFG, steps=2, seed=1, pad_id=pad, init_adapter=tmp_path / "s1")
    s2 = load_file(tmp_path / "s2" / "adapter_model.safetensors")
    assert s1.keys() == s2.keys() and any(not torch.equal(s1[k], s2[k]) for k in s1)


def test_report_to_tensorboard_logs_every_step_of_every_model(tmp_path, tiny_policy, smol_tokenizer, hh_samples):
    """`train.report_to: tensorboard`: each model's loss, lr, grad norm and tokens/s per step, under
    its own tag, in one TensorBoard run read back from the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = CFG.model_copy(update={"report_to": "tensorboard", "warmup_steps": 0})  # lr: 3/3, 2/3, 1/3 of the peak
    samples = _samples(smol_tokenizer, hh_samples)
    stats = {}
    for tag in ("stage1/pref-00", "stage2/pref-00"):
        stats[tag] = finetune(samples, tmp_path / tag, policy=PolicyConfig(model=tiny_policy), cfg=cfg, steps=3, seed=0,
                              pad_id=smol_tokenizer.pad_token_id, log_dir=tmp_path / "logs", log_run="demo", log_tag=tag)
    events = EventAccumulator(str(tmp_path / "logs" / "demo"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag, trained in stats.items():
        loss = events.Scalars(f"{tag}/loss")
        assert [e.step for e in loss] == [1, 2, 3]
        assert [e.value for e in loss] == pytest.approx(trained["losses"], rel=1e-5)
        assert [e.value for e in events.Scalars(f"{tag}/lr")] == pytest.approx([5e-3, 5e-3 * 2 / 3, 5e-3 / 3])
        assert {f"{tag}/grad_norm", f"{tag}/tokens_per_s"} <= set(scalars)
        assert all(e.value > 0 for e in events.Scalars(f"{tag}/tokens_per_s"))


def test_report_to_a_tracker_that_is_not_installed_is_one_clear_error():
    from accelerate.tracking import get_available_trackers

    from paretohqd.config import ConfigError
    from paretohqd.policy.sft import check_report_to

    check_report_to(CFG)  # none: nothing to check
    installed = {str(t) for t in get_available_trackers()}
    missing = [t for t in ("wandb", "mlflow", "comet_ml", "clearml", "dvclive", "swanlab", "trackio") if t not in installed]
    if not missing:
        pytest.skip("every tracker is installed here")
    with pytest.raises(ConfigError, match=f"train.report_to: {missing[0]} is not installed"):
        check_report_to(CFG.model_copy(update={"report_to": missing[0]}))
