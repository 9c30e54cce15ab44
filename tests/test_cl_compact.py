"""Compact training batches (models/llama/_loss.py, cl/_compact.py): same losses, gradients and evaluations as the
fixed max_len layout, on tiny random models with fresh random examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asvd_jax.models.bert._adapter import EncoderAdapter
from asvd_jax.models.llama._adapter import DecoderAdapter
from asvd_jax.models.llama._loss import loss_positions
from asvd_jax.cl._config import ModelConfig
from asvd_jax.models import load_model
from asvd_jax.data import Example, Task
from tolerances import assert_close

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _task(rng, name, options, n):
    examples = tuple(Example(" ".join(rng.choice(WORDS, size=rng.integers(1, 9))),
                             str(rng.choice(options))) for _ in range(n))
    return Task(name, f"Classify ({name}).", tuple(options), examples, examples, examples)


def _items(seed):
    rng = np.random.default_rng(seed)
    a = _task(rng, "a", ["yes", "no", "maybe so"], 5)
    b = _task(rng, "b", ["red", "green", "blue", "cyan", "magenta"], 5)
    # A partial batch of mixed tasks (MTL) so padding rows and option slots are exercised.
    return [(a, ex) for ex in a.train[:3]] + [(b, ex) for ex in b.train[:2]], (a, b)


def _as_jax(batch):
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _grads_close(g1, g2):
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert_close(x, y, "float32", scale=max(np.abs(y).max(), 1e-30))


def test_loss_positions_by_hand():
    ids = np.array([[5, 6, 7, 8, 0], [9, 3, 4, 0, 0]], np.int32)
    att = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], np.int32)
    loss = np.array([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0]], np.int32)
    out = loss_positions(ids, att, loss, slots=4)
    np.testing.assert_array_equal(out["loss_index"], [[1, 2, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(out["loss_target"], [[7, 8, 0, 0], [4, 0, 0, 0]])
    np.testing.assert_array_equal(out["loss_weight"], [[1, 1, 0, 0], [1, 0, 0, 0]])


@pytest.fixture(scope="module")
def decoder():
    model, tok, _ = load_model(ModelConfig(source="random", random_width=32))
    return DecoderAdapter(model, tok, max_len=160, batch_size=8, eval_batch_size=4)


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_compact_loss_and_grads_match_full_logits(decoder, seed):
    from asvd_jax.models.llama import token_logprobs

    items, _ = _items(seed)
    params = jax.tree.map(lambda x: x + 0.02 * jax.random.normal(jax.random.key(seed), x.shape, x.dtype),
                          decoder.params)
    compact = decoder.train_batch(items)
    decoder.compact = False
    try:
        full = decoder.train_batch(items)
    finally:
        decoder.compact = True
    assert compact["input_ids"].shape[1] < full["input_ids"].shape[1] == 160
    assert "loss_index" in compact and "loss_index" not in full
    # float64 reference from the full logits of the padded-to-max_len batch.
    lp = np.asarray(token_logprobs(decoder.model(params), jnp.asarray(full["input_ids"]),
                                   jnp.asarray(full["attention_mask"])), np.float64)
    mask = full["loss_mask"].astype(np.float64)
    want = -(lp * mask).sum() / mask.sum()
    got = float(decoder.loss(params, _as_jax(compact)))
    assert_close(got, want, "float32")
    assert_close(float(decoder.loss(params, _as_jax(full))), want, "float32")
    g_c = jax.grad(decoder.loss)(params, _as_jax(compact))
    g_f = jax.grad(decoder.loss)(params, _as_jax(full))
    _grads_close(g_c, g_f)


def test_decoder_compact_evaluation_matches(decoder):
    _, (a, b) = _items(3)
    for task in (a, b):
        got = decoder.evaluate(decoder.params, task, task.test)
        decoder.compact = False
        try:
            want = decoder.evaluate(decoder.params, task, task.test)
        finally:
            decoder.compact = True
        assert got["predictions"] == want["predictions"]
        assert got["option_predictions"] == want["option_predictions"]
        assert got["accuracy"] == want["accuracy"]


@pytest.fixture(scope="module")
def encoder():
    model, tok, _ = load_model(ModelConfig(family="bert", source="random", random_width=32))
    return EncoderAdapter(model, tok, max_len=160, batch_size=8, eval_batch_size=4)


@pytest.mark.parametrize("seed", [0, 1])
def test_encoder_compact_loss_grads_and_eval_match(encoder, seed):
    items, (a, b) = _items(seed)
    compact = encoder.train_batch(items)
    encoder.compact = False
    try:
        full = encoder.train_batch(items)
        want_eval = [encoder.evaluate(encoder.params, t, t.test) for t in (a, b)]
    finally:
        encoder.compact = True
    assert compact["input_ids"].shape[1] < full["input_ids"].shape[1]
    assert compact["option_ids"].shape[1:] < full["option_ids"].shape[1:]
    lc = float(encoder.loss(encoder.params, _as_jax(compact)))
    lf = float(encoder.loss(encoder.params, _as_jax(full)))
    assert_close(lc, lf, "float32")
    _grads_close(jax.grad(encoder.loss)(encoder.params, _as_jax(compact)),
                 jax.grad(encoder.loss)(encoder.params, _as_jax(full)))
    for t, want in zip((a, b), want_eval):
        assert encoder.evaluate(encoder.params, t, t.test)["predictions"] == want["predictions"]


def test_widen_same_width_and_stage_width(decoder):
    from asvd_jax.cl._compact import SHORT_STAGE, stage_width
    from asvd_jax.data import same_width, widen
    from asvd_jax.models import get_family

    b = {"input_ids": np.array([[4, 5]], np.int32), "attention_mask": np.array([[1, 1]], np.int32),
         "loss_mask": np.array([[0, 1]], np.int32), "loss_index": np.array([[0]], np.int32)}
    w = widen(b, 4, pad_id=9)
    np.testing.assert_array_equal(w["input_ids"], [[4, 5, 9, 9]])
    np.testing.assert_array_equal(w["attention_mask"], [[1, 1, 0, 0]])
    np.testing.assert_array_equal(w["loss_mask"], [[0, 1, 0, 0]])
    assert w["loss_index"] is b["loss_index"] and widen(b, 1, 9)["input_ids"].shape == (1, 2)
    assert [x["input_ids"].shape[1] for x in same_width([b, w], 9)] == [4, 4]

    rng = np.random.default_rng(5)
    short = _task(rng, "s", ["yes", "no"], 4)
    long = Task("l", "Classify (l).", ("yes", "no"), (Example(" ".join(["alpha"] * 20), "no"),), (), ())
    chunks = [[(short, ex) for ex in short.train], [(long, ex) for ex in long.train]]
    widths = [decoder.train_batch(ch)["input_ids"].shape[1] for ch in chunks]
    assert widths[0] < widths[1]
    assert stage_width(get_family("llama"), decoder, chunks) == widths[1]
    assert stage_width(get_family("llama"), decoder, chunks * SHORT_STAGE) is None  # long stage: per-batch widths
    decoder.min_width = widths[1]
    try:
        batch = decoder.train_batch(chunks[0])
        assert batch["input_ids"].shape[1] == widths[1]
        # Widened rows give the same loss.
        decoder.min_width = None
        ref = float(decoder.loss(decoder.params, _as_jax(decoder.train_batch(chunks[0]))))
        assert_close(float(decoder.loss(decoder.params, _as_jax(batch))), ref, "float32")
    finally:
        decoder.min_width = None


def test_widen_batch_and_largest_shapes_keep_the_loss(decoder, encoder):
    """``widen_batch`` to the largest shapes of some stages (``largest_shapes``; the trainer
    hands EWC's Fisher a task's batches at its largest): same loss and gradients, decoder
    (tokens, loss slots) and encoder (tokens, option slots and option tokens)."""
    from asvd_jax.cl._compact import largest_shapes

    items, (a, b) = _items(2)
    long = Task("l", "Classify (l).", ("yes", "no"), (Example(" ".join(["alpha"] * 20), "no"),), (), ())
    stages = [("mixed", items), ("long", [(long, ex) for ex in long.train])]
    for adapter in (decoder, encoder):
        shapes = largest_shapes(adapter, stages, 8)
        batches = [adapter.train_batch(items), adapter.train_batch(stages[1][1])]
        for key, shape in shapes.items():
            assert shape == tuple(max(x[key].shape[i] for x in batches) for i in range(len(shape))), key
        wide = adapter.widen_batch(batches[0], {k: (v[0], *(d + 4 for d in v[1:])) for k, v in shapes.items()})
        assert wide["input_ids"].shape[1] == shapes["input_ids"][1] + 4 > batches[0]["input_ids"].shape[1]
        if adapter is encoder:
            assert wide["option_ids"].shape[1:] == tuple(d + 4 for d in shapes["option_ids"][1:])
        else:
            assert wide["loss_index"].shape[1] == shapes["loss_index"][1] + 4
        # (The decoder's gradients: tests/test_baselines_ewc.py, through the per-example Fisher.)
        fn = jax.jit(adapter.loss if adapter is decoder else jax.value_and_grad(adapter.loss))
        wide_out, ref_out = (fn(adapter.params, _as_jax(x)) for x in (wide, batches[0]))
        if adapter is encoder:
            _grads_close(wide_out[1], ref_out[1])
            wide_out, ref_out = wide_out[0], ref_out[0]
        assert_close(float(wide_out), float(ref_out), "float32")
    assert largest_shapes(object(), stages, 8) is None  # an adapter without widen_batch
