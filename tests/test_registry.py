"""``Registry``: builders registered by name, built by name; unknown names list the valid ones."""

import pytest

from fgdepth.registry import Registry


@pytest.fixture
def shapes():
    registry = Registry("shape")

    @registry.register("square")
    def square(side: int = 1):
        return ("square", side * side)

    @registry.register("circle")
    def circle(radius: int = 1):
        return ("circle", 3 * radius * radius)

    return registry


def test_build_calls_the_named_builder_with_its_keywords(shapes):
    assert shapes.build("square", side=3) == ("square", 9)
    assert shapes.build("circle") == ("circle", 3)


def test_register_returns_the_builder_unchanged():
    registry = Registry("thing")

    def make():
        return 1

    assert registry.register("one")(make) is make
    assert registry.get("one") is make


def test_names_are_sorted_and_membership_is_by_name(shapes):
    assert shapes.names() == ["circle", "square"]
    assert "square" in shapes and "triangle" not in shapes


def test_an_unknown_name_is_one_line_listing_the_valid_names(shapes):
    with pytest.raises(KeyError) as caught:
        shapes.build("triangle")
    message = caught.value.args[0]
    assert message == "unknown shape 'triangle'; valid: circle, square"
    assert "\n" not in message


def test_a_name_registered_twice_is_refused_and_the_first_builder_kept(shapes):
    with pytest.raises(ValueError, match="^shape 'square' is registered twice$"):
        shapes.register("square")(lambda: ("other", 0))
    assert shapes.build("square", side=2) == ("square", 4)


def test_registries_are_independent():
    a, b = Registry("a"), Registry("b")
    a.register("x")(lambda: "from a")
    assert "x" in a and "x" not in b
    assert b.names() == []
    with pytest.raises(KeyError) as caught:
        b.get("x")
    assert caught.value.args[0] == "unknown b 'x'; valid: "
