"""Sources: where posts come from (Telethon live, the t.me/s web preview, text dumps)."""
