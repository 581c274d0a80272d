"""Prompt resolution: which catalogue object(s) and grasp frame a free-text prompt names, or a refusal.

A sentence encoder (``models.text_encoder``: a pretrained MiniLM by default, CLIP's own text tower with pretrained
CLIP weights) embeds the prompt's object phrase and compares it with each object's texts (names, aliases,
description); the part phrase ("by the handle", "the drill's chuck") is compared with each grasp frame's texts. A
prompt whose best object similarity is under ``threshold`` is refused, naming the closest object. Several objects
in one prompt ("the drill and the can") are split at conjunctions, kept only when each clause names a different
object on its own. Results are cached per prompt, so nothing here runs per frame.

Pure NumPy: the encoder is passed in as a callable (texts -> unit-norm rows).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .vocabulary import EVERYDAY_OBJECTS

Encode = Callable[[Sequence[str]], np.ndarray]

# Instruction words before the object phrase ("please pick up the ..."): they carry no object meaning.
_LEAD = re.compile(
    r"^(?:(?:please|now|then|can you|could you|would you|robot,?|i need|i want|we need)\s+)*"
    r"(?:(?:grasp|grab|pick(?:\s+up)?|take|hold|get|fetch|bring(?:\s+me)?|hand(?:\s+me)?|give(?:\s+me)?|find|"
    r"locate|lift|move|carry|point\s+(?:at|to)|look\s+(?:at|for)|show(?:\s+me)?|reach\s+for|select|use)\s+)?",
    re.IGNORECASE)
_TAIL = re.compile(r"\s+(?:up|please|over here|here|now|for me)\s*[.!?]*$", re.IGNORECASE)
# The part phrase: "... by/at/from/around/near/on (the|its) PART", "the OBJ's PART", "the PART of the OBJ".
_PART_PREP = re.compile(r"^(?P<obj>.+?)\s+(?:up\s+)?(?:by|at|from|around|near|on|with)\s+(?:the|its|their|his|her)?"
                        r"\s*(?P<part>.+)$", re.IGNORECASE)
_PART_POSSESSIVE = re.compile(r"^(?P<obj>.+?)'s\s+(?P<part>.+)$", re.IGNORECASE)
_PART_OF = re.compile(r"^(?:the\s+|a\s+|its\s+)?(?P<part>.+?)\s+of\s+(?P<obj>(?:the|a|an|that|this)\s+.+)$",
                      re.IGNORECASE)
_CONJUNCTION = re.compile(r"\s*(?:,|;|&|\band\b|\bplus\b|\bas well as\b|\bthen\b)\s*", re.IGNORECASE)
_BOTH = re.compile(r"^\s*(?:both|either)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class ObjectMatch:
    name: str
    similarity: float
    grasp: str | None = None
    grasp_similarity: float | None = None


@dataclass(frozen=True)
class Resolution:
    """What a prompt names: ``matches`` (possibly several objects), or ``refusal`` (a sentence saying why not)."""

    prompt: str
    matches: tuple[ObjectMatch, ...] = ()
    closest: tuple[tuple[str, float], ...] = ()  # every object by similarity to the (first) object phrase
    refusal: str | None = None
    reads_as: tuple[str, float] | None = None  # the everyday non-catalogue object the prompt is closer to

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.matches]

    def grasp_for(self, name: str) -> str | None:
        return next((m.grasp for m in self.matches if m.name == name), None)


def object_texts(obj) -> list[str]:
    """How people may call an object: its name made readable, its aliases and its description."""
    short = re.sub(r"[_\s-]*like$", "", obj.name).replace("_", " ").strip() or obj.name
    texts = [short, obj.name.replace("_", " "), *getattr(obj, "aliases", ()), obj.description]
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def grasp_texts(frame) -> list[str]:
    """How people may name a grasp frame: its name, description and aliases."""
    texts = [frame.name.replace("_", " "), frame.description, *getattr(frame, "aliases", ())]
    return list(dict.fromkeys(re.sub(r"^(?:the|its|a)\s+", "", t.strip(), flags=re.I) for t in texts if t))


def keyword_objects(prompt: str, catalogue) -> list[str]:
    """Objects whose name, alias or description the prompt contains as whole words: the check for estimators
    that resolve prompts with their own network heads (``prompt_resolver: network``), which know only words."""
    def words(s: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", (s or "").lower()))

    text = f" {words(prompt)} "
    return [obj.name for obj in catalogue if any(f" {w} " in text for w in map(words, object_texts(obj)) if w)]


def split_part(clause: str) -> tuple[str, str | None]:
    """(object phrase, part phrase or None) of one clause, instruction words removed."""
    text = _TAIL.sub("", _LEAD.sub("", clause.strip())).strip(" .!?")
    for pattern in (_PART_POSSESSIVE, _PART_OF, _PART_PREP):
        m = pattern.match(text)
        if m and m.group("obj").strip() and m.group("part").strip():
            return _TAIL.sub("", m.group("obj")).strip(), m.group("part").strip(" .!?")
    return text, None


@dataclass
class PromptResolver:
    """Resolve prompts against a catalogue with a sentence encoder; thresholds calibrated on test/data/prompts."""

    catalogue: object
    encode: Encode
    threshold: float = 0.4  # best object similarity under this: the prompt names nothing in the catalogue
    part_threshold: float = 0.35  # best grasp similarity under this: the part is not one of the object's frames
    open_set_margin: float = 0.0  # refuse when an everyday non-catalogue object beats the best by more than this
    vocabulary: Sequence[str] = EVERYDAY_OBJECTS
    vocabulary_overlap: float = 0.7  # vocabulary entries this close to a catalogue text are the catalogue's own
    cache_size: int = 256
    _objects: list = field(init=False, repr=False)
    _cache: OrderedDict = field(init=False, repr=False, default_factory=OrderedDict)

    def __post_init__(self):
        self._objects = []
        for obj in self.catalogue:
            emb = self.encode(object_texts(obj))
            frames = [(name, self.encode(grasp_texts(g))) for name, g in obj.grasp_frames.items()]
            self._objects.append((obj.name, emb, frames))
        words = list(self.vocabulary)
        vocab = self.encode(words) if words else np.zeros((0, 1), np.float32)
        if len(vocab) and self._objects:
            own = np.concatenate([emb for _, emb, _ in self._objects])
            keep = (vocab @ own.T).max(axis=1) < self.vocabulary_overlap
            words, vocab = [w for w, k in zip(words, keep) if k], vocab[keep]
        self._others = (words, vocab)

    def resolve(self, prompt: str) -> Resolution:
        key = " ".join(str(prompt).split()).lower()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = self._resolve(str(prompt))
        self._cache[key] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def _resolve(self, prompt: str) -> Resolution:
        if not prompt.strip():
            return Resolution(prompt, refusal="the prompt is empty")
        clauses = [c for c in _CONJUNCTION.split(_BOTH.sub("", prompt)) if c.strip()]
        if len(clauses) > 1:
            parts = [self._match_clause(c) for c in clauses]
            names = [m.name for m, _, _ in parts if m is not None]
            if len(names) == len(parts) and len(set(names)) == len(names):
                return Resolution(prompt, tuple(m for m, _, _ in parts), parts[0][1])
        match, closest, reads_as = self._match_clause(prompt)
        if match is not None:
            return Resolution(prompt, (match,), closest)
        name, sim = closest[0] if closest else ("", 0.0)
        why = (f"it reads as '{reads_as[0]}' ({reads_as[1]:.2f}), " if reads_as else "")
        return Resolution(prompt, (), closest, f"'{prompt}' names nothing in the catalogue: {why}the closest "
                                               f"catalogue object is '{name}' at {sim:.2f} (threshold "
                                               f"{self.threshold:.2f})", reads_as)

    def _match_clause(self, clause: str):
        """(ObjectMatch or None, catalogue objects by similarity, the everyday object it reads as or None)."""
        obj_phrase, part = split_part(clause)
        queries = [obj_phrase or clause] + ([part] if part else [])
        emb = self.encode(queries)
        sims = [(name, float(np.max(texts @ emb[0]))) for name, texts, _ in self._objects]
        closest = tuple(sorted(sims, key=lambda s: -s[1]))
        if not closest or closest[0][1] < self.threshold:
            return None, closest, None
        name, sim = closest[0]
        words, vocab = self._others
        if len(words):
            other = vocab @ emb[0]
            k = int(np.argmax(other))
            if other[k] > sim + self.open_set_margin:
                return None, closest, (words[k], float(other[k]))
        frames = next(f for n, _, f in self._objects if n == name)
        grasp, grasp_sim = None, None
        if part and frames:
            scores = [(frame, float(np.max(texts @ emb[1]))) for frame, texts in frames]
            frame, score = max(scores, key=lambda s: s[1])
            if score >= self.part_threshold:
                grasp, grasp_sim = frame, score
        return ObjectMatch(name, sim, grasp, grasp_sim), closest, None
