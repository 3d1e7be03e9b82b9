"""lowbit.nas search spaces: genome encoding / decoding, validity, size, the built networks."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lowbit.nas import Candidate, SearchSpace, Stage, build, get_space
from lowbit.nas.space import layer_names

SPACES = ("digits-mbv2", "digits-mbv2-bits")


def genomes(space):
    return st.tuples(*(st.integers(0, n - 1) for n in space.cardinalities))


@pytest.mark.parametrize("name", SPACES)
def test_every_genome_decodes_to_a_valid_candidate(name):
    space = get_space(name)

    @given(genomes(space))
    def check(genome):
        cand = space.validate(space.decode(genome))
        assert space.decode(space.encode(cand)) == cand
        canon = space.canonical(genome)
        assert space.canonical(canon) == canon            # idempotent
        assert space.decode(canon) == cand
        assert Candidate.from_dict(cand.to_dict()) == cand
        assert [n for n, _ in cand.bits] == layer_names(cand.stages)

    check()


def test_ignored_bit_genes_do_not_change_the_candidate():
    space = get_space("digits-mbv2-bits")
    genome = [0] * len(space.axes)                 # depth 1, expand 1: most slots unused
    names = [a.name for a in space.axes]
    other = list(genome)
    other[names.index("bits.stages.0.2.spatial")] = 1     # block 3 of stage 1 does not exist
    other[names.index("bits.stages.1.0.project")] = 1     # expand 1: no projection
    assert space.decode(other) == space.decode(genome)
    assert space.decode(other).key() == space.decode(genome).key()
    used = list(genome)
    used[names.index("bits.stem")] = 1
    assert space.decode(used).key() != space.decode(genome).key()


@pytest.mark.parametrize("bits", [None, (4, 8)], ids=["arch", "bits"])
def test_size_counts_distinct_candidates(bits):
    tiny = SearchSpace("tiny", widths=(0.5, 1.0), depths=(1, 2), kernels=(3,), expands=(1, 2),
                       bit_choices=bits, base_channels=(8, 16), strides=(1, 2))
    keys = {tiny.decode(g).key() for g in itertools.product(*map(range, tiny.cardinalities))}
    assert tiny.size() == len(keys)


def test_genome_and_candidate_errors_name_the_problem():
    space = get_space("digits-mbv2")
    with pytest.raises(ValueError, match="genome: digits-mbv2 has 10 genes"):
        space.decode([0, 0])
    with pytest.raises(ValueError, match="index out of range for width"):
        space.decode([9] + [0] * 9)
    good = space.decode([0] * 10)
    with pytest.raises(ValueError, match="width 2.0"):
        space.validate(Candidate(2.0, good.stages, good.bits))
    with pytest.raises(ValueError, match="stage 2 kernel 7"):
        space.validate(Candidate(good.width, (good.stages[0], Stage(1, 7, 1), good.stages[2]),
                                 good.bits))
    four = Candidate(good.width, good.stages, tuple((n, 4) for n, _ in good.bits))
    with pytest.raises(ValueError, match="layer stem at 4 bits; digits-mbv2 allows"):
        space.validate(four)
    assert get_space("digits-mbv2-bits").validate(four) is four
    with pytest.raises(ValueError, match="bits must name the layers"):
        space.validate(Candidate(good.width, good.stages, good.bits[:-1]))
    with pytest.raises(ValueError, match="unknown 'nope'"):
        get_space("nope")
    with pytest.raises(ValueError, match="kernels: must be odd"):
        SearchSpace("bad", kernels=(4,))


def test_neighbours_move_one_gene_by_one_step():
    space = get_space("digits-mbv2-bits")
    rng = np.random.default_rng(0)
    genome = tuple(int(rng.integers(n)) for n in space.cardinalities)
    around = space.neighbours(genome)
    assert len(set(around)) == len(around) > 0
    for n in around:
        diff = [i for i, (a, b) in enumerate(zip(genome, n)) if a != b]
        assert len(diff) == 1 and abs(genome[diff[0]] - n[diff[0]]) == 1
    corner = tuple([0] * len(space.axes))
    assert len(space.neighbours(corner)) == len(space.axes)   # only +1 moves


@pytest.mark.parametrize("genome_fill", [0, -1], ids=["smallest", "largest"])
def test_build_matches_the_candidate(genome_fill):
    space = get_space("digits-mbv2-bits")
    genome = [0 if genome_fill == 0 else n - 1 for n in space.cardinalities]
    cand = space.decode(genome)
    torch.manual_seed(0)
    model = build(cand, space)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    modules = dict(model.named_modules())
    for layer in layer_names(cand.stages):
        kind = nn.Linear if layer == "head" else nn.Conv2d
        assert isinstance(modules[layer if layer == "head" else f"{layer}.conv"], kind)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.groups == 1 for c in convs)
    assert len(convs) + 1 == len(cand.bits)
    widths = space.channels(cand.width)
    assert model.head.in_features == widths[-1]
    assert {c.kernel_size[0] for c in convs[1:]} >= {cand.stages[0].kernel}
