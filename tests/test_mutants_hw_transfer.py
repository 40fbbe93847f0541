"""Hand-computed KV copy times of ``hwmodels.transfer`` (issue #27: the mutmut survivors of
``hwmodels/transfer.py``; docs/mutation/hwmodels-transfer.md). Every expected time below is
worked out from the catalog's datasheet bandwidths and explicit parameters, none from the code
under test. The parameters are chosen apart from the fitted defaults, so a price that silently
took the defaults instead differs."""

from __future__ import annotations

import pytest

from hwmodels.errors import CatalogError
from hwmodels.params import HwParams
from hwmodels.transfer import swap_time_s, transfer_time_s

# Round numbers no default has: 20 us per copy, half of PCIe, a quarter of NVLink.
PARAMS = HwParams(copy_latency_s=2e-5, pcie_copy_eff=0.5, nvlink_copy_eff=0.25)
GIGABYTE = 1e9


def test_mi300x_sends_to_one_peer_over_one_infinity_fabric_link():
    # MI300X (AMD datasheet, catalog): 7 Infinity Fabric peer links of 128 GB/s both ways, 64 GB/s
    # per direction each (448 GB/s in all); a copy to one peer GPU uses the one link between the
    # pair: 1 GB / (64 GB/s x 0.25) = 1/16 s.
    assert transfer_time_s("mi300x", GIGABYTE, params=PARAMS) == pytest.approx(
        2e-5 + 1 / 16, rel=1e-12
    )


def test_a_pcie_hop_uses_the_parameters_it_was_given():
    # L40S: no NVLink, so "nvlink" falls back to PCIe Gen4 x16: 64 GB/s both ways = 32 GB/s per
    # direction; 1 GB / (32 GB/s x 0.5) = 1/16 s. The same for an explicit "pcie" link on H100
    # (Gen5 x16: 64 GB/s per direction): 1 GB / (64 GB/s x 0.5) = 1/32 s.
    assert transfer_time_s("l40s", GIGABYTE, params=PARAMS) == pytest.approx(2e-5 + 1 / 16)
    assert transfer_time_s("h100", GIGABYTE, "pcie", params=PARAMS) == pytest.approx(2e-5 + 1 / 32)


def test_the_network_is_one_400_gigabit_nic_at_80_percent():
    # 400 Gb/s = 50 GB/s exactly; x 0.8 = 40 GB/s; 4 GB take 0.1 s. The tolerance is tight
    # because the unit conversion is exact: a wrong constant anywhere in it shows.
    assert transfer_time_s("h100", 4 * GIGABYTE, "network", params=PARAMS) == pytest.approx(
        2e-5 + 0.1, rel=1e-12
    )


def test_a_gpu_without_pcie_cannot_swap_and_says_why():
    no_pcie = {"memory_gb": 80, "memory_bw_gbps": 3000, "tflops_dense": {"bf16": 900}}
    with pytest.raises(CatalogError, match="no PCIe bandwidth known for swapping"):
        swap_time_s(no_pcie, GIGABYTE, PARAMS)
