"""Merges follow the schedule, pick the closest pair and tie it by rewriting the layer→B map."""

from __future__ import annotations

import pytest
import torch

import aslora
from tests.conftest import B_of, randomise_adapter, tiny_bert, tiny_llama_classifier


def _train(model, controller, steps, input_ids, lr=1e-2, seed=0):
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    labels = torch.tensor([0, 1, 1])
    model.train()
    events_by_step = {}
    for t in range(1, steps + 1):
        model(input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        events_by_step[t] = controller.step(t)
    return optimizer, events_by_step


def test_schedule_first_event_at_start_plus_interval_one_pair_per_group_cap_respected(input_ids):
    config = aslora.ASLoRAConfig(r=4, merge_start_step=3, merge_interval_steps=2, max_merges=2)
    model = aslora.apply_adapter(tiny_bert(), config)
    controller = aslora.MergeController(model, total_steps=12)
    _, events = _train(model, controller, 12, input_ids)
    steps_with_events = [t for t, e in events.items() if e]
    assert steps_with_events == [5, 7]  # T_s + m, T_s + 2m; then the cap (2) stops it
    for t in steps_with_events:
        assert sorted(e.group for e in events[t]) == ["query", "value"]  # one pair per group per event
    assert controller.num_distinct_B == 8 - 2 * 2
    assert aslora.count_parameters(model).num_distinct_B == 4


def test_schedule_is_event_matches_algorithm_1():
    schedule = aslora.MergeSchedule(start_step=320, interval_steps=240, max_events=7)
    fired = [t for t in range(1, 5000) if schedule.is_event(t)]
    assert fired == [320 + 240 * k for k in range(1, 8)]
    assert schedule.first_event_step == 560 and schedule.last_event_step == 2000


def test_fractional_schedule_resolves_against_total_steps():
    config = aslora.ASLoRAConfig(
        merge_start_step=None,
        merge_interval_steps=None,
        merge_start_fraction=0.1,
        merge_interval_fraction=0.1,
        max_merges=7,
    )
    schedule = config.resolve_schedule(1000)
    assert (schedule.start_step, schedule.interval_steps) == (100, 100)
    assert schedule.last_event_step == 800 <= 1000
    with pytest.raises(ValueError, match="total_steps must be given"):
        config.resolve_schedule(None)


def test_tie_picks_closest_adjacent_pair_by_running_mean_distance():
    model = aslora.apply_adapter(
        tiny_bert(layers=4), aslora.ASLoRAConfig(r=2, merge_start_step=0, merge_interval_steps=1, max_merges=1)
    )
    pool = aslora.find_pool(model)
    # Set B's so that the query running means are 0, 10, 10.5, 30 and value means 0, 5, 20, 21.
    with torch.no_grad():
        for depth, v in enumerate([0.0, 10.0, 10.5, 30.0]):
            B_of(pool, f"query_{depth}").fill_(v)
        for depth, v in enumerate([0.0, 5.0, 20.0, 21.0]):
            B_of(pool, f"value_{depth}").fill_(v)
    controller = aslora.MergeController(model, total_steps=5)
    events = controller.step(1)
    by_group = {e.group: e for e in events}
    assert (by_group["query"].retired, by_group["query"].kept) == ("query_1", "query_2")  # lower takes upper's B
    assert (by_group["value"].retired, by_group["value"].kept) == ("value_2", "value_3")
    n = 32 * 2  # elements of each B
    assert by_group["query"].distance == pytest.approx(0.5 * n**0.5)
    assert pool.sharing_map()["query_1"] == "query_2" == pool.sharing_map()["query_2"]
    layer1 = model.bert.encoder.layer[1].attention.self.query
    layer2 = model.bert.encoder.layer[2].attention.self.query
    torch.testing.assert_close(layer1.factors()[1], layer2.factors()[1])
    assert "query_1" not in aslora.find_pool(model).sharing_map().values()
    assert pool.merge_history[0]["moved_layers"] == ["bert.encoder.layer.1.attention.self.query"]
    assert by_group["query"].moved_layers == ("bert.encoder.layer.1.attention.self.query",)


def test_running_mean_is_the_mean_of_all_sampled_values():
    model = aslora.apply_adapter(tiny_bert(), aslora.ASLoRAConfig(r=2, max_merges=0))
    pool = aslora.find_pool(model)
    controller = aslora.MergeController(model)
    values = [1.0, 2.0, 6.0]
    for t, v in enumerate(values, 1):
        with torch.no_grad():
            B_of(pool, "query_0").fill_(v)
        controller.step(t)
    torch.testing.assert_close(pool.running_mean_B["query_0"], torch.full((32, 2), 3.0))


def test_all_candidates_may_tie_distant_layers_adjacent_may_not():
    def first_event(candidates):
        model = aslora.apply_adapter(
            tiny_bert(layers=4),
            aslora.ASLoRAConfig(
                r=2, merge_start_step=0, merge_interval_steps=1, max_merges=1, merge_candidates=candidates
            ),
        )
        with torch.no_grad():
            for depth, v in enumerate([0.0, 10.0, 20.0, 0.1]):  # layer 0 and layer 3 are closest
                B_of(aslora.find_pool(model), f"query_{depth}").fill_(v)
        return next(e for e in aslora.MergeController(model, total_steps=3).step(1) if e.group == "query")

    assert (first_event("all").retired, first_event("all").kept) == ("query_0", "query_3")
    assert (first_event("adjacent").retired, first_event("adjacent").kept) == ("query_0", "query_1")


def test_distance_threshold_blocks_merges_above_it():
    model = aslora.apply_adapter(
        tiny_bert(),
        aslora.ASLoRAConfig(
            r=2, merge_start_step=0, merge_interval_steps=1, max_merges=3, merge_distance_threshold=1.0
        ),
    )
    with torch.no_grad():
        for depth, v in enumerate([0.0, 10.0, 20.0, 30.0]):
            B_of(aslora.find_pool(model), f"query_{depth}").fill_(v)
            B_of(aslora.find_pool(model), f"value_{depth}").fill_(0.01 * depth)
    events = aslora.MergeController(model, total_steps=3).step(1)
    assert [e.group for e in events] == ["value"]  # query pairs are ~80 apart, value pairs 0.08


def test_update_ratio_blends_survivor():
    model = aslora.apply_adapter(
        tiny_bert(layers=2),
        aslora.ASLoRAConfig(r=2, merge_start_step=0, merge_interval_steps=1, max_merges=1, merge_update_ratio=0.5),
    )
    with torch.no_grad():
        B_of(aslora.find_pool(model), "query_0").fill_(2.0)
        B_of(aslora.find_pool(model), "query_1").fill_(4.0)
    aslora.MergeController(model, total_steps=3).step(1)
    torch.testing.assert_close(B_of(aslora.find_pool(model), "query_1"), torch.full((32, 2), 3.0))


def test_tied_B_gets_the_sum_of_both_layers_gradients_and_the_retired_row_none(input_ids):
    """After a tie, the survivor's gradient equals the sum of the gradients two untied copies of
    it (same values) would get — both layers train it — and the retired row's gradient is zero."""
    import copy

    config = aslora.ASLoRAConfig(r=2, merge_start_step=0, merge_interval_steps=1, max_merges=1)
    untied = aslora.apply_adapter(tiny_bert(layers=2), config)
    randomise_adapter(untied)
    tied = copy.deepcopy(untied)
    events = aslora.MergeController(tied, total_steps=3).step(1)
    with torch.no_grad():  # give the untied model's lower B's the values the survivors have
        for e in events:
            B_of(aslora.find_pool(untied), e.retired).copy_(B_of(aslora.find_pool(untied), e.kept))
    event = next(e for e in events if e.group == "query")
    tied(input_ids).logits.square().sum().backward()
    untied(input_ids).logits.square().sum().backward()
    grad = lambda model, name: aslora.find_pool(model).lora_B[name].grad
    expected = grad(untied, event.kept) + grad(untied, event.retired)
    assert grad(untied, event.retired).abs().sum() > 0
    torch.testing.assert_close(grad(tied, event.kept), expected, rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(grad(tied, event.retired)) == 0


def test_a_tie_leaves_the_parameter_set_and_the_optimizer_untouched(input_ids):
    config = aslora.ASLoRAConfig(r=2, merge_start_step=1, merge_interval_steps=2, max_merges=1)
    model = aslora.apply_adapter(tiny_bert(), config)
    controller = aslora.MergeController(model, total_steps=6)
    keys_before = list(model.state_dict())
    shapes_before = {k: v.shape for k, v in model.state_dict().items()}
    params_before = [id(p) for p in model.parameters()]
    optimizer, events = _train(model, controller, 4, input_ids)
    assert [t for t, e in events.items() if e] == [3]
    assert (
        list(model.state_dict()) == keys_before and {k: v.shape for k, v in model.state_dict().items()} == shapes_before
    )
    assert [id(p) for p in model.parameters()] == params_before
    assert all(torch.is_tensor(v) for v in model.state_dict().values())  # no extra state: any framework saves it
    assert len(optimizer.param_groups[0]["params"]) == len(params_before) - sum(
        1 for p in model.parameters() if not p.requires_grad
    )
    assert int(aslora.find_pool(model).num_merges) == 2


def test_merges_to_the_target_count_on_llama_shapes(input_ids):
    model = aslora.apply_adapter(
        tiny_llama_classifier(layers=4),
        aslora.ASLoRAConfig(
            r=2,
            target_modules=["q_proj", "v_proj"],
            merge_start_step=0,
            merge_interval_steps=1,
            max_merges=3,
            merge_scope="joint",
        ),
    )
    controller = aslora.MergeController(model, total_steps=5)
    randomise_adapter(model)
    for t in range(1, 5):
        controller.step(t)
    # joint scope groups B's by shape; q (32×2) and v (16×2) never tie with each other
    assert controller.num_distinct_B == 2
    assert aslora.find_pool(model).bank_names == ["shape_32x2", "shape_16x2"]
    assert aslora.find_pool(model).live_rows() == {"shape_32x2": [3], "shape_16x2": [3]}


@pytest.mark.parametrize("max_merges", [4, 10])
def test_max_merges_beyond_possible_is_rejected(max_merges):
    model = aslora.apply_adapter(tiny_bert(layers=4), aslora.ASLoRAConfig(r=2, max_merges=max_merges))
    with pytest.raises(ValueError, match=rf"max_merges={max_merges} is more than merge group 'query' allows"):
        aslora.MergeController(model, total_steps=10**6)


def test_schedule_that_cannot_complete_is_rejected():
    model = aslora.apply_adapter(
        tiny_bert(layers=4), aslora.ASLoRAConfig(r=2, merge_start_step=10, merge_interval_steps=10, max_merges=2)
    )
    with pytest.raises(ValueError, match="merge event 2 .* step 30 .* total_steps=25"):
        aslora.MergeController(model, total_steps=25)


def test_a_resolved_schedule_is_followed_as_given_and_one_of_another_run_refused(input_ids, monkeypatch):
    """The harness's plan resolves the schedule once and hands it over: the controller ties at its
    steps without resolving the config again; a schedule that cannot be this adapter's is refused."""
    config = aslora.ASLoRAConfig(r=4, merge_start_step=3, merge_interval_steps=2, max_merges=2)
    planned = config.resolve_schedule(12)
    model = aslora.apply_adapter(tiny_bert(), config)
    monkeypatch.setattr(aslora.ASLoRAConfig, "resolve_schedule", lambda *a: pytest.fail("resolved twice"))
    controller = aslora.MergeController(model, total_steps=12, schedule=planned)
    assert controller.schedule is planned
    _, events = _train(model, controller, 12, input_ids)
    assert [t for t, e in events.items() if e] == planned.event_steps == [5, 7]
    for wrong in (
        aslora.MergeSchedule(start_step=3, interval_steps=2, max_events=3),  # another max_merges
        aslora.MergeSchedule(start_step=3, interval_steps=20, max_events=2),  # past the run's end
    ):
        with pytest.raises(ValueError, match="does not fit this adapter"):
            aslora.MergeController(aslora.apply_adapter(tiny_bert(), config), total_steps=12, schedule=wrong)


def test_controller_needs_an_aslora_model():
    model = aslora.apply_adapter(tiny_bert(), aslora.ShareLoRAConfig(r=2))
    with pytest.raises(ValueError, match="needs a model adapted with ASLoRAConfig"):
        aslora.MergeController(model, total_steps=10**6)


def _first_events(selection, step=1):
    model = aslora.apply_adapter(
        tiny_bert(layers=4),
        aslora.ASLoRAConfig(  # the one merge event is at `step`
            r=2, merge_start_step=step - 1, merge_interval_steps=1, max_merges=1, merge_selection=selection
        ),
    )
    with torch.no_grad():
        for depth, v in enumerate([0.0, 10.0, 10.5, 30.0]):
            B_of(aslora.find_pool(model), f"query_{depth}").fill_(v)
            B_of(aslora.find_pool(model), f"value_{depth}").fill_(v)
    controller = aslora.MergeController(model, total_steps=50)
    for _ in range(1, step):
        controller.pool.update_running_means()
    return {e.group: (e.retired, e.kept) for e in controller.step(step)}


def test_fixed_selection_ties_the_lowest_pair_ignoring_similarity():
    assert _first_events("fixed")["query"] == ("query_0", "query_1")
    assert _first_events("similarity")["query"] == ("query_1", "query_2")


def test_random_selection_is_reproducible_and_varies_with_the_step():
    draws = {step: _first_events("random", step)["query"] for step in range(1, 13)}
    assert draws == {step: _first_events("random", step)["query"] for step in range(1, 13)}  # same on a rerun
    assert len(set(draws.values())) > 1  # not stuck on one pair
    adjacent = {("query_0", "query_1"), ("query_1", "query_2"), ("query_2", "query_3")}
    assert set(draws.values()) <= adjacent  # still only candidate pairs


def test_joint_scope_orders_and_neighbours_by_the_real_layer_index():
    """query on layers 0–3, value on layers 2–3 only: value_0 sits in layer 2, above query_1."""
    targets = r".*layer\.[0-3]\.attention\.self\.query|.*layer\.[23]\.attention\.self\.value"
    model = aslora.apply_adapter(
        tiny_bert(layers=4),
        aslora.ASLoRAConfig(
            r=2, target_modules=targets, merge_scope="joint", merge_start_step=0, merge_interval_steps=1, max_merges=1
        ),
    )
    pool = aslora.find_pool(model)
    assert [(s.key, s.layer) for s in pool.slots.values()] == [
        ("query_0", 0),
        ("query_1", 1),
        ("query_2", 2),
        ("value_0", 2),
        ("query_3", 3),
        ("value_1", 3),
    ]
    with torch.no_grad():
        for name, v in {
            "query_0": 0.0,
            "query_1": 10.0,
            "query_2": 20.0,
            "query_3": 30.0,
            "value_0": 10.2,
            "value_1": 50.0,
        }.items():
            B_of(pool, name).fill_(v)
    (event,) = aslora.MergeController(model, total_steps=3).step(1)
    # the lower layer takes the upper layer's B: query_1 (layer 1) reads value_0 (layer 2) from now on
    assert (event.retired, event.kept) == ("query_1", "value_0")


def test_exact_ties_go_to_the_lowest_pair_with_many_B():
    """30 identical B's (SmolLM2 has 30 layers): every distance is exactly 0, and the lowest
    adjacent pair wins — torch.cdist's matmul path (used above 25 rows) would give them slightly
    different, non-zero distances."""
    model = aslora.apply_adapter(
        tiny_bert(layers=30, hidden=16),
        aslora.ASLoRAConfig(r=4, merge_start_step=0, merge_interval_steps=1, max_merges=1, merge_candidates="all"),
    )
    pool = aslora.find_pool(model)
    same = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for b in pool.lora_B.values():
            b.copy_(same)
    events = aslora.MergeController(model, total_steps=3).step(1)
    assert [(e.group, e.retired, e.kept, e.distance) for e in events] == [
        ("query", "query_0", "query_1", 0.0),
        ("value", "value_0", "value_1", 0.0),
    ]


def test_max_merges_per_group():
    model = aslora.apply_adapter(
        tiny_bert(layers=4),
        aslora.ASLoRAConfig(r=2, merge_start_step=0, merge_interval_steps=1, max_merges={"query": 3, "value": 1}),
    )
    randomise_adapter(model)
    controller = aslora.MergeController(model, total_steps=5)
    for t in range(1, 6):
        controller.step(t)
    groups = [e["group"] for e in aslora.find_pool(model).merge_history]
    assert groups.count("query") == 3 and groups.count("value") == 1
    assert aslora.find_pool(model).merges_by_bank() == {"query": 3, "value": 1}  # read from the log, as the caps are
    assert controller.num_distinct_B == 1 + 3
    assert aslora.find_pool(model).config.resolve_schedule(5).last_event_step == 3  # the largest cap sets the schedule


@pytest.mark.parametrize(
    "caps, message",
    [
        ({"query": 1, "key": 1, "value": 1}, r"max_merges names merge group\(s\) \['key'\]"),
        ({"query": 1}, r"has no entry for merge group 'value'"),
        ({"query": 4, "value": 1}, r"max_merges=4 is more than merge group 'query' allows"),
    ],
)
def test_bad_per_group_caps_are_rejected_naming_the_group(caps, message):
    model = aslora.apply_adapter(tiny_bert(layers=4), aslora.ASLoRAConfig(r=2, max_merges=caps))
    with pytest.raises(ValueError, match=message):
        aslora.MergeController(model, total_steps=5000)
