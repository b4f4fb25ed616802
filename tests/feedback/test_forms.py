"""feedback/forms.py: JudgmentForm, the compare page's posted judgment."""

from __future__ import annotations

from feedback.forms import MAX_TIME_MS, JudgmentForm

GOOD = {"client_key": "k1", "choice": "left", "pair": "7", "strength": "80", "time_ms": "1200", "rationale": "a\r\nb"}


def _form(**changes: str | None) -> JudgmentForm:
    data = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    form = JudgmentForm(data)
    form.is_valid()
    return form


def test_it_parses_a_judgment():
    form = _form()
    assert form.is_valid()
    assert form.cleaned_data.items() >= {"client_key": "k1", "choice": "left", "pair": 7, "strength": 80,
                                      "time_ms": 1200, "rationale": "a\nb"}.items()


def test_it_drops_the_strength_of_an_untouched_slider():
    assert _form(strength="50", strength_moved="0").cleaned_data["strength"] is None
    assert _form(strength="50", strength_moved="1").cleaned_data["strength"] == 50
    assert _form(strength="").cleaned_data["strength"] is None


def test_it_refuses_a_strength_outside_1_to_100_with_its_own_message():
    for bad in ("0", "101", "-5"):
        form = _form(strength=bad)
        assert not form.is_valid()
        assert form.first_error() == "The preference strength must be between 1 and 100."
    assert _form(strength="lots").first_error() == "Something in this form was not valid; please try again."


def test_it_names_the_first_problem_in_the_order_that_matters():
    assert "out of date" in _form(client_key=None, choice="up").first_error()
    assert "out of date" in _form(client_key="x" * 65).first_error()
    assert "both are bad" in _form(choice="up", pair="nope").first_error()
    assert _form(pair="nope").first_error() == "Something in this form was not valid; please try again."


def test_it_leaves_a_bogus_time_to_the_server_clock():
    for bad in ("", "soon", "-1", str(MAX_TIME_MS + 1)):
        form = _form(time_ms=bad)
        assert form.is_valid() and form.cleaned_data["time_ms"] is None
