"""Compiled modules read their variables through properties, all of them in one read per call: every
way of changing a variable shows."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize, prune

import graphdnn as gd
from graphdnn import layers, nn


def _model():
    torch.manual_seed(0)
    g = gd.Graph("slots")
    x = g.placeholder("X", (None, 4))
    with g.name_scope("net"):
        h = layers.dense(x, 3, activation=nn.relu, name="d1")
        out = layers.dense(h, 2, name="d2")
    return g, gd.compile(g, inputs=[x], outputs=[out])


def _reference(module, x):
    """The same computation written by hand from the module's current parameters."""
    p = dict(module.named_parameters())
    h = F.relu(x @ p["d1.kernel"] + p["d1.bias"])
    return h @ p["d2.kernel"] + p["d2.bias"]


def test_reads_follow_every_kind_of_change():
    _, m = _model()
    x = torch.randn(5, 4)
    torch.testing.assert_close(m(x), _reference(m, x))
    m.d1.kernel = torch.nn.Parameter(torch.full((4, 3), 0.5))                 # nn.Module.__setattr__
    torch.testing.assert_close(m(x), _reference(m, x))
    m.d2._parameters["bias"] = torch.nn.Parameter(torch.tensor([1.0, -1.0]))   # the dict itself
    torch.testing.assert_close(m(x), _reference(m, x))
    m.load_state_dict({k: torch.randn_like(v) for k, v in m.state_dict().items()})
    torch.testing.assert_close(m(x), _reference(m, x))
    m.double()
    torch.testing.assert_close(m(x.double()), _reference(m, x.double()))


def test_deleting_and_plain_attributes_behave_as_on_a_module():
    _, m = _model()
    del m.d1.kernel
    with pytest.raises(AttributeError, match="kernel"):
        m(torch.randn(2, 4))
    m.d1.kernel = 3  # no longer a parameter: a plain attribute, as nn.Module would store it
    assert m.d1.kernel == 3 and "kernel" not in m.d1._parameters
    del m.d1.kernel
    with pytest.raises(AttributeError):
        del m.d1.kernel
    m.d1.register_parameter("kernel", None)
    assert m.d1.kernel is None


def test_copies_parametrizations_and_torch_compile():
    _, m = _model()
    x = torch.randn(3, 4)
    clone = copy.deepcopy(m)
    with torch.no_grad():
        clone.d1.kernel.zero_()
    torch.testing.assert_close(clone(x), _reference(clone, x))
    torch.testing.assert_close(m(x), _reference(m, x))                      # the original kept its values
    restored = pickle.loads(pickle.dumps(m))
    torch.testing.assert_close(restored(x), m(x))
    scope = pickle.loads(pickle.dumps(m.d1))                                 # a scope alone: a plain module
    assert type(scope) is torch.nn.Module and torch.equal(scope.kernel, m.d1.kernel)
    parametrize.register_parametrization(m.d2, "kernel", _Doubled())
    p = dict(m.named_parameters())
    h = F.relu(x @ p["d1.kernel"] + p["d1.bias"])
    torch.testing.assert_close(m(x), h @ (2 * p["d2.parametrizations.kernel.original"]) + p["d2.bias"])
    compiled = torch.compile(copy.deepcopy(clone), backend="aot_eager")
    torch.testing.assert_close(compiled(x), clone(x))


def test_names_the_class_defines_are_left_alone():
    g = gd.Graph("clash")
    x = g.placeholder("X", (None, 2))
    w = g.variable("train/kernel", value=torch.eye(2))  # "train" is an nn.Module method
    y = nn.matmul(x, w)
    m = gd.compile(g, inputs=[x], outputs=[y])
    assert callable(m.train) and m.train(False) is m and not m.training
    torch.testing.assert_close(m(torch.ones(1, 2)), torch.ones(1, 2))


class _Doubled(torch.nn.Module):
    def forward(self, w):
        return 2 * w


def test_calls_run_hooks_tracing_and_compiled_forwards_as_nn_module_does():
    """A call goes straight to ``forward`` only when ``nn.Module.__call__`` would: hooks of the module and
    global ones still run, ``torch.jit.trace`` still traces, a ``torch.compile``'d module still runs compiled."""
    _, m = _model()
    x = torch.randn(5, 4)
    seen = []
    pre = m.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    post = m.register_forward_hook(lambda mod, args, out: seen.append(out.detach().clone()) or out + 1)
    torch.testing.assert_close(m(x), _reference(m, 2 * x) + 1)
    torch.testing.assert_close(seen[-1], _reference(m, 2 * x))
    pre.remove()
    post.remove()
    torch.testing.assert_close(m(x), _reference(m, x))
    grads = []
    back = m.register_full_backward_hook(lambda mod, gin, gout: grads.append(gout[0].clone()))
    m(x).sum().backward()
    back.remove()
    torch.testing.assert_close(grads[0], torch.ones(5, 2))
    calls = []
    glob = torch.nn.modules.module.register_module_forward_hook(lambda mod, args, out: calls.append(type(mod)))
    try:
        m(x)
    finally:
        glob.remove()
    assert calls and isinstance(m, calls[-1])
    traced = torch.jit.trace(m, (x,), check_trace=False)
    torch.testing.assert_close(traced(x), _reference(m, x))
    m.compile(backend="eager")
    assert m._compiled_call_impl is not None
    torch.testing.assert_close(m(x), _reference(m, x))


