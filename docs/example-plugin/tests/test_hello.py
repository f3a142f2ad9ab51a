"""The plugin, tested with the fixtures Lanthorn publishes to pytest (lanthorn.testing)."""

from pathlib import Path

import lanthorn_hello
import pytest
from pydicom.data import get_testdata_file

pytestmark = pytest.mark.lanthorn_plugins(lanthorn_hello)


def test_hello_counts_stored_instances(lanthorn_client) -> None:
    assert lanthorn_client.get("/hello").json()["Instances"] == 0
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert lanthorn_client.post("/instances", content=dicom).status_code == 200
    assert lanthorn_client.get("/hello").json() == {
        "Greeting": "Hello", "Instances": 1, "StoredSinceStartup": 1}


@pytest.mark.lanthorn_config(Hello={"Greeting": "Bonjour"})
def test_greeting_comes_from_the_hello_section(lanthorn_client) -> None:
    assert lanthorn_client.get("/hello").json()["Greeting"] == "Bonjour"
