"""The miniature world: deterministic images, a caption grammar that parses back, the data plane."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow.parquet as pq

from vlv_ray.toyworld import tokens, world


def test_same_seed_same_images_other_seed_other_images():
    a, attrs_a = world.arrays(3, 16)
    b, attrs_b = world.arrays(3, 16)
    c, _ = world.arrays(4, 16)
    assert np.array_equal(a, b) and attrs_a == attrs_b
    assert not np.array_equal(a, c)
    one, _ = world.arrays(3, 1, start=5)  # any image regenerates alone
    assert np.array_equal(one[0], a[5])


def test_every_attribute_combination_captions_and_parses_back():
    names = list(world.ATTRIBUTES)
    for values in itertools.product(*world.ATTRIBUTES.values()):
        a = dict(zip(names, values))
        assert world.parse_caption(world.caption_of(a)) == a
    assert world.caption_of({"count": "two", "size": "small", "colour": "red", "shape": "circle",
                             "position": "top left"}) == "two small red circles at the top left"


def test_parser_scores_broken_captions_attribute_by_attribute():
    got = world.parse_caption("two red red squares at the bottom")
    assert got == {"count": "two", "size": None, "colour": "red", "shape": "square", "position": None}
    assert all(v is None for v in world.parse_caption("").values())


def test_images_show_their_attributes():
    """The drawn colour is where the position says, in the right amount for the count."""
    x, attrs = world.arrays(5, 200)
    for im, a in zip(x, attrs):
        target = np.array(world.COLOURS[a["colour"]])
        hit = np.abs(im.astype(int) - target).sum(-1) < 30
        ys, xs = np.nonzero(hit)
        assert len(ys) > 0
        vertical, horizontal = a["position"].split()
        assert (ys.mean() < world.SIZE / 2) == (vertical == "top")
        assert (xs.mean() < world.SIZE / 2) == (horizontal == "left")
    areas = {(a["count"], a["size"]): [] for a in attrs}
    for im, a in zip(x, attrs):
        hit = np.abs(im.astype(int) - np.array(world.COLOURS[a["colour"]])).sum(-1) < 30
        areas[(a["count"], a["size"])].append(hit.sum())
    mean = {k: np.mean(v) for k, v in areas.items()}
    assert mean[("one", "small")] < mean[("one", "large")] < mean[("two", "large")]
    assert mean[("one", "small")] < mean[("two", "small")]


def test_written_through_the_data_plane(tmp_path):
    m = world.write_dataset(str(tmp_path / "data"), tmp_path / "img", seed=1, n=40)
    assert m["rows"] == 40 and m["captioned"] == 40 and not m["rejected"]
    table = pq.read_table(tmp_path / "data" / m["shards"][0]["path"], columns=["key", "caption"])
    truth = world.read_attributes(tmp_path / "img")
    for key, caption in zip(table["key"].to_pylist(), table["caption"].to_pylist()):
        assert world.parse_caption(caption) == truth[key]
    plain = world.write_dataset(str(tmp_path / "plain"), tmp_path / "img2", seed=1, n=8, captions=False)
    assert plain["captioned"] == 0
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["rows"] == 40


def test_tokenizers_spell_each_word_as_one_token():
    clip, lm = tokens.clip_tokenizer(), tokens.lm_tokenizer()
    caption = "two small red circles at the top left"
    ids = clip(caption).input_ids
    assert len(ids) == len(caption.split()) + 2 and ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id
    assert clip.decode(ids, skip_special_tokens=True).strip() == caption
    assert lm.decode(lm(caption, add_special_tokens=False).input_ids) == caption
    # every word alone, too: a short word's merge once split "bottom" into three tokens
    split = {w: clip.convert_ids_to_tokens(clip(w).input_ids[1:-1]) for w in world.WORDS}
    assert {w: t for w, t in split.items() if t != [w + "</w>"]} == {}
    longest = world.caption_of({"count": "two", "size": "large", "colour": "yellow", "shape": "triangle",
                                "position": "bottom right"})
    assert len(clip(longest).input_ids) <= tokens.MAX_TEXT_TOKENS
