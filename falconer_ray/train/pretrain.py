"""Self-supervised pretraining of the proxy on raw text: a metamodel to fine-tune from.

Following the "next tokens extraction" idea of Cuckoo (Peng et al. 2025), every
instance is an (instruction, passage) pair whose answer is read off the passage
itself, never from a dataset's labels: the words that follow a cue phrase wherever
it occurs, every occurrence of a phrase, capitalised names, numbers, quoted phrases
(BIO spans), and "does the text mention X / contain a number ..." (labels, balanced
yes/no). Instructions are worded several ways so the model learns to read them.
The instances train the same ProxyModel with the same Ray Train loop as a run
(`train.fit`); the result is a saved proxy folder that `--proxy-base` accepts.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from falconer_ray.config import RunConfig
from falconer_ray.corpus.read import iter_corpus
from falconer_ray.progress import progress
from falconer_ray.proxy import label_examples, resolve_base, span_examples
from falconer_ray.proxy.model import is_proxy_dir
from falconer_ray.ray_env import init_ray, with_gpus
from falconer_ray.rundir import write_json
from falconer_ray.train.fit import fit

WORD = re.compile(r"\w+(?:['’\-]\w+)*")
NAME = re.compile(r"(?<![\w\-])(?<!\w['’])[A-Z][a-z]+(?: [A-Z][a-z]+)*(?![\w\-])")
NUMBER = re.compile(r"(?<![\w.,:/])\d+(?:[.,:/]\d+)*(?![\w])")
QUOTE = re.compile(r'"([^"\n]{2,80})"')
ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Jr.", "Sr.", "vs.")
NUMBER_WORDS = {1: "word", 2: "two words", 3: "three words"}

NEXT = ["Extract the next {nw} after '{cue}'.", "Tag the next {nw} after '{cue}'.",
        "Copy the {nw} right after '{cue}'.", "Continue \"{cue}\": tag its next {nw}.",
        "Find the {nw} written after '{cue}'."]
OCCURS = ["Find every occurrence of '{p}'.", "Where does '{p}' appear?", "Mark each mention of \"{p}\".",
          "Highlight '{p}' wherever it occurs."]
SPAN_PATTERNS = {
    "names": (NAME, ["Extract the capitalised names.", "Find the proper nouns written with capital letters.",
                     "Which capitalised names appear in the text?", "List the names that start with a capital letter."]),
    "numbers": (NUMBER, ["Extract the numbers.", "Find every number in the text.", "Which numbers are mentioned?",
                         "List the figures written in digits."]),
    "quotes": (QUOTE, ["Extract the phrases in double quotes.", "What is quoted in the text?",
                       "Find the text between quotation marks."]),
}
MENTION = ["Does this text mention '{p}'?", "Is '{p}' in the text?", "Does the phrase \"{p}\" appear here?",
           "Does the text contain the words '{p}'?"]
HAS = {
    "names": ["Does this text contain a capitalised name?", "Are any proper nouns written with capitals here?"],
    "numbers": ["Does this text contain a number?", "Are there any numbers written in digits?"],
    "quotes": ["Does this text quote something in double quotes?", "Is anything in quotation marks?"],
}
# Share of each kind of instance; label instances are balanced yes/no among themselves.
MIX = {"next": 0.35, "occurs": 0.08, "names": 0.12, "numbers": 0.05, "quotes": 0.03, "mention": 0.27, "has": 0.10}
MIN_WORDS = 8
PASSAGE_CHARS = 700
TRIES = 20


@dataclass(frozen=True)
class Instance:
    """One pretraining example: a label instance has `label`, a span instance `spans`
    (exact character ranges into `text`, possibly none)."""

    task: str
    instruction: str
    text: str
    label: bool | None = None
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def kind(self) -> str:
        return "span" if self.label is None else "label"


def passage(text: str, rng: random.Random, max_chars: int = PASSAGE_CHARS) -> str:
    """A piece of `text` of at most `max_chars`, starting at a sentence and ending at a
    space: instances stay one window long and offsets stay simple."""
    if len(text) <= max_chars:
        return text
    starts = [0] + [m.end() for m in re.finditer(r"[.!?]\s+", text) if m.end() < len(text) - max_chars // 2]
    start = rng.choice(starts)
    end = min(len(text), start + max_chars)
    if end < len(text):
        cut = text.rfind(" ", start + max_chars // 2, end)
        end = cut if cut > start else end
    return text[start:end].strip() or text[:max_chars]


def _words(text: str) -> list[re.Match]:
    return list(WORD.finditer(text))


def _joined(text: str, words: list[re.Match], i: int, j: int) -> bool:
    """Words i..j (inclusive) are separated by whitespace only."""
    return all(text[words[k].end():words[k + 1].start()].isspace() for k in range(i, j))


def _phrase(text: str, rng: random.Random, min_long: int = 0) -> tuple[str, int, int] | None:
    """A run of 1-3 whitespace-joined words: (phrase, first word index, last word index);
    with `min_long`, one of its words must have at least that many letters."""
    words = _words(text)
    for _ in range(TRIES):
        if not words:
            return None
        size = rng.randint(1, 3)
        i = rng.randrange(len(words))
        j = i + size - 1
        if j >= len(words) or not _joined(text, words, i, j):
            continue
        if min_long and not any(len(words[k].group()) >= min_long for k in range(i, j + 1)):
            continue
        return text[words[i].start():words[j].end()], i, j
    return None


def occurrences(text: str, phrase: str) -> list[tuple[int, int]]:
    """Every occurrence of `phrase` as whole words (case-sensitive)."""
    pattern = r"(?<![\w\-])(?<!\w['’])" + re.escape(phrase) + r"(?![\w\-])"
    return [(m.start(), m.end()) for m in re.finditer(pattern, text)]


def next_words(text: str, cue: str, n: int) -> list[tuple[int, int]] | None:
    """The `n` words after each occurrence of `cue`, or None when some occurrence has no
    such continuation (end of text, punctuation in between): the question would then
    have no clean answer, so the cue is not used."""
    words = _words(text)
    by_start = {w.start(): k for k, w in enumerate(words)}
    spans = []
    for s, e in occurrences(text, cue):
        k = by_start.get(s)
        if k is None:
            return None
        last = next((q for q in range(k, len(words)) if words[q].end() >= e), None)
        if last is None or words[last].end() != e or last + n >= len(words) or not _joined(text, words, last, last + n):
            return None
        spans.append((words[last + 1].start(), words[last + n].end()))
    return spans


def _sentence_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    if not before:
        return True
    if before.endswith(ABBREVIATIONS):
        return False
    return before[-1] in ".!?:\"'>(\n" or before.endswith("<br />")


def pattern_spans(task: str, text: str) -> list[tuple[int, int]]:
    """Answers of a pattern task, as exact character ranges. Names: runs of capitalised
    words; a sentence's first word counts only when more capitalised words follow it."""
    if task == "quotes":
        return [m.span(1) for m in QUOTE.finditer(text)]
    if task == "numbers":
        return [m.span() for m in NUMBER.finditer(text)]
    spans = []
    for m in NAME.finditer(text):
        s, e = m.span()
        if _sentence_start(text, s):
            gap = text.find(" ", s, e)
            if gap < 0:
                continue
            s = gap + 1
        spans.append((s, e))
    return spans


