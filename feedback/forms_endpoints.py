"""Forms of the study design and model-endpoint pages (issue 12); they only validate input."""

from __future__ import annotations

import json

from django import forms


class EndpointForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Shown to researchers only (exports, dashboards), never to participants.")
    base_url = forms.URLField(
        max_length=500, assume_scheme="https", label="Base URL",
        help_text="The server's OpenAI-compatible base, e.g. http://localhost:8000/v1 (vLLM), "
        "http://localhost:11434/v1 (Ollama), https://api.openai.com/v1.",
    )
    model_id = forms.CharField(max_length=200, label="Model id", help_text='The "model" field of each request.')
    params = forms.CharField(
        required=False, label="Sampling parameters (JSON)", initial='{"temperature": 0.7, "max_tokens": 256}',
        help_text="temperature, top_p, max_tokens, seed, presence_penalty, frequency_penalty.",
    )
    system_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="System prompt")
    # render_value=False: a stored key is never sent back to the browser.
    api_key = forms.CharField(
        required=False, max_length=500, label="API key", widget=forms.PasswordInput(render_value=False),
        help_text="Optional; stored on the server and never shown again.",
    )

    def clean_params(self):
        raw = (self.cleaned_data.get("params") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError("Not valid JSON.") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError('Use a JSON object, e.g. {"temperature": 0.7}.')
        return value


class DesignForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[("pairs", "Imported pairs (compare page)"), ("conversation", "Live conversation with models"),
                 ("ratings", "Rate every response of imported prompts 1–100 (prompts with 3 or more responses)")],
        widget=forms.RadioSelect, label="What annotators do",
    )
    attributes = forms.CharField(
        required=False, label="Per-dimension choices",
        help_text="Comma-separated attributes, e.g. factuality, safety, helpfulness: annotators also pick the "
        "better response for each (optional for them). Leave empty for none.",
    )
    conversation_turns = forms.IntegerField(min_value=1, max_value=20, label="Turns per conversation")
    conversations_per_annotator = forms.IntegerField(min_value=1, max_value=50, label="Conversations per annotator")
    first_turn_answers = forms.TypedChoiceField(
        coerce=int, label="Answers on the first turn",
        choices=[(2, "2 (A/B choice)"), (3, "3 (rate each 1–100)"), (4, "4 (rate each 1–100, as in PRISM)")],
    )
    seed_prompts = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Seed prompts",
        help_text="One per line; participants may pick one instead of writing their own opening message.",
    )
    repeat_rate = forms.FloatField(
        min_value=0, max_value=0.5, label="Repeat rate",
        help_text="Share of assignments that show an already judged pair again, sides swapped (consistency).",
    )
    gold_rate = forms.FloatField(
        min_value=0, max_value=0.5, label="Gold rate",
        help_text="Share of assignments that are gold/attention pairs with a known answer.",
    )
