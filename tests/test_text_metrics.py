"""TRACE's per-task metrics (ROUGE-L, edit similarity, SARI) and their selection by task name."""

import pytest

from asvd_jax.data import _text_metrics as tm
from asvd_jax.data._text_metrics import (
    TRACE_METRICS, choice_accuracy, edit_similarity, exact_match, generation_metric, rouge_l,
    sari, score_generated, score_generation,
)
from asvd_jax.data import Example, Task


# --------------------------------------------------------------------------------- accuracy
def test_exact_match_normalises_case_and_punctuation():
    assert exact_match(" Positive.", "positive") == 1.0
    assert exact_match("hawkish", "dovish") == 0.0
    assert exact_match("", "") == 1.0


def test_choice_accuracy_reads_the_answer_letter():
    label = "Answer: A\nBecause Experiments can be designed to answer specific questions."
    assert choice_accuracy("Answer: A\nBecause wax is slippery.", label) == 1.0
    assert choice_accuracy("Answer: B\nBecause Experiments can be designed", label) == 0.0
    assert choice_accuracy("The answer is A", label) == 0.0  # no "Answer: ": format error
    assert choice_accuracy("", label) == 0.0
    assert choice_accuracy("Answer: A", "A") == 0.0  # a label without the format matches nothing


# ---------------------------------------------------------------------------------- ROUGE-L
def test_rouge_l_hand_computed():
    # LCS "the cat on the mat": 5 of 6 tokens on both sides, so P = R = F = 5/6.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # Lin (2004)'s example: LCS "the gunman" = 2 of 4 tokens each side.
    assert rouge_l("the gunman kill police", "police killed the gunman") == pytest.approx(0.5)
    # P = 2/2, R = 2/4: F = 2 * 1 * 0.5 / 1.5.
    assert rouge_l("police gunman", "police killed the gunman") == pytest.approx(2 / 3)


def test_rouge_l_tokens_ignore_case_and_punctuation():
    assert rouge_l("The CAT, sat.", "the cat sat") == 1.0
    assert rouge_l("Über alles!", "über Alles") == 1.0  # non-ASCII letters stay word characters
    assert rouge_l("a b", "c d") == 0.0


def test_rouge_l_empty():
    assert rouge_l("", "the cat") == 0.0
    assert rouge_l("the cat", "") == 0.0
    assert rouge_l("", "") == 0.0
    assert rouge_l("...", "the cat") == 0.0  # no word token at all


# --------------------------------------------------------------------------- edit similarity
def test_edit_similarity_hand_computed():
    # 2 * matched characters / total characters.
    assert edit_similarity("abcd", "abce") == pytest.approx(6 / 8)
    assert edit_similarity("kitten", "sitting") == pytest.approx(8 / 13)  # "itt" + "n"; fuzz.ratio 62
    assert edit_similarity("x = foo(1)", "x = foo(1)") == 1.0
    assert edit_similarity("abc", "xyz") == 0.0
    assert edit_similarity("Return x", "return x") == pytest.approx(14 / 16)  # case counts


def test_edit_similarity_empty():
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("", "abc") == 0.0


# -------------------------------------------------------------------------------------- SARI
def test_sari_worked_example_of_xu_et_al():
    # The example of Xu et al. (2016), as Hugging Face evaluate's sari documents it:
    # {'sari': 26.953601953601954} (its scale is 100x ours).
    refs = ["About 95 species are currently known .", "About 95 species are now accepted .",
            "95 species are now accepted ."]
    got = sari("About 95 species are currently accepted .", "About 95 you now get in .", refs)
    assert got == pytest.approx(0.26953601953601954, abs=1e-12)
    # The 13a tokenisation splits the final period off, so "accepted." scores as "accepted .".
    refs_glued = [r.replace(" .", ".") for r in refs]
    assert sari("About 95 species are currently accepted.", "About 95 you now get in.",
                refs_glued) == pytest.approx(got, abs=1e-12)


def test_sari_copy_of_source():
    # source "a b c", reference "a b". Nothing deleted or added: delete precision and add F1
    # are 0/0 = 1 at every n. Keep: n=1 P 2/3, R 1 -> F1 4/5; n=2 P 1/2, R 1 -> 2/3;
    # n=3 "a b c" kept but in no reference -> P 0 -> 0; n=4 no grams -> 1.
    keep = (4 / 5 + 2 / 3 + 0 + 1) / 4
    assert sari("a b c", "a b c", ["a b"]) == pytest.approx((keep + 1 + 1) / 3)  # 157/180


