"""What the server backend sends: prompts of exact length counted by the server (/tokenize) or, where it has
none, by the model's tokenizer from its GGUF; a shared prefix across requests; multi-turn conversations that resend
what came before. Checked on the request bodies a fake OpenAI-compatible server on loopback received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.runners.server.runner import ServerEngine, server_settings
from bench.runners.server.tokens import GgufTokenizer
from tests.conftest import cpu_cell
from tests.runners.fake_openai_server import FakeServer

PROMPT = 48


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def _measure(url: str, model: Path = Path("unused.gguf"), **knobs: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"server_url": url, "repetitions": 2, "warmup": 0, "prompt_tokens": PROMPT, **knobs}
    cell = cpu_cell("server", "source", **settings)
    engine = ServerEngine(model, cell)
    try:
        engine.load()
        engine.start_context(cell)
        return engine.measure(cell)
    finally:
        engine.close()


def _user_texts(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


def test_prompts_are_exact_in_the_servers_tokens_and_distinct(fake: FakeServer) -> None:
    row = _measure(fake.url, parallel=2)
    prompts = [_user_texts(b)[0] for b in fake.behaviour.bodies]
    assert len(prompts) == 4 and len(set(prompts)) == 4
    # the fake counts one token per word and its chat template adds one: the user text has PROMPT - 1 words
    assert {len(p.split()) for p in prompts} == {PROMPT - 1}
    assert len({p.split()[1] for p in prompts}) == 4  # distinct from the first word after "Request N:"
    assert "prompt" not in row["warnings"]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_without_tokenize_the_ggufs_tokenizer_counts(fake: FakeServer, smollm2_path: Path, endpoint: str) -> None:
    fake.behaviour.tokenize = False
    row = _measure(fake.url, smollm2_path, endpoint=endpoint)
    tokenizer = GgufTokenizer(smollm2_path)
    chat = endpoint == "chat"
    texts = [_user_texts(b)[0] if chat else b["prompt"] for b in fake.behaviour.bodies]
    # the chat template's tokens (SmolLM2's system prompt alone is ~20) count towards the prompt, as llama-server's
    assert [tokenizer.count(text, chat) for text in texts] == [PROMPT, PROMPT]
    assert len(texts[0].split()) < PROMPT - (10 if chat else 0)
    assert "prompt lengths counted with the model's tokenizer from its GGUF" in row["warnings"]


def test_without_tokenize_or_gguf_the_row_says_lengths_are_not_verified(fake: FakeServer) -> None:
    fake.behaviour.tokenize = False
    row = _measure(fake.url, endpoint="completions")
    assert "prompt lengths not verified" in row["warnings"]
    # 0.75 words per token, "Request N:" (two words) the first
    assert {len(b["prompt"].split()) for b in fake.behaviour.bodies} == {int(PROMPT * 0.75) + 1}


def test_a_shared_prefix_begins_every_prompt(fake: FakeServer) -> None:
    _measure(fake.url, parallel=2, shared_prefix_tokens=20, endpoint="completions")
    prompts = [b["prompt"] for b in fake.behaviour.bodies]
    words = [p.split() for p in prompts]
    assert len({tuple(w[:20]) for w in words}) == 1  # 20 tokens (the fake's words) the same in every prompt
    assert len({tuple(w[:22]) for w in words}) == 4  # then each request's own: "Request N:"
    assert words[0][20] == "Request" and {len(w) for w in words} == {PROMPT}


def test_a_prefix_as_long_as_the_prompt_is_refused(fake: FakeServer) -> None:
    with pytest.raises(BenchError, match="shared_prefix_tokens 48 must be less than prompt_tokens 48"):
        _measure(fake.url, shared_prefix_tokens=PROMPT)


def test_each_turn_resends_the_conversation_so_far(fake: FakeServer) -> None:
    fake.behaviour.finish = "stop"
    _measure(fake.url, turns=2, repetitions=4, ignore_eos=False)
    bodies = fake.behaviour.bodies
    answer = "".join(f" a{i}" for i in range(fake.behaviour.answer))  # the content; reasoning is not resent
    assert [len(b["messages"]) for b in bodies] == [1, 3, 1, 3]
    for first, second in ((bodies[0], bodies[1]), (bodies[2], bodies[3])):
        assert second["messages"][:2] == [first["messages"][0], {"role": "assistant", "content": answer}]
        assert second["messages"][2]["content"] != first["messages"][0]["content"]
    assert len({b["messages"][-1]["content"] for b in bodies}) == 4  # every turn's own new prompt


def test_completions_turns_concatenate_prompts_and_answers(fake: FakeServer) -> None:
    fake.behaviour.mode = "think"
    _measure(fake.url, turns=2, repetitions=2, endpoint="completions")
    first, second = (b["prompt"] for b in fake.behaviour.bodies)
    assert second.startswith(first + "<think>") and "</think>" in second  # raw text: what the server sent


def test_a_slot_holds_a_whole_conversation() -> None:
    one = server_settings(Path("m.gguf"), cpu_cell("server", "Q4_1", prompt_tokens=100, gen_tokens=50, parallel=2))
    three = server_settings(
        Path("m.gguf"), cpu_cell("server", "Q4_1", prompt_tokens=100, gen_tokens=50, parallel=2, turns=3)
    )
    # per slot: the turns' prompts, answers and template tokens (64 each), rounded up to 256; two slots
    assert (one.context, three.context) == (2 * 256, 2 * 768)
