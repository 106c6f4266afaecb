"""Drives a Synapse coordinator with the official `openai` package, as any OpenAI client would.

Usage: python3 check_client.py BASE_URL API_KEY PROMPTS_JSON

Runs a plain completion, a streamed chat completion (with usage) and ten concurrent streamed
completions (one per prompt in PROMPTS_JSON), checks the response shapes, and prints one JSON
object with the texts and usage counts; tests/openai_api.rs compares them with the CPU engine.
Exits non-zero (with the reason on stderr) when a shape is wrong.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import openai

base, key, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)

models = client.models.list()
model = models.data[0].id
assert len(models.data) == 1 and model, models

# A plain (non-streamed) completion.
c = client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=10, temperature=0
)
assert c.object == "text_completion" and len(c.choices) == 1, c
assert c.choices[0].finish_reason in ("length", "stop"), c
completion = {
    "text": c.choices[0].text,
    "finish_reason": c.choices[0].finish_reason,
    "usage": c.usage.model_dump(),
}

# A streamed chat completion with the usage chunk at the end.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=12,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage, roles = [], None, None, []
for chunk in stream:
    assert chunk.object == "chat.completion.chunk", chunk
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert roles == ["assistant"], roles
assert finish in ("stop", "length"), finish
assert usage is not None, "no usage chunk"
assert len(pieces) > 1, f"the answer came in {len(pieces)} piece(s), not streamed"
chat = {"text": "".join(pieces), "finish_reason": finish, "usage": usage}


def streamed(prompt):
    s = client.completions.create(
        model=model, prompt=prompt, max_tokens=6, temperature=0, stream=True
    )
    return "".join(ch.choices[0].text for ch in s if ch.choices)


with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
    concurrent = list(pool.map(streamed, prompts))

print(json.dumps({"model": model, "completion": completion, "chat": chat, "concurrent": concurrent}))
