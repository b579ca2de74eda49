"""The "auto" outpaint acceleration's hand-over: a forward compiled in a background thread (dynamo with its
"eager" backend here: the same tracing, guards and hand-over as inductor, without a C compiler) is checked
against the eager forward, adopted between calls, and a call it was not compiled for runs eagerly instead of
compiling inside the job."""

import warnings

import pytest
import torch

from backend.models import accel


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 4)

    def forward(self, x):
        return torch.nn.functional.silu(self.norm(self.conv(x)))


def test_a_background_compile_is_checked_then_adopted_and_an_unseen_shape_stays_eager():
    net = Net().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        want = net.forward(x)  # before the wrapper: the eager forward itself
        wrapper = accel.install(net, "auto", timestep_arg=False)
        assert isinstance(wrapper, accel.SwappingForward) and wrapper.example is None
        first = net(x)
    assert wrapper.fn is wrapper.eager and wrapper.example[0][0] == (1, 3, 16, 16)
    torch.testing.assert_close(first, want)
    job = accel.BackgroundCompile([wrapper], backend="eager")
    assert job.wait(120) == "ready", job.state
    assert wrapper.fn is wrapper.eager  # nothing changes until the calling thread polls
    assert job.poll() == "adopted" and wrapper.fn is not wrapper.eager
    with torch.no_grad():
        torch.testing.assert_close(net(x), want)
        x2 = torch.randn(2, 3, 8, 8)
        with pytest.warns(RuntimeWarning, match="cannot run this call"):
            other = net(x2)  # a shape the compile never saw: no compile in the job, the eager forward
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(net(x2), other)
    torch.testing.assert_close(other, Net().eval().forward(x2))
    assert wrapper.fn is wrapper.eager and "recompil" in wrapper.failed.lower(), wrapper.failed


def test_a_compiled_forward_that_differs_from_eager_is_refused():
    net = Net().eval()
    wrapper = accel.install(net, "auto", timestep_arg=False)
    with torch.no_grad():
        net(torch.randn(1, 3, 8, 8))

    def wrong(gm, example_inputs):  # a "compiler" whose code computes something else
        def run(*args):
            return [2 * o for o in gm(*args)]
        return run

    job = accel.BackgroundCompile([wrapper], backend=wrong)
    state = job.wait(120)
    assert state.startswith("failed") and "differs from eager" in state
    assert job.poll() == state and wrapper.fn is wrapper.eager
