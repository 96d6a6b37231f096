"""blume_notifier: renders the share emails (HTML + text, en-CA and fr-CA) and sends them."""
