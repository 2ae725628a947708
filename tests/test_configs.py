"""Table 1 as data: names, aliases, layer counts, parsing and the rendered table."""

import pytest

from vgg_utils import CONFIGS, canonical_name, config_table, parse_layer, weight_layers


def test_six_paper_configurations_in_order():
    assert list(CONFIGS) == ["A", "A-LRN", "B", "C", "D", "E"]


@pytest.mark.parametrize(
    "name, depth", [("A", 11), ("A-LRN", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19)]
)
def test_weight_layer_counts_match_table1_headers(name, depth):
    assert weight_layers(name) == depth


@pytest.mark.parametrize("alias, canon", [("vgg11", "A"), ("vgg13", "B"), ("vgg16", "D"), ("VGG19", "E")])
def test_aliases(alias, canon):
    assert canonical_name(alias) == canon
    assert CONFIGS[alias] == CONFIGS[canon]
    assert alias in CONFIGS


def test_lrn_and_1x1_layers_are_where_the_paper_puts_them():
    assert CONFIGS["A-LRN"][:3] == ("conv3-64", "LRN", "maxpool")
    assert [e for e in CONFIGS["C"] if e.startswith("conv1-")] == ["conv1-256", "conv1-512", "conv1-512"]
    assert sum(e == "maxpool" for e in CONFIGS["E"]) == 5
    assert CONFIGS["D"][-4:] == ("FC-4096", "FC-4096", "FC-1000", "soft-max")


def test_unknown_config_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown VGG configuration 'F'.*'A-LRN'.*'vgg16'"):
        canonical_name("F")
    with pytest.raises(ValueError, match="valid names"):
        CONFIGS["vgg17"]
    assert "F" not in CONFIGS


def test_parse_layer():
    spec = parse_layer("conv3-64")
    assert (spec.kind, spec.kernel, spec.channels) == ("conv", 3, 64)
    assert parse_layer("maxpool").kind == "pool" and parse_layer("LRN").kind == "lrn"
    spec = parse_layer("conv1-512")
    assert (spec.kind, spec.kernel, spec.channels) == ("conv", 1, 512)
    assert parse_layer("FC-4096").channels == 4096
    with pytest.raises(ValueError, match="cannot parse"):
        parse_layer("conv3x3")


def test_config_table_is_rendered_from_the_data():
    table = config_table()
    assert table.shape[1] == 6
    e_column = [c for c in table.columns if c.startswith("E ")][0]
    assert "19 weight layers" in e_column
    cells = [c for c in table[e_column] if c]
    assert cells == list(CONFIGS["E"])
    c_column = [c for c in table.columns if c.startswith("C ")][0]
    assert [c for c in table[c_column] if c] == list(CONFIGS["C"])
