"""Scores of generated text: exact match and the TRACE benchmark's per-task metrics.

TRACE (Wang et al. 2023, "TRACE: A Comprehensive Benchmark for Continual Learning in Large
Language Models") scores C-STANCE, FOMC, ScienceQA, NumGLUE-cm and NumGLUE-ds by accuracy
(ScienceQA: of the answer letter), MeetingBank by ROUGE-L, Py150 by edit similarity and
20Minuten by SARI. ``TRACE_METRICS`` holds that mapping; the adapters look a generation
task's metric up by its name (a task with options, or a name not listed, is scored by exact
match). Every score is in [0, 1], so it can stand in the accuracy matrix like an accuracy.

ROUGE-L comes from Google's ``rouge-score`` and edit similarity from ``rapidfuzz`` (the
``metrics`` extra), the packages whose values published TRACE numbers are compared with. SARI
is computed here: TRACE calls Hugging Face ``evaluate``'s ``sari`` script, which ``evaluate``
fetches from the Hub at run time (no installable package carries it); ``sari`` below follows
that script step by step and is tested against the value its documentation gives.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed (the exact-match normalisation)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if both are equal after ``normalize_answer``, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _choice(text: str) -> str:
    at = text.find("Answer: ")
    return "" if at < 0 else text[at + 8: at + 9]


def choice_accuracy(prediction: str, reference: str) -> float:
    """1.0 if both name the same option: the character after the first ``"Answer: "``.

    TRACE's ScienceQA accuracy (its ``eval_ScienceQA.resolve``): labels there are
    ``"Answer: A\\nBecause ..."`` with a long rationale, which exact match of the whole text
    would almost never reproduce. A prediction without ``"Answer: "`` scores 0.
    """
    p = _choice(prediction)
    return float(p != "" and p == _choice(reference))


# ---------------------------------------------------------------------------------- ROUGE-L
# Letters and digits of any script. On ASCII text this is rouge_score's tokenizer (lower case,
# every run of characters other than [a-z0-9] a separator); rouge_score's own would drop
# non-ASCII letters altogether ("über" -> "ber"), which would garble German or French references.
_WORD = re.compile(r"[^\W_]+")


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"TRACE's text metrics need the {package!r} package: pip install "
                          f"'asvd_jax[metrics]' (or pip install {package})") from e


class _UnicodeWords:
    """rouge_score tokenizer interface (``tokenize(text) -> list[str]``) over ``_WORD``."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=None)
def _rouge_scorer():
    rouge_scorer = _require("rouge_score.rouge_scorer", "rouge-score")
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeWords())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin 2004, sentence level, beta = 1), from ``rouge_score``'s ``rougeL``.

    No stemming; tokens as ``rouge_score``'s default tokenizer on ASCII text (see ``_WORD``).
    F = 2PR / (P + R) with P = LCS / prediction tokens, R = LCS / reference tokens; 0 if either
    side has no token. TRACE's own script uses the ``rouge`` package, whose summary-level LCS
    (sentences split at periods) can give slightly different values on multi-sentence texts.
    """
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


# --------------------------------------------------------------------------- edit similarity
def edit_similarity(prediction: str, reference: str) -> float:
    """``rapidfuzz.fuzz.ratio(prediction, reference) / 100``: 2 * LCS / total characters.

    This is fuzzywuzzy's ``fuzz.ratio`` (TRACE's Py150 score) with python-Levenshtein, before
    fuzzywuzzy rounds it to a whole percent; the rounding is left out here (it moves a mean
    by less than half a point). Two empty strings are identical (1.0); one empty string
    against a non-empty one scores 0.0.
    """
    fuzz = _require("rapidfuzz.fuzz", "rapidfuzz")
    return float(fuzz.ratio(prediction, reference)) / 100.0


# -------------------------------------------------------------------------------------- SARI
_SPLIT_13A = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)


def _sari_tokens(text: str) -> list[str]:
    # Lower case plus sacrebleu's "13a" tokenizer, the normalisation Hugging Face ``evaluate``
    # applies before SARI: without it "accepted." and "accepted" would count as different words.
    line = text.lower()
    for old, new in (("<skipped>", ""), ("-\n", ""), ("\n", " "), ("&quot;", '"'),
                     ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        line = line.replace(old, new)
    line = f" {line} "
    for pattern, repl in _SPLIT_13A:
        line = pattern.sub(repl, line)
    # split(" ") as the reference code does: an empty text is one empty token, so an empty
    # prediction "adds" a unigram that no reference has.
    return " ".join(line.split()).split(" ")


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p > 0 or r > 0 else 0.0


def _sari_ngram(src: Counter, pred: Counter, ref: Counter, numref: int) -> tuple[float, float, float]:
    # Source and prediction counts are scaled by the number of references so that a gram kept
    # by k of numref references earns k / numref of the credit.
    s = Counter({g: c * numref for g, c in src.items()})
    c = Counter({g: c * numref for g, c in pred.items()})
    # 0/0 counts as 1 below (tensor2tensor's convention): an operation that neither the system
    # nor the references performed is correct, not wrong.
    keep, keep_all = s & c, s & ref
    keep_good = keep & ref
    keep_p = sum(keep_good[g] / keep[g] for g in keep_good) / len(keep) if keep else 1.0
    keep_r = sum(keep_good.values()) / sum(keep_all.values()) if keep_all else 1.0

    deleted = s - c
    del_good = deleted - ref
    del_p = sum(del_good[g] / deleted[g] for g in del_good) / len(deleted) if deleted else 1.0

    added, add_all = set(c) - set(s), set(ref) - set(s)
    add_good = added & set(ref)
    add_p = len(add_good) / len(added) if added else 1.0
    add_r = len(add_good) / len(add_all) if add_all else 1.0
    return _f1(keep_p, keep_r), del_p, _f1(add_p, add_r)


def sari(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI (Xu et al. 2016): mean of keep F1, delete precision and add F1 over 1- to 4-grams.

    Each operation's score is averaged over n = 1..4, then the three are averaged; returned
    in [0, 1] (Hugging Face ``evaluate`` reports 100 times this). Follows ``evaluate``'s
    ``sari``, which TRACE's 20Minuten scorer calls: texts lower-cased and tokenised with
    sacrebleu's 13a rules, and the two changes tensor2tensor made to Xu et al.'s script
    (0/0 = 1, and keep recall counted over gram occurrences instead of averaged over distinct
    grams). So a copy of the source scores 1 on deletion here (nothing was deleted wrongly)
    where Xu et al.'s script gives it 0.
    """
    if not references:
        raise ValueError("sari needs at least one reference")
    s, p = _sari_tokens(source), _sari_tokens(prediction)
    refs = [_sari_tokens(r) for r in references]
    scores = []
    for n in range(1, 5):
        ref = Counter()
        for r in refs:
            ref += _ngrams(r, n)
        scores.append(_sari_ngram(_ngrams(s, n), _ngrams(p, n), ref, len(refs)))
    keep, delete, add = np.mean(scores, axis=0)
    return float((keep + delete + add) / 3)


