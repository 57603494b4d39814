"""YouTube sources through yt-dlp: ``youtube.list`` and ``youtube.collect``."""
