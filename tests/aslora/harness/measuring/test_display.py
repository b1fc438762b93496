"""The reporting side's names and colours cover exactly the library's adapters, and no two
drawn adapters share a colour (a legend that could not tell them apart)."""

from aslora.adapters.registry import ADAPTERS
from aslora.harness.measuring.display import ADAPTERS_SHOWN, COLOURS, ORDER


def test_every_adapter_is_shown_and_only_those():
    assert set(ADAPTERS_SHOWN) == set(ADAPTERS)
    assert sorted(ORDER) == sorted(ADAPTERS)


def test_drawn_adapters_have_distinct_colours():
    assert len(set(COLOURS.values())) == len(COLOURS)
    assert "aslora" in COLOURS and "lora" in COLOURS
