"""ARBench leaderboard (Streamlit). Start it with `arbench leaderboard`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from harness.errors import ArbenchError
from harness.store import Store

st.set_page_config(page_title="ARBench leaderboard", layout="wide")
st.title("ARBench leaderboard")

try:
    records = Store(read_only=True).records(status="finished")
except ArbenchError as exc:
    st.info(f"{exc}")
    records = []

if not records:
    st.info("No results yet. Fill the store with `arbench demo`, then reload this page.")
else:
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        st.subheader(task)
        table = pd.DataFrame([
            {"label": r["label"], "method": r["method"], "source": r["source"],
             **{name: m["value"] for name, m in r["metrics"].items()}, "signature": r["signature"]}
            for r in rows
        ])
        st.dataframe(table, hide_index=True)
