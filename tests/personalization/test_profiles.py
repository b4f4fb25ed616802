import torch

from personalization.profiles import ProfileEncoder

PROFILES = [
    {"age": "25-34", "gender": "female", "reside_country": "GB", "stated_prefs": {"safety": 80, "fluency": 20}},
    {"age": "25-34", "gender": "male", "reside_country": "US", "stated_prefs": {"safety": 40, "fluency": 60}},
    {"age": "65+", "gender": "female", "reside_country": "GB", "lm_usecases": ["research", "technical"]},
    {"age": "65+", "gender": "prefer-not-to-say", "reside_country": "US", "lm_usecases": ["research"]},
]


def test_it_encodes_categories_sliders_and_missing_values():
    enc = ProfileEncoder().fit(PROFILES)
    x = enc.transform(PROFILES)
    assert x.shape == (4, enc.dim) and enc.dim > 0
    names = {f.name for f in enc.fields}
    assert {"age", "gender", "reside_country", "stated_prefs.safety", "lm_usecases"} <= names
    assert not torch.equal(x[0], x[1])
    empty = enc.transform_one(None)
    assert torch.equal(enc.transform_one({}), empty)
    assert torch.equal(enc.transform_one({"age": "prefer not to say"}), empty)
    unknown = enc.transform_one({"age": "18-24", "reside_country": "ZZ"})  # unseen values → <unk> slots
    assert not torch.equal(unknown, empty) and torch.isfinite(unknown).all()


def test_it_round_trips_the_vocabulary():
    enc = ProfileEncoder().fit(PROFILES)
    again = ProfileEncoder.from_dict(enc.to_dict())
    assert torch.equal(enc.transform(PROFILES), again.transform(PROFILES))
