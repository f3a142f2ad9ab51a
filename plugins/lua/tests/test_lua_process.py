"""The Lua plugin as installed: ``lanthorn serve`` loads it from its entry point, with
Orthanc's top-level options, and filters C-STORE requests."""

from __future__ import annotations

import io
from pathlib import Path

import httpx2
import pydicom
import pytest
from lua_support import config_with_sample, sample_peer, scu  # noqa: F401
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from lanthorn.testing import ServerProcess, make_instance

SCRIPT = Path(__file__).parent / "scripts" / "cstore_filter.lua"


@pytest.mark.lanthorn_config(LuaScripts=[str(SCRIPT)], LuaHeartBeatPeriod=0.2,
                             ExecuteLuaEnabled=True)
def test_c_store_filter_and_heart_beat(lanthorn_process: ServerProcess) -> None:
    lanthorn_process.start()
    ct = pydicom.dcmread(io.BytesIO(make_instance(Modality="CT")))
    mr = pydicom.dcmread(io.BytesIO(make_instance(Modality="MR", SOPClassUID=MRImageStorage)))
    with scu(lanthorn_process.dicom_port, CTImageStorage, MRImageStorage) as association:
        assert association.send_c_store(ct).Status == 0x0000
        refused = association.send_c_store(mr)
    assert refused.Status != 0x0000
    assert "IncomingCStoreInstanceFilter refused" in refused.ErrorComment
    with httpx2.Client(base_url=lanthorn_process.url, timeout=10) as http:
        assert len(http.get("/instances").json()) == 1
        # Over REST only ReceivedInstanceFilter is asked, and the script has none.
        mr_file = make_instance(Modality="MR", SOPClassUID=MRImageStorage)
        assert http.post("/instances", content=mr_file).status_code == 200
        beats = http.post("/tools/execute-script", content="print(beats)")
        assert beats.status_code == 200 and int(beats.text) > 0
    log = lanthorn_process.log_path.read_text()
    assert "unknown configuration key" not in log and "LuaScripts" not in log
