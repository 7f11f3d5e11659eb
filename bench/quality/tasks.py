"""Task accuracy: JSONL task files (docs/tasks.md), the built-in arithmetic task, and scoring on a model.

Two item types:
  {"type": "choice", "question": ..., "choices": [...], "answer": <index>}
      scored by log-likelihood, as lm-evaluation-harness's `acc_norm`: each choice continues the question
      (question + choice tokenized together and split at the question's token count, so a SentencePiece
      vocabulary gives the choice no spurious leading "▁" token), the log-probabilities of the choice's
      tokens are summed, then divided by the choice's length in characters; the best score is the pick.
  {"type": "generate", "prompt": ..., "answer": "..." | [...], "max_tokens": 16}
      scored by exact match: greedy decoding of up to max_tokens tokens, cut at the first newline, then both
      sides normalized (normalize_answer) and compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qsl

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bench.errors import BenchError
from bench.quality.numerics import log_softmax

if TYPE_CHECKING:
    from bench.quality.model import QualityModel

BUILTIN_PREFIX = "builtin:"
DEFAULT_MAX_TOKENS = 16
# Context sizes for task evaluation are rounded up so that similar tasks share a context size.
CONTEXT_ROUND = 256


class ChoiceItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["choice"]
    question: str = Field(min_length=1)
    choices: list[str] = Field(min_length=2)
    answer: int = Field(ge=0)

    @field_validator("question")
    @classmethod
    def _non_blank_question(cls, question: str) -> str:
        if not question.strip():  # the choices are scored after the question's tokens: it needs some
            raise ValueError("question must have text other than whitespace")
        return question

    @field_validator("choices")
    @classmethod
    def _non_empty_choices(cls, choices: list[str]) -> list[str]:
        if any(not c.strip() for c in choices):
            raise ValueError("every choice must be a non-empty string")
        return choices

    @field_validator("answer")
    @classmethod
    def _answer_in_range(cls, answer: int, info: ValidationInfo) -> int:
        choices = info.data.get("choices")  # absent when `choices` itself was invalid
        if choices is not None and answer >= len(choices):
            raise ValueError(f"answer {answer} is not an index of choices (0..{len(choices) - 1})")
        return answer


class GenerateItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["generate"]
    prompt: str = Field(min_length=1)
    answer: str | list[str]  # a list holds every accepted answer
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=256)

    @field_validator("answer")
    @classmethod
    def _non_empty_answer(cls, answer: str | list[str]) -> str | list[str]:
        answers = [answer] if isinstance(answer, str) else answer
        if not answers or any(not normalize_answer(a) for a in answers):
            raise ValueError("answer must be a non-empty string or a non-empty list of non-empty strings")
        return answer

    @property
    def answers(self) -> list[str]:
        return [self.answer] if isinstance(self.answer, str) else list(self.answer)


Item = Annotated[ChoiceItem | GenerateItem, Field(discriminator="type")]
_ITEM = TypeAdapter(Item)
ITEM_EXAMPLES = (
    '{"type": "choice", "question": "...", "choices": ["...", "..."], "answer": 0} or '
    '{"type": "generate", "prompt": "...", "answer": "..."}'
)


class Task(BaseModel):
    """A named list of items; `sha256` identifies the exact items (file bytes, or the generator's output)."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    items: list[Item]

    def limited(self, limit: int) -> Task:
        return self.model_copy(update={"items": self.items[:limit]})


# ---------------------------------------------------------------- loading


def load_task(reference: str) -> Task:
    """A task by reference: `builtin:<name>[?key=value&...]` or a path to a JSONL file."""
    if reference.startswith(BUILTIN_PREFIX):
        return _builtin_task(reference)
    return load_task_file(Path(reference).expanduser())


def load_task_file(path: Path) -> Task:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BenchError(f"task file not found: {path} (expected a JSONL file, see docs/tasks.md)") from None
    except OSError as exc:
        raise BenchError(f"cannot read task file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BenchError(f"{path}:{line}: not UTF-8 text (expected a UTF-8 JSONL file)") from None
    lines = enumerate(text.splitlines(), 1)
    items = [_parse_line(path, number, line) for number, line in lines if line.strip()]
    if not items:
        raise BenchError(f"{path}: no task items (expected one JSON object per line: {ITEM_EXAMPLES})")
    return Task(name=path.name, sha256=hashlib.sha256(data).hexdigest(), items=items)


def _parse_line(path: Path, number: int, line: str) -> ChoiceItem | GenerateItem:
    where = f"{path}:{number}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BenchError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); expected one object per line: {ITEM_EXAMPLES}"
        ) from None
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: expected a JSON object ({ITEM_EXAMPLES}), got {type(raw).__name__}")
    if raw.get("type") not in ("choice", "generate"):
        raise BenchError(f'{where}: field `type`: expected "choice" or "generate", got {raw.get("type")!r}')
    try:
        return _ITEM.validate_python(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(p) for p in error["loc"] if p not in ("choice", "generate")]
            field = ".".join(loc) or "(item)"
            message = (
                "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            )
            problems.append(f"field `{field}`: {message}")
        raise BenchError(f"{where}: " + "; ".join(problems)) from None


def task_items_sha256(items: list[Any]) -> str:
    canonical = "\n".join(json.dumps(i.model_dump(), sort_keys=True, ensure_ascii=False) for i in items)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- built-in tasks


def arithmetic_items(count: int = 200, seed: int = 0, digits: int = 2) -> list[GenerateItem]:
    """Multi-digit addition and subtraction, few-shot prompted; the same seed always gives the same items."""
    low, high = 10 ** (digits - 1), 10**digits - 1
    rng = random.Random(f"arithmetic-{digits}-{seed}")  # str seeds hash deterministically across runs

    def problem() -> tuple[str, int]:
        a, b = rng.randint(low, high), rng.randint(low, high)
        if rng.random() < 0.5:
            return f"{a} + {b}", a + b
        a, b = max(a, b), min(a, b)  # no negative answers
        return f"{a} - {b}", a - b

    shots = "".join(f"{q} = {r}\n" for q, r in (problem() for _ in range(3)))
    items = []
    for _ in range(count):
        question, result = problem()
        items.append(
            GenerateItem(
                type="generate",
                prompt=f"Compute the result.\n{shots}{question} =",
                answer=str(result),
                max_tokens=digits + 4,
            )
        )
    return items


_BUILTIN_PARAMS = {"arithmetic": {"n": (1, 10_000, 200), "seed": (0, 2**31, 0), "digits": (2, 9, 2)}}


def _builtin_task(reference: str) -> Task:
    name, _, query = reference.removeprefix(BUILTIN_PREFIX).partition("?")
    if name not in _BUILTIN_PARAMS:
        raise BenchError(
            f"unknown built-in task {reference!r}; known: " + ", ".join(f"{BUILTIN_PREFIX}{n}" for n in _BUILTIN_PARAMS)
        )
    allowed = _BUILTIN_PARAMS[name]
    values = {key: default for key, (_, _, default) in allowed.items()}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise BenchError(f"task {reference!r}: unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        low, high, _ = allowed[key]
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise BenchError(f"task {reference!r}: parameter {key} must be an integer in {low}..{high}, got {raw!r}")
        values[key] = int(raw)
    items = arithmetic_items(count=values["n"], seed=values["seed"], digits=values["digits"])
    return Task(name=reference, sha256=task_items_sha256(items), items=items)


# ---------------------------------------------------------------- scoring (pure parts)

_EDGE_PUNCTUATION = " \t.,;:!?\"'`()[]{}。，；：！？、“”‘’（）"


def normalize_answer(text: str) -> str:
    """Unicode NFKC, lower case, whitespace collapsed, punctuation stripped from both ends."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\s+", " ", text)
    return text.strip(_EDGE_PUNCTUATION)


def first_line(text: str) -> str:
    """Generation stops at the first newline (after skipping leading blank lines)."""
    stripped = text.lstrip("\n\r ")
    return stripped.splitlines()[0] if stripped else ""


def is_exact_match(generated: str, answers: list[str]) -> bool:
    got = normalize_answer(first_line(generated))
    return any(got == normalize_answer(a) for a in answers)


def choice_separator(question: str, choice: str) -> str:
    return "" if question[-1:].isspace() or choice[:1].isspace() else " "


def split_choice(question: str, choice: str) -> tuple[str, str]:
    """(context, continuation) texts: the choice follows the question after a space (unless either side has
    whitespace there); as lm-evaluation-harness does, the question's trailing whitespace moves to the
    continuation, so the context ends on a word and the continuation's first token carries the space."""
    context = question.rstrip()
    return context, question[len(context) :] + choice_separator(question, choice) + choice


def pick_choice(scores: list[float]) -> int:
    """The index of the best score; the first one wins a tie."""
    return int(np.argmax(np.asarray(scores)))


def accuracy(correct: list[bool]) -> tuple[float, float | None]:
    """Accuracy % and its standard error % (binomial, as llama-perplexity reports multiple-choice scores)."""
    if not correct:
        raise ValueError("accuracy() needs at least one item")
    n = len(correct)
    p = sum(correct) / n
    stderr = 100.0 * math.sqrt(p * (1.0 - p) / (n - 1)) if n > 1 else None
    return 100.0 * p, stderr


# ---------------------------------------------------------------- scoring on a model


def choice_tokens(model: QualityModel, question: str, choice: str) -> tuple[np.ndarray, np.ndarray]:
    """(context, continuation) tokens, as lm-evaluation-harness splits them: tokenize context + continuation
    as one text and take the tokens past the context's own count as the continuation. (Tokenizing the
    continuation alone would give SentencePiece vocabularies a spurious leading "▁" token.)"""
    context_text, continuation_text = split_choice(question, choice)
    context = model.tokenize(context_text, add_bos=True)
    whole = model.tokenize(context_text + continuation_text, add_bos=True)
    return context, whole[len(context) :]


def choice_scores(model: QualityModel, item: ChoiceItem) -> list[float]:
    """Per choice: sum of the log-probabilities of its tokens after the question, per character of the
    choice (lm-evaluation-harness's `acc_norm`: the separator before the choice is not counted)."""
    scores = []
    for choice in item.choices:
        context, continuation = choice_tokens(model, item.question, choice)
        if len(continuation) == 0:
            raise BenchError(
                f"choice {choice!r} adds no token after the question {item.question!r} for this "
                "model's tokenizer, so it cannot be scored"
            )
        sequence = np.concatenate([context, continuation]).astype(np.int32)
        rows = log_softmax(model.logits(sequence)[len(context) - 1 : len(sequence) - 1])
        total = float(rows[np.arange(len(continuation)), continuation].sum())
        scores.append(total / len(choice))
    return scores


def generate_answer(model: QualityModel, item: GenerateItem) -> str:
    prompt = model.tokenize(item.prompt, add_bos=True)
    return model.detokenize(model.generate_greedy(prompt, item.max_tokens))


def tokens_needed(model: QualityModel, item: ChoiceItem | GenerateItem) -> int:
    """The longest sequence this item puts through the model."""
    if isinstance(item, GenerateItem):
        return len(model.tokenize(item.prompt, add_bos=True)) + item.max_tokens
    return max(sum(len(part) for part in choice_tokens(model, item.question, c)) for c in item.choices)


def score_items(model: QualityModel, items: list[ChoiceItem | GenerateItem]) -> list[bool]:
    """Whether the model got each item right; the model must be ready for the longest one (context_for)."""
    correct = []
    for item in items:
        if isinstance(item, ChoiceItem):
            correct.append(pick_choice(choice_scores(model, item)) == item.answer)
        else:
            correct.append(is_exact_match(generate_answer(model, item), item.answers))
    return correct


def context_for(model: QualityModel, items: list[ChoiceItem | GenerateItem]) -> int:
    longest = max(tokens_needed(model, item) for item in items)
    return -(-longest // CONTEXT_ROUND) * CONTEXT_ROUND
