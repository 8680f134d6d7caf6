import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.training import optim, sft

PAD = 0


# ----------------------------------------------------------------------------------------------
# Packing.
# ----------------------------------------------------------------------------------------------


def test_pack_hand_checked():
    examples = [([1, 2], [3, 4]), ([5], [6, 7, 8]), ([9, 10, 11], [12, 13]), ([14], [15, 16])]
    batch, stats = sft.pack_examples(examples, seq_len=8, pad_id=PAD)
    # first fit: ex0 + ex1 fill row 0; ex2 opens row 1; ex3 (3 tokens) fits the rest of row 1.
    np.testing.assert_array_equal(batch["tokens"], [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]])
    np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 4, 0, 1, 2]])
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 2, 2, 2]])
    # loss_mask[t] = 1 iff tokens[t+1] is a response token of the same example.
    np.testing.assert_array_equal(batch["loss_mask"], [[0, 1, 1, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 1, 1, 0]])
    assert stats == {"num_examples": 4, "num_rows": 2, "num_truncated": 0, "num_dropped": 0, "fill": 1.0}
    assert all(a.dtype == np.int32 for a in batch.values())


def test_pack_padding_and_overlong():
    examples = [([1, 2, 3], [4, 5, 6, 7]), ([8], [9])]
    batch, stats = sft.pack_examples(examples, seq_len=5, pad_id=-1)
    np.testing.assert_array_equal(batch["tokens"], [[1, 2, 3, 4, 5], [8, 9, -1, -1, -1]])
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(batch["loss_mask"], [[0, 0, 1, 1, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(batch["positions"][1], [0, 1, 0, 0, 0])
    assert stats["num_truncated"] == 1 and stats["num_dropped"] == 0 and stats["fill"] == 0.7

    batch, stats = sft.pack_examples(examples, seq_len=5, pad_id=-1, overlong="drop")
    np.testing.assert_array_equal(batch["tokens"], [[8, 9, -1, -1, -1]])
    assert stats["num_dropped"] == 1 and stats["num_examples"] == 1

    with pytest.raises(ValueError, match="known: \\['truncate', 'drop'\\]"):
        sft.pack_examples(examples, seq_len=5, pad_id=0, overlong="skip")
    with pytest.raises(ValueError, match="example 1 has an empty prompt and an empty response"):
        sft.pack_examples([([1], [2]), ([], [])], seq_len=5, pad_id=0)


def _random_examples(rng, n, max_len):
    return [
        (rng.integers(1, 50, rng.integers(0, max_len)).tolist(), rng.integers(50, 100, rng.integers(1, max_len)).tolist())
        for _ in range(n)
    ]


def test_pack_invariants_random():
    rng = np.random.default_rng(0)
    examples = _random_examples(rng, 200, 12)
    seq_len = 32
    batch, stats = sft.pack_examples(examples, seq_len, PAD)
    again, _ = sft.pack_examples(examples, seq_len, PAD)
    jax.tree.map(np.testing.assert_array_equal, batch, again)  # deterministic
    tok, pos, seg, mask = (batch[k] for k in ("tokens", "positions", "segment_ids", "loss_mask"))
    recovered = []
    for r in range(tok.shape[0]):
        for s in range(1, seg[r].max() + 1):
            idx = np.flatnonzero(seg[r] == s)
            assert np.all(np.diff(idx) == 1)  # contiguous
            np.testing.assert_array_equal(pos[r, idx], np.arange(len(idx)))  # positions restart
            recovered.append(tok[r, idx].tolist())
        assert np.all(tok[r][seg[r] == 0] == PAD)
        # mask only where the next token is a response token (ids >= 50 here) of the same segment
        t = np.flatnonzero(mask[r])
        assert np.all(t < seq_len - 1)
        assert np.all(seg[r, t] == seg[r, t + 1]) and np.all(seg[r, t] > 0)
        assert np.all(tok[r, t + 1] >= 50)
    assert sorted(map(tuple, recovered)) == sorted(tuple(p + q) for p, q in examples)
    # every response token that has a predecessor in its example is a target exactly once
    expected = sum(len(q) - (1 if len(p) == 0 else 0) for p, q in examples)
    assert mask.sum() == expected
    assert stats["num_rows"] == tok.shape[0] and stats["fill"] > 0.9


# ----------------------------------------------------------------------------------------------
# A toy causal model that honours segment ids and positions.
# ----------------------------------------------------------------------------------------------


class ToyLM(nn.Module):
    vocab: int = 32
    dim: int = 32

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT, segment_ids_BxT):
        x = nn.Embed(self.vocab, self.dim)(tokens_BxT) + nn.Embed(64, self.dim, name="pos")(positions_BxT)
        q, k, v = (nn.Dense(self.dim, name=n)(x) for n in "qkv")
        T = tokens_BxT.shape[1]
        mask = jnp.tril(jnp.ones((T, T), bool))[None] & (segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :])
        att = jnp.where(mask, jnp.einsum("btd,bsd->bts", q, k) / np.sqrt(self.dim), -1e9)
        x = x + jnp.einsum("bts,bsd->btd", jax.nn.softmax(att, axis=-1), v)
        x = x + nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(nn.RMSNorm()(x))))
        return nn.Dense(self.vocab)(nn.RMSNorm()(x))


