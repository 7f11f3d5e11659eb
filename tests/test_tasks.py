"""Task files and scoring: the JSONL format and its errors, built-in arithmetic, scoring on SmolLM2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchError
from bench.quality import log_softmax, standalone_cell
from bench.quality.tasks import (
    ChoiceItem,
    GenerateItem,
    accuracy,
    arithmetic_items,
    choice_scores,
    choice_tokens,
    context_for,
    generate_answer,
    is_exact_match,
    load_task,
    load_task_file,
    normalize_answer,
    pick_choice,
    score_items,
    split_choice,
)
from bench.runners.llamacpp.runner import LlamaCppRunner

EXAMPLE_TASK = Path(__file__).resolve().parents[1] / "bench" / "data" / "tasks" / "everyday_choice.jsonl"
GOOD_CHOICE = {"type": "choice", "question": "2 + 2 =", "choices": ["4", "5"], "answer": 0}
GOOD_GENERATE = {"type": "generate", "prompt": "Say yes:", "answer": "yes"}


def write_jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the file format


def test_a_valid_file_loads_with_its_hash(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [json.dumps(GOOD_CHOICE), "", json.dumps(GOOD_GENERATE)])
    task = load_task(str(path))
    assert task.name == "task.jsonl" and len(task.items) == 2
    assert isinstance(task.items[0], ChoiceItem) and isinstance(task.items[1], GenerateItem)
    assert task.items[1].max_tokens == 16 and task.items[1].answers == ["yes"]
    assert len(task.sha256) == 64
    path.write_text(path.read_text().replace('"yes"', '"no"'))
    assert load_task(str(path)).sha256 != task.sha256
    assert len(task.limited(1).items) == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "choice", "question": "q", "choices": ["a", "b"], "answer": 0', "not valid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 0}', 'field `type`: expected "choice"'),
        (
            '{"type": "choice", "question": "q", "choices": ["a", "b"], "answer": 2}',
            "field `answer`: answer 2 is not an index",
        ),
        ('{"type": "choice", "question": "q", "choices": ["a"], "answer": 0}', "field `choices`"),
        ('{"type": "choice", "question": "q", "choices": ["a", " "], "answer": 0}', "non-empty string"),
        ('{"type": "choice", "choices": ["a", "b"], "answer": 0}', "field `question`: Field required"),
        ('{"type": "choice", "question": "q", "choices": ["a", "b"], "answer": "a"}', "field `answer`"),
        ('{"type": "generate", "prompt": "p", "answer": "x", "shots": 3}', "field `shots`: unknown field"),
        ('{"type": "generate", "prompt": "p", "answer": []}', "field `answer`"),
        ('{"type": "generate", "prompt": "p", "answer": "x", "max_tokens": 0}', "field `max_tokens`"),
    ],
)
def test_a_malformed_line_names_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = write_jsonl(tmp_path, [json.dumps(GOOD_CHOICE), json.dumps(GOOD_GENERATE), line])
    with pytest.raises(BenchError) as error:
        load_task_file(path)
    assert f"{path}:3:" in error.value.message
    assert expected in error.value.message


def test_an_empty_missing_or_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no task items"):
        load_task_file(write_jsonl(tmp_path, ["", "  "]))
    with pytest.raises(BenchError, match="task file not found"):
        load_task(str(tmp_path / "nope.jsonl"))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(json.dumps(GOOD_CHOICE).encode() + b"\n\xff\xfe\n")
    with pytest.raises(BenchError, match=r"binary.jsonl:2: not UTF-8"):
        load_task_file(binary)


def test_the_shipped_example_file_is_valid() -> None:
    task = load_task(str(EXAMPLE_TASK))
    assert len(task.items) >= 10 and all(isinstance(i, ChoiceItem) for i in task.items)


# ---------------------------------------------------------------- built-in arithmetic


def test_arithmetic_is_deterministic_by_seed_and_correct() -> None:
    first = load_task("builtin:arithmetic")
    assert first == load_task("builtin:arithmetic")
    other = load_task("builtin:arithmetic?seed=1")
    assert other.sha256 != first.sha256 and other.items != first.items
    assert len(first.items) == 200 and len(load_task("builtin:arithmetic?n=7").items) == 7
    for item in first.items + load_task("builtin:arithmetic?digits=4&n=50").items:
        question = item.prompt.splitlines()[-1].removesuffix(" =")
        a, op, b = question.split()
        assert int(item.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0


def test_arithmetic_items_use_the_requested_digits() -> None:
    for item in arithmetic_items(count=20, seed=3, digits=3):
        a, _, b = item.prompt.splitlines()[-1].removesuffix(" =").split()
        assert len(a) == len(b) == 3


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("builtin:trivia", "unknown built-in task"),
        ("builtin:arithmetic?size=3", "unknown parameter 'size'"),
        ("builtin:arithmetic?digits=1", "digits must be an integer in 2..9"),
        ("builtin:arithmetic?n=ten", "n must be an integer"),
    ],
)
def test_bad_builtin_references_say_what_is_allowed(reference: str, expected: str) -> None:
    with pytest.raises(BenchError, match=expected):
        load_task(reference)


# ---------------------------------------------------------------- pure scoring rules


def test_normalization_and_exact_match() -> None:
    assert normalize_answer("  The  Answer. ") == "the answer"
    assert normalize_answer("１２３。") == "123"  # full-width digits and Chinese punctuation
    assert is_exact_match(" 81\n12 + 3 = 15", ["81"])
    assert is_exact_match("\n\nParis.", ["paris"])
    assert not is_exact_match(" 812", ["81"])
    assert is_exact_match("colour", ["color", "colour"])
    assert not is_exact_match("", ["x"])


def test_accuracy_and_its_standard_error() -> None:
    pct, stderr = accuracy([True, True, False, False])
    assert pct == 50.0 and stderr == pytest.approx(100 * np.sqrt(0.25 / 3))
    assert accuracy([True]) == (100.0, None)
    assert accuracy([False, False]) == (0.0, 0.0)
    assert pick_choice([-1.0, -0.5, -0.5]) == 1  # ties go to the first


# ---------------------------------------------------------------- on the real model


@pytest.fixture(scope="module")
def runner(smollm2_path: Path):
    cell = standalone_cell(threads=1, context=256)
    runner = LlamaCppRunner(smollm2_path, cell)
    runner.load()
    runner.prepare_logits(256, cell)
    yield runner
    runner.close()


def test_choice_scores_are_character_normalized_log_likelihoods(runner: LlamaCppRunner) -> None:
    """lm-evaluation-harness's acc_norm: log P(choice | question) / len(choice) in characters, the space before
    the choice not counted ("Zürich" is 6 characters and 7 UTF-8 bytes)."""
    question = "The capital of France is"
    item = ChoiceItem(type="choice", question=question, choices=["Paris", "Zürich", "a banana"], answer=0)
    scores = choice_scores(runner, item)
    for index, choice in enumerate(item.choices):  # by hand, from the logits of the whole text
        context = runner.tokenize(question, add_bos=True)
        whole = runner.tokenize(f"{question} {choice}", add_bos=True)
        logprobs = log_softmax(runner.logits(whole))
        total = sum(logprobs[position - 1, whole[position]] for position in range(len(context), len(whole)))
        assert scores[index] == pytest.approx(total / len(choice), rel=1e-6), choice
    assert pick_choice(scores) == 0


def test_the_example_task_is_mostly_right(runner: LlamaCppRunner) -> None:
    """Everyday questions a 135M model gets mostly right; a broken scorer (off-by-one rows) lands near 25%."""
    items = load_task(str(EXAMPLE_TASK)).items
    runner.prepare_logits(context_for(runner, items), standalone_cell(1, 256))
    pct, _ = accuracy(score_items(runner, items))
    assert pct >= 60


def test_greedy_generation_on_the_kv_cache_matches_the_reference_loop(runner: LlamaCppRunner) -> None:
    prompt = runner.tokenize("Monday, Tuesday, Wednesday,", add_bos=True)
    fast = runner.generate_greedy(prompt, 6)
    slow: list[int] = []  # the reference: a full forward pass per token, the most probable one appended
    for _ in range(6):
        slow.append(int(np.argmax(runner.logits(np.append(prompt, slow).astype(np.int32))[-1])))
    assert fast.tolist() == slow[: len(fast)] and len(fast) >= 1
    assert "Thursday" in runner.detokenize(fast)


def test_generation_items_score_by_exact_match(runner: LlamaCppRunner) -> None:
    prompt = "Country: Italy\nCapital: Rome\nCountry: France\nCapital:"
    right = GenerateItem(type="generate", prompt=prompt, answer="paris", max_tokens=8)
    wrong = GenerateItem(type="generate", prompt=prompt, answer="Rome", max_tokens=8)
    counting = GenerateItem(type="generate", prompt="1\n2\n3\n4\n", answer=["5", "five"], max_tokens=8)
    assert generate_answer(runner, right).startswith(" Paris\n")  # generation runs on past the answer's line
    assert score_items(runner, [right, wrong, counting]) == [True, False, True]


def test_detokenize_inverts_tokenize(runner: LlamaCppRunner) -> None:
    text = "Hello, 世界! 42 apples."
    assert runner.detokenize(runner.tokenize(text, add_bos=False)) == text


# ---------------------------------------------------------------- where the question ends and the choice starts

# (question, choice, the text of the continuation's tokens): a space joins them unless either side has one, and
# a question's trailing whitespace moves to the continuation, as lm-evaluation-harness does.
SPLITS = [
    ("The capital of France is", "Paris", " Paris"),
    ("The capital of France is ", "Paris", " Paris"),
    ("Question: 2 + 2 =\nAnswer:", " A", " A"),
    ("Question: 2 + 2 =\nAnswer:\n", "four", "\nfour"),
    ("Two plus two is", "4", " 4"),
]


def test_the_question_s_trailing_whitespace_moves_to_the_choice() -> None:
    for question, choice, continuation in SPLITS:
        context, moved = split_choice(question, choice)
        assert (context, moved) == (question.rstrip(), continuation)


def _pieces(runner: LlamaCppRunner, tokens: np.ndarray) -> list[str]:
    """Each token's vocabulary entry as stored (SentencePiece writes a space as "▁", byte-level BPE as "Ġ")."""
    import llama_cpp

    return [llama_cpp.llama_vocab_get_text(runner.vocab, int(t)).decode("utf-8", "replace") for t in tokens]


