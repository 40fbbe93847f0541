"""The reduced run of examples/disagg_study.py (aggregated vs disaggregated Llama-3.1-70B)."""

from examples.disagg_study import QUICK, report, study


def test_quick_disagg_study_reports_goodput_for_each_deployment_and_load():
    df = study(quick=True)
    assert len(df) == len(QUICK["deployments"]) * len(QUICK["rates"])
    assert set(df["deployment"]) == set(QUICK["deployments"])
    for name in ("tight", "loose"):
        assert df[f"goodput_{name}"].between(0, 1e9).all()
        assert (df[f"goodput_{name}"] <= df["throughput"] + 1e-9).all()
    assert (df["goodput_tight"] <= df["goodput_loose"] + 1e-9).all()
    disagg = df["deployment"].str.startswith("disagg")
    # Only disaggregated serving moves KV; over NVLink a 70B prompt's KV takes about a ms.
    assert (df.loc[~disagg, "mean_kv_transfer_ms"] == 0).all()
    assert df.loc[disagg, "mean_kv_transfer_ms"].between(0.01, 20).all()
    # The mechanism docs/cluster.md explains: at load, a decode-only replica keeps TPOT low (no
    # prompt shares its steps), while prompts queue for half as many prefill GPUs.
    busy = df[df["rate"] == max(QUICK["rates"])].set_index("deployment")
    agg, dis = busy.loc["agg 2x tp4, chunked 2048"], busy.loc["disagg P 1x tp4 + D 1x tp4"]
    assert dis.p90_tpot_ms < agg.p90_tpot_ms and dis.p90_ttft_ms > agg.p90_ttft_ms
    text = report(df)
    assert "goodput" in text and all(d in text for d in QUICK["deployments"])
