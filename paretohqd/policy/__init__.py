"""The policy: loading it (`load`), prompts (`prompts`), fine-tuning (`sft`) and sampling (`generate`)."""
