"""Drive an instill server with the official `openai` client (pinned in .ci/run).

usage: openai_client.py BASE_URL CHAT_MODEL TOOLS_URL TOOLS_MODEL
Checks chat, completions, streaming (with include_usage), stop, n, logprobs, tools and
errors; prints one JSON summary line; exits non-zero on the first failure.
"""
import json
import sys

import openai

base, chat_model, tools_base, tools_model = sys.argv[1:5]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
tools_client = openai.OpenAI(base_url=tools_base, api_key="unused", max_retries=0)
out = {"openai": openai.__version__}

# Models.
ids = [m.id for m in client.models.list().data]
assert chat_model in ids, ids
out["models"] = ids

# Chat, non-streaming.
msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
r = client.chat.completions.create(model=chat_model, messages=msgs, max_tokens=16, temperature=0)
text = r.choices[0].message.content
assert r.object == "chat.completion" and text, r
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
out["chat"] = text

# Streaming: same text, usage in the last chunk.
chunks = list(client.chat.completions.create(model=chat_model, messages=msgs, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == text, (streamed, text)
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens, chunks[-1]
assert chunks[0].choices[0].delta.role == "assistant"
assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
out["stream_chunks"] = len(chunks)

# Stop: the text ends before the stop string, which is not returned.
long = client.chat.completions.create(model=chat_model, messages=[{"role": "user", "content": "Tell me about Paris in two sentences."}], max_tokens=40, temperature=0)
full = long.choices[0].message.content
words = full.split()
assert len(words) >= 3, full
stop = " " + words[2]
cut = client.chat.completions.create(model=chat_model, messages=[{"role": "user", "content": "Tell me about Paris in two sentences."}], max_tokens=40, temperature=0, stop=[stop])
assert cut.choices[0].message.content == full[: full.index(stop)], (cut.choices[0].message.content, full, stop)
assert cut.choices[0].finish_reason == "stop"
sstream = client.chat.completions.create(model=chat_model, messages=[{"role": "user", "content": "Tell me about Paris in two sentences."}], max_tokens=40, temperature=0, stop=stop, stream=True)
assert "".join(c.choices[0].delta.content or "" for c in sstream if c.choices) == cut.choices[0].message.content
out["stop"] = cut.choices[0].message.content

# Logprobs.
lp = client.chat.completions.create(model=chat_model, messages=msgs, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
content = lp.choices[0].logprobs.content
assert len(content) == lp.usage.completion_tokens, content
for t in content:
    assert t.logprob <= 0 and len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token, t
out["logprobs"] = [round(t.logprob, 4) for t in content]

# n, seeded sampling.
many = client.chat.completions.create(model=chat_model, messages=msgs, max_tokens=8, temperature=1.0, seed=5, n=2)
assert len(many.choices) == 2 and {c.index for c in many.choices} == {0, 1}

# Completions, plain and streaming.
c = client.completions.create(model=chat_model, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=1)
assert c.object == "text_completion" and c.choices[0].text, c
assert len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens
cs = "".join(x.choices[0].text for x in client.completions.create(model=chat_model, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True))
assert cs == c.choices[0].text, (cs, c.choices[0].text)
out["completion"] = c.choices[0].text

# Tools (Qwen2.5 format): a call comes back parsed, with finish_reason tool_calls.
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}}, "required": ["city"]}}}]
ask = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
t = tools_client.chat.completions.create(model=tools_model, messages=ask, tools=tools, max_tokens=64, temperature=0)
calls = t.choices[0].message.tool_calls
assert t.choices[0].finish_reason == "tool_calls" and calls, t
assert calls[0].function.name == "get_weather" and "paris" in json.loads(calls[0].function.arguments)["city"].lower(), calls
out["tool_call"] = {"name": calls[0].function.name, "arguments": calls[0].function.arguments}
# The same through streaming.
st = list(tools_client.chat.completions.create(model=tools_model, messages=ask, tools=tools, max_tokens=64, temperature=0, stream=True))
deltas = [tc for ch in st if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
assert deltas and deltas[0].function.name == "get_weather", st
assert [ch.choices[0].finish_reason for ch in st if ch.choices][-1] == "tool_calls"
# A tool result goes back through the template; the model answers in text.
follow = ask + [{"role": "assistant", "content": None, "tool_calls": [{"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": calls[0].function.arguments}}]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})}]
a = tools_client.chat.completions.create(model=tools_model, messages=follow, tools=tools, max_tokens=40, temperature=0)
assert a.choices[0].message.content and "18" in a.choices[0].message.content, a
out["tool_answer"] = a.choices[0].message.content
# tool_choice naming a function forces that call.
f = tools_client.chat.completions.create(model=tools_model, messages=[{"role": "user", "content": "Hello!"}], tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=40, temperature=0)
assert f.choices[0].message.tool_calls and f.choices[0].message.tool_calls[0].function.name == "get_weather", f

# Errors come back as the client's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=msgs)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404
try:
    client.chat.completions.create(model=chat_model, messages=[])
    raise AssertionError("empty messages accepted")
except openai.BadRequestError as e:
    assert "messages" in str(e)

print(json.dumps(out))
