#!/usr/bin/env python3
"""Drives a running `hearth serve` with the official `openai` client, unchanged.

Checks chat (whole, streamed, streamed with usage), text completions, the
model list, structured output (`response_format` json_schema, and the
client's own `chat.completions.parse` with a pydantic model), tool calls
and tool results, embeddings
(when the server lists an embedding model), and that errors surface as the
client's exception classes: BadRequestError for bad parameters,
AuthenticationError for a wrong key, NotFoundError for an unknown model.

Prints one line per check and exits non-zero if any failed.

Usage: openai_client_check.py --base-url http://127.0.0.1:PORT/v1 --model ID [--api-key KEY]
Run it with the environment made by scripts/setup-client-venv.sh.
"""

import argparse
import json
import math
import sys
import traceback

import openai
import pydantic

QUESTION = "What is the capital of France? Answer in one sentence."


class Failure(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failure(message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", default="unused")
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    model = args.model
    greedy = dict(model=model, temperature=0, max_tokens=24)
    messages = [{"role": "user", "content": QUESTION}]
    failures = []
    state = {}

    def check(name):
        def run(function):
            try:
                function()
                print(f"ok: {name}", flush=True)
            except Exception as error:  # noqa: BLE001 - every failure is reported
                detail = str(error) if isinstance(error, Failure) else traceback.format_exc()
                print(f"FAIL: {name}: {detail}", flush=True)
                failures.append(name)
            return function

        return run

    @check("models list and retrieve")
    def _():
        ids = [m.id for m in client.models.list().data]
        expect(model in ids, f"{model} not in {ids}")
        state["models"] = ids
        expect(client.models.retrieve(model).id == model, "retrieve returned another id")

    @check("chat completion with usage")
    def _():
        reply = client.chat.completions.create(messages=messages, **greedy)
        text = reply.choices[0].message.content
        expect(reply.object == "chat.completion", reply.object)
        expect(text and "Paris" in text, f"unexpected answer {text!r}")
        expect(reply.choices[0].finish_reason in ("stop", "length"), reply.choices[0].finish_reason)
        usage = reply.usage
        expect(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage {usage}")
        expect(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage {usage}")
        expect(usage.prompt_tokens_details.cached_tokens is not None, "no cached_tokens")
        state["chat_text"] = text

    @check("chat stream concatenates to the whole answer")
    def _():
        stream = client.chat.completions.create(messages=messages, stream=True, **greedy)
        pieces, finish = [], None
        for chunk in stream:
            expect(chunk.object == "chat.completion.chunk", chunk.object)
            expect(chunk.usage is None, "usage without include_usage")
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        expect("".join(pieces) == state.get("chat_text"), f"{''.join(pieces)!r} != {state.get('chat_text')!r}")
        expect(finish in ("stop", "length"), f"finish_reason {finish}")

    @check("chat stream with include_usage")
    def _():
        stream = client.chat.completions.create(
            messages=messages, stream=True, stream_options={"include_usage": True}, **greedy
        )
        chunks = list(stream)
        last = chunks[-1]
        expect(last.choices == [], "the usage chunk has choices")
        expect(last.usage is not None and last.usage.completion_tokens > 0, f"usage {last.usage}")
        expect(all(c.usage is None for c in chunks[:-1]), "usage before the last chunk")

    @check("text completion, whole and streamed")
    def _():
        whole = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
        text = whole.choices[0].text
        expect("Paris" in text, f"unexpected completion {text!r}")
        expect(whole.usage.completion_tokens == 8, f"usage {whole.usage}")
        stream = client.completions.create(
            model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
        )
        streamed = "".join(c.choices[0].text for c in stream if c.choices)
        expect(streamed == text, f"{streamed!r} != {text!r}")

    @check("json_schema response_format")
    def _():
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
            "required": ["city", "country"],
            "additionalProperties": False,
        }
        reply = client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=60,
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
        )
        content = reply.choices[0].message.content
        value = json.loads(content)
        expect(set(value) == {"city", "country"}, f"keys of {content}")
        expect(all(isinstance(v, str) for v in value.values()), content)

    @check("chat.completions.parse with a pydantic model")
    def _():
        class Place(pydantic.BaseModel):
            city: str = pydantic.Field(max_length=30)
            country: str = pydantic.Field(max_length=30)

        reply = client.chat.completions.parse(
            model=model, messages=messages, temperature=0, max_tokens=60, response_format=Place
        )
        parsed = reply.choices[0].message.parsed
        expect(isinstance(parsed, Place), f"parsed {parsed!r}")

    @check("tool calls")
    def _():
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The current weather in a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 30}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                },
            }
        ]
        asked = [{"role": "user", "content": "What is the weather like in Paris?"}]
        reply = client.chat.completions.create(
            model=model, messages=asked, temperature=0, max_tokens=60, tools=tools, tool_choice="required"
        )
        choice = reply.choices[0]
        expect(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason}")
        call = choice.message.tool_calls[0]
        expect(call.function.name == "get_weather", f"called {call.function.name}")
        expect(isinstance(json.loads(call.function.arguments).get("city"), str), call.function.arguments)
        # The result goes back and the model answers in text.
        answered = client.chat.completions.create(
            model=model,
            temperature=0,
            max_tokens=30,
            tools=tools,
            tool_choice="none",
            messages=asked
            + [
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 31}'},
            ],
        )
        expect(answered.choices[0].message.content, "no answer after the tool result")

    @check("bad parameters raise BadRequestError naming the field")
    def _():
        for params, field in [({"temperature": 5}, "temperature"), ({"n": 2}, "n"), ({"top_p": 0}, "top_p")]:
            try:
                client.chat.completions.create(model=model, messages=messages, max_tokens=2, **params)
            except openai.BadRequestError as error:
                expect(error.status_code == 400, f"status {error.status_code}")
                expect(error.param == field, f"param {error.param!r} for {params}")
            else:
                raise Failure(f"{params} was accepted")
        try:
            client.chat.completions.create(model=model, messages=[], max_tokens=2)
        except openai.BadRequestError as error:
            expect(error.param == "messages", f"param {error.param!r} for empty messages")
        else:
            raise Failure("empty messages were accepted")

    @check("an unknown model raises NotFoundError")
    def _():
        try:
            client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=2)
        except openai.NotFoundError as error:
            expect(error.code == "model_not_found", f"code {error.code!r}")
        else:
            raise Failure("an unknown model was accepted")

    @check("a wrong API key raises AuthenticationError")
    def _():
        wrong = openai.OpenAI(base_url=args.base_url, api_key=args.api_key + "-wrong", max_retries=0)
        try:
            wrong.models.list()
        except openai.AuthenticationError as error:
            expect(error.status_code == 401, f"status {error.status_code}")
        else:
            raise Failure("a wrong key was accepted (start the server with --api-key)")

    embedding_models = [m for m in state.get("models", []) if m != model]
    if embedding_models:
        embedding_model = embedding_models[0]

        @check(f"embeddings with {embedding_model}, base64 and float")
        def _():
            texts = ["A man is playing a guitar.", "Someone plays a guitar.", "Stocks fell sharply today."]
            # The client asks for base64 by default and decodes it.
            encoded = client.embeddings.create(model=embedding_model, input=texts)
            floats = client.embeddings.create(model=embedding_model, input=texts, encoding_format="float")
            a = [d.embedding for d in encoded.data]
            b = [d.embedding for d in floats.data]
            expect(len(a) == 3 and len(a[0]) == len(b[0]) > 0, "vector counts or sizes")
            expect(max(abs(x - y) for x, y in zip(a[0], b[0])) < 1e-6, "base64 and float disagree")
            norm = math.sqrt(sum(x * x for x in a[0]))
            expect(abs(norm - 1) < 1e-3, f"norm {norm}")
            dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
            expect(dot(a[0], a[1]) > dot(a[0], a[2]), "similar texts are not closer")
            expect(encoded.usage.prompt_tokens > 0, f"usage {encoded.usage}")
    else:
        print("skip: embeddings (the server lists no embedding model)", flush=True)

    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
