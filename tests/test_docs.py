"""README stays true to the code: every setting documented, every error code documented."""

from posecore.errors import ERROR_STATUS
from service.settings import Settings
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    missing = [f"POSE_{name.upper()}" for name in Settings.model_fields if f"`POSE_{name.upper()}`" not in README]
    assert not missing, f"README settings table lacks {missing}"


def test_every_error_code_is_in_the_readme():
    missing = [code for code in ERROR_STATUS if f"`{code}`" not in README]
    assert not missing, f"README error table lacks {missing}"


def test_the_untrained_default_is_stated():
    assert "UNTRAINED" in README and "make serve CHECKPOINT=" in README
