"""The officers' web console: live lanes and hits, search, watchlists, accounts and an audit log."""
