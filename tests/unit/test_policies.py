"""Pure policies as tables: message acceptance, branch paths, and the models policy file."""

import pytest

from inference.gateway import load_routes
from policies.conversation import Node, Recorded, Said, leaves, match_history, message_problem, path_to
from policies.models import DEFAULT_POLICY_FILE, ModelsPolicyError, expand_env, parse_routes


@pytest.mark.parametrize(
    ("content", "role", "problem"),
    [
        ("hello", "user", None),
        ("x" * 10, "user", None),
        ("x" * 11, "user", "over the limit of 10"),
        ("", "user", "empty or whitespace only"),
        (" \n\t ", "user", "empty or whitespace only"),
        (None, "user", "empty or whitespace only"),
        ("hi", "assistant", "cannot be sent"),
        ("hi", "system", "cannot be sent"),
        ("hi", "robot", "unknown role 'robot'"),
    ],
)
def test_message_problem(content: object, role: str, problem: str | None) -> None:
    found = message_problem(content, role, max_chars=10)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_branch_paths_and_leaves() -> None:
    # u1 ─ a1 ─ u2 ─ a2
    #         └ u2' ─ a2'   (an edit of u2)  and a1 has a regenerated sibling a1'
    nodes = {
        n.id: n
        for n in [
            Node("u1", None),
            Node("a1", "u1"),
            Node("a1'", "u1"),
            Node("u2", "a1"),
            Node("a2", "u2"),
            Node("u2'", "a1"),
            Node("a2'", "u2'"),
        ]
    }
    assert path_to("a2'", nodes) == ["u1", "a1", "u2'", "a2'"]
    assert path_to("a1'", nodes) == ["u1", "a1'"]
    assert path_to(None, nodes) == []
    assert sorted(leaves(nodes.values())) == ["a1'", "a2", "a2'"]


def test_path_stops_at_messages_that_were_summarized_away() -> None:
    nodes = {"u3": Node("u3", "a2"), "a3": Node("a3", "u3")}  # a2 is no longer in the state
    assert path_to("a3", nodes) == ["u3", "a3"]


def test_env_expansion() -> None:
    env = {"HOST": "vllm:8000"}
    assert expand_env("http://${HOST}/v1", env) == "http://vllm:8000/v1"
    assert expand_env("${MISSING:-http://127.0.0.1:8400/v1}", env) == "http://127.0.0.1:8400/v1"
    assert expand_env("${MISSING}", env) == ""


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "top level must be a mapping"),
        ({"models": "x"}, "top level must be a mapping"),
        ({"models": ["x"]}, "models[0] must be a mapping"),
        ({"models": [{"name": "a"}]}, "models[0] is missing base_url"),
        ({"models": [{"name": "a", "base_url": "u"}, {"name": "a", "base_url": "u"}]}, "listed twice"),
    ],
)
def test_bad_models_policy_is_a_clear_error(document: object, message: str) -> None:
    with pytest.raises(ModelsPolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_routes(document)


def test_default_models_policy_points_at_the_simulator() -> None:
    routes = load_routes(DEFAULT_POLICY_FILE, llm_url="http://127.0.0.1:9999/v1")
    assert {"sim-llama-8b", "sim-llama-1b", "sim-zero"} <= set(routes)
    assert routes["sim-zero"].base_url == "http://127.0.0.1:9999/v1"
    assert routes["sim-zero"].upstream_model == "sim-zero"


def _tree(*rows: tuple[str, str | None, str, str]) -> dict[str, Recorded]:
    return {
        id_: Recorded(id_, parent, role, content, seq)
        for seq, (id_, parent, role, content) in enumerate(rows)
    }


U, A = "user", "assistant"


def test_history_matches_the_branch_it_repeats() -> None:
    recorded = _tree(
        ("u1", None, U, "hi"), ("a1", "u1", A, "hello"), ("u2", "a1", U, "more"), ("a2", "u2", A, "ok")
    )
    history = [Said(U, "hi"), Said(A, "hello"), Said(U, "more"), Said(A, "ok"), Said(U, "new")]
    assert match_history(history, recorded) == ("a2", 4)
    assert match_history([Said(U, "hi")], recorded) == ("u1", 1)  # a regenerate of the first turn
    assert match_history([Said(U, "other")], recorded) == (None, 0)
    assert match_history([], recorded) == (None, 0)


def test_history_diverging_midway_is_an_edit_there() -> None:
    recorded = _tree(
        ("u1", None, U, "hi"), ("a1", "u1", A, "hello"), ("u2", "a1", U, "more"), ("a2", "u2", A, "ok")
    )
    history = [Said(U, "hi"), Said(A, "hello"), Said(U, "changed")]
    assert match_history(history, recorded) == ("a1", 2)


def test_history_follows_the_newest_of_identical_variants() -> None:
    # a1 was regenerated to the same text: the walk takes the newest variant (higher seq)
    recorded = _tree(("u1", None, U, "hi"), ("a1", "u1", A, "same"), ("a1b", "u1", A, "same"))
    assert match_history([Said(U, "hi"), Said(A, "same")], recorded) == ("a1b", 2)


def test_history_after_compaction_matches_from_the_remaining_messages() -> None:
    # u1/a1 were summarized away; u2 (parent a1) is now a root of the state
    recorded = _tree(("u2", "a1", U, "more"), ("a2", "u2", A, "ok"))
    history = [Said(U, "hi"), Said(A, "hello"), Said(U, "more"), Said(A, "ok"), Said(U, "next")]
    assert match_history(history, recorded) == ("a2", 4)
    assert match_history([Said(U, "unrelated")], recorded) == (None, 0)
