"""The model registry: specs recorded on construction, rebuilds, and clear errors."""

import pytest
from torch import nn

import dawnet
from dawnet.registry import UnknownModelError, build_model, check_json_spec, create_model, is_model, model_spec


@dawnet.register_model("reg_test_net")
class RegNet(nn.Module):
    def __init__(self, width: int = 4, depth: int = 1, **extra):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
        self.extra = extra


@dawnet.register_model("reg_test_factory")
def reg_factory(width: int = 3, act: str = "relu") -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU() if act == "relu" else nn.Tanh())


def test_class_and_factory_record_their_spec():
    assert model_spec(RegNet(8, depth=2, note="x")) == {
        "name": "reg_test_net", "kwargs": {"width": 8, "depth": 2, "note": "x"}, "module": __name__}
    assert model_spec(reg_factory(act="tanh"))["kwargs"] == {"act": "tanh"}
    assert model_spec(nn.Linear(2, 2)) is None


def test_subclass_of_registered_class_does_not_claim_its_spec():
    class Sub(RegNet):
        pass

    assert model_spec(Sub()) is None


def test_create_and_rebuild():
    model = create_model("reg_test_net", width=6, depth=None)  # None kwargs are dropped: defaults stay
    assert model_spec(model)["kwargs"] == {"width": 6}
    rebuilt = build_model(model_spec(model))
    assert isinstance(rebuilt, RegNet) and rebuilt.layers[0].in_features == 6
    assert is_model("reg_test_factory") and "reg_test_net" in dawnet.list_models("reg_test_*")


def test_module_factory_paths():
    model = create_model("torch.nn:Linear", in_features=3, out_features=2)
    assert isinstance(model, nn.Linear) and model_spec(model)["name"] == "torch.nn:Linear"
    with pytest.raises(UnknownModelError, match="no attribute"):
        create_model("torch.nn:NoSuchLayer")
    with pytest.raises(UnknownModelError, match="cannot import"):
        create_model("no_such_package_xyz:net")


def test_unknown_name_lists_registered_ones():
    with pytest.raises(UnknownModelError, match="not registered.*reg_test_net"):
        create_model("no_such_model")


def test_duplicate_names_and_bad_names_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        @dawnet.register_model("reg_test_net")
        def other():
            return nn.Linear(1, 1)

    with pytest.raises(ValueError, match="without ':'"):
        dawnet.register_model("a:b")


def test_non_json_kwargs_are_caught_before_saving():
    spec = model_spec(RegNet(activation=nn.ReLU))
    with pytest.raises(TypeError, match="activation=.*JSON-able"):
        check_json_spec(spec)


def test_factory_must_return_a_module():
    @dawnet.register_model("reg_test_bad_factory")
    def bad():
        return "not a module"

    with pytest.raises(TypeError, match="not an nn.Module"):
        bad()


def test_a_spec_never_imports_or_calls_what_it_merely_names(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "dawnet.__main__", raising=False)
    for module in ("dawnet.__main__", "dawnet.commands.train", "torch.utils.cpp_extension", "os"):
        for trust_code in (False, True):
            if trust_code and module == "os":
                continue  # trust_code is consent to import the user's own modules
            with pytest.raises(UnknownModelError, match="is not registered"):
                build_model({"name": "nope", "kwargs": {}, "module": module}, trust_code=trust_code)
    assert "dawnet.__main__" not in sys.modules  # importing it would have run the CLI
    with pytest.raises(UnknownModelError, match="factory inside torch or dawnet"):
        build_model({"name": "torch.hub:load", "kwargs": {}, "module": "mypkg"}, trust_code=True)
    with pytest.raises(ValueError, match="plain data"):
        build_model({"name": "reg_test_net", "kwargs": {"width": print}, "module": __name__})
