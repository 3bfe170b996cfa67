"""The windowed layer engine (`simulate(..., windows=Windows())`): the same spikes as the
event loop on random networks, the same EventProp gradients, and every budget cut handled
(a window too full is run again shorter, never truncated)."""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_event_core import MAX_SPIKES, T_MAX, build, cases

import eventsnn as es
from eventsnn.event.windows import Windows

# Small budgets, so that random networks exercise chunks of candidates, windows cut by the
# arrival budget, windows cut and run again for too many spikes, and zero-length windows.
TIGHT = Windows(arrivals=3, recurrent_arrivals=2, spikes=2, window_spikes=3, chunk=3)
ROOMY = Windows(arrivals=16, recurrent_arrivals=16, spikes=4, window_spikes=16, chunk=8)


def run(net, inputs, windows=None, **kw):
    return es.simulate(
        net, inputs, t_max=T_MAX, max_spikes=MAX_SPIKES, windows=windows, check_overflow=False,
        **kw,
    )  # fmt: skip


def assert_same_records(a, b, atol=1e-12):
    for k, (x, y) in enumerate(zip(a.layers, b.layers)):
        assert int(a.counts[k]) == int(b.counts[k]), (k, a.counts, b.counts)
        np.testing.assert_array_equal(np.asarray(x.indices), np.asarray(y.indices), f"layer {k}")
        np.testing.assert_allclose(
            np.asarray(x.times), np.asarray(y.times), rtol=0, atol=atol, err_msg=f"layer {k}"
        )


@settings(max_examples=60)
@given(case=cases(), tight=st.booleans())
def test_same_spikes_as_the_event_loop(case, tight):
    net, inputs = build(case)
    loop = run(net, inputs)
    assume(not bool(np.asarray(loop.overflow).any()))
    windowed = run(net, inputs, TIGHT if tight else ROOMY)
    assert_same_records(loop, windowed)
