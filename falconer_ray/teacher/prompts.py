"""Prompts for the two primitives, written for very small models.

Tiny models (100-300M parameters) follow demonstrations far better than
instructions, so the default is a few-shot *completion* prompt that a base model
simply continues. The demonstrations are deliberately generic and varied
(sentiment, topic, mentions, negation, "none" answers) so they transfer to
arbitrary user instructions. A chat variant with the same demonstrations as
earlier turns exists for instruct models, so the two styles compare fairly.

Layout: fixed demonstrations first, then the instruction, then the document
LAST. Consecutive prompts therefore share a long token prefix, which llama.cpp
reuses from its KV cache instead of re-reading it.

Any change to the text below must bump PROMPT_VERSION: it is part of every
annotation-cache key, so stale answers are never served for a new prompt.
"""

from __future__ import annotations

import json

PROMPT_VERSION = "fs3"

DEFAULT_MAX_DOC_CHARS = 1500
MAX_SPAN_ITEMS = 8
MAX_SPAN_CHARS = 80

# ---------------------------------------------------------------- documents


def clip_document(text: str, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> str:
    """The part of `text` the teacher is shown: a *prefix*, cut at whitespace.

    Being a prefix matters: offsets of spans found in the clipped text are also
    valid offsets into the full document, and the proxy can be trained on
    exactly what the teacher read (the teacher never judged the unseen rest).
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    window = text[: max_chars + 1]
    cut = max(window.rfind(c) for c in " \n\t\r")
    if cut < max_chars // 2:  # no usable whitespace (e.g. a URL blob): hard cut
        return text[:max_chars]
    return text[:cut].rstrip()


ELISION = " … "


def label_view(text: str, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> str:
    """The part of `text` the teacher judges a yes/no question on: its start and its end.

    A verdict often comes last (a review's "average at best", an abstract's
    conclusion), so a long document is shown as its first and last halves of
    `max_chars`, joined by an ellipsis; both ends are cut at whitespace. A label
    needs no offsets, so the text need not be a prefix (spans use `clip_document`).
    Measured against a prefix of the same length in docs/RESULTS.md.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    if max_chars < 8 * len(ELISION):  # too short to hold two ends worth reading
        return clip_document(text, max_chars)
    room = max_chars - len(ELISION)
    head = clip_document(text, room - room // 2)
    tail = text[len(text) - room // 2:]
    space = min((i for i in (tail.find(c) for c in " \n\t\r") if i >= 0), default=-1)
    if 0 <= space < len(tail) // 2:
        tail = tail[space + 1:]
    return head + ELISION + tail.lstrip()


def flatten(text: str) -> str:
    """One-line rendering of a document, same length as the original.

    Line breaks inside a document would break the "Text: ... / Answer:" layout;
    a 1:1 character replacement keeps every offset valid, so an answer copied
    from the flattened text maps straight back onto the original.
    """
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def unflatten(doc: str, item: str) -> str:
    """An answer copied from the one-line rendering, mapped back to the
    original characters (same offsets) when the document had line breaks."""
    if item in doc:
        return item
    i = flatten(doc).find(item)
    return doc[i : i + len(item)] if i >= 0 else item


# ----------------------------------------------------------------- label

LABEL_HEADER = (
    "Each example gives an instruction and a text. Answer yes if the text "
    "satisfies the instruction, otherwise no.\n\n"
)

# Contrastive on purpose: the same instruction appears with a yes and a no, and
# positive-sounding texts get "no" as often as negative ones get "yes", so the
# model has to read the instruction instead of answering "yes" to pleasant text.
LABEL_DEMOS: list[tuple[str, str, str]] = [
    (
        "Is the customer unhappy with the product?",
        "Battery died after two days and support never answered my emails.",
        "yes",
    ),
    (
        "Does the text mention a city?",
        "We landed in Lisbon late at night and went straight to the hotel.",
        "yes",
    ),
    (
        "Is the restaurant review positive?",
        "The soup was cold, the waiter was rude and we waited an hour.",
        "no",
    ),
    (
        "Is this text about sports?",
        "The central bank raised interest rates by a quarter point on Tuesday.",
        "no",
    ),
    (
        "Is the restaurant review positive?",
        "Not cheap, but the pasta was wonderful and the staff could not have been nicer.",
        "yes",
    ),
    (
        "Is the speaker angry?",
        "Thanks so much for the quick delivery, everything arrived in perfect shape.",
        "no",
    ),
    (
        "Does the text mention a person by name?",
        "Yesterday Maria Lopez opened a small bakery on Main Street.",
        "yes",
    ),
    (
        "Does the writer recommend the book?",
        "I wanted to love it, but I can't recommend it: the middle drags and the ending is unearned.",
        "no",
    ),
    (
        "Does the text mention a person by name?",
        "The new bakery on Main Street sells wonderful bread.",
        "no",
    ),
    (
        "Is the text about health or medicine?",
        "Doctors say a short walk after meals can lower blood sugar.",
        "yes",
    ),
]

YES_WORDS = ("yes", "Yes", "YES")
NO_WORDS = ("no", "No", "NO")


def _example(instruction: str, text: str) -> str:
    return f"Instruction: {instruction}\nText: {flatten(text)}\nAnswer:"


def label_prompt(instruction: str, doc: str) -> str:
    """Few-shot completion prompt; the next token is scored as yes vs no."""
    demos = "".join(f"{_example(i, t)} {a}\n\n" for i, t, a in LABEL_DEMOS)
    return LABEL_HEADER + demos + _example(instruction.strip(), doc)


# The question again after the text: read after a long review, "Answer yes or no." alone
# let the model drift towards yes on mixed ones (docs/RESULTS.md, "Choosing the
# embedded teacher"). Only the last few tokens of a prompt change with it, so the
# shared prefix stays in llama.cpp's KV cache.
LABEL_ASK = "Instruction: {instruction} Answer yes or no."


def label_messages(instruction: str, doc: str) -> list[dict[str, str]]:
    """Chat variant: same demonstrations as prior user/assistant turns."""
    return _chat(LABEL_HEADER.strip(), LABEL_DEMOS, instruction, doc, LABEL_ASK)


# ------------------------------------------------------------------ span

SPAN_HEADER = (
    "Each example gives an instruction and a text. Copy the exact phrases from the "
    'text that answer the instruction, separated by " | ". Answer none if no '
    "phrase in the text answers it.\n\n"
)

SPAN_DEMOS: list[tuple[str, str, str]] = [
    (
        "Extract the names of cities.",
        "I flew from Boston to Denver, then drove to a small town near the coast.",
        "Boston | Denver",
    ),
    (
        "Extract the product names.",
        "My neighbour fixed the fence this morning, so I went for a walk.",
        "none",
    ),
    (
        "Extract the phrases that express a complaint.",
        "The room was clean, but the wifi kept dropping and the shower was cold.",
        "the wifi kept dropping | the shower was cold",
    ),
    (
        "Extract the names of musicians.",
        "Last night Adele and Ed Sheeran surprised fans at a small club in London.",
        "Adele | Ed Sheeran",
    ),
    (
        "Extract the names of athletes.",
        "The stadium was half empty because of the heavy rain.",
        "none",
    ),
    (
        "Extract the names of companies.",
        "She left Google last year and now works for a startup called Fernwood Labs.",
        "Google | Fernwood Labs",
    ),
    (
        "Extract the names of politicians.",
        "@newsjunkie_77 my uncle says the mayor shook hands with Angela Merkel today #politics",
        "Angela Merkel",
    ),
    (
        "Extract the dates.",
        "The hearing moved from March 3 to Friday, April 12.",
        "March 3 | Friday, April 12",
    ),
]


def span_prompt(instruction: str, doc: str) -> str:
    """Few-shot completion prompt; the answer line is generated under SPAN_GRAMMAR."""
    demos = "".join(f"{_example(i, t)} {a}\n\n" for i, t, a in SPAN_DEMOS)
    return SPAN_HEADER + demos + _example(instruction.strip(), doc)


SPAN_ASK = 'Instruction: {instruction} Copy the exact phrases separated by " | ", or answer none.'


def span_messages(instruction: str, doc: str) -> list[dict[str, str]]:
    return _chat(
        SPAN_HEADER.strip(), SPAN_DEMOS, instruction, doc,
        SPAN_ASK,
    )


def span_grammar(max_items: int = MAX_SPAN_ITEMS, max_chars: int = MAX_SPAN_CHARS) -> str:
    """GBNF for `none` or 1..max_items phrases joined by " | ", ending the line.

    The end may be one or two newlines: models emit "\n\n" as a single token
    after few-shot blocks, and forbidding it forces them to ramble on.

    Every length is bounded because tiny models happily loop forever inside
    structured output. A phrase cannot start with a space or a quote (models
    like to quote), and cannot contain '|' or a newline.
    """
    return (
        'root ::= " "? answer ("\\n" "\\n"?)?\n'
        f'answer ::= "none" | item (" | " item){{0,{max_items - 1}}}\n'
        f'item ::= [^|\\n\\r "] [^|\\n\\r]{{0,{max_chars - 1}}}\n'
    )


SPAN_GRAMMAR = span_grammar()


def span_json_schema(max_items: int = MAX_SPAN_ITEMS, max_chars: int = MAX_SPAN_CHARS) -> dict:
    """JSON schema of a span answer for servers with structured output: the
    same bounds as SPAN_GRAMMAR (a tiny model loops inside unbounded arrays)."""
    return {
        "type": "object",
        "properties": {
            "spans": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": max_chars},
                "maxItems": max_items,
            }
        },
        "required": ["spans"],
        "additionalProperties": False,
    }


def span_json_answer(answer: str) -> str:
    """A demonstration's " | " answer as the JSON object the schema asks for."""
    items = [] if answer == "none" else answer.split(" | ")
    return json.dumps({"spans": items}, ensure_ascii=False)


def span_json_messages(instruction: str, doc: str) -> list[dict[str, str]]:
    """Chat variant for structured output: same demonstrations, JSON answers."""
    msgs = _chat(
        SPAN_HEADER.strip(), SPAN_DEMOS, instruction, doc,
        'Copy the exact phrases as JSON {"spans": [...]}; an empty list if none.',
    )
    for m in msgs:
        if m["role"] == "assistant":
            m["content"] = span_json_answer(m["content"])
    return msgs

# ------------------------------------------------------------------ chat


def _chat(
    header: str, demos: list[tuple[str, str, str]], instruction: str, doc: str, ask: str
) -> list[dict[str, str]]:
    """Demonstrations as earlier turns, then the document; "{instruction}" in `ask`
    stands for each turn's own instruction."""
    # The task description rides in the first user turn (not a system turn):
    # some templates (Gemma's) have no system role.
    msgs: list[dict[str, str]] = []
    for k, (i, t, a) in enumerate(demos):
        intro = header + "\n\n" if k == 0 else ""
        msgs.append({"role": "user", "content": f"{intro}Instruction: {i}\nText: {flatten(t)}\n"
                                                + ask.replace("{instruction}", i)})
        msgs.append({"role": "assistant", "content": a})
    msgs.append({"role": "user", "content": f"Instruction: {instruction.strip()}\nText: {flatten(doc)}\n"
                                            + ask.replace("{instruction}", instruction.strip())})
    return msgs
