"""The HF round-trip notebook: an HF checkpoint folder -> r1jax (parity with transformers) -> sampling -> HF again."""
from __future__ import annotations

from nb_cells import COLAB, SETUP, SETUP_MD, code, md, notebook, parameters


def hf_roundtrip():
    return notebook([
        md(f"""
            # Hugging Face checkpoints in and out

            [Open in Colab]({COLAB.format("hf_roundtrip.ipynb")})

            `r1jax.models.hf` reads an HF checkpoint folder (`config.json` + safetensors, Qwen2 / Llama /
            DeepseekV3) into r1jax params and writes them back. This notebook loads a checkpoint, checks its logits
            against `transformers`, samples from it with `r1jax.sampling.sample`, exports it with `hf.save`, and
            checks that `transformers` loads the export and gives the same logits.

            With no checkpoint given it builds a tiny random Qwen2 with `transformers` (what CI runs: no hub there),
            whose samples are noise; set `HF_REPO_ID` (e.g. `Qwen/Qwen2.5-0.5B-Instruct`) on Colab to download a
            real one, or `HF_DIR` to a folder you have.
        """),
        parameters("""
            SMOKE = False                 # True: CI settings (a tiny random model, few tokens)
            HF_DIR = ""                   # an HF checkpoint folder; "" = HF_REPO_ID, else a tiny random Qwen2
            HF_REPO_ID = ""               # e.g. "Qwen/Qwen2.5-0.5B-Instruct": downloaded with huggingface_hub
            PROMPT = "Using the numbers [3, 5, 7], create an equation that equals 22."
            MAX_NEW_TOKENS = 64
            WORKDIR = "workdirs/hf_roundtrip"
        """),
        md(SETUP_MD),
        code(SETUP),
        md("""
            ## A checkpoint folder

            The tiny model has the byte tokenizer's vocabulary (264 ids), so prompts can be encoded without a
            `tokenizer.json`; a real checkpoint brings its own.
        """),
        code("""
            import os
            import numpy as np
            import torch, transformers
            from r1jax.tokenizer import ByteTokenizer, load_tokenizer

            if SMOKE:  # never a download in CI
                HF_DIR, HF_REPO_ID, MAX_NEW_TOKENS = "", "", min(MAX_NEW_TOKENS, 16)
            if not HF_DIR and HF_REPO_ID:
                from huggingface_hub import snapshot_download
                HF_DIR = snapshot_download(HF_REPO_ID, local_dir=os.path.join(WORKDIR, "hub", HF_REPO_ID))
            if not HF_DIR:
                HF_DIR = os.path.join(WORKDIR, "tiny_qwen2")
                torch.manual_seed(0)
                tiny = transformers.Qwen2Config(vocab_size=ByteTokenizer().vocab_size, hidden_size=64,
                                                intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, max_position_embeddings=256,
                                                tie_word_embeddings=False)
                transformers.Qwen2ForCausalLM(tiny).save_pretrained(HF_DIR)
            has_tokenizer = os.path.exists(os.path.join(HF_DIR, "tokenizer.json"))
            tokenizer = load_tokenizer(HF_DIR if has_tokenizer else "byte")
            print(HF_DIR, sorted(os.listdir(HF_DIR)), tokenizer)
        """),
        md("""
            ## Load into r1jax and check against transformers

            `hf.load` reads one tensor at a time through a memory map and places each on the mesh as it is read (here
            the weights are sharded over every device: `fsdp`). Compute in float32 for the comparison; bfloat16 is the
            default for training and sampling.
        """),
        code("""
            import jax
            from r1jax import sharding
            from r1jax.models import hf
            from r1jax.models.config import param_count
            from r1jax.models.transformer import Transformer

            mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=-1))
            cfg, params = hf.load(HF_DIR, mesh=mesh, cfg_overrides={"dtype": "float32"})
            print(f"{cfg.n_layers} layers, d_model {cfg.d_model}, vocab {cfg.vocab_size}: "
                  f"{param_count(cfg):,} parameters")

            ids = tokenizer.encode(PROMPT)
            with sharding.use_mesh(mesh):
                ours = np.asarray(Transformer(cfg).apply({"params": params}, np.asarray([ids]))[0])
            reference = transformers.AutoModelForCausalLM.from_pretrained(HF_DIR, dtype=torch.float32).eval()
            with torch.no_grad():
                theirs = reference(torch.as_tensor([ids])).logits.numpy()
            print(f"max |logits - transformers| = {np.abs(ours - theirs).max():.2e}")
            assert np.abs(ours - theirs).max() < 1e-3 * max(1.0, np.abs(theirs).max())
        """),
        md("""
            ## Sample

            `sample` prefills the prompt once, then decodes in `lax.scan` chunks over a KV cache, `n` completions per
            prompt. Greedy decoding (temperature 0) must pick the same tokens as `transformers`' greedy `generate`.
        """),
        code("""
            from r1jax.evaluation import completion_text
            from r1jax.sampling import SamplingConfig, sample

            knobs = dict(max_new_tokens=MAX_NEW_TOKENS, pad_id=tokenizer.pad_id, chunk_size=16)
            out = sample(params, cfg, [ids], SamplingConfig(temperature=0.7, top_p=0.95, n=4,
                                                            stop_ids=(tokenizer.eos_id,), **knobs),
                         jax.random.PRNGKey(0), mesh=mesh)
            for tokens, length in zip(out.tokens, out.lengths):
                print(repr(completion_text(tokenizer, tokens, length, prefix="")))

            # Plain greedy on both sides: no stop token, and none of the checkpoint's generation settings
            # (e.g. a repetition penalty).
            greedy = sample(params, cfg, [ids], SamplingConfig(temperature=0.0, **knobs), mesh=mesh).tokens[0]
            plain = transformers.GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            with torch.no_grad():
                hf_greedy = reference.generate(torch.as_tensor([ids]), generation_config=plain,
                                               attention_mask=torch.ones(1, len(ids), dtype=torch.long))
            hf_greedy = hf_greedy[0, len(ids):].tolist()
            print("greedy tokens agree with transformers:", list(greedy[:len(hf_greedy)]) == hf_greedy)
            assert list(greedy[:len(hf_greedy)]) == hf_greedy
        """),
        md("""
            ## Export and reload with transformers

            `hf.save` writes `config.json` and safetensors shards (atomically: a temporary folder, then a rename);
            `extra_files` copies the tokenizer and generation settings along. `transformers` loads the export and
            must give the same logits.
        """),
        code("""
            extra = [os.path.join(HF_DIR, f) for f in sorted(os.listdir(HF_DIR))  # hf.save writes config + weights
                     if os.path.isfile(os.path.join(HF_DIR, f)) and f != "config.json"
                     and not f.endswith((".safetensors", ".bin", ".pt", ".index.json"))]
            EXPORT_DIR = hf.save(cfg, params, os.path.join(WORKDIR, "export"), extra_files=extra)
            reloaded = transformers.AutoModelForCausalLM.from_pretrained(EXPORT_DIR, dtype=torch.float32).eval()
            with torch.no_grad():
                again = reloaded(torch.as_tensor([ids])).logits.numpy()
            print(EXPORT_DIR, sorted(os.listdir(EXPORT_DIR)))
            print(f"max |exported - original| logits = {np.abs(again - theirs).max():.2e}")
            assert np.abs(again - theirs).max() < 1e-4 * max(1.0, np.abs(theirs).max())
        """),
    ], accelerator=None)