def _check_splits(runner: LlamaCppRunner, space: str, spells_text: bool = True) -> None:
    """spells_text: the continuation's pieces spell its text exactly (a vocabulary that prefixes "▁" to words
    also does so after a newline)."""
    for question, choice, text in SPLITS:
        context, continuation = choice_tokens(runner, question, choice)
        whole = runner.tokenize(question.rstrip() + text, add_bos=True)
        assert context.tolist() == whole[: len(context)].tolist()  # the whole text's tokens, split
        assert continuation.tolist() == whole[len(context) :].tolist()
        pieces = _pieces(runner, continuation)
        spelled = "".join(pieces).replace(space, " ").replace("Ċ", "\n").replace("<0x0A>", "\n")
        assert spelled == text or not spells_text, pieces
        if choice.strip().isalpha():  # a word starts with its space-prefixed token (digits split off alone)
            assert pieces[0] != space, (question, choice, pieces)
        assert _pieces(runner, context)[-1] != space  # the joining space is never the context's last token


@pytest.fixture(scope="module")
def load_for_tokens():
    runners: list[LlamaCppRunner] = []

    def load(path: Path) -> LlamaCppRunner:
        runner = LlamaCppRunner(path, standalone_cell(threads=1, context=256))
        runner.load()
        runners.append(runner)
        return runner

    yield load
    for runner in runners:
        runner.close()