def _by_attributes(module, x):
    """The computation from what the module's attributes hold now (parametrized, pruned or plain)."""
    return F.relu(x @ module.d1.kernel + module.d1.bias) @ module.d2.kernel + module.d2.bias


def test_generated_code_reads_all_variables_at_once():
    _, m = _model()
    assert "d1_kernel, d1_bias, d2_kernel, d2_bias = self._graphdnn_reads()" in m.code
    assert "self.d1" not in m.code


def test_one_read_follows_functional_call_assign_parametrize_and_prune():
    _, m = _model()
    x = torch.randn(5, 4)
    torch.testing.assert_close(m(x), _by_attributes(m, x))
    swapped = {k: torch.randn_like(v) for k, v in m.state_dict().items()}
    expected = F.relu(x @ swapped["d1.kernel"] + swapped["d1.bias"]) @ swapped["d2.kernel"] + swapped["d2.bias"]
    torch.testing.assert_close(torch.func.functional_call(m, swapped, (x,)), expected)
    torch.testing.assert_close(m(x), _by_attributes(m, x))                       # its own variables again
    m.load_state_dict({k: torch.randn_like(v) for k, v in m.state_dict().items()}, assign=True)
    torch.testing.assert_close(m(x), _by_attributes(m, x))
    parametrize.register_parametrization(m.d2, "kernel", _Doubled())
    torch.testing.assert_close(m(x), _by_attributes(m, x))                       # recomputed at each call
    with torch.no_grad():
        m.d2.parametrizations.kernel.original.mul_(-1)
    torch.testing.assert_close(m(x), _by_attributes(m, x))
    parametrize.remove_parametrizations(m.d2, "kernel")
    torch.testing.assert_close(m(x), _by_attributes(m, x))
    prune.l1_unstructured(m.d1, "kernel", amount=0.5)                        # a plain attribute now
    assert int((m.d1.kernel == 0).sum()) == 6
    torch.testing.assert_close(m(x), _by_attributes(m, x))
    prune.remove(m.d1, "kernel")
    with torch.no_grad():
        m.d1.kernel.add_(1.0)                                                 # in place: the same tensor
    torch.testing.assert_close(m(x), _by_attributes(m, x))
    m.d2 = copy.deepcopy(m.d2)                                                # a scope replaced
    m.d2.bias = torch.nn.Parameter(torch.tensor([3.0, -3.0]))
    torch.testing.assert_close(m(x), _by_attributes(m, x))


def test_one_read_under_torch_compile_and_export():
    _, m = _model()
    x = torch.randn(5, 4)
    compiled = torch.compile(m, backend="eager", fullgraph=True)              # no graph break
    torch.testing.assert_close(compiled(x), _by_attributes(m, x))
    exported = torch.export.export(m, (x,))
    assert list(exported.graph_signature.parameters) == ["d1.kernel", "d1.bias", "d2.kernel", "d2.bias"]
    torch.testing.assert_close(exported.module()(x), _by_attributes(m, x))


def test_a_call_checks_feeds_again_when_their_shape_or_dtype_changes():
    _, m = _model()
    m(torch.randn(5, 4))
    with pytest.raises(gd.InputError, match="X"):
        m(torch.randn(5, 3))
    with pytest.raises(gd.InputError, match="X"):
        m(torch.ones(5, 4, dtype=torch.int64))
    m(torch.randn(7, 4))
    with pytest.raises(gd.InputError, match="X"):
        m(torch.randn(7, 4, 1))


def test_variables_named_like_any_attribute_of_a_compiled_module_compile_and_train():
    """Every public attribute torch and graphdnn give a compiled module (methods, graphdnn's and torch.fx's
    own fields) is a name a layer may have: the variable gets an escaped path and the attribute stays."""
    _, m = _model()
    public = {n for n in (*dir(gd.CompiledGraph), *vars(m)) if not n.startswith("_") and _ours(gd.CompiledGraph, n)}
    for scope in sorted(public):
        g = gd.Graph("names")
        x = g.placeholder("X", (None, 2))
        w = g.variable(f"{scope}/kernel", value=torch.eye(2) * 3)
        module = gd.compile(g, inputs=[x], outputs=[nn.matmul(x, w)])
        torch.testing.assert_close(module(torch.ones(1, 2)), torch.full((1, 2), 3.0), msg=scope)
        assert module.variable(f"{scope}/kernel") is module.graph_state_dict()[f"{scope}/kernel"]
        assert type(getattr(module, scope)) is type(getattr(m, scope)), scope  # the attribute, not a scope


def _ours(cls, name):
    """Whether torch or graphdnn defines ``cls.name`` (libraries may add methods to ``nn.Module`` at run time)."""
    owner = getattr(getattr(cls, name, None), "__module__", None)
    return owner is None or owner.split(".")[0] in ("torch", "graphdnn", "builtins")


def test_a_name_a_library_added_to_nn_module_at_run_time_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(torch.nn.Module, "added_later", lambda self: None, raising=False)
    g = gd.Graph("late")
    x = g.placeholder("X", (None, 2))
    w = g.variable("added_later/kernel", value=torch.eye(2))
    with pytest.raises(gd.GraphError, match="'added_later/kernel'.*'added_later'.*rename"):
        gd.compile(g, inputs=[x], outputs=[nn.matmul(x, w)])
