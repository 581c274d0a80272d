"""The prompt resolver's logic with a transparent encoder: clause and part splitting, refusals, several objects,
the open-set vocabulary and the cache. The real sentence encoder's quality is test/models/test_prompt_resolution.py."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from vfm_pose_ros.core.prompts import PromptResolver, split_part

WORDS = ["drill", "driller", "can", "tin", "handle", "grip", "lid", "top", "body", "side", "wrench", "banana"]


def bag_of_words(texts):
    """Unit vectors over a fixed word list (a word's presence): similarity = shared words."""
    out = np.zeros((len(texts), len(WORDS) + 1), np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z]+", t.lower()):
            if w in WORDS:
                out[i, WORDS.index(w)] = 1.0
        out[i, -1] = 0.05  # never all-zero
        out[i] /= np.linalg.norm(out[i])
    return out


def grasp(name, description, aliases=()):
    return SimpleNamespace(name=name, description=description, aliases=list(aliases))


CATALOGUE = [
    SimpleNamespace(name="driller_like", aliases=["drill"], description="",
                    grasp_frames={"handle": grasp("handle", "the handle", ["grip"]), "body": grasp("body", "")}),
    SimpleNamespace(name="can_like", aliases=["tin"], description="",
                    grasp_frames={"top": grasp("top", "the lid"), "body": grasp("body", "the side")}),
]


@pytest.fixture
def resolver():
    return PromptResolver(CATALOGUE, bag_of_words, threshold=0.5, part_threshold=0.5, vocabulary=("wrench",))


@pytest.mark.parametrize("prompt, obj, part", [
    ("please grasp the drill by its handle", "the drill", "handle"),
    ("the drill's grip", "the drill", "grip"),
    ("the lid of the can", "the can", "lid"),
    ("pick the tin up by the side", "the tin", "side"),
    ("pick up the drill", "the drill", None),
])
def test_split_part(prompt, obj, part):
    assert split_part(prompt) == (obj, part)


def test_resolves_object_and_grasp(resolver):
    r = resolver.resolve("Grasp the drill by the grip")
    assert r.refusal is None and r.names == ["driller_like"] and r.grasp_for("driller_like") == "handle"
    assert resolver.resolve("hold the tin at the lid").grasp_for("can_like") == "top"
    assert resolver.resolve("the drill").grasp_for("driller_like") is None


def test_refusal_names_the_closest_object(resolver):
    r = resolver.resolve("the banana")
    assert r.names == [] and "names nothing in the catalogue" in r.refusal and r.reads_as is None
    assert "the closest catalogue object is 'driller_like'" in r.refusal or "'can_like'" in r.refusal
    assert resolver.resolve("   ").refusal == "the prompt is empty"


def test_an_everyday_object_closer_than_the_catalogue_is_refused():
    # 'wrench drill' shares a word with the driller (similarity 0.7, above the threshold) but is the vocabulary's
    resolver = PromptResolver(CATALOGUE, bag_of_words, threshold=0.5, vocabulary=("wrench drill",),
                              vocabulary_overlap=0.9)
    r = resolver.resolve("the wrench drill")
    assert r.names == [] and r.reads_as[0] == "wrench drill" and "it reads as 'wrench drill'" in r.refusal
    assert r.closest[0][0] == "driller_like" and r.closest[0][1] > 0.5
    assert resolver.resolve("the drill").names == ["driller_like"]


def test_vocabulary_entries_that_are_catalogue_objects_are_dropped():
    r = PromptResolver(CATALOGUE, bag_of_words, threshold=0.5, vocabulary=("drill", "wrench"))
    assert r.resolve("the drill").names == ["driller_like"]


def test_several_objects_in_one_prompt(resolver):
    r = resolver.resolve("the drill by the handle and the tin")
    assert r.names == ["driller_like", "can_like"] and r.grasp_for("driller_like") == "handle"
    # a conjunction inside one object's phrase is not a second object
    assert resolver.resolve("the drill and the drill").names == ["driller_like"]


def test_results_are_cached_per_prompt(resolver):
    calls = []
    resolver.encode = lambda texts: calls.append(list(texts)) or bag_of_words(texts)
    first = resolver.resolve("the drill")
    assert resolver.resolve("  The   drill ") is first and len(calls) == 1