class InstanceBuilder:
    """Draws instances from a list of documents, reproducibly for a seed."""

    def __init__(self, texts: list[str], seed: int = 0, max_chars: int = PASSAGE_CHARS):
        self.docs = [t for t in texts if isinstance(t, str) and len(_words(t)) >= MIN_WORDS]
        if len(self.docs) < 2:
            raise ValueError(f"pretraining needs at least 2 documents of {MIN_WORDS}+ words "
                             f"(got {len(self.docs)} of {len(texts)})")
        self.rng = random.Random(seed)
        self.max_chars = max_chars
        self.labels = 0  # label instances so far: their answers alternate yes/no

    def _passage(self, avoid: str | None = None) -> str:
        for _ in range(TRIES):
            text = passage(self.rng.choice(self.docs), self.rng, self.max_chars)
            if text != avoid and len(_words(text)) >= MIN_WORDS:
                return text
        return text

    def _absent_phrase(self, text: str, min_long: int = 0) -> str | None:
        """A phrase from another document that `text` does not contain (any case)."""
        lower = text.lower()
        for _ in range(TRIES):
            found = _phrase(self._passage(avoid=text), self.rng, min_long)
            if found and found[0].lower() not in lower:
                return found[0]
        return None

    def _next(self) -> Instance | None:
        text = self._passage()
        n = self.rng.randint(1, 3)
        template = self.rng.choice(NEXT)
        if self.rng.random() < 0.15:  # a cue the text lacks: nothing to tag
            cue = self._absent_phrase(text)
            return cue and Instance("next", template.format(nw=NUMBER_WORDS[n], cue=cue), text)
        for _ in range(TRIES):
            found = _phrase(text, self.rng)
            spans = found and next_words(text, found[0], n)
            if spans and len(spans) <= 4 and all(a[1] < b[0] for a, b in zip(spans, spans[1:])):
                return Instance("next", template.format(nw=NUMBER_WORDS[n], cue=found[0]), text, spans=tuple(spans))
        return None

    def _occurs(self) -> Instance | None:
        text = self._passage()
        template = self.rng.choice(OCCURS)
        if self.rng.random() < 0.2:
            p = self._absent_phrase(text, min_long=4)
            return p and Instance("occurs", template.format(p=p), text)
        found = _phrase(text, self.rng, min_long=4)
        spans = found and occurrences(text, found[0])
        return spans and Instance("occurs", template.format(p=found[0]), text, spans=tuple(spans))

    def _pattern(self, task: str) -> Instance:
        want = self.rng.random() < 0.8  # most draws look for a text that has answers
        for _ in range(TRIES):
            text = self._passage()
            spans = pattern_spans(task, text)
            if bool(spans) == want:
                break
        return Instance(task, self.rng.choice(SPAN_PATTERNS[task][1]), text, spans=tuple(spans))

    def _mention(self, yes: bool) -> Instance | None:
        text = self._passage()
        template = self.rng.choice(MENTION)
        if yes:
            found = _phrase(text, self.rng, min_long=4)
            return found and Instance("mention", template.format(p=found[0]), text, label=True)
        p = self._absent_phrase(text, min_long=4)
        return p and Instance("mention", template.format(p=p), text, label=False)

    def _has(self, yes: bool) -> Instance | None:
        task = self.rng.choice(sorted(HAS))
        for _ in range(TRIES):
            text = self._passage()
            if bool(pattern_spans(task, text)) == yes:
                return Instance(f"has_{task}", self.rng.choice(HAS[task]), text, label=yes)
        return self._mention(yes)

    def draw(self) -> Instance:
        """One instance; kinds follow MIX, label answers alternate yes/no."""
        for _ in range(TRIES):
            task = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
            if task in ("mention", "has"):
                yes = self.labels % 2 == 0
                inst = self._mention(yes) if task == "mention" else self._has(yes)
                if inst:
                    self.labels += 1
            elif task in SPAN_PATTERNS:
                inst = self._pattern(task)
            else:
                inst = self._next() if task == "next" else self._occurs()
            if inst:
                return inst
        raise ValueError("could not draw a pretraining instance from these documents; are they mostly empty?")