# ---------------------------------------------------------------------------------- registry
TRACE_METRICS: dict[str, str] = {
    "C-STANCE": "exact_match",
    "FOMC": "exact_match",
    "MeetingBank": "rouge_l",
    "Py150": "edit_similarity",
    "ScienceQA": "choice_accuracy",
    "NumGLUE-cm": "exact_match",
    "NumGLUE-ds": "exact_match",
    "20Minuten": "sari",
}
"""The TRACE paper's metric of each of its eight tasks. Its accuracy is exact match here
(TRACE compares raw strings; ``normalize_answer`` also forgives case and punctuation), except
for ScienceQA, whose labels carry a rationale after the answer letter."""

_PAIR_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match, "choice_accuracy": choice_accuracy, "rouge_l": rouge_l,
    "edit_similarity": edit_similarity,
}
METRICS = (*_PAIR_METRICS, "sari")


def score_generation(metric: str, sources: Sequence[str], predictions: Sequence[str],
                     labels: Sequence[str]) -> float:
    """Mean of ``metric`` over examples, in [0, 1].

    ``sources`` (the input text, SARI's source) is read by ``sari`` only; each label is the
    single reference of its example.
    """
    if not len(sources) == len(predictions) == len(labels):
        raise ValueError(f"{len(sources)} sources, {len(predictions)} predictions and "
                         f"{len(labels)} labels: one of each per example")
    if not predictions:
        raise ValueError("no examples to score")
    if metric == "sari":
        scores = [sari(s, p, [l]) for s, p, l in zip(sources, predictions, labels)]
    elif metric in _PAIR_METRICS:
        fn = _PAIR_METRICS[metric]
        scores = [fn(p, l) for p, l in zip(predictions, labels)]
    else:
        raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    return float(np.mean(scores))


def generation_metric(task: Any) -> str | None:
    """TRACE's metric for a generation task (no options) named as in ``TRACE_METRICS``, else None."""
    return None if task.options else TRACE_METRICS.get(task.name)


def score_generated(task: Any, examples: Sequence[Any], texts: Sequence[str]) -> dict[str, Any]:
    """``{"generate_accuracy": score}`` for decoded ``texts``, plus ``"metric"`` for TRACE tasks.

    Exact match unless ``generation_metric`` names another metric. The texts are only
    stripped: ROUGE, SARI and edit similarity read the text as generated (``normalize_answer``
    would drop the punctuation that code and SARI's tokens depend on).
    """
    metric = generation_metric(task)
    score = score_generation(metric or "exact_match", [ex.text for ex in examples],
                             [t.strip() for t in texts], [ex.label for ex in examples])
    return {"generate_accuracy": score} if metric is None else {"generate_accuracy": score, "metric": metric}
