"""personalization/synthetic_text.py: generated responses with controlled attributes, measured back from text."""

from __future__ import annotations

from personalization import synthetic_text


def test_it_falls_back_to_text_features_for_attributes():
    long_md = synthetic_text.text_attributes("**Tip**\n- Please be careful, it might hurt!\n- Haha, fun fact!")
    plain = synthetic_text.text_attributes("Yes.")
    assert long_md["length"] > plain["length"]
    assert long_md["markdown"] >= 2 and long_md["caution"] >= 2 and long_md["humor"] >= 2
    assert plain["markdown"] == plain["caution"] == plain["humor"] == 0


def test_it_writes_import_rows_whose_metadata_matches_the_text():
    rows = synthetic_text.synthetic_study_lines(n_prompts=3, responses=5, seed=2)
    assert len(rows) == 3 and all(len(r["responses"]) == 5 for r in rows)
    for resp in (r for row in rows for r in row["responses"]):
        meta, measured = resp["metadata"], synthetic_text.text_attributes(resp["text"])
        assert synthetic_text.metadata_attribute(meta, "length") in (0.0, 1.0, 2.0)
        assert bool(measured["markdown"]) == meta["markdown"]
        assert (measured["humor"] > 0) == (meta["humor"] > 0)