def build_instances(texts: list[str], n: int, seed: int = 0, max_chars: int = PASSAGE_CHARS) -> list[Instance]:
    """`n` instances from `texts`, the same ones for the same texts and seed."""
    if n < 2:
        raise ValueError(f"need at least 2 pretraining instances (got {n})")
    builder = InstanceBuilder(texts, seed, max_chars)
    out = []
    with progress("building pretraining instances", n, unit="instances") as advance:
        for _ in range(n):
            out.append(builder.draw())
            advance()
    return out


def to_examples(instances: list[Instance], tokenizer, max_length: int = 256, stride: int = 64) -> list[dict]:
    """Tokenized training examples (windows) for the proxy's label and tag heads."""
    examples: list[dict] = []
    with progress("tokenizing pretraining instances", len(instances), unit="instances") as advance:
        for inst in instances:
            if inst.kind == "label":
                examples += label_examples(tokenizer, inst.instruction, [inst.text], [inst.label],
                                           max_length=max_length, stride=stride)
            else:
                examples += span_examples(tokenizer, inst.instruction, [inst.text], [list(inst.spans)],
                                          max_length=max_length, stride=stride)
            advance()
    return examples


def read_texts(corpus: str | Path, cfg: RunConfig, limit: int | None) -> tuple[list[str], Counter]:
    """The first `limit` readable documents of a corpus, and the reasons rows were skipped."""
    texts, errors = [], Counter()
    for table in iter_corpus(corpus, **cfg.read_options(), limit=limit):
        for text, error in zip(table.column("text").to_pylist(), table.column("error").to_pylist()):
            if error:
                errors[error.split(":", 1)[0]] += 1
            else:
                texts.append(text)
    if not texts:
        why = ", ".join(f"{k}: {v}" for k, v in errors.most_common()) or "no rows"
        raise ValueError(f"no readable documents in {corpus} ({why})")
    return texts, errors


def check_out(out: Path) -> None:
    """`out` must be new, empty, or a proxy folder (which is then replaced)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the pretrained proxy")
    if out.is_dir() and any(out.iterdir()) and not is_proxy_dir(out):
        raise ValueError(f"--out {out} exists and is not a proxy folder (no proxy.json); "
                         "choose a new directory so nothing there is overwritten")


def pretrain(texts: list[str], cfg: RunConfig, out: str | Path, instances: int = 4000,
             max_chars: int = PASSAGE_CHARS) -> dict:
    """Build `instances` from `texts`, fine-tune cfg.proxy.base on them with Ray Train
    (cfg.train: epochs, workers, GPUs), and save the proxy to `out` with pretrain.json."""
    from transformers import AutoTokenizer

    out = Path(out).resolve()
    check_out(out)
    built = build_instances(texts, instances, seed=cfg.seed, max_chars=max_chars)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(cfg.proxy.base))
    examples = to_examples(built, tokenizer, cfg.proxy.max_length, cfg.proxy.stride)
    init_ray()
    cfg = with_gpus(cfg)
    trained = fit(examples, cfg, out, out.with_name(out.name + ".train"), description="pretraining")
    labels = [i.label for i in built if i.kind == "label"]
    metrics = {
        **trained, "instances": len(built), "docs": len(texts), "passage_chars": max_chars, "seed": cfg.seed, "base": cfg.proxy.base,
        "lr": cfg.train.lr, "batch_size": cfg.train.batch_size,
        "tasks": dict(sorted(Counter(i.task for i in built).items())),
        "label_yes": sum(labels), "label_no": len(labels) - sum(labels),
        "span_answers": sum(len(i.spans) for i in built),
    }
    write_json(out / "pretrain.json", metrics)
    return metrics