def _model_and_params(seq_len=16):
    model = ToyLM()
    zeros = jnp.zeros((1, seq_len), jnp.int32)
    params = model.init(jax.random.key(0), zeros, zeros, zeros)
    return model, params


def test_packed_examples_do_not_see_each_other():
    model, params = _model_and_params()
    examples = [([1, 2, 3], [4, 5]), ([6, 7], [8, 9, 10]), ([11], [12, 13, 14])]
    packed, _ = sft.pack_examples(examples, seq_len=16, pad_id=PAD)
    assert packed["tokens"].shape[0] == 1
    logits = model.apply(params, packed["tokens"], packed["positions"], packed["segment_ids"])
    for i, ex in enumerate(examples):
        alone, _ = sft.pack_examples([ex], seq_len=16, pad_id=PAD)
        ref = model.apply(params, alone["tokens"], alone["positions"], alone["segment_ids"])
        idx = np.flatnonzero(packed["segment_ids"][0] == i + 1)
        np.testing.assert_allclose(logits[0, idx], ref[0, : len(idx)], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------------


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_next_token_loss_matches_numpy():
    rng = np.random.default_rng(1)
    B, T, V = 2, 5, 7
    logits = rng.normal(size=(B, T, V)).astype(np.float32)
    tokens = rng.integers(0, V, (B, T))
    mask = np.array([[0, 1, 1, 0, 1], [1, 0, 0, 1, 0]])  # the last column never counts
    logits[0, 1] = 0.0
    logits[0, 1, tokens[0, 2]] = 5.0  # one sure-correct prediction
    logp = _np_log_softmax(logits.astype(np.float64))
    nll, correct, n = 0.0, 0, 0
    for b in range(B):
        for t in range(T - 1):
            if mask[b, t]:
                nll -= logp[b, t, tokens[b, t + 1]]
                correct += int(np.argmax(logits[b, t]) == tokens[b, t + 1])
                n += 1
    for fn in (sft.next_token_loss, jax.jit(sft.next_token_loss)):
        loss, m = fn(jnp.asarray(logits), tokens, mask)
        np.testing.assert_allclose(loss, nll / n, rtol=1e-5)
        np.testing.assert_allclose(m["accuracy"], correct / n, rtol=1e-6)
        assert int(m["n_tokens"]) == n == 4 and correct >= 1


def test_next_token_loss_empty_mask_and_bf16():
    logits = jnp.ones((1, 3, 4), jnp.bfloat16)
    loss, m = sft.next_token_loss(logits, jnp.zeros((1, 3), jnp.int32), jnp.zeros((1, 3), jnp.int32))
    assert float(loss) == 0.0 and float(m["n_tokens"]) == 0.0 and loss.dtype == jnp.float32
    with pytest.raises(ValueError, match="shape mismatch"):
        sft.next_token_loss(logits, jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))


def test_distill_loss():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(2, 3, 6)).astype(np.float32)
    t = rng.normal(size=(2, 3, 6)).astype(np.float32)
    mask = np.array([[1, 1, 0], [0, 1, 0]])
    loss, m = sft.distill_loss(s, s, mask, temperature=2.0)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    T = 2.0
    lp, lq = _np_log_softmax(t / T), _np_log_softmax(s / T)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    expected = T * T * (kl * mask).sum() / mask.sum()
    loss, m = jax.jit(sft.distill_loss, static_argnums=3)(s, t, mask, T)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert int(m["n_tokens"]) == 3
    g_teacher = jax.grad(lambda tt: sft.distill_loss(s, tt, mask, T)[0])(jnp.asarray(t))
    assert not np.any(g_teacher)
    with pytest.raises(ValueError, match="vocab"):
        sft.distill_loss(s, t[..., :5], mask)


