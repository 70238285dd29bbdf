"""The Streamlit leaderboard: reads the store, never writes results."""