def test_choices_split_cleanly_on_smollm2(runner: LlamaCppRunner) -> None:
    _check_splits(runner, "Ġ")


def test_choices_split_cleanly_on_gemma3(gemma3_path: Path, load_for_tokens) -> None:
    _check_splits(load_for_tokens(gemma3_path), "▁")


@pytest.fixture(scope="module")
def gemma3_with_space_prefix(gemma3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma-3-270M with `add_space_prefix` on: a SentencePiece vocabulary that prepends "▁" to any text it
    tokenizes, as Llama-2's and Mistral's do (Gemma 3's own GGUF has it off)."""
    import gguf

    path = tmp_path_factory.mktemp("gemma3-space-prefix") / "gemma3.gguf"
    shutil.copyfile(gemma3_path, path)
    reader = gguf.GGUFReader(path, "r+")
    flag = reader.fields["tokenizer.ggml.add_space_prefix"]
    flag.parts[flag.data[0]][0] = 1  # written through the file's memory map
    del reader
    return path


def test_choices_get_no_spurious_leading_space_token_with_a_space_prefixing_vocabulary(
    gemma3_with_space_prefix: Path, load_for_tokens
) -> None:
    runner = load_for_tokens(gemma3_with_space_prefix)
    assert _pieces(runner, runner.tokenize(" Paris", add_bos=False)) == ["▁", "▁Paris"]  # alone: spurious "▁"
    _check_splits(runner, "▁", spells_text=False)
    item = ChoiceItem(type="choice", question="The capital of France is", choices=["Paris", "London"], answer=0)
    runner.prepare_logits(256, standalone_cell(1, 256))
    assert pick_choice(choice_scores(runner, item)) == 0