def test_sari_perfect_prediction_is_one():
    assert sari("a b c", "a b d", ["a b d"]) == pytest.approx(1.0)
    src = "Der Bundesrat hat am Mittwoch eine Verordnung verabschiedet, die ab Januar gilt."
    ref = "Die neue Verordnung gilt ab Januar."
    assert sari(src, ref, [ref]) == pytest.approx(1.0)
    # Unless the source repeats a word the reference keeps once: deleting the second "die"
    # counts as wrong, because the reference still holds a "die" (as in the reference code).
    # Unigram delete precision 7/8 (der, bundesrat, hat, am, mittwoch, ",", verabschiedet
    # right; die wrong), so SARI = (1 + (7/8 + 3) / 4 + 1) / 3 = 95/96.
    src = "Der Bundesrat hat am Mittwoch die neue Verordnung verabschiedet, die ab Januar gilt."
    assert sari(src, ref, [ref]) == pytest.approx(95 / 96)


def test_sari_empty_prediction():
    # source "a b c", reference "a b d", prediction "" (one empty token, as in the reference
    # code). keep: n=1,2 P 0/0 = 1, R 0 -> 0; n=3 no source gram in the reference -> 1; n=4 1.
    # delete: n=1 {a,b,c} deleted, only c rightly -> 1/3; n=2 {ab, bc}, bc rightly -> 1/2;
    # n=3 1; n=4 1. add: n=1 "" added, in no reference -> 0; n=2,3 d's grams missed -> 0; n=4 1.
    keep, delete, add = (0 + 0 + 1 + 1) / 4, (1 / 3 + 1 / 2 + 1 + 1) / 4, (0 + 0 + 0 + 1) / 4
    assert sari("a b c", "", ["a b d"]) == pytest.approx((keep + delete + add) / 3)  # 35/72


def test_sari_bounds_and_errors():
    assert sari("", "", [""]) == pytest.approx(1.0)
    for pred in ("x y z", "a", "a b c d e f g"):
        assert 0.0 <= sari("a b c d", pred, ["a b e", "b c"]) <= 1.0
    with pytest.raises(ValueError, match="reference"):
        sari("a", "a", [])


# ---------------------------------------------------------------------- registry and scoring
def test_trace_metrics_cover_the_trace_tasks():
    from asvd_jax.data._benchmarks import TRACE_ORDER

    assert set(TRACE_METRICS) == set(TRACE_ORDER)
    assert set(TRACE_METRICS.values()) <= set(tm.METRICS)
    assert (TRACE_METRICS["MeetingBank"], TRACE_METRICS["Py150"], TRACE_METRICS["20Minuten"],
            TRACE_METRICS["ScienceQA"], TRACE_METRICS["FOMC"]) == (
        "rouge_l", "edit_similarity", "sari", "choice_accuracy", "exact_match")


