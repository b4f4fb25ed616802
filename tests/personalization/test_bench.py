import importlib.util
import sys
from pathlib import Path

from personalization.models import ModelConfig
from personalization.synthetic import PRESETS, Population
from personalization.train import FitConfig, fit

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    """A benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _bench():
    return _load("personalization_bench")


def test_it_generates_a_population_with_ground_truth():
    pop = Population(PRESETS["pets"]())
    users = pop.draw_users(4)
    pairs = pop.sample_pairs(10)
    assert pairs.prompt.shape == (10, 384) and pairs.a.shape == (10, 384)
    assert pop.label(users[0], pairs).dtype.is_floating_point is False
    assert 0.5 <= pop.bayes_optimal_accuracy(users, pairs) <= 1.0
    assert {u.type for u in pop.draw_users(50)} == {0, 1}
    assert "dog-vs-cat" in pop.response_text(pairs.attrs_a[0])


def test_it_beats_bt_on_the_pets_population_in_quick_mode():
    bench = _bench()
    cfg = bench.quick_config()
    cfg.n_train_users, cfg.pairs_per_user, cfg.n_new_users, cfg.test_pairs = 40, 30, 20, 20
    cfg.context_sizes = (0, 10)
    cfg.fit = FitConfig(progress=False, epochs=25, model=ModelConfig(hidden=[32], latent_dim=3, encoder_hidden=32, pal_dim=16))
    res = bench.run_population(PRESETS["pets"](), cfg)
    models = res["models"]
    bt = models["bt"]["seen"]["acc"]
    for kind in ("vpl", "pal"):
        assert models[kind]["seen"]["acc"] > bt + 0.1, (kind, models[kind]["seen"], bt)
        assert models[kind]["new_profile"][10]["acc"] > models["bt"]["new_profile"][10]["acc"] + 0.1
    text = bench.markdown([res], cfg, "cmd", "test machine", "2026-11-23")
    assert text.startswith(bench.SECTION) and "| vpl |" in text


def _ceiling():
    return _load("personalization_ceiling")


def test_it_orders_the_oracle_bounds_of_the_ceiling_analysis():
    ceiling = _ceiling()
    pop = Population(PRESETS["ufp"]())
    b = ceiling.oracle_bounds(pop, n_users=24, n_labels=50, n_test=600, seed=0)
    assert 0.5 < b["bayes"] < 1.0
    # Knowing more never hurts: a prior at the user's type beats a flat one on the same labels …
    assert b["true_user_type_prior"] > b["true_user_flat"]
    # … and features that keep the topic mixing lose against the true attributes, per type and per user.
    assert b["linear_type"] < b["true_type"] < 1.0
    assert b["linear_user_type_prior"] < b["true_user_type_prior"]
    assert b["linear_user"] <= 1.0 and b["linear_user"] > b["linear_type"]
    text = ceiling.markdown("ufp", b, [{"labels": 50, "pairs": 100, "kind": "pal", "seen": 0.9, "fit_s": 1.0}],
                            50, "cmd", "test machine", "2026-11-23")
    assert text.startswith(ceiling.SECTION) and "| 50 | 100 | pal | 0.900 | 1 |" in text


def test_it_overrides_population_fields_from_the_command_line():
    bench = _bench()
    cfg = PRESETS["ufp"]()
    assert bench._overrides(cfg, ["individual_std=0", "type_probs=[0.4, 0.2, 0.2, 0.2]"]) == {
        "individual_std": 0, "type_probs": [0.4, 0.2, 0.2, 0.2]}
    for bad in ["individual_std", "no_such_field=1", "seed=3", "label_scale=high"]:
        try:
            bench._overrides(cfg, [bad])
        except SystemExit as exc:
            assert bad.split("=")[0] in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


def _text_bench():
    return _load("personalization_text_bench")


def test_it_quotes_the_command_without_where_files_went():
    report = _load("bench_report")
    argv = ["--seed", "1", "--json", "/tmp/x.json", "--cache-dir=/tmp/c", "--write", "BENCHMARKS.md"]
    assert report.quoted_command("benchmarks/b.py", argv, drop=("--json", "--cache-dir")) == (
        ".venv/bin/python benchmarks/b.py --seed 1 --write BENCHMARKS.md")
    assert report.quoted_command("benchmarks/b.py", ["--machine", "2-core CPU"]) == (
        ".venv/bin/python benchmarks/b.py --machine '2-core CPU'")


def _tiny_text_config(bench, **kw):
    cfg = bench.TextBenchConfig(n_prompts=3, n_train_users=6, pairs_per_user=5, test_pairs=4, n_new_users=3,
                                context_sizes=(0, 2), epochs=1)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_it_writes_cli_files_whose_oracle_scores_one(tmp_path):
    from personalization.data import read_profiles, read_test, read_train

    bench = _text_bench()
    cfg = _tiny_text_config(bench)
    pop = bench._populations()["pluralistic"]()
    split = bench.build_split(pop, cfg, tmp_path)
    train, tests = read_train(tmp_path / "train.jsonl"), read_test(tmp_path / "test.jsonl")
    context, profiles = read_train(tmp_path / "context.jsonl"), read_profiles(tmp_path / "profiles.jsonl")
    assert len(train) == 6 * 5 and split["n_train"] == 30
    # Seen users once; each new user once per (n, with/without profile) case, each with its own context.
    assert len(tests) == 6 * 4 + 3 * 2 * 2 * 4
    assert sum(1 for c in context if c.user_id.endswith("@2+p")) == 3 * 2
    assert not any(c.user_id.endswith("@0+p") for c in context)
    assert "new-7@2+p" in profiles and "new-7@2-p" not in profiles and "seen-1" in profiles
    # Predicting each user's true probabilities scores exactly the Bayes-optimal accuracy.
    truth = split["truth"]
    oracle = {}
    for t in tests:
        case, i = t.id.split("#")
        oracle[t.id] = float(truth[case.split("@")[0]][1][int(i)])
    scores = bench.score(oracle, split, cfg)
    assert scores["seen"] == 1.0 and scores["new_profile"][2] == 1.0 and scores["new_noprofile"][0] == 1.0
    # A coin flip scores 0.5 / Bayes-optimal.
    coin = bench.score({k: 0.5 for k in oracle}, split, cfg)
    assert abs(coin["seen"] - 0.5 / bench.bayes_acc({"truth": {u.id: truth[u.id] for u in split["seen"]}})) < 1e-9


def test_it_runs_the_text_benchmark_through_the_cli(tmp_path, tiny_encoder_dir):
    bench = _text_bench()
    cfg = _tiny_text_config(bench, kinds=("bt", "pal"), encoder=str(tiny_encoder_dir))
    res = bench.run_population("opposite", cfg, tmp_path / "work", tmp_path / "cache")
    assert set(res["models"]) == {"bt", "pal"}
    for m in res["models"].values():
        assert 0.0 < m["seen"] <= 1.0 + 1e-9 and set(m["new_profile"]) == {0, 2}
    text = bench.markdown([res], cfg, "cmd", "test machine", "2026-11-23")
    assert text.startswith(bench.SECTION) and "| opposite | pal |" in text


def _learners():
    return _load("personalization_learners")


def test_it_checks_the_seen_target_with_learners_that_know_more_of_the_generator():
    learners, bench = _learners(), _bench()
    cfg = bench.BenchConfig(n_train_users=24, pairs_per_user=40, test_pairs=30, n_new_users=2, context_sizes=(0,))
    pop = Population(PRESETS["ufp"]())
    split = bench.make_split(pop, cfg)
    rows = learners.learner_check(pop, split, lams=(1e-3,), latent=4, steps=300)
    by_name = {r["features"]: r["by_lam"][1e-3] for r in rows}
    assert len(by_name) == 4 and all(0.5 < v <= 1.0 for v in by_name.values())
    # Undoing the topic mixing is worth more than anything else the learner can be told.
    assert by_name["true attributes (topic mixing undone)"] > max(
        v for k, v in by_name.items() if k != "true attributes (topic mixing undone)")
    unmix = learners.unmixing_check(pop, split, lam_us=(1e-3,), latent=4, steps=300)
    assert 0.5 < unmix[1e-3] <= 1.0
    text = learners.markdown("ufp", 0.9, rows, unmix, {"vpl": {"benchmarked": 0.9, "best_fit": 0.95,
                                                                "oracle_type_prior": 0.91}},
                             cfg, "cmd", "test machine", "2026-12-01")
    assert text.startswith(learners.SECTION) and "| vpl | 0.900 | 0.950 | 0.910 |" in text


def test_it_measures_a_trained_models_basis_cap():
    learners, bench = _learners(), _bench()
    cfg = bench.BenchConfig(n_train_users=16, pairs_per_user=30, test_pairs=20, n_new_users=2, context_sizes=(0,))
    pop = Population(PRESETS["pets"]())
    split = bench.make_split(pop, cfg)
    small = FitConfig(progress=False, epochs=4, refine_epochs=1, model=ModelConfig(hidden=[16], latent_dim=2, encoder_hidden=16))
    model = fit("vpl", split["data"], split["profiles"], small, seed=0)
    b = learners.basis_check(pop, split, model)
    assert set(b) == {"benchmarked", "best_fit", "oracle_type_prior"}
    # θ fitted on the true probabilities can only do better than θ from the labels, through the same basis.
    assert b["best_fit"] >= b["benchmarked"] - 0.01
    assert all(0.3 < v <= 1.0 for v in b.values())