def test_check_same_vocab():
    sft.check_same_vocab(10, 10)
    sft.check_same_vocab({"a": 0, "b": 1}, ["a", "b"])
    with pytest.raises(ValueError, match="student vocab size 10 != teacher vocab size 12"):
        sft.check_same_vocab(10, 12)
    with pytest.raises(ValueError, match="'b': student 1 teacher 2"):
        sft.check_same_vocab({"a": 0, "b": 1, "c": 2}, {"a": 0, "c": 1, "b": 2})


# ----------------------------------------------------------------------------------------------
# Train step.
# ----------------------------------------------------------------------------------------------


def _sft_batch():
    rng = np.random.default_rng(3)
    # A learnable pattern: the response repeats the prompt.
    examples = []
    for _ in range(12):
        p = rng.integers(1, 32, 4).tolist()
        examples.append((p, p))
    batch, _ = sft.pack_examples(examples, seq_len=16, pad_id=PAD)
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("use_jit", [False, True])
def test_sft_step_decreases_loss(use_jit):
    model, params = _model_and_params()
    kw = dict(learning_rate=3e-3, warmup_steps=2, total_steps=30)
    tx = optim.make_optimizer(**kw)
    step = sft.make_sft_step(model.apply, tx, lr_schedule=optim.lr_schedule(**kw))
    if use_jit:
        step = jax.jit(step, donate_argnums=0)
    state = sft.TrainState.create(params, tx)
    batch = _sft_batch()
    losses = []
    for i in range(20 if use_jit else 5):  # eager steps are slow: fewer of them
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
        assert np.isfinite(float(m["grad_norm"])) and float(m["grad_norm"]) > 0
        if i < 2:  # linear warmup from 0
            np.testing.assert_allclose(float(m["lr"]), 3e-3 * i / 2, rtol=1e-6)
    assert int(state.step) == len(losses)
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(b < a for a, b in zip(losses[1:], losses[2:])), losses  # steady descent after warmup
    assert float(m["n_tokens"]) == float(batch["loss_mask"].sum())


def test_sft_step_aux_loss_and_bad_output():
    model, params = _model_and_params()
    tx = optim.make_optimizer(learning_rate=1e-3, warmup_steps=0, total_steps=10)
    batch = _sft_batch()

    def with_aux(p, *a):
        return model.apply(p, *a), jnp.float32(0.25)

    _, m = jax.jit(sft.make_sft_step(with_aux, tx))(sft.TrainState.create(params, tx), batch)
    assert float(m["aux_loss"]) == 0.25 and "lr" not in m

    def with_dict(p, *a):
        return model.apply(p, *a), {"balance": jnp.float32(0.0)}

    with pytest.raises(TypeError, match="aux dict needs a 'loss' entry"):
        sft.make_sft_step(with_dict, tx)(sft.TrainState.create(params, tx), batch)

    def with_vector(p, *a):
        return model.apply(p, *a), jnp.zeros(3)

    with pytest.raises(TypeError, match="must return logits, \\(logits, scalar aux_loss\\)"):
        sft.make_sft_step(with_vector, tx)(sft.TrainState.create(params, tx), batch)

    def with_counts(p, *a):
        return model.apply(p, *a), {"loss": jnp.float32(0.5), "router_counts": {"x": jnp.ones(2)}}

    seen = []
    step = sft.make_sft_step(with_counts, tx, post_update=lambda prm, c: seen.append(c) or prm)
    _, m = step(sft.TrainState.create(params, tx), batch)
    assert float(m["aux_loss"]) == 0.5 and len(seen) == 1 and seen[0]["x"].shape == (2,)


def test_chunked_loss_matches_full_loss_and_grads():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from r1jax.training.sft import Hidden, next_token_loss

    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(3, 9, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 11)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 11, size=(3, 9)))
    mask = jnp.asarray(rng.integers(0, 2, size=(3, 9)))

    def full(h, w):
        return next_token_loss(h @ w, tokens, mask)

    def chunked(h, w):
        return next_token_loss(Hidden(h, lambda x: x @ w), tokens, mask)

    (l1, m1), g1 = jax.value_and_grad(full, argnums=(0, 1), has_aux=True)(h, w)
    (l2, m2), g2 = jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True)(h, w)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    np.testing.assert_allclose(m1["accuracy"], m2["accuracy"])
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-6)