def test_score_generation_means_over_examples():
    assert score_generation("exact_match", ["s", "t"], ["Yes!", "no"], ["yes", "yes"]) == 0.5
    got = score_generation("rouge_l", ["", ""], ["the cat sat on the mat", "a b"],
                           ["the cat is on the mat", "a b"])
    assert got == pytest.approx((5 / 6 + 1) / 2)
    # SARI reads the source; the other metrics ignore it.
    assert score_generation("sari", ["a b c"], ["a b d"], ["a b d"]) == pytest.approx(1.0)
    assert score_generation("sari", ["a b c"], ["a b c"], ["a b"]) == pytest.approx(157 / 180)
    assert score_generation("choice_accuracy", ["q", "q"], ["Answer: C", "Answer: D"],
                            ["Answer: C\nBecause x", "Answer: C\nBecause y"]) == 0.5
    with pytest.raises(ValueError, match="unknown metric"):
        score_generation("bleu", ["a"], ["a"], ["a"])
    with pytest.raises(ValueError, match="one of each"):
        score_generation("rouge_l", ["a"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        score_generation("rouge_l", [], [], [])


def _task(name, options=(), examples=()):
    return Task(name, "", options, examples, (), examples)


def test_metric_is_picked_by_task_name():
    assert generation_metric(_task("MeetingBank")) == "rouge_l"
    assert generation_metric(_task("20Minuten")) == "sari"
    assert generation_metric(_task("FOMC")) == "exact_match"
    assert generation_metric(_task("ScienceQA")) == "choice_accuracy"
    assert generation_metric(_task("my-summaries")) is None  # not TRACE: exact match
    # A classification task that happens to share a TRACE name keeps exact match.
    assert generation_metric(_task("Py150", ("yes", "no"), (Example("t", "yes"),))) is None


def test_score_generated_uses_raw_text():
    ex = (Example("x = 1", "return x.strip()"),)
    out = score_generated(_task("Py150", examples=ex), ex, ["  return x.strip()\n"])
    assert out == {"generate_accuracy": 1.0, "metric": "edit_similarity"}
    # Punctuation that normalize_answer would drop counts for edit similarity.
    out = score_generated(_task("Py150", examples=ex), ex, ["return x strip"])
    assert out["generate_accuracy"] < 1.0
    out = score_generated(_task("custom", examples=ex), ex, ["Return x.strip()!"])
    assert out == {"generate_accuracy": 1.0}  # exact match of the normalised answer


# ---------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("family", ["llama", "t5"])
def test_adapter_scores_trace_tasks_with_their_metric(monkeypatch, family):
    from asvd_jax.models.llama._adapter import DecoderAdapter
    from asvd_jax.models.t5._adapter import Seq2SeqAdapter
    from asvd_jax.cl._config import ModelConfig
    from asvd_jax.models import load_model

    model, tok, _ = load_model(ModelConfig(family=family, source="random", random_width=32))
    cls = DecoderAdapter if family == "llama" else Seq2SeqAdapter
    adapter = cls(model, tok, max_len=32, batch_size=2, eval_batch_size=2, max_new_tokens=4)
    examples = (Example("Summarize: the council met on Monday.", "The council met."),
                Example("Summarize: budget approved.", "Budget approved."),
                Example("Simplify: a long sentence here.", "A sentence."))
    calls = []
    real = tm.score_generation

    def spy(metric, sources, predictions, labels):
        calls.append((metric, list(sources), list(predictions), list(labels)))
        return real(metric, sources, predictions, labels)

    monkeypatch.setattr(tm, "score_generation", spy)
    for name, metric in (("MeetingBank", "rouge_l"), ("20Minuten", "sari"), ("custom", None)):
        out = adapter.evaluate(adapter.params, _task(name, examples=examples), examples)
        used, sources, predictions, labels = calls[-1]
        assert used == (metric or "exact_match")
        assert sources == [ex.text for ex in examples]
        assert labels == [ex.label for ex in examples]  # raw labels, not normalize_answer's
        assert all(p == p.strip() for p in predictions)
        want = real(used, sources, predictions, labels)
        assert out["accuracy"] == out["generate_accuracy"] == pytest.approx(want)
        assert out.get("metric") == metric
        assert 0.0 <= out["accuracy"] <= 1.0


# ------------------------------------------------------------- parity with reference packages
_PAIRS = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("police killed the gunman", "the gunman kill police"),
    ("The council approved the 2024 budget, 7-2.", "Council approves budget for 2024."),
    ("def f(x):\n    return x + 1", "def f(y):\n    return y+1"),
    ("", "something"),
    ("a", "a"),
    ("Residents asked about parking; staff will report back in May.",
     "Staff will report on parking in May after residents' questions."),
]


@pytest.mark.parametrize("prediction,reference", _PAIRS)
def test_rouge_l_equals_rouge_score(prediction, reference):
    # On ASCII text the tokenizer is rouge_score's default, so the value must be the package's.
    from rouge_score.rouge_scorer import RougeScorer

    want = RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, reference) == pytest.approx(want, abs=1e-12)


def test_rouge_l_keeps_non_ascii_words_where_rouge_score_drops_them():
    from rouge_score.rouge_scorer import RougeScorer

    # rouge_score's default tokenizer turns "Größe" into "gr", "e"; ours keeps "größe".
    default = RougeScorer(["rougeL"]).score("die größe stadt", "die große stadt")["rougeL"].fmeasure
    assert default == pytest.approx(2 * 3 / 4 * 3 / 4 / (3 / 4 + 3 / 4))  # gr, e, die/stadt
    assert rouge_l("die große stadt", "die größe stadt") == pytest.approx(2 / 3)


@pytest.mark.parametrize("prediction,reference", _PAIRS)
def test_edit_similarity_equals_rapidfuzz_and_fuzzywuzzy_ratio(prediction, reference):
    from rapidfuzz import fuzz

    got = edit_similarity(prediction, reference)
    assert got == pytest.approx(fuzz.ratio(prediction, reference) / 100, abs=1e-12)
    # fuzzywuzzy's fuzz.ratio (TRACE) is the same number rounded to a whole percent.
    assert round(100 * got) == round(fuzz.ratio(prediction, reference))


def test_metrics_name_the_missing_package(monkeypatch):
    import sys

    # A None entry in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "rapidfuzz", None)
    monkeypatch.setitem(sys.modules, "rapidfuzz.fuzz", None)
    with pytest.raises(ImportError, match=r"asvd_jax\[metrics\]"):
        edit_similarity("a", "b")


@pytest.mark.parametrize("text", [
    "About 95 species are currently accepted.",
    "Der Preis: 1.000,50 Fr.-und mehr! Das gilt ab 1. Januar 2024.",
    'x-ray &amp; "quotes" (a,b) 3-4 &lt;tag&gt;',
    "Zeile eins-\nzwei\nund drei <skipped> Ende.",
    "",
])
def test_sari_tokens_equal_sacrebleu_13a(text):
    # Hugging Face evaluate's SARI (TRACE's scorer) lower-cases and applies sacrebleu's 13a
    # tokenizer; ours must split every text the same way.
    Tokenizer13a = pytest.importorskip("sacrebleu.tokenizers.tokenizer_13a").Tokenizer13a
    assert " ".join(tm._sari_tokens(text)) == Tokenizer13a()(text.lower())
